//! Operator events: every decision and lifecycle step is logged from here, one function per
//! event, so log field names stay the same everywhere. Each line carries `event = NAME`.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::diff::ConfigDiff;
use crate::config::{Config, ConfigError};

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn config_loaded(path: &Path, hash: &str, cfg: &Config) {
    tracing::info!(
        event = "config_loaded",
        path = %path.display(),
        hash,
        checks = cfg.checks.len(),
        rules = cfg.rules.len(),
        gates = cfg.gates.len(),
        "config loaded"
    );
}

pub fn config_reload_accepted(path: &Path, hash: &str, trigger: &str, diff: &ConfigDiff, took: std::time::Duration, fast: bool) {
    let (added, changed, removed) = diff.counts();
    let restart_needed = diff.restart_needed.join(",");
    if !diff.restart_needed.is_empty() {
        tracing::warn!(
            event = "config_restart_needed",
            path = %path.display(),
            sections = %restart_needed,
            "these settings changed but take effect only after a restart"
        );
    }
    tracing::info!(
        event = "config_reload_accepted",
        path = %path.display(),
        hash,
        trigger,
        added,
        changed,
        removed,
        took_ms = took.as_secs_f64() * 1000.0,
        incremental = fast,
        checks_added = %diff.checks.added.join(","),
        checks_changed = %diff.checks.changed.join(","),
        checks_removed = %diff.checks.removed.join(","),
        rules_added = %diff.rules.added.join(","),
        rules_changed = %diff.rules.changed.join(","),
        rules_removed = %diff.rules.removed.join(","),
        gates_added = %diff.gates.added.join(","),
        gates_changed = %diff.gates.changed.join(","),
        gates_removed = %diff.gates.removed.join(","),
        "config reloaded"
    );
}

pub fn config_reload_unchanged(path: &Path, hash: &str, trigger: &str) {
    tracing::info!(event = "config_reload_unchanged", path = %path.display(), hash, trigger, "config reloaded, nothing changed");
}

pub fn config_reload_rejected(path: &Path, trigger: &str, err: &ConfigError) {
    let first = err.errors.first().map(|(l, c, m)| format!("{}:{l}:{c}: {m}", path.display())).unwrap_or_default();
    tracing::error!(
        event = "config_reload_rejected",
        path = %path.display(),
        trigger,
        error_count = err.errors.len(),
        error = %first,
        errors = %err,
        "config reload rejected; the previous config keeps running"
    );
}

pub fn schedule_fired(kind: &str, name: &str, due: &DateTime<Utc>, now: &DateTime<Utc>) {
    let lateness_ms = (*now - *due).num_milliseconds();
    tracing::debug!(event = "schedule_fired", kind, name, due = %ts(due), lateness_ms, "schedule fired");
}

pub fn schedule_next(kind: &str, name: &str, next: Option<&DateTime<Utc>>) {
    match next {
        Some(n) => tracing::debug!(event = "schedule_next", kind, name, next = %ts(n), "next fire"),
        None => tracing::info!(event = "schedule_ended", kind, name, "schedule has no future fire times"),
    }
}

pub fn daemon_ready(state_path: &Path, scheduled: usize) {
    tracing::info!(event = "daemon_ready", state = %state_path.display(), scheduled, "mlopsd is running");
}

pub fn daemon_stopping(reason: &str) {
    tracing::info!(event = "daemon_stopping", reason, "mlopsd is stopping");
}

pub fn daemon_stopped(clean: bool) {
    tracing::info!(event = "daemon_stopped", clean, "mlopsd stopped");
}
