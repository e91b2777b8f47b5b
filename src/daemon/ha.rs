//! High availability (`daemon.ha_table`): N replicas on one DynamoDB table, one leader.
//!
//! Each replica runs the lease driver (`lease::drive`) against the table. A standby keeps the
//! config validated and hot-reloaded, serves HTTP, and applies the table's log to its local
//! file. When the driver reports that this replica leads, it catches up with the log to its
//! end (after taking the lease, so no older leader can add to it), makes the store append
//! every write to the log conditioned on its fencing number, queues `leader_changed`, and runs
//! the same control loop as a single machine (`active`), which re-drives decided starts,
//! follows started runs and sends queued notifications from the state it caught up with. A
//! step-down (the lease could not be renewed in time, another replica took it, or a state
//! write was refused or left without answer) stops that loop at once and makes the replica a
//! standby again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{active, systemd, watch, Base, Ended, Loaded, RunError, DEBOUNCE, SETTLE};
use crate::cloud::{
    ActGate, AppendError, AwsError, Cloud, Expect, Gated, HaCheckError, HaLog, LeaseItem,
    LeaseTable,
};
use crate::config::{self, diff::ConfigDiff};
use crate::events;
use crate::health::HaInfo;
use crate::lease::{self, Change};
use crate::notify::{self, Message};
use crate::state::{self, LogSink, Outgoing, Repl, Store};

/// This replica's id on the lease item: `MLOPSD_REPLICA_ID`, else `host:pid`.
pub fn replica_id() -> String {
    if let Ok(id) = std::env::var("MLOPSD_REPLICA_ID") {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..n]).into_owned()
    } else {
        "unknown-host".into()
    };
    format!("{host}:{}", std::process::id())
}

/// The lease table as the driver uses it, recording for `/status` and `/healthz` when the
/// table last answered and the lease item last changed, and opening the act gate on each
/// renewal that succeeded.
#[derive(Clone)]
struct Watched<T> {
    table: T,
    me: String,
    lease: Duration,
    gate: Arc<ActGate>,
    health: Arc<crate::health::Health>,
    last: Arc<Mutex<Option<(String, u64, u64)>>>,
    /// Set while this replica cannot catch up with the log (an entry it cannot apply, the
    /// table unreadable): it does not take, or keep, the lease, so another replica leads.
    abstain: Arc<std::sync::atomic::AtomicBool>,
}

impl<T: HaLog> Watched<T> {
    fn answered(&self, err: Option<&AwsError>) {
        let now = std::time::Instant::now();
        self.health.update_ha(|i| match err {
            None => {
                i.contact = Some(now);
                i.contact_error = None;
            }
            Some(e) => i.contact_error = Some(e.to_string()),
        });
        if let Some(e) = err {
            events::ha_table_unreachable(self.table.name(), &e.to_string());
        }
    }
}

impl<T: HaLog> LeaseTable for Watched<T> {
    async fn read(&self) -> Result<Option<LeaseItem>, AwsError> {
        let r = self.table.read().await;
        self.answered(r.as_ref().err());
        if let Ok(Some(item)) = &r {
            let key = (item.holder.clone(), item.fencing, item.version);
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.as_ref() != Some(&key) {
                *last = Some(key);
                let now = std::time::Instant::now();
                let leader_hash = self.table.leader_config_hash();
                self.health.update_ha(|i| {
                    i.lease_changed = Some(now);
                    if item.holder != self.me {
                        i.leader = Some(item.holder.clone());
                        i.fencing = Some(item.fencing);
                        i.leader_config_hash = leader_hash;
                    }
                });
            }
        }
        r
    }

    async fn write(&self, item: LeaseItem, expect: Expect) -> Result<bool, AwsError> {
        if item.holder == self.me
            && !item.released
            && self.abstain.load(std::sync::atomic::Ordering::SeqCst)
        {
            // As if the condition failed: a standby does not take over, a leader steps down.
            return Ok(false);
        }
        // The config this replica runs now (reloads, as leader or standby, update it).
        if let Some(i) = self.health.ha() {
            self.table.set_config_hash(&i.config_hash);
        }
        let sent = tokio::time::Instant::now();
        let r = self.table.write(item.clone(), expect).await;
        self.answered(r.as_ref().err());
        if matches!(r, Ok(true)) && item.holder == self.me && !item.released {
            self.gate
                .renewed(sent, self.lease, lease::margin(self.lease));
            let now = std::time::Instant::now();
            self.health.update_ha(|i| i.lease_changed = Some(now));
        }
        r
    }
}

/// The leader's log sink: appends each state write to the table (blocking the caller, the
/// loop's thread or a blocking-pool thread, as a SQLite commit does) and demotes this
/// replica on any write that was refused or left without answer.
struct Sink<T> {
    table: T,
    me: String,
    fencing: u64,
    gate: Arc<ActGate>,
    demote: CancellationToken,
    handle: tokio::runtime::Handle,
    wait: Duration,
    /// Bytes appended to the log by this leadership, for compaction.
    appended: Arc<std::sync::atomic::AtomicU64>,
}

impl<T: HaLog> LogSink for Sink<T> {
    fn append(&self, seq: u64, entry: Vec<u8>) -> Result<(), String> {
        if self.demote.is_cancelled() || !self.gate.may_act() {
            self.demote.cancel();
            return Err("this replica does not hold the lease now".into());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (table, me, fencing) = (self.table.clone(), self.me.clone(), self.fencing);
        let (gate, wait) = (self.gate.clone(), self.wait);
        let size = entry.len() as u64;
        self.handle.spawn(async move {
            // Throttling, 5xx and dropped connections are tried again (the SDK's attempts
            // first, then here with backoff, the same client token each time) while the
            // lease lasts and the caller waits.
            let until = tokio::time::Instant::now() + wait;
            let mut backoff = Duration::from_millis(25);
            let r = loop {
                let r = table.append(&me, fencing, seq, &entry).await;
                match &r {
                    Err(AppendError::Failed(e))
                        if e.transient()
                            && gate.may_act()
                            && tokio::time::Instant::now() + backoff < until =>
                    {
                        tracing::warn!(event = "ha_write_retry", seq, error = %e, "the HA table did not take a state write; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(400));
                    }
                    _ => break r,
                }
            };
            let _ = tx.send(r);
        });
        let r = match rx.recv_timeout(self.wait + Duration::from_millis(100)) {
            Ok(Ok(())) => {
                self.appended
                    .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(AppendError::Deposed(why))) => {
                self.gate.revoke();
                why
            }
            Ok(Err(AppendError::Failed(e))) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.wait.as_millis()),
        };
        self.demote.cancel();
        Err(r)
    }
}

/// Applies the table's log after this file's last entry; returns the last entry applied. A
/// snapshot newer than this file is restored first (the log before it may be compacted away).
async fn tail<T: HaLog>(table: &T, store: &Arc<Store>) -> Result<u64, String> {
    let at = state::off_loop(store, |s| s.applied_seq())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(snap) = table.latest_snapshot().await.map_err(|e| e.to_string())? {
        if snap.seq > at {
            restore(table, store, snap.seq, snap.parts).await?;
        }
    }
    let at = state::off_loop(store, |s| s.applied_seq())
        .await
        .map_err(|e| e.to_string())?;
    let entries = table.read_log(at).await.map_err(|e| e.to_string())?;
    state::off_loop(store, move |s| {
        for (seq, e) in entries {
            s.apply_entry(seq, &e)?;
        }
        s.applied_seq()
    })
    .await
    .map_err(|e| format!("cannot apply the HA log to {}: {e}", store.path().display()))
}

/// Replaces this file's state with snapshot `seq` from the table.
async fn restore<T: HaLog>(
    table: &T,
    store: &Arc<Store>,
    seq: u64,
    parts: usize,
) -> Result<(), String> {
    use std::io::Read;
    let data = table
        .read_snapshot(seq, parts)
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .map_err(|e| format!("HA snapshot {seq} does not inflate: {e}"))?;
    let path = store.path().with_extension("restore");
    std::fs::write(&path, &raw).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let p2 = path.clone();
    let r = state::off_loop(store, move |s| s.restore_from(&p2, seq)).await;
    let _ = std::fs::remove_file(&path);
    r.map_err(|e| format!("cannot restore HA snapshot {seq}: {e}"))?;
    events::ha_snapshot_restored(table.name(), seq, data.len());
    Ok(())
}

/// How often the leader looks whether to compact the log, and the least log it compacts.
/// `MLOPSD_HA_COMPACT_SECS` (a test hook) sets the period and compacts any log.
fn compact_policy() -> (Duration, u64) {
    match std::env::var("MLOPSD_HA_COMPACT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(s) => (Duration::from_secs(s), 1),
        None => (Duration::from_secs(600), 64 * 1024),
    }
}

/// The leader's compaction: once the log written since the last snapshot is at least as big
/// as that snapshot (so compaction at most doubles what is written), a snapshot of this file
/// is stored and the log before it deleted. Standbys behind it restore the snapshot.
async fn compact_loop<T: HaLog>(
    table: T,
    store: Arc<Store>,
    appended: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let (every, min_bytes) = compact_policy();
    let mut last_bytes = match table.latest_snapshot().await {
        Ok(Some(snap)) => snap.bytes,
        _ => 0,
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let since = appended.load(Ordering::Relaxed);
        if since < last_bytes.max(min_bytes) {
            continue;
        }
        let path = store.path().with_extension("snapshot");
        let p2 = path.clone();
        let seq = match state::off_loop(&store, move |s| s.snapshot_to(&p2)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = "ha_snapshot_failed", error = %e, "cannot snapshot the state for compaction");
                continue;
            }
        };
        let data = std::fs::read(&path).and_then(|raw| {
            let mut z =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&raw)?;
            z.finish()
        });
        let _ = std::fs::remove_file(&path);
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(event = "ha_snapshot_failed", error = %e, "cannot read the snapshot");
                continue;
            }
        };
        if stop.is_cancelled() {
            return;
        }
        match table.put_snapshot(seq, &data).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(event = "ha_snapshot_failed", error = %e, "cannot store the snapshot; the log is kept");
                continue;
            }
        }
        appended.fetch_sub(since, Ordering::Relaxed);
        last_bytes = data.len() as u64;
        match table.compact_through(seq).await {
            Ok(n) => events::ha_compacted(table.name(), seq, data.len(), n),
            Err(e) => {
                tracing::warn!(event = "ha_compact_failed", error = %e, "cannot delete the log before the snapshot; retried at the next one")
            }
        }
    }
}

enum Phase {
    Stop(&'static str),
    Lead(u64),
}

/// Runs this replica until `shutdown` (or SIGTERM/SIGINT): a standby, and the leader while it
/// holds the lease.
pub(super) async fn run<C: Cloud, T: HaLog>(
    base: &Base,
    loaded: &mut Loaded,
    cloud: C,
    table: T,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let table_name = table.name().to_string();
    let table_name = table_name.as_str();
    // The leader's store writes wait (blocking their thread) for a task on the runtime's
    // workers: a single-threaded runtime would wait for itself.
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return Err(RunError::Other(
            "daemon.ha_table needs the multi-threaded runtime (as `mlopsd run` builds it)".into(),
        ));
    }
    let cfg = loaded.cfg.clone();
    table.check().await.map_err(RunError::Ha)?;
    let last = table
        .last_seq()
        .await
        .map_err(|e| RunError::Ha(HaCheckError::Unreachable(e.to_string())))?;
    let applied = base
        .store
        .applied_seq()
        .map_err(|e| RunError::Other(e.to_string()))?;
    if applied > last {
        return Err(RunError::Other(format!(
            "the local replica {} has HA log entry {applied} but the table \"{table_name}\" ends at {last}: the table was recreated or is another one; move {} aside to start this replica from the table",
            base.store.path().display(),
            base.store.path().parent().map(|p| p.display().to_string()).unwrap_or_default()
        )));
    }
    let me = replica_id();
    let lease = cfg.daemon.ha_lease;
    table.set_config_hash(&loaded.hash);
    base.health.set_ha(HaInfo {
        table: table_name.to_string(),
        replica: me.clone(),
        role: "standby",
        leader: None,
        fencing: None,
        lease,
        lease_changed: None,
        applied_seq: applied,
        contact: Some(std::time::Instant::now()),
        contact_error: None,
        log_error: None,
        started: std::time::Instant::now(),
        config_hash: loaded.hash.clone(),
        leader_config_hash: None,
        role_since: base.clock.now(),
    });
    crate::metrics::get().leader.set(0);
    base.store.set_repl(Repl::Standby);
    let gate = Arc::new(ActGate::default());
    let cloud = Gated::new(cloud, gate.clone());
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let stop_lease = CancellationToken::new();
    let abstain = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = Watched {
        table: table.clone(),
        me: me.clone(),
        lease,
        gate: gate.clone(),
        health: base.health.clone(),
        last: Arc::default(),
        abstain: abstain.clone(),
    };
    let driver = tokio::spawn(lease::drive(
        watched,
        me.clone(),
        lease,
        changes_tx,
        stop_lease.clone(),
    ));
    // The driver's changes, as "leading with this fencing number" or not.
    let (lead_tx, mut lead_rx) = tokio::sync::watch::channel::<Option<u64>>(None);
    let (health, gate2, me2, tname) = (
        base.health.clone(),
        gate.clone(),
        me.clone(),
        table_name.to_string(),
    );
    let roles = tokio::spawn(async move {
        while let Some(c) = changes.recv().await {
            match c {
                Change::Leading { fencing } => {
                    let _ = lead_tx.send(Some(fencing));
                }
                Change::SteppedDown { reason } => {
                    gate2.revoke();
                    let _ = lead_tx.send(None);
                    events::ha_stepped_down(&tname, &me2, &reason);
                }
                Change::Following { leader, fencing } => {
                    let _ = lead_tx.send(None);
                    health.update_ha(|i| {
                        i.leader = Some(leader.clone());
                        i.fencing = Some(fencing);
                    });
                    events::ha_following(&tname, &me2, &leader, fencing);
                }
            }
        }
    });
    systemd::ready("standby");
    events::daemon_ready(base.store.path(), 0);
    let mut announced: Option<u64> = None;
    let outcome = loop {
        let fencing = match standby(
            base,
            loaded,
            &table,
            &gate,
            &abstain,
            &mut lead_rx,
            shutdown,
        )
        .await?
        {
            Phase::Stop(reason) => break reason,
            Phase::Lead(f) => f,
        };
        // Catch up with the log to its end: the lease is ours, so nothing can be added to it
        // by an older leader any more.
        let applied = loop {
            match tail(&table, &base.store).await {
                Ok(a) => break Some(a),
                Err(e) => {
                    // Not caught up: the lease is not renewed meanwhile (another replica that
                    // can follow the log may lead); retried until the lease lapses.
                    abstain.store(true, std::sync::atomic::Ordering::SeqCst);
                    base.health.update_ha(|i| i.log_error = Some(e.clone()));
                    events::ha_table_unreachable(table_name, &e);
                    if !gate.may_act() || shutdown.is_cancelled() {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        if applied.is_none() {
            // Leading without the whole log is never done: the lease is left for another.
            gate.revoke();
            continue;
        }
        abstain.store(false, std::sync::atomic::Ordering::SeqCst);
        base.health.update_ha(|i| i.log_error = None);
        let Some(applied) = applied else { continue };
        let demote = CancellationToken::new();
        let appended = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let compactor = tokio::spawn(compact_loop(
            table.clone(),
            base.store.clone(),
            appended.clone(),
            demote.clone(),
        ));
        base.store.set_repl(Repl::Leader(Arc::new(Sink {
            table: table.clone(),
            me: me.clone(),
            fencing,
            gate: gate.clone(),
            demote: demote.clone(),
            handle: tokio::runtime::Handle::current(),
            wait: lease / 2,
            appended,
        })));
        // Any change of the driver's answer ends this leadership.
        let mut rx = lead_rx.clone();
        let d2 = demote.clone();
        let watcher = tokio::spawn(async move {
            loop {
                if *rx.borrow_and_update() != Some(fencing) {
                    d2.cancel();
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { d2.cancel(); return; },
                    _ = d2.cancelled() => return,
                }
            }
        });
        let prev = base.health.ha().and_then(|i| i.leader).filter(|l| *l != me);
        base.health.update_ha(|i| {
            i.role = "leader";
            i.leader = Some(me.clone());
            i.fencing = Some(fencing);
            i.applied_seq = applied;
            i.role_since = base.clock.now();
        });
        crate::metrics::get().leader.set(1);
        events::ha_leading(table_name, &me, fencing, applied, prev.as_deref());
        // Once per leadership: leading again with the same fencing number (after a write
        // that failed) is no change of leader.
        if announced != Some(fencing) {
            leader_changed(base, loaded, &me, fencing, prev.as_deref());
            announced = Some(fencing);
        }
        let r = active(base, loaded, cloud.clone(), shutdown, Some(demote.clone())).await;
        demote.cancel();
        let _ = watcher.await;
        compactor.abort();
        base.store.set_repl(Repl::Standby);
        crate::metrics::get().leader.set(0);
        let now = base.clock.now();
        base.health.update_ha(|i| {
            i.role = "standby";
            i.role_since = now;
            if i.leader.as_deref() == Some(me.as_str()) {
                i.leader = None;
            }
        });
        match r? {
            Ended::Stopped => {
                // Nothing more is done: the lease is given up for a standby to take at once.
                gate.revoke();
                stop_lease.cancel();
                let _ = driver.await;
                roles.abort();
                return Ok(());
            }
            Ended::Demoted => {
                events::ha_stepped_down(table_name, &me, "the control loop stopped");
                systemd::ready("standby");
                // A write that failed while the lease is still ours: let the table settle.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    systemd::stopping();
    events::daemon_stopping(outcome);
    gate.revoke();
    stop_lease.cancel();
    let _ = driver.await;
    roles.abort();
    events::daemon_stopped(true);
    Ok(())
}

/// Queues `leader_changed` for `ha_notify` (default: every notifier), the first write of the
/// new leader.
fn leader_changed(base: &Base, loaded: &Loaded, me: &str, fencing: u64, previous: Option<&str>) {
    let cfg = &loaded.cfg;
    let now = base.clock.now();
    let m = Message::new("leader_changed", "ha", None, &format!("ha-{fencing}"))
        .with("leader", me)
        .with("fencing", fencing)
        .with("previous", previous.unwrap_or("none"))
        .with("table", cfg.daemon.ha_table.as_deref().unwrap_or_default());
    let to: Vec<&String> = match &cfg.daemon.ha_notify {
        Some(names) => names.iter().collect(),
        None => cfg.notifiers.keys().collect(),
    };
    for name in to {
        let Some(nc) = cfg.notifiers.get(name) else {
            continue;
        };
        let (subject, body) = notify::render(nc, &m);
        let out = Outgoing {
            notifier: name,
            topic_arn: &nc.topic_arn,
            event: &m.event,
            rule: "ha",
            check: None,
            correlation_id: &m.correlation_id,
            subject: &subject,
            body: &body,
            // Each leader's notice goes out, however soon after the last.
            repeat_interval: Duration::ZERO,
        };
        if let Err(e) = base.store.enqueue(&out, now) {
            tracing::warn!(event = "ha_notice_failed", notifier = %name, error = %e, "cannot queue leader_changed");
        }
    }
}

/// A standby until this replica leads (`Phase::Lead`) or is asked to stop.
async fn standby<T: HaLog>(
    base: &Base,
    loaded: &mut Loaded,
    table: &T,
    gate: &Arc<ActGate>,
    abstain: &std::sync::atomic::AtomicBool,
    lead_rx: &mut tokio::sync::watch::Receiver<Option<u64>>,
    shutdown: &CancellationToken,
) -> Result<Phase, RunError> {
    let (mut hup, mut term, mut int) = super::signals()?;
    let (file_tx, mut file_rx) = mpsc::channel::<watch::Change>(64);
    let mut watcher = watch::Watch::new(&base.path, file_tx).ok();
    if let Some(w) = watcher.as_mut() {
        w.set_extra(&config::definition_files(&loaded.cfg));
    }
    let lease = loaded.cfg.daemon.ha_lease;
    let mut tail_tick = tokio::time::interval(lease / 3);
    tail_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat_tick = tokio::time::interval(Duration::from_secs(5));
    let mut reload_at: Option<tokio::time::Instant> = None;
    let mut told_differs: Option<String> = None;
    loop {
        let now = base.clock.now();
        base.heartbeat
            .store(now.timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = *lead_rx.borrow_and_update() {
            if gate.may_act() {
                return Ok(Phase::Lead(f));
            }
        }
        if let Some(i) = base.health.ha() {
            if i.config_differs() {
                let theirs = i.leader_config_hash.clone().unwrap_or_default();
                if told_differs.as_deref() != Some(theirs.as_str()) {
                    events::ha_config_differs(
                        i.leader.as_deref().unwrap_or("?"),
                        &theirs,
                        &i.config_hash,
                    );
                    told_differs = Some(theirs);
                }
            } else {
                told_differs = None;
            }
        }
        let debounce = async {
            match reload_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Phase::Stop("requested")),
            _ = term.recv() => return Ok(Phase::Stop("SIGTERM")),
            _ = int.recv() => return Ok(Phase::Stop("SIGINT")),
            _ = hup.recv() => reload(base, loaded, table, "signal", watcher.as_mut()),
            Some(change) = file_rx.recv() => match change {
                watch::Change::Settled => reload_at = Some(tokio::time::Instant::now() + SETTLE),
                watch::Change::Busy => reload_at = Some(tokio::time::Instant::now() + DEBOUNCE),
            },
            _ = debounce => {
                reload_at = None;
                reload(base, loaded, table, "file", watcher.as_mut());
            }
            r = lead_rx.changed() => if r.is_err() {
                return Err(RunError::Other("the HA lease driver stopped".into()));
            },
            _ = tail_tick.tick() => match tail(table, &base.store).await {
                Ok(seq) => {
                    abstain.store(false, std::sync::atomic::Ordering::SeqCst);
                    base.health.update_ha(|i| {
                        i.applied_seq = seq;
                        i.log_error = None;
                    });
                }
                Err(e) => {
                    // A replica that cannot follow the log must not lead from a stale file.
                    abstain.store(true, std::sync::atomic::Ordering::SeqCst);
                    base.health.update_ha(|i| i.log_error = Some(e.clone()));
                    events::ha_table_unreachable(table.name(), &e);
                }
            },
            _ = heartbeat_tick.tick() => {}
        }
    }
}

/// A standby's reload: the whole file validated, kept if good, shown on `/status`.
fn reload<T: HaLog>(
    base: &Base,
    loaded: &mut Loaded,
    table: &T,
    trigger: &str,
    watcher: Option<&mut watch::Watch>,
) {
    let t0 = std::time::Instant::now();
    let now = base.clock.now();
    let r = config::read_text(&base.path).and_then(|text| {
        config::parse_reusing(&text, &base.path, Some(&loaded.cfg)).map(|cfg| {
            let hash = config::config_hash(&text, &cfg);
            (cfg, hash, config::blocks::Index::of(&text))
        })
    });
    let info = match r {
        Err(e) => {
            events::config_reload_rejected(&base.path, trigger, &e);
            super::reload_outcome(now, trigger, Some(e.to_string()))
        }
        Ok((cfg, hash, index)) => {
            let diff = ConfigDiff::new(&loaded.cfg, &cfg);
            if diff.is_empty() {
                events::config_reload_unchanged(&base.path, &hash, trigger);
            } else {
                events::config_reload_accepted(
                    &base.path,
                    &hash,
                    trigger,
                    &diff,
                    t0.elapsed(),
                    false,
                );
            }
            loaded.cfg = Arc::new(cfg);
            loaded.index = index;
            loaded.hash = hash.clone();
            table.set_config_hash(&hash);
            base.health.update_ha(|i| i.config_hash = hash);
            super::reload_outcome(now, trigger, None)
        }
    };
    if let Some(w) = watcher {
        w.set_extra(&config::definition_files(&loaded.cfg));
    }
    super::publish_view(&base.view, &loaded.cfg, &loaded.hash, info, now);
    systemd::ready("standby");
}
