//! High availability (`daemon.ha_table`): N replicas on one DynamoDB table, one leader.
//!
//! Each replica runs the lease driver (`lease::drive`) against the table. A standby
//! (`standby`) keeps the config validated and hot-reloaded, serves HTTP, and applies the
//! table's log to its local file (`log`). When the driver reports that this replica leads, it
//! catches up with the log to its end (after taking the lease, so no older leader can add to
//! it), makes the store append every write to the log conditioned on its fencing number
//! (`table::Sink`), queues `leader_changed`, and runs the same control loop as a single
//! machine (`event_loop::active`), which re-drives decided starts, follows started runs and
//! sends queued notifications from the state it caught up with. A step-down (the lease could
//! not be renewed in time, another replica took it, or a state write was refused or left
//! without answer) stops that loop at once and makes the replica a standby again.

mod log;
mod standby;
mod table;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::event_loop::active;
use super::{systemd, Base, Ended, Loaded, RunError};
use crate::cloud::{ActGate, Cloud, Gated, HaCheckError, HaLog};
use crate::events;
use crate::health::{HaInfo, Role};
use crate::lease::{self, Change};
use crate::notify::{self, Kind, Message};
use crate::state::{Outgoing, Repl};
use standby::Phase;
use table::{Sink, Watched};

/// This replica's id on the lease item: `MLOPSD_REPLICA_ID`, else `host:pid`.
fn replica_id() -> String {
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

/// This replica's side of HA: its table, its leader gate, the lease driver and the driver's
/// answer ("leading with this fencing number" or not).
pub(super) struct Replica<T> {
    table: T,
    me: String,
    lease: Duration,
    gate: Arc<ActGate>,
    /// Set while this replica cannot follow the log: it does not take, or keep, the lease.
    abstain: Arc<AtomicBool>,
    lead: watch::Receiver<Option<u64>>,
    stop_lease: CancellationToken,
    driver: JoinHandle<()>,
    roles: JoinHandle<()>,
    /// The fencing number `leader_changed` was last queued for.
    announced: Option<u64>,
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
    // The leader's store writes wait (blocking their thread) for a task on the runtime's
    // workers: a single-threaded runtime would wait for itself.
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return Err(RunError::Other(
            "daemon.ha_table needs the multi-threaded runtime (as `mlopsd run` builds it)".into(),
        ));
    }
    let mut replica = Replica::start(base, loaded, table).await?;
    let cloud = Gated::new(cloud, replica.gate.clone());
    systemd::ready("standby");
    events::daemon_ready(base.store.path(), 0);
    let exit = loop {
        let fencing = match standby::run(base, loaded, &mut replica, shutdown).await? {
            Phase::Stop(exit) => break exit,
            Phase::Lead(f) => f,
        };
        if replica
            .lead(base, loaded, &cloud, fencing, shutdown)
            .await?
            == Some(Ended::Stopped)
        {
            // Nothing more is done: the lease is given up for a standby to take at once.
            replica.stop().await;
            return Ok(());
        }
    };
    systemd::stopping();
    events::daemon_stopping(exit.as_str());
    replica.stop().await;
    events::daemon_stopped(true);
    Ok(())
}

impl<T: HaLog> Replica<T> {
    /// Checks the table and this replica's file against it, and starts the lease driver.
    async fn start(base: &Base, loaded: &Loaded, table: T) -> Result<Replica<T>, RunError> {
        let name = table.name().to_string();
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
                "the local replica {} has HA log entry {applied} but the table \"{name}\" ends at {last}: the table was recreated or is another one; move {} aside to start this replica from the table",
                base.store.path().display(),
                base.store.path().parent().map(|p| p.display().to_string()).unwrap_or_default()
            )));
        }
        let me = replica_id();
        let lease = loaded.cfg.daemon.ha_lease;
        table.set_config_hash(&loaded.hash);
        base.health.set_ha(HaInfo {
            table: name.clone(),
            replica: me.clone(),
            role: Role::Standby {
                leader: None,
                fencing: 0,
            },
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
        let abstain = Arc::new(AtomicBool::new(false));
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let stop_lease = CancellationToken::new();
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
        let (lead_tx, lead) = watch::channel::<Option<u64>>(None);
        let roles = tokio::spawn(roles(
            changes,
            lead_tx,
            base.health.clone(),
            gate.clone(),
            name,
            me.clone(),
        ));
        Ok(Replica {
            table,
            me,
            lease,
            gate,
            abstain,
            lead,
            stop_lease,
            driver,
            roles,
            announced: None,
        })
    }

    fn abstain(&self, on: bool) {
        self.abstain.store(on, Ordering::SeqCst);
    }

    /// Leads while the lease is ours: catches up with the log, then runs the control loop.
    /// `None`: the log could not be followed, so this replica did not lead.
    async fn lead<C: Cloud>(
        &mut self,
        base: &Base,
        loaded: &mut Loaded,
        cloud: &Gated<C>,
        fencing: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<Ended>, RunError> {
        let Some(applied) = self.catch_up(base, shutdown).await else {
            // Leading without the whole log is never done: the lease is left for another.
            self.gate.revoke();
            return Ok(None);
        };
        let demote = CancellationToken::new();
        let appended = Arc::new(AtomicU64::new(0));
        let compactor = tokio::spawn(log::compact_loop(
            self.table.clone(),
            base.store.clone(),
            appended.clone(),
            demote.clone(),
        ));
        base.store.set_repl(Repl::Leader(Arc::new(Sink {
            table: self.table.clone(),
            me: self.me.clone(),
            fencing,
            gate: self.gate.clone(),
            demote: demote.clone(),
            handle: tokio::runtime::Handle::current(),
            wait: self.lease / 2,
            appended,
        })));
        let watcher = tokio::spawn(demote_on_change(self.lead.clone(), fencing, demote.clone()));
        let prev = base
            .health
            .ha()
            .and_then(|i| i.leader().map(str::to_string))
            .filter(|l| *l != self.me);
        base.health.update_ha(|i| {
            i.role = Role::Leader { fencing };
            i.applied_seq = applied;
            i.role_since = base.clock.now();
        });
        crate::metrics::get().leader.set(1);
        events::ha_leading(
            self.table.name(),
            &self.me,
            fencing,
            applied,
            prev.as_deref(),
        );
        // Once per leadership: leading again with the same fencing number (after a write
        // that failed) is no change of leader.
        if self.announced != Some(fencing) {
            leader_changed(base, loaded, &self.me, fencing, prev.as_deref());
            self.announced = Some(fencing);
        }
        let r = active(base, loaded, cloud.clone(), shutdown, Some(demote.clone())).await;
        demote.cancel();
        let _ = watcher.await;
        compactor.abort();
        base.store.set_repl(Repl::Standby);
        crate::metrics::get().leader.set(0);
        let now = base.clock.now();
        base.health.update_ha(|i| {
            i.role = Role::Standby {
                leader: None,
                fencing,
            };
            i.role_since = now;
        });
        let ended = r?;
        if ended == Ended::Demoted {
            events::ha_stepped_down(self.table.name(), &self.me, "the control loop stopped");
            systemd::ready("standby");
            // A write that failed while the lease is still ours: let the table settle.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(Some(ended))
    }

    /// Catches up with the log to its end: the lease is ours, so nothing can be added to it
    /// by an older leader any more. Not caught up, the lease is not renewed meanwhile
    /// (another replica that can follow the log may lead); retried until the lease lapses.
    async fn catch_up(&self, base: &Base, shutdown: &CancellationToken) -> Option<u64> {
        loop {
            match log::tail(&self.table, &base.store).await {
                Ok(applied) => {
                    self.abstain(false);
                    base.health.update_ha(|i| i.log_error = None);
                    return Some(applied);
                }
                Err(e) => {
                    self.abstain(true);
                    base.health.update_ha(|i| i.log_error = Some(e.clone()));
                    events::ha_table_unreachable(self.table.name(), &e);
                    if !self.gate.may_act() || shutdown.is_cancelled() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Stops acting and gives the lease up (the driver releases it) for a standby to take.
    async fn stop(self) {
        self.gate.revoke();
        self.stop_lease.cancel();
        let _ = self.driver.await;
        self.roles.abort();
    }
}

/// The driver's changes, as "leading with this fencing number" or not, with what they tell.
async fn roles(
    mut changes: mpsc::UnboundedReceiver<Change>,
    lead: watch::Sender<Option<u64>>,
    health: Arc<crate::health::Health>,
    gate: Arc<ActGate>,
    table: String,
    me: String,
) {
    while let Some(c) = changes.recv().await {
        match c {
            Change::Leading { fencing } => {
                let _ = lead.send(Some(fencing));
            }
            Change::SteppedDown { reason } => {
                gate.revoke();
                let _ = lead.send(None);
                events::ha_stepped_down(&table, &me, &reason);
            }
            Change::Following { leader, fencing } => {
                let _ = lead.send(None);
                health.update_ha(|i| i.saw_leader(&leader, fencing));
                events::ha_following(&table, &me, &leader, fencing);
            }
        }
    }
}

/// Cancels `demote` once the driver's answer is no longer "leading with `fencing`".
async fn demote_on_change(
    mut lead: watch::Receiver<Option<u64>>,
    fencing: u64,
    demote: CancellationToken,
) {
    loop {
        if *lead.borrow_and_update() != Some(fencing) {
            demote.cancel();
            return;
        }
        tokio::select! {
            r = lead.changed() => if r.is_err() { demote.cancel(); return; },
            _ = demote.cancelled() => return,
        }
    }
}

/// Queues `leader_changed` for `ha_notify` (default: every notifier), the first write of the
/// new leader.
fn leader_changed(base: &Base, loaded: &Loaded, me: &str, fencing: u64, previous: Option<&str>) {
    let cfg = &loaded.cfg;
    let now = base.clock.now();
    let m = Message::new(Kind::LeaderChanged, "ha", None, &format!("ha-{fencing}"))
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
            event: m.kind.as_str(),
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
