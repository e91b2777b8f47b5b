//! Operator events: every decision and lifecycle step is logged from here, so log field names
//! stay the same everywhere. Each line carries `event = NAME`. A decision event is a struct
//! whose `emit()` writes its log line and counts its metrics in one place, so logs and
//! `/metrics` cannot disagree (vector's `internal_events` pattern). One file per domain; the
//! config, schedule and lifecycle events and the store-result seam are here.

mod checks;
mod deploys;
mod gates;
mod ha;
mod inbound;
mod notices;
mod pipelines;
mod rules;
mod runs;

pub(crate) use checks::*;
pub(crate) use deploys::*;
pub(crate) use gates::*;
pub(crate) use ha::*;
pub(crate) use inbound::*;
pub(crate) use notices::*;
pub(crate) use pipelines::*;
pub(crate) use rules::*;
pub(crate) use runs::*;

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::clock::ts;
use crate::cloud::AwsError;
use crate::config::diff::ConfigDiff;
use crate::config::{Config, ConfigError, Target};
use crate::health::Health;
use crate::metrics;
use crate::state::StoreError;

pub(crate) fn config_loaded(path: &Path, hash: &str, cfg: &Config) {
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

pub(crate) fn config_reload_accepted(
    path: &Path,
    hash: &str,
    trigger: &str,
    diff: &ConfigDiff,
    took: std::time::Duration,
    fast: bool,
) {
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

pub(crate) fn config_reload_unchanged(path: &Path, hash: &str, trigger: &str) {
    tracing::info!(event = "config_reload_unchanged", path = %path.display(), hash, trigger, "config reloaded, nothing changed");
}

pub(crate) fn config_reload_rejected(path: &Path, trigger: &str, err: &ConfigError) {
    let first = err
        .errors
        .first()
        .map(|(l, c, m)| format!("{}:{l}:{c}: {m}", path.display()))
        .unwrap_or_default();
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

pub(crate) fn schedule_fired(kind: &str, name: &str, due: &DateTime<Utc>, now: &DateTime<Utc>) {
    let late = *now - *due;
    let lateness_ms = late.num_milliseconds();
    metrics::get()
        .schedule_lateness
        .observe((late.num_microseconds().unwrap_or(0).max(0) as f64) / 1e6);
    tracing::debug!(event = "schedule_fired", kind, name, due = %ts(due), lateness_ms, "schedule fired");
}

pub(crate) fn schedule_next(kind: &str, name: &str, next: Option<&DateTime<Utc>>) {
    match next {
        Some(n) => tracing::debug!(event = "schedule_next", kind, name, next = %ts(n), "next fire"),
        None => tracing::info!(
            event = "schedule_ended",
            kind,
            name,
            "schedule has no future fire times"
        ),
    }
}

pub(crate) fn daemon_ready(state_path: &Path, scheduled: usize) {
    tracing::info!(event = "daemon_ready", state = %state_path.display(), scheduled, "mlopsd is running");
}

pub(crate) fn daemon_stopping(reason: &str) {
    tracing::info!(event = "daemon_stopping", reason, "mlopsd is stopping");
}

pub(crate) fn daemon_stopped(clean: bool) {
    tracing::info!(event = "daemon_stopped", clean, "mlopsd stopped");
}

pub(crate) fn value_text(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "no data".into())
}

/// A store call's result: its value, or — on error — `None`, with the error logged as
/// `state_error` (what was being done, for which item, what follows), counted and
/// recorded in `health`. A success clears the operation's fault. The one seam the loop and the
/// outbox pass every store result through.
pub(crate) fn stored<T>(
    health: &Health,
    now: DateTime<Utc>,
    operation: &'static str,
    item: &str,
    consequence: &'static str,
    r: Result<T, StoreError>,
) -> Option<T> {
    match r {
        Ok(v) => {
            health.store_ok(operation);
            Some(v)
        }
        Err(error) => {
            StateError {
                operation,
                item,
                error: &error,
                consequence,
            }
            .emit(health, now);
            None
        }
    }
}

/// A state store operation failed: logged with what was being done, counted, and shown on
/// `/healthz` until that operation succeeds again.
pub(crate) struct StateError<'a> {
    pub operation: &'static str,
    pub item: &'a str,
    pub error: &'a StoreError,
    pub consequence: &'static str,
}

impl StateError<'_> {
    pub(crate) fn emit(&self, health: &Health, now: DateTime<Utc>) {
        if self.error.is_not_leading() {
            // An HA replica that does not lead (any more): its role says so, on /status and
            // in `ha_stepped_down`; the store itself is fine.
            tracing::warn!(
                event = "state_write_refused", operation = self.operation, item = self.item, error = %self.error,
                "state store: not leading, so cannot {}{}{}; {}", self.operation, if self.item.is_empty() { "" } else { " for " }, self.item, self.consequence
            );
            return;
        }
        health.store_failed(self.operation, &self.error.to_string(), now);
        metrics::get()
            .state_errors
            .get_or_create(&metrics::OperationL {
                operation: self.operation.to_string(),
            })
            .inc();
        tracing::error!(
            event = "state_error", operation = self.operation, item = self.item, error = %self.error,
            "state store: cannot {}{}{}; {}", self.operation, if self.item.is_empty() { "" } else { " for " }, self.item, self.consequence
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write refused for not leading is a change of role, not a fault of the store: it never
    /// turns /healthz to 503 (a leader that stepped down and leads again was unhealthy for an
    /// outbox write its old leadership had been refused). Any other failure still is a fault.
    #[test]
    fn a_write_refused_for_not_leading_is_no_store_fault() {
        let h = Health::default();
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let refused: Result<(), crate::state::StoreError> = Err(
            crate::state::StoreError::NotLeading("the HA table did not take state write 81".into()),
        );
        assert_eq!(
            stored(&h, t, "store a failed send", "", "retried", refused),
            None
        );
        assert!(h.store_faults(t).is_empty());
        let other: Result<(), crate::state::StoreError> =
            Err(crate::state::StoreError::Invalid("disk I/O error".into()));
        assert_eq!(
            stored(&h, t, "store a failed send", "", "retried", other),
            None
        );
        assert_eq!(h.store_faults(t).len(), 1);
    }
}
