//! The daemon: one control loop over a closed set of events (timer due, config changed,
//! SIGHUP, shutdown). It owns the config, the timer table and the state store handle.

mod checks;
mod declared;
mod gates;
mod ha;
mod inbound;
mod notices;
mod outbox;
mod rules;
mod runs;
pub mod systemd;
pub mod timer;
pub mod watch;
pub mod work;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aws::{Aws, HaTable};
use crate::clock::{ts, Clock};
use crate::cloud::{Cloud, Gated, HaCheckError, Identity as _};
use crate::config::diff::ConfigDiff;
use crate::config::{self, CatchUp, Config, ConfigError, ItemKind, Trigger};
use crate::events;
use crate::health::Health;
use crate::http;
use crate::state::{StateError, Store};
use timer::Timer;
use work::{Cause, Msg, Parts, Work};

/// Why `run` returned with an error, and the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Listen(String),
    #[error("{0}")]
    Ha(HaCheckError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => crate::exit::CONFIG,
            RunError::State(s) => s.exit_code(),
            RunError::Listen(_) => crate::exit::UNAVAILABLE,
            RunError::Ha(e) => e.exit_code(),
            RunError::Other(_) => crate::exit::FAILED,
        }
    }
}

/// The longest the loop sleeps without looking at the clock again (wall-clock jumps, watchdog).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Most check results evaluated in one turn of the loop (~30 ms of work at 10,000 checks).
const CHECK_SLICE: usize = 1000;
/// Wait after a data change with no close yet (a writer still busy) before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Wait after a close-after-write or rename, to fold a burst of events into one reload.
const SETTLE: Duration = Duration::from_millis(5);

struct Daemon<C> {
    path: PathBuf,
    cfg: Arc<Config>,
    /// Block hashes of the text `cfg` was loaded from, for fast reloads of small edits
    /// (`None`: the file is not plain enough; every reload is a full one).
    index: Option<config::blocks::Index>,
    hash: String,
    store: Arc<Store>,
    timer: Timer,
    tracker: TaskTracker,
    clock: Clock,
    work: Work<C>,
    view: tokio::sync::watch::Sender<Arc<http::View>>,
}

/// Runs the daemon until `shutdown` is cancelled or SIGTERM/SIGINT arrives. `main` runs it with
/// `Runtime::block_on`, so the loop turns on the main thread, not on an async worker: its
/// synchronous store calls (each commit `synchronous=FULL`) hold only the loop. Spawned AWS
/// calls, HTTP and the outbox run on the workers and reach the store through `state::off_loop`.
pub async fn run(path: PathBuf, shutdown: CancellationToken) -> Result<(), RunError> {
    let connect = |cfg: config::AwsConfig| async move {
        let aws = Aws::new(&cfg).await;
        tracing::info!(event = "aws_configured", region = %aws.region(), endpoint = %cfg.endpoint_url.clone().unwrap_or_else(|| "default".into()), max_attempts = cfg.max_attempts, "AWS clients ready");
        aws
    };
    run_with(path, Clock::System, connect, shutdown).await
}

/// What lives for the whole process, across roles (HA): the store, HTTP's view and health.
pub(crate) struct Base {
    path: PathBuf,
    clock: Clock,
    store: Arc<Store>,
    view: tokio::sync::watch::Sender<Arc<http::View>>,
    heartbeat: Arc<std::sync::atomic::AtomicI64>,
    health: Arc<Health>,
}

/// The config as loaded, kept across roles.
pub(crate) struct Loaded {
    cfg: Arc<Config>,
    /// Block hashes of the text `cfg` was loaded from, for fast reloads of small edits.
    index: Option<config::blocks::Index>,
    hash: String,
}

/// Why the active loop returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Asked to stop (a signal or `shutdown`): the process ends.
    Stopped,
    /// This replica stopped leading (HA): it goes back to being a standby.
    Demoted,
}

/// `run` with the clock and the AWS side given (`connect` gets `[aws]` once the config is
/// loaded): a test drives the real loop on paused time against an in-memory `Cloud`.
pub async fn run_with<C, F, Fut>(
    path: PathBuf,
    clock: Clock,
    connect: F,
    shutdown: CancellationToken,
) -> Result<(), RunError>
where
    C: Cloud,
    F: FnOnce(config::AwsConfig) -> Fut,
    Fut: std::future::Future<Output = C>,
{
    let text = config::read_text(&path).map_err(RunError::Config)?;
    let cfg = config::parse(&text, &path).map_err(RunError::Config)?;
    let hash = config::config_hash(&text, &cfg);
    events::config_loaded(&path, &hash, &cfg);
    // With HA the local file is a replica of the table's log, kept apart from a
    // single-machine store in the same state_dir.
    let store_dir = match &cfg.daemon.ha_table {
        None => cfg.daemon.state_dir.clone(),
        Some(t) => cfg.daemon.state_dir.join(format!("ha-{t}")),
    };
    let store = Arc::new(Store::open(&store_dir)?);
    let cloud = connect(cfg.aws.clone()).await;

    let listener = tokio::net::TcpListener::bind(cfg.daemon.listen).await.map_err(|e| {
        RunError::Listen(format!("cannot serve HTTP on {} (daemon.listen): {e}; change `listen` or stop what holds the port", cfg.daemon.listen))
    })?;
    let http_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();

    let m = crate::metrics::get();
    let now = clock.now();
    m.last_reload_ok.set(1);
    m.last_reload_success_ts
        .set(now.timestamp_millis() as f64 / 1000.0);
    m.up_since.set(now.timestamp_millis() as f64 / 1000.0);
    set_threshold_gauges(&cfg);

    let cfg = Arc::new(cfg);
    let (view, view_rx) = tokio::sync::watch::channel(Arc::new(http::View {
        cfg: cfg.clone(),
        path: path.display().to_string(),
        hash: hash.clone(),
        loaded_at: now,
        last_reload: None,
    }));
    let heartbeat = Arc::new(std::sync::atomic::AtomicI64::new(now.timestamp_millis()));
    let health = Arc::new(Health::default());
    let http_tracker = TaskTracker::new();
    let stop_http = CancellationToken::new();
    let hs = http::HttpState {
        view: view_rx,
        store: store.clone(),
        heartbeat: heartbeat.clone(),
        health: health.clone(),
        clock,
    };
    http_tracker.spawn(http::serve(listener, hs, stop_http.clone()));
    tracing::info!(event = "http_listening", addr = %http_addr, "status server listening (/, /status, /metrics, /healthz)");
    let base = Base {
        path,
        clock,
        store,
        view,
        heartbeat,
        health,
    };
    let mut loaded = Loaded {
        cfg,
        index: config::blocks::Index::of(&text),
        hash,
    };
    drop(text);
    let r = match loaded.cfg.daemon.ha_table.clone() {
        None => {
            m.leader.set(1);
            active(&base, &mut loaded, Gated::open(cloud), &shutdown, None)
                .await
                .map(|_| ())
        }
        Some(table) => {
            let table = HaTable::new(&loaded.cfg.aws, &table).await;
            ha::run(&base, &mut loaded, cloud, table, &shutdown).await
        }
    };
    stop_http.cancel();
    http_tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), http_tracker.wait()).await;
    r
}

/// The control loop of a single machine or of the HA leader: evaluates, decides, starts and
/// publishes until `shutdown` (or, for an HA leader, `demote`).
pub(crate) async fn active<C: Cloud>(
    base: &Base,
    loaded: &mut Loaded,
    cloud: Gated<C>,
    shutdown: &CancellationToken,
    demote: Option<CancellationToken>,
) -> Result<Ended, RunError> {
    let clock = base.clock;
    let path = base.path.clone();
    let store = base.store.clone();
    let cfg = loaded.cfg.clone();
    let heartbeat = base.heartbeat.clone();
    let health = base.health.clone();
    let tracker = TaskTracker::new();
    let demote = demote.unwrap_or_default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let consumer = cfg.events.as_ref().map(|ev| inbound::Consumer {
        cloud: cloud.clone(),
        queue_url: ev.queue_url.clone(),
        tx: tx.clone(),
        health: health.clone(),
        clock,
    });
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let store_id = store.store_id().map_err(|source| {
        RunError::State(StateError::Sqlite {
            path: store.path().to_path_buf(),
            source,
        })
    })?;
    let work = Work::new(Parts {
        cfg: cfg.clone(),
        store: store.clone(),
        cloud: cloud.clone(),
        clock,
        tx,
        tracker: tracker.clone(),
        outbox_wake: outbox_wake.clone(),
        health: health.clone(),
        store_id,
    });
    let mut d = Daemon {
        path: path.clone(),
        cfg,
        index: loaded.index.take(),
        hash: loaded.hash.clone(),
        store: store.clone(),
        timer: Timer::default(),
        tracker: tracker.clone(),
        clock,
        work,
        view: base.view.clone(),
    };
    d.schedule_start(clock.now());
    release_memory();
    let stop_sender = CancellationToken::new();
    let sender = outbox::Outbox {
        store: store.clone(),
        cloud,
        clock,
        health,
        wake: outbox_wake.clone(),
    };
    tracker.spawn(sender.run(stop_sender.clone()));
    if let Some(c) = consumer {
        tracing::info!(event = "events_consumer_started", queue_url = %c.queue_url, "reading EventBridge events from the [events] queue");
        tracker.spawn(c.run(stop_sender.clone()));
    }
    // Declared pipelines are compared (and applied) first, so that starts re-driven below
    // for a pipeline being applied wait for its apply.
    d.work.reconcile(None, "start");
    // Resume what a previous run left: decided starts, followed runs, unapplied gates.
    d.work.follow_tick();
    outbox_wake.notify_one();
    let mut poll = tokio::time::interval(d.cfg.daemon.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut reconcile_tick = tokio::time::interval(d.cfg.daemon.reconcile_interval);
    reconcile_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile_tick.tick().await;

    let (file_tx, mut file_rx) = mpsc::channel::<watch::Change>(64);
    // The config file and every definition file it names (kept current across reloads).
    let mut watcher = match watch::Watch::new(&path, file_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot watch the config file; reload with SIGHUP");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        w.set_extra(&config::definition_files(&d.cfg));
    }
    let (mut hup, mut term, mut int) = signals()?;

    let watchdog = systemd::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    systemd::ready("running");
    events::daemon_ready(d.store.path(), d.timer.len());
    // The preflight reads every resource the config names, after READY and beside the
    // schedules: a misspelt name shows on /status before its first use.
    d.work.preflight(crate::doctor::Scope::all());

    let mut reload_at: Option<tokio::time::Instant> = None;
    let mut heartbeat_tick = tokio::time::interval(Duration::from_secs(5));
    let reason = loop {
        let now = clock.now();
        heartbeat.store(now.timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
        let sleep_for = d
            .timer
            .peek()
            .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        let debounce = async {
            match reload_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break "requested",
            _ = demote.cancelled() => break "stepped down",
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                d.reload("signal");
                if let Some(w) = watcher.as_mut() {
                    w.set_extra(&config::definition_files(&d.cfg));
                }
            }
            Some(change) = file_rx.recv() => match change {
                // A writer closed the file or a new file was renamed in: reload now (after a
                // short settle so a burst of such events becomes one reload).
                watch::Change::Settled => reload_at = Some(tokio::time::Instant::now() + SETTLE),
                // Data still being written: wait for quiet (or for the close).
                watch::Change::Busy => reload_at = Some(tokio::time::Instant::now() + DEBOUNCE),
            },
            _ = debounce => {
                reload_at = None;
                d.reload("file");
                if let Some(w) = watcher.as_mut() {
                    w.set_extra(&config::definition_files(&d.cfg));
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog(),
            _ = poll.tick() => d.work.follow_tick(),
            _ = reconcile_tick.tick() => d.work.reconcile(None, "reconcile_interval"),
            _ = heartbeat_tick.tick() => {}
            Some(msg) = rx.recv() => d.handle(msg, false),
            _ = tokio::time::sleep(sleep_for) => d.fire_due(clock.now()),
        }
        if poll.period() != d.cfg.daemon.poll_interval {
            poll = tokio::time::interval(d.cfg.daemon.poll_interval);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll.tick().await;
        }
        if reconcile_tick.period() != d.cfg.daemon.reconcile_interval {
            reconcile_tick = tokio::time::interval(d.cfg.daemon.reconcile_interval);
            reconcile_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            reconcile_tick.tick().await;
        }
    };

    let demoted = demote.is_cancelled() && !shutdown.is_cancelled() && reason == "stepped down";
    // Hand the config back (a standby keeps it, reloads included).
    loaded.cfg = d.cfg.clone();
    loaded.index = d.index.take();
    loaded.hash = d.hash.clone();
    stop_sender.cancel();
    d.tracker.close();
    if demoted {
        // A deposed leader records nothing more (the store refuses its writes); what it was
        // doing is resumed by the new leader from the table. Its tasks (the outbox, calls in
        // flight: AWS refuses the gated ones at once) end before this replica is a standby,
        // so none of them outlives this leadership into a next one.
        let lease = d.cfg.daemon.ha_lease;
        if tokio::time::timeout(lease, d.tracker.wait()).await.is_err() {
            tracing::warn!(
                event = "ha_tasks_left",
                tasks = d.tracker.len(),
                "calls of the old leadership still running after a lease"
            );
        }
        return Ok(Ended::Demoted);
    }
    systemd::stopping();
    events::daemon_stopping(reason);
    let grace = d.cfg.daemon.shutdown_grace;
    // In-flight calls finish within the grace; their answers are still recorded (a started
    // run's ARN), but nothing new is decided.
    let clean = tokio::time::timeout(grace, async {
        let tracker = d.tracker.clone();
        let wait = tracker.wait();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                Some(msg) = rx.recv() => d.handle(msg, true),
            }
        }
        while let Ok(msg) = rx.try_recv() {
            d.handle(msg, true);
        }
    })
    .await
    .is_ok();
    if !clean {
        tracing::warn!(event = "shutdown_grace_exceeded", grace_ms = grace.as_millis() as u64, "in-flight work did not finish within shutdown_grace; it is abandoned and resumes from the state store on the next start");
    }
    if let Err(e) = d.store.checkpoint() {
        tracing::warn!(error = %e, "state store checkpoint at shutdown failed (the WAL keeps the data)");
    }
    events::daemon_stopped(clean);
    Ok(Ended::Stopped)
}

impl<C: Cloud> Daemon<C> {
    /// Puts every scheduled item on the timer at startup, with one catch-up fire for
    /// `catch_up = "once"` rules that missed a fire while the daemon was down.
    fn schedule_start(&mut self, now: DateTime<Utc>) {
        let cfg = self.cfg.clone();
        for (kind, name, timed) in cfg.scheduled() {
            let key = (kind, name.clone());
            let mut next = timed.schedule.next_after(timed.timezone, now);
            if kind == ItemKind::Rule {
                let catch_up = cfg.rules.get(name).map(|r| r.catch_up) == Some(CatchUp::Once);
                if catch_up {
                    let r = self.store.last_fire(kind, name);
                    let last = self
                        .work
                        .db("read the last fire", name, "no catch-up", r)
                        .flatten();
                    if let Some(missed) = last
                        .and_then(|l| timed.schedule.next_after(timed.timezone, l))
                        .filter(|m| *m <= now)
                    {
                        tracing::info!(event = "catch_up", rule = %name, missed = %ts(&missed), "rule missed a fire while mlopsd was down; catching up once");
                        next = Some(now);
                    }
                }
            }
            events::schedule_next(kind.as_str(), name, next.as_ref());
            self.timer.set(key, next);
        }
    }

    /// Handles an AWS call's answer. While shutting down, only answers that record what
    /// already happened are taken; the rest is redone from the store on the next start.
    fn handle(&mut self, msg: Msg, shutting_down: bool) {
        match msg {
            Msg::StartDone { run_id, result } => {
                if shutting_down && result.is_err() {
                    return;
                }
                self.work.on_start_done(run_id, result)
            }
            Msg::GateApplied {
                gate,
                arn,
                approve,
                result,
            } => self.work.on_gate_applied(gate, arn, approve, result),
            // A create or update that went through is recorded even while shutting down.
            Msg::PipelineApplied {
                pipeline,
                sending,
                result,
            } => {
                if shutting_down && result.is_err() {
                    return;
                }
                self.work.on_pipeline_applied(pipeline, sending, result)
            }
            _ if shutting_down => {}
            Msg::CheckResults {
                at,
                mut results,
                large,
            } => {
                // A big batch is taken a slice per turn of the loop: due items, reloads and
                // other answers wait for one slice, not for 10,000 evaluations.
                let rest = (results.len() > CHECK_SLICE).then(|| results.split_off(CHECK_SLICE));
                tracing::debug!(
                    event = "check_results_taken",
                    checks = results.len(),
                    remaining = rest.as_ref().map_or(0, Vec::len),
                    "evaluating a slice of a batch"
                );
                self.work.on_check_results(at, results);
                match rest {
                    Some(rest) => self.work.requeue(Msg::CheckResults {
                        at,
                        results: rest,
                        large,
                    }),
                    // A big batch leaves many freed pages behind; give them back.
                    None if large => release_memory(),
                    None => {}
                }
            }
            Msg::RunStatuses { statuses, poll } => self.work.on_run_statuses(statuses, poll),
            Msg::Events { queue_url, batch } => self.work.on_events(&queue_url, batch),
            Msg::GatePackages { gate, result } => self.work.on_gate_packages(gate, result),
            Msg::Preflight { findings } => self.work.on_preflight(findings),
            Msg::PipelineDescribed { pipeline, result } => {
                self.work.on_pipeline_described(pipeline, result)
            }
        }
    }

    fn fire_due(&mut self, now: DateTime<Utc>) {
        let due = self.timer.pop_due(now);
        if due.is_empty() {
            return;
        }
        let cfg = self.cfg.clone();
        let mut rule_fires = Vec::new();
        let mut checks = Vec::new();
        for ((kind, name), at) in &due {
            events::schedule_fired(kind.as_str(), name, at, &now);
            match kind {
                ItemKind::Rule => rule_fires.push((name.clone(), *at)),
                ItemKind::Check => checks.push(name.clone()),
                ItemKind::Gate => self.work.run_gate(name),
            }
        }
        let (first, last) = (due.first().map(|d| d.1), due.last().map(|d| d.1));
        if let (Some(first), Some(last)) = (first, last) {
            tracing::debug!(
                event = "schedule_batch",
                items = due.len(),
                checks = checks.len(),
                lateness_ms_max = (now - first).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                lateness_ms_min = (now - last).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                "due items popped"
            );
        }
        // All checks due now go out in one batched evaluation.
        self.work.evaluate_checks(checks, now);
        if !rule_fires.is_empty() {
            let r = self.store.record_fires(ItemKind::Rule, &rule_fires);
            self.work.db(
                "record rule fires",
                "",
                "a catch_up = \"once\" rule may catch up a fire it had",
                r,
            );
            for (name, _) in &rule_fires {
                self.work.fire_rule(name, Cause::Schedule);
            }
        }
        // Re-arm each item from the later of its due time and now: missed fires are not replayed.
        for ((kind, name), at) in due {
            if let Some(t) = timed_of(&cfg, kind, &name) {
                let next = t.schedule.next_after(t.timezone, at.max(now));
                events::schedule_next(kind.as_str(), &name, next.as_ref());
                self.timer.set((kind, name), next);
            }
        }
    }

    /// Validates the file whole; applies it as a diff, or keeps the old config.
    fn reload(&mut self, trigger: &str) {
        let t0 = std::time::Instant::now();
        systemd::reloading();
        let m = crate::metrics::get();
        let now = self.clock.now();
        // Small edits of checks, rules or gates re-read only the changed blocks; anything else
        // (and any problem) is a full parse and validation of the file.
        // A definition file that changed (the TOML may not have) needs the full path too.
        let defs_same = config::definitions_unchanged(&self.cfg);
        let loaded = config::read_text(&self.path).and_then(|text| {
            match self
                .index
                .as_ref()
                .filter(|_| defs_same)
                .and_then(|idx| config::blocks::reparse(&self.cfg, idx, &text))
            {
                Some(r) => {
                    let hash = config::config_hash(&text, &r.cfg);
                    Ok((r.cfg, hash, Some(r.index), Some(r.diff)))
                }
                None => config::parse_reusing(&text, &self.path, Some(&self.cfg)).map(|cfg| {
                    let hash = config::config_hash(&text, &cfg);
                    (cfg, hash, config::blocks::Index::of(&text), None)
                }),
            }
        });
        let fast_path = matches!(&loaded, Ok((_, _, _, Some(_))));
        let info = match loaded {
            Err(e) => {
                events::config_reload_rejected(&self.path, trigger, &e);
                reload_outcome(now, trigger, Some(e.to_string()))
            }
            Ok((new, hash, index, fast_diff)) => {
                let fast = fast_diff.is_some();
                let diff = fast_diff.unwrap_or_else(|| ConfigDiff::new(&self.cfg, &new));
                self.index = index;
                if diff.is_empty() {
                    self.hash = hash;
                    events::config_reload_unchanged(&self.path, &self.hash, trigger);
                } else {
                    if fast {
                        for name in &diff.checks.changed {
                            if let Some(c) = new.checks.get(name) {
                                m.check_threshold
                                    .get_or_create(&crate::metrics::check(name))
                                    .set(c.threshold.value());
                            }
                        }
                    } else {
                        set_threshold_gauges(&new);
                    }
                    self.apply(new, &diff, now);
                    self.hash = hash;
                    events::config_reload_accepted(
                        &self.path,
                        &self.hash,
                        trigger,
                        &diff,
                        t0.elapsed(),
                        fast,
                    );
                }
                reload_outcome(now, trigger, None)
            }
        };
        // An HA leader writes its config hash on the lease item (standbys compare theirs).
        self.work
            .health
            .update_ha(|i| i.config_hash = self.hash.clone());
        publish_view(&self.view, &self.cfg, &self.hash, info, now);
        if !fast_path {
            // A full parse leaves its tree behind; a fast reload barely allocates.
            release_memory();
        }
        systemd::ready("running");
    }

    /// Swaps in a new config. Only the diff's items are touched: new or rescheduled ones are
    /// armed from `now`, removed ones (and rules no longer on a schedule) stop, and every
    /// other item keeps its next fire time.
    fn apply(&mut self, new: Config, diff: &ConfigDiff, now: DateTime<Utc>) {
        let old = std::mem::replace(&mut self.cfg, Arc::new(new));
        self.work.set_config(self.cfg.clone());
        // Declared pipelines whose definition or role changed (or that are new) are applied now.
        let state = |c: &Config, n: &str| {
            c.pipelines
                .get(n)
                .and_then(|p| p.declared.as_ref())
                .map(|d| d.state_hash())
        };
        let to_apply: Vec<String> = diff
            .pipelines
            .added
            .iter()
            .chain(&diff.pipelines.changed)
            .filter(|n| state(&self.cfg, n).is_some() && state(&self.cfg, n) != state(&old, n))
            .cloned()
            .collect();
        self.work.reconcile(Some(to_apply), "reload");
        // Items added or changed are read again by the preflight.
        let touched = |d: &config::diff::SectionDiff| {
            Some(d.added.iter().chain(&d.changed).cloned().collect())
        };
        self.work.preflight(crate::doctor::Scope {
            pipelines: touched(&diff.pipelines),
            builds: touched(&diff.builds),
            notifiers: touched(&diff.notifiers),
            checks: touched(&diff.checks),
            gates: touched(&diff.gates),
            events: false,
            skip_declared: true,
        });
        for (kind, section) in [
            (ItemKind::Check, &diff.checks),
            (ItemKind::Rule, &diff.rules),
            (ItemKind::Gate, &diff.gates),
        ] {
            for name in &section.removed {
                self.timer.remove(&(kind, name.clone()));
            }
            for name in section.added.iter().chain(&section.changed) {
                let key = (kind, name.clone());
                match timed_of(&self.cfg, kind, name) {
                    None => self.timer.remove(&key),
                    Some(t)
                        if timed_of(&old, kind, name) == Some(t) && self.timer.contains(&key) => {}
                    Some(t) => {
                        let next = t.schedule.next_after(t.timezone, now);
                        events::schedule_next(kind.as_str(), name, next.as_ref());
                        self.timer.set(key, next);
                    }
                }
            }
        }
    }
}

/// The signals the daemon handles: SIGHUP (reload), SIGTERM and SIGINT (stop).
fn signals() -> Result<
    (
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    ),
    RunError,
> {
    let on = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| RunError::Other(format!("cannot handle {name}: {e}")))
    };
    Ok((
        on(SignalKind::hangup(), "SIGHUP")?,
        on(SignalKind::terminate(), "SIGTERM")?,
        on(SignalKind::interrupt(), "SIGINT")?,
    ))
}

/// A reload's outcome (`error`: why it was rejected), counted in the metrics.
fn reload_outcome(now: DateTime<Utc>, trigger: &str, error: Option<String>) -> http::ReloadInfo {
    let m = crate::metrics::get();
    let ok = error.is_none();
    m.reloads
        .get_or_create(&crate::metrics::ResultL {
            result: if ok { "success" } else { "failure" }.into(),
        })
        .inc();
    m.last_reload_ok.set(i64::from(ok));
    if ok {
        m.last_reload_success_ts
            .set(now.timestamp_millis() as f64 / 1000.0);
    }
    http::ReloadInfo {
        at: now,
        ok,
        trigger: trigger.into(),
        error,
    }
}

/// Shows a reload's outcome on HTTP: the running config (kept when the reload failed), its
/// hash, and what the reload said.
fn publish_view(
    view: &tokio::sync::watch::Sender<Arc<http::View>>,
    cfg: &Arc<Config>,
    hash: &str,
    info: http::ReloadInfo,
    now: DateTime<Utc>,
) {
    view.send_modify(|v| {
        let loaded_at = if info.ok { now } else { v.loaded_at };
        *v = Arc::new(http::View {
            cfg: cfg.clone(),
            path: v.path.clone(),
            hash: hash.to_string(),
            loaded_at,
            last_reload: Some(info),
        });
    });
}

/// The schedule of a check, a gate or an `on_schedule` rule.
fn timed_of<'a>(cfg: &'a Config, kind: ItemKind, name: &str) -> Option<&'a config::Timed> {
    match kind {
        ItemKind::Check => cfg
            .checks
            .get(name)
            .map(|c| &c.timed)
            .filter(|t| !matches!(t.schedule, crate::schedule::Schedule::Never)),
        ItemKind::Gate => cfg.gates.get(name).map(|g| &g.timed),
        ItemKind::Rule => cfg.rules.get(name).and_then(|r| match &r.trigger {
            Trigger::Schedule(t) => Some(t),
            _ => None,
        }),
    }
}

/// Hands memory freed after parsing a config back to the OS. A 10,000-check file's parse tree
/// is tens of MiB that glibc would otherwise keep mapped for the life of the process.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn set_threshold_gauges(cfg: &Config) {
    let m = crate::metrics::get();
    for (name, c) in &cfg.checks {
        m.check_threshold
            .get_or_create(&crate::metrics::check(name))
            .set(c.threshold.value());
    }
}

/// The path the daemon reads by default.
pub fn default_config_path() -> &'static Path {
    Path::new("/etc/mlopsd/mlops.toml")
}
