//! The daemon: one control loop over a closed set of events (timer due, config changed,
//! SIGHUP, shutdown). It owns the config, the timer table and the state store handle.

pub mod systemd;
pub mod timer;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::diff::ConfigDiff;
use crate::config::{self, CatchUp, Config, ConfigError, Trigger, EX_CONFIG};
use crate::events;
use crate::plan::scheduled;
use crate::state::{StateError, Store};
use timer::{ItemKind, Key, Timer};

/// Why `run` returned with an error, and the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) => EX_CONFIG,
            RunError::State(s) => s.exit_code(),
            RunError::Other(_) => 1,
        }
    }
}

/// The longest the loop sleeps without looking at the clock again (wall-clock jumps, watchdog).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Quiet time after the last file event before a reload (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

struct Daemon {
    path: PathBuf,
    cfg: Arc<Config>,
    hash: String,
    store: Arc<Store>,
    timer: Timer,
    tracker: TaskTracker,
}

/// Runs the daemon until `shutdown` is cancelled or SIGTERM/SIGINT arrives.
pub async fn run(path: PathBuf, shutdown: CancellationToken) -> Result<(), RunError> {
    let (cfg, hash) = config::load_with_hash(&path).map_err(RunError::Config)?;
    events::config_loaded(&path, &hash, &cfg);
    let store = Arc::new(Store::open(&cfg.daemon.state_dir)?);

    let mut d = Daemon { path: path.clone(), cfg: Arc::new(cfg), hash, store, timer: Timer::default(), tracker: TaskTracker::new() };
    d.schedule_start(Utc::now());

    let (file_tx, mut file_rx) = mpsc::channel::<()>(16);
    let _watcher = match watch::watch(&path, file_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot watch the config file; reload with SIGHUP");
            None
        }
    };
    let mut hup = signal(SignalKind::hangup()).map_err(|e| RunError::Other(format!("cannot handle SIGHUP: {e}")))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| RunError::Other(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| RunError::Other(format!("cannot handle SIGINT: {e}")))?;

    let watchdog = systemd::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    systemd::ready("running");
    events::daemon_ready(d.store.path(), d.timer.len());

    let mut reload_at: Option<tokio::time::Instant> = None;
    let reason = loop {
        let now = Utc::now();
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
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => d.reload("signal"),
            Some(()) = file_rx.recv() => {
                reload_at = Some(tokio::time::Instant::now() + DEBOUNCE);
            }
            _ = debounce => {
                reload_at = None;
                d.reload("file");
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog(),
            _ = tokio::time::sleep(sleep_for) => d.fire_due(Utc::now()),
        }
    };

    systemd::stopping();
    events::daemon_stopping(reason);
    d.tracker.close();
    let grace = d.cfg.daemon.shutdown_grace;
    let clean = tokio::time::timeout(grace, d.tracker.wait()).await.is_ok();
    if !clean {
        tracing::warn!(event = "shutdown_grace_exceeded", grace_ms = grace.as_millis() as u64, "in-flight work did not finish within shutdown_grace; it is abandoned and resumes from the state store on the next start");
    }
    if let Err(e) = d.store.conn().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "state store checkpoint at shutdown failed (the WAL keeps the data)");
    }
    events::daemon_stopped(clean);
    Ok(())
}

fn key_of(kind: &str, name: &str) -> Key {
    (ItemKind::parse(kind).unwrap_or(ItemKind::Check), name.to_string())
}

impl Daemon {
    /// Puts every scheduled item on the timer at startup, with one catch-up fire for
    /// `catch_up = "once"` rules that missed a fire while the daemon was down.
    fn schedule_start(&mut self, now: DateTime<Utc>) {
        let cfg = self.cfg.clone();
        for (kind, name, timed) in scheduled(&cfg) {
            let key = key_of(kind, name);
            let mut next = timed.schedule.next_after(timed.timezone, now);
            if kind == "rule" {
                let catch_up = cfg.rules.get(name).map(|r| r.catch_up) == Some(CatchUp::Once);
                if catch_up {
                    match self.store.last_fire(kind, name) {
                        Ok(Some(last)) => {
                            if let Some(missed) = timed.schedule.next_after(timed.timezone, last).filter(|m| *m <= now) {
                                tracing::info!(event = "catch_up", rule = %name, missed = %missed.to_rfc3339(), "rule missed a fire while mlopsd was down; catching up once");
                                next = Some(now);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(rule = %name, error = %e, "cannot read last fire; no catch-up"),
                    }
                }
            }
            events::schedule_next(kind, name, next.as_ref());
            self.timer.set(key, next);
        }
    }

    fn fire_due(&mut self, now: DateTime<Utc>) {
        let due = self.timer.pop_due(now);
        if due.is_empty() {
            return;
        }
        let cfg = self.cfg.clone();
        let mut rule_fires = Vec::new();
        for ((kind, name), at) in &due {
            events::schedule_fired(kind.as_str(), name, at, &now);
            if *kind == ItemKind::Rule {
                rule_fires.push((name.clone(), *at));
            }
        }
        if !rule_fires.is_empty() {
            if let Err(e) = self.store.record_fires("rule", &rule_fires) {
                tracing::error!(error = %e, "cannot record rule fires in the state store");
            }
        }
        // Re-arm each item from the later of its due time and now: missed fires are not replayed.
        for ((kind, name), at) in due {
            let timed = match kind {
                ItemKind::Check => cfg.checks.get(&name).map(|c| &c.timed),
                ItemKind::Gate => cfg.gates.get(&name).map(|g| &g.timed),
                ItemKind::Rule => cfg.rules.get(&name).and_then(|r| match &r.trigger {
                    Trigger::Schedule(t) => Some(t),
                    _ => None,
                }),
            };
            if let Some(t) = timed {
                let next = t.schedule.next_after(t.timezone, at.max(now));
                events::schedule_next(kind.as_str(), &name, next.as_ref());
                self.timer.set((kind, name), next);
            }
        }
    }

    /// Validates the file whole; applies it as a diff, or keeps the old config.
    fn reload(&mut self, trigger: &str) {
        systemd::reloading();
        match config::load_with_hash(&self.path) {
            Err(e) => events::config_reload_rejected(&self.path, trigger, &e),
            Ok((new, hash)) => {
                let diff = ConfigDiff::new(&self.cfg, &new);
                if diff.is_empty() {
                    self.hash = hash;
                    events::config_reload_unchanged(&self.path, &self.hash, trigger);
                } else {
                    self.apply(new, Utc::now());
                    self.hash = hash;
                    events::config_reload_accepted(&self.path, &self.hash, trigger, &diff);
                }
            }
        }
        systemd::ready("running");
    }

    /// Swaps in a new config: items whose schedule is unchanged keep their next fire time,
    /// new or rescheduled ones are armed from `now`, removed ones stop.
    fn apply(&mut self, new: Config, now: DateTime<Utc>) {
        let old = std::mem::replace(&mut self.cfg, Arc::new(new));
        let old_sched: std::collections::HashMap<Key, &config::Timed> =
            scheduled(&old).into_iter().map(|(k, n, t)| (key_of(k, n), t)).collect();
        let mut keep = std::collections::HashSet::new();
        for (kind, name, timed) in scheduled(&self.cfg) {
            let key = key_of(kind, name);
            keep.insert(key.clone());
            if old_sched.get(&key) == Some(&timed) && self.timer.contains(&key) {
                continue;
            }
            let next = timed.schedule.next_after(timed.timezone, now);
            events::schedule_next(kind, name, next.as_ref());
            self.timer.set(key, next);
        }
        let stale: Vec<Key> = self.timer.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for k in stale {
            self.timer.remove(&k);
        }
    }
}

/// The path the daemon reads by default.
pub fn default_config_path() -> &'static Path {
    Path::new("/etc/mlopsd/mlops.toml")
}
