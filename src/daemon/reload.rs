//! One reload for both roles. The file is read and validated whole (only the changed blocks
//! are re-read when that is safe, `config::blocks`); the outcome is typed; the role applies a
//! new config its own way (the leader reschedules by the diff, a standby keeps it for when it
//! leads), and `tell` says the same for both: the log line, the metrics, `/status`, systemd.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::control::Trigger;
use super::{release_memory, systemd, Base, Loaded};
use crate::config::diff::ConfigDiff;
use crate::config::{self, Config, ConfigError};
use crate::events;
use crate::http;

/// What a reload did.
#[derive(Debug)]
pub(crate) enum ReloadOutcome {
    /// Valid and applied by name: what changed; `fast` when only changed blocks were read.
    Accepted { diff: ConfigDiff, fast: bool },
    /// Valid and applied, but some changed settings take effect only after a restart
    /// (`diff.restart_needed` names them).
    RestartNeeded { diff: ConfigDiff, fast: bool },
    /// Valid, and the same as the running config.
    Unchanged { fast: bool },
    /// Invalid: the running config keeps running.
    Rejected(ConfigError),
}

impl ReloadOutcome {
    pub(crate) fn diff(&self) -> Option<&ConfigDiff> {
        match self {
            ReloadOutcome::Accepted { diff, .. } | ReloadOutcome::RestartNeeded { diff, .. } => {
                Some(diff)
            }
            _ => None,
        }
    }
    fn fast(&self) -> bool {
        match self {
            ReloadOutcome::Accepted { fast, .. }
            | ReloadOutcome::RestartNeeded { fast, .. }
            | ReloadOutcome::Unchanged { fast } => *fast,
            ReloadOutcome::Rejected(_) => false,
        }
    }
}

/// The file read again and valid, not yet taken.
pub(crate) struct Reread {
    cfg: Config,
    hash: String,
    index: Option<config::blocks::Index>,
    diff: ConfigDiff,
    fast: bool,
}

/// Reads and validates the config file again. Small edits of checks, rules or gates re-read
/// only the changed blocks; anything else (a definition file that changed, any doubt) is a
/// full parse and validation.
pub(crate) fn reread(loaded: &Loaded, path: &Path) -> Result<Reread, ConfigError> {
    let defs_same = config::definitions_unchanged(&loaded.cfg);
    let text = config::read_text(path)?;
    let fast = loaded
        .index
        .as_ref()
        .filter(|_| defs_same)
        .and_then(|idx| config::blocks::reparse(&loaded.cfg, idx, &text));
    Ok(match fast {
        Some(r) => Reread {
            hash: config::config_hash(&text, &r.cfg),
            cfg: r.cfg,
            index: Some(r.index),
            diff: r.diff,
            fast: true,
        },
        None => {
            let cfg = config::parse_reusing(&text, path, Some(&loaded.cfg))?;
            Reread {
                hash: config::config_hash(&text, &cfg),
                diff: ConfigDiff::new(&loaded.cfg, &cfg),
                index: config::blocks::Index::of(&text),
                cfg,
                fast: false,
            }
        }
    })
}

impl Reread {
    /// Takes the file's hash and block index into `loaded`; returns the new config when it
    /// differs (for the role to apply), and the outcome.
    pub(crate) fn take(self, loaded: &mut Loaded) -> (Option<Config>, ReloadOutcome) {
        loaded.index = self.index;
        loaded.hash = self.hash;
        let fast = self.fast;
        if self.diff.is_empty() {
            return (None, ReloadOutcome::Unchanged { fast });
        }
        let outcome = if self.diff.restart_needed.is_empty() {
            ReloadOutcome::Accepted {
                diff: self.diff,
                fast,
            }
        } else {
            ReloadOutcome::RestartNeeded {
                diff: self.diff,
                fast,
            }
        };
        (Some(self.cfg), outcome)
    }
}

/// Tells what a reload did, the same for both roles: its log line, the reload metrics and
/// the checks' threshold gauges, the config `/status` shows, the hash an HA replica writes on
/// the lease, and systemd's `READY=1` (`status`: "running", "standby").
pub(crate) fn tell(
    base: &Base,
    loaded: &Loaded,
    trigger: Trigger,
    outcome: &ReloadOutcome,
    t0: std::time::Instant,
    status: &str,
) {
    let now = base.clock.now();
    let (path, hash) = (base.path.as_path(), loaded.hash.as_str());
    let error = match outcome {
        ReloadOutcome::Rejected(e) => {
            events::config_reload_rejected(path, trigger.as_str(), e);
            Some(e.to_string())
        }
        ReloadOutcome::Unchanged { .. } => {
            events::config_reload_unchanged(path, hash, trigger.as_str());
            None
        }
        ReloadOutcome::Accepted { diff, fast } | ReloadOutcome::RestartNeeded { diff, fast } => {
            threshold_gauges(&loaded.cfg, (*fast).then_some(diff));
            events::config_reload_accepted(path, hash, trigger.as_str(), diff, t0.elapsed(), *fast);
            None
        }
    };
    let info = counted(now, trigger, error);
    base.health
        .update_ha(|i| i.config_hash = loaded.hash.clone());
    publish_view(&base.view, &loaded.cfg, &loaded.hash, info, now);
    if !outcome.fast() {
        // A full parse leaves its tree behind; a fast reload barely allocates.
        release_memory();
    }
    systemd::ready(status);
}

/// Sets each check's threshold gauge: all of them, or (a fast reload) the changed ones; after
/// a full load, the series the config names start at 0 (`Metrics::declare`).
pub(crate) fn threshold_gauges(cfg: &Config, only: Option<&ConfigDiff>) {
    let m = crate::metrics::get();
    if only.is_none() {
        m.declare(cfg);
    }
    let set = |name: &str, c: &crate::config::Check| {
        m.check_threshold
            .get_or_create(&crate::metrics::check(name))
            .set(c.threshold.value());
    };
    match only {
        Some(diff) => {
            for name in &diff.checks.changed {
                if let Some(c) = cfg.checks.get(name) {
                    set(name, c);
                }
            }
        }
        None => {
            for (name, c) in &cfg.checks {
                set(name, c);
            }
        }
    }
}

/// A reload's result (`error`: why it was rejected), counted in the metrics.
fn counted(now: DateTime<Utc>, trigger: Trigger, error: Option<String>) -> http::ReloadInfo {
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
        trigger: trigger.as_str().into(),
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
