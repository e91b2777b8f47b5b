//! Operator events: every decision and lifecycle step is logged from here, so log field names
//! stay the same everywhere. Each line carries `event = NAME`. A decision event is a struct
//! whose `emit()` writes its log line and counts its metrics in one place, so logs and
//! `/metrics` cannot disagree (vector's `internal_events` pattern).

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::clock::ts;
use crate::cloud::AwsError;
use crate::config::diff::ConfigDiff;
use crate::config::{Config, ConfigError, Target};
use crate::health::Health;
use crate::metrics;
use crate::state::StoreError;

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

pub fn config_reload_accepted(
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

pub fn config_reload_unchanged(path: &Path, hash: &str, trigger: &str) {
    tracing::info!(event = "config_reload_unchanged", path = %path.display(), hash, trigger, "config reloaded, nothing changed");
}

pub fn config_reload_rejected(path: &Path, trigger: &str, err: &ConfigError) {
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

pub fn schedule_fired(kind: &str, name: &str, due: &DateTime<Utc>, now: &DateTime<Utc>) {
    let late = *now - *due;
    let lateness_ms = late.num_milliseconds();
    metrics::get()
        .schedule_lateness
        .observe((late.num_microseconds().unwrap_or(0).max(0) as f64) / 1e6);
    tracing::debug!(event = "schedule_fired", kind, name, due = %ts(due), lateness_ms, "schedule fired");
}

pub fn schedule_next(kind: &str, name: &str, next: Option<&DateTime<Utc>>) {
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

pub fn daemon_ready(state_path: &Path, scheduled: usize) {
    tracing::info!(event = "daemon_ready", state = %state_path.display(), scheduled, "mlopsd is running");
}

pub fn daemon_stopping(reason: &str) {
    tracing::info!(event = "daemon_stopping", reason, "mlopsd is stopping");
}

pub fn daemon_stopped(clean: bool) {
    tracing::info!(event = "daemon_stopped", clean, "mlopsd stopped");
}

fn value_text(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "no data".into())
}

/// A store call's result: its value, or — on error — `None`, with the error logged as
/// `state_error` (what was being done, for which item, what follows), counted and
/// recorded in `health`. A success clears the operation's fault. The one seam the loop and the
/// outbox pass every store result through.
pub fn stored<T>(
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
pub struct StateError<'a> {
    pub operation: &'static str,
    pub item: &'a str,
    pub error: &'a StoreError,
    pub consequence: &'static str,
}

impl StateError<'_> {
    pub fn emit(&self, health: &Health, now: DateTime<Utc>) {
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

pub struct CheckFailed<'a> {
    pub check: &'a str,
    pub error: &'a AwsError,
}

impl CheckFailed<'_> {
    pub fn emit(&self) {
        let e = self.error;
        tracing::warn!(event = "check_failed", check = %self.check, error = %e, code = %e.code, transient = e.transient(), "could not evaluate check; its state is unchanged");
    }
}

pub struct CheckEvaluated<'a> {
    pub check: &'a str,
    pub value: Option<f64>,
    pub threshold: &'a crate::config::Threshold,
    pub decision: &'static str,
    pub breached: bool,
    pub breaching: bool,
    pub breach_count: u32,
    pub for_count: u32,
    pub correlation_id: Option<&'a str>,
}

impl CheckEvaluated<'_> {
    pub fn emit(&self) {
        let m = metrics::get();
        let l = metrics::check(self.check);
        m.check_evaluations.get_or_create(&l).inc();
        if let Some(v) = self.value {
            m.check_value.get_or_create(&l).set(v);
        }
        if self.breached {
            m.check_breaches.get_or_create(&l).inc();
        }
        m.check_breaching
            .get_or_create(&l)
            .set(i64::from(self.breaching));
        tracing::info!(
            event = "check_evaluated", check = %self.check, value = %value_text(self.value), threshold = %self.threshold,
            decision = self.decision, breach_count = self.breach_count, r#for = self.for_count,
            correlation_id = %self.correlation_id.unwrap_or_default(), "check evaluated"
        );
    }
}

/// `check_breached` (a new incident) or `check_recovered`.
pub struct CheckIncident<'a> {
    pub recovered: bool,
    pub check: &'a str,
    pub value: Option<f64>,
    pub threshold: &'a crate::config::Threshold,
    pub correlation_id: &'a str,
}

impl CheckIncident<'_> {
    pub fn emit(&self) {
        let (v, th, c) = (value_text(self.value), self.threshold, self.correlation_id);
        if self.recovered {
            tracing::info!(event = "check_recovered", check = %self.check, value = %v, threshold = %th, correlation_id = %c, "check recovered");
        } else {
            tracing::warn!(event = "check_breached", check = %self.check, value = %v, threshold = %th, correlation_id = %c, "check breached");
        }
    }
}

pub struct RuleSuppressed<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub reason: &'static str,
    pub detail: &'a str,
    pub correlation_id: &'a str,
}

impl RuleSuppressed<'_> {
    pub fn emit(&self) {
        metrics::get()
            .rule_suppressions
            .get_or_create(&metrics::SuppressL {
                rule: self.rule.to_string(),
                reason: self.reason.into(),
            })
            .inc();
        tracing::info!(
            event = "rule_suppressed", rule = %self.rule, check = %self.check.unwrap_or_default(), reason = self.reason,
            detail = %self.detail, decision = "suppressed", correlation_id = %self.correlation_id,
            "rule did not fire: {}", self.detail
        );
    }
}

/// A dry-run rule decided to fire: what it would start (one line each) and notify.
pub struct RuleDryRun<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub correlation_id: &'a str,
    pub starts: Vec<(String, serde_json::Value)>,
    pub notify: &'a [String],
}

impl RuleDryRun<'_> {
    pub fn emit(&self) {
        metrics::get()
            .rule_suppressions
            .get_or_create(&metrics::SuppressL {
                rule: self.rule.to_string(),
                reason: "dry_run".into(),
            })
            .inc();
        for (target, request) in &self.starts {
            tracing::info!(
                event = "rule_dry_run", rule = %self.rule, check = %self.check.unwrap_or_default(), decision = "dry_run",
                correlation_id = %self.correlation_id, target = %target, request = %request, "dry run: would start {}", target
            );
        }
        if !self.notify.is_empty() {
            tracing::info!(event = "rule_dry_run", rule = %self.rule, decision = "dry_run", notify = %self.notify.join(","), "dry run: would notify");
        }
    }
}

/// A dry-run rule's notification that was not queued.
pub fn dry_run_notification(rule: &str, notification: &str) {
    tracing::info!(event = "rule_dry_run", rule = %rule, notification = %notification, decision = "dry_run", "dry run: would notify");
}

pub struct RuleFired<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub firing: u64,
    pub correlation_id: &'a str,
    pub starts: usize,
    pub value: Option<Option<f64>>,
}

impl RuleFired<'_> {
    pub fn emit(&self) {
        metrics::get()
            .rule_firings
            .get_or_create(&metrics::rule(self.rule))
            .inc();
        tracing::info!(
            event = "rule_fired", rule = %self.rule, check = %self.check.unwrap_or_default(), decision = "fire",
            firing = self.firing, correlation_id = %self.correlation_id, starts = self.starts,
            value = %self.value.map(value_text).unwrap_or_default(), "rule fired"
        );
    }
}

pub struct RunStarted<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub target: &'a Target,
    pub arn: &'a str,
    pub correlation_id: &'a str,
    pub token: &'a str,
}

impl RunStarted<'_> {
    pub fn emit(&self) {
        metrics::get()
            .runs_started
            .get_or_create(&metrics::run(self.target.kind.as_str(), &self.target.name))
            .inc();
        tracing::info!(
            event = "run_started", rule = %self.rule, check = %self.check.unwrap_or_default(), target = %self.target,
            arn = %self.arn, correlation_id = %self.correlation_id, token = %self.token, decision = "started", "run started"
        );
    }
}

pub struct StartRetry<'a> {
    pub rule: &'a str,
    pub target: &'a Target,
    pub error: &'a AwsError,
    pub attempt: i64,
    pub correlation_id: &'a str,
}

impl StartRetry<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            event = "start_retry", rule = %self.rule, target = %self.target, error = %self.error, code = %self.error.code,
            attempt = self.attempt, correlation_id = %self.correlation_id,
            "start failed transiently; retrying with the same token on the next poll"
        );
    }
}

/// A decided run that could not be started, for good (AWS refused it, or its stored request
/// is unreadable): `run_failed` with `decision = "start_failed"`.
pub struct StartFailed<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub target: &'a Target,
    pub code: &'a str,
    pub error: &'a str,
    pub correlation_id: &'a str,
}

impl StartFailed<'_> {
    pub fn emit(&self) {
        metrics::get()
            .runs_failed
            .get_or_create(&metrics::run(self.target.kind.as_str(), &self.target.name))
            .inc();
        let item = self.target.config_item();
        tracing::error!(
            event = "run_failed", rule = %self.rule, check = %self.check.unwrap_or_default(), target = %self.target,
            config_item = %item, error = %self.error, error_code = %self.code, correlation_id = %self.correlation_id, decision = "start_failed",
            "could not start {} for rule {}: {}", item, self.rule, self.error
        );
    }
}

/// A followed run ended: `run_succeeded` or `run_failed`.
pub struct RunEnded<'a> {
    pub succeeded: bool,
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub target: &'a Target,
    pub arn: &'a str,
    pub correlation_id: &'a str,
    pub detail: &'a str,
    pub duration_s: i64,
}

impl RunEnded<'_> {
    pub fn emit(&self) {
        let m = metrics::get();
        let fam = if self.succeeded {
            &m.runs_succeeded
        } else {
            &m.runs_failed
        };
        fam.get_or_create(&metrics::run(self.target.kind.as_str(), &self.target.name))
            .inc();
        let (rule, check, target, arn, corr, secs) = (
            self.rule,
            self.check.unwrap_or_default(),
            self.target,
            self.arn,
            self.correlation_id,
            self.duration_s,
        );
        if self.succeeded {
            tracing::info!(event = "run_succeeded", rule = %rule, check = %check, target = %target, arn = %arn, correlation_id = %corr, duration_s = secs, decision = "ended", "run succeeded");
        } else {
            tracing::warn!(event = "run_failed", rule = %rule, check = %check, target = %target, arn = %arn, correlation_id = %corr, reason = %self.detail, duration_s = secs, decision = "ended", "run failed");
        }
    }
}

pub fn follow_failed(rule: &str, arn: &str, error: &AwsError) {
    tracing::warn!(event = "follow_failed", rule = %rule, arn = %arn, error = %error, "could not poll run; trying again next poll");
}

pub fn gate_failed(gate: &str, group: &str, error: &AwsError) {
    tracing::warn!(event = "gate_failed", gate = %gate, group = %group, error = %error, "could not read the model registry; trying again at the next fire");
}

pub struct GateDecided<'a> {
    pub gate: &'a str,
    pub arn: &'a str,
    pub decision: crate::state::GateDecision,
    pub value: Option<f64>,
    pub reason: &'a str,
}

impl GateDecided<'_> {
    pub fn emit(&self) {
        let d = self.decision.as_str();
        metrics::get()
            .gate_decisions
            .get_or_create(&metrics::GateL {
                gate: self.gate.to_string(),
                decision: d.into(),
            })
            .inc();
        match self.value {
            None => {
                tracing::warn!(event = "gate_no_metric", gate = %self.gate, arn = %self.arn, reason = %self.reason, "model package has no usable metric; left pending (reported once)")
            }
            Some(value) => {
                tracing::info!(event = "gate_decided", gate = %self.gate, arn = %self.arn, value, decision = d, reason = %self.reason, "gate decided")
            }
        }
    }
}

/// The outcome of setting a package's approval status.
pub fn gate_applied(gate: &str, arn: &str, approve: bool, result: &Result<(), AwsError>) {
    match result {
        Ok(()) => {
            tracing::info!(event = "gate_applied", gate = %gate, arn = %arn, status = if approve { "Approved" } else { "Rejected" }, "model package status set")
        }
        Err(e) if e.transient() => {
            tracing::warn!(event = "gate_apply_retry", gate = %gate, arn = %arn, error = %e, "could not set model package status; retrying on the next poll")
        }
        Err(e) => {
            tracing::error!(event = "gate_apply_failed", gate = %gate, arn = %arn, error = %e, "could not set model package status; giving up on this package")
        }
    }
}

pub fn notification_deduplicated(
    notifier: &str,
    rule: &str,
    notification: &str,
    correlation_id: &str,
) {
    metrics::get()
        .notifications_deduplicated
        .get_or_create(&metrics::notify(notifier, notification))
        .inc();
    tracing::info!(
        event = "notification_deduplicated", notifier = %notifier, rule = %rule, notification = %notification, correlation_id = %correlation_id,
        "not sent: the same (rule, event) went out within repeat_interval"
    );
}

pub fn notification_sent(row: &crate::state::OutboxRow, message_id: &str) {
    metrics::get()
        .notifications_sent
        .get_or_create(&metrics::notify(&row.notifier, &row.event))
        .inc();
    tracing::info!(
        event = "notification_sent", notifier = %row.notifier, notification = %row.event, rule = %row.rule.clone().unwrap_or_default(),
        check = %row.check.clone().unwrap_or_else(|| "-".into()), correlation_id = %row.correlation_id, message_id = %message_id, "notification sent"
    );
}

pub fn notification_failed(
    row: &crate::state::OutboxRow,
    error: &AwsError,
    retry_at: &DateTime<Utc>,
) {
    metrics::get()
        .notifications_failed
        .get_or_create(&metrics::notify(&row.notifier, &row.event))
        .inc();
    tracing::error!(
        event = "notification_failed", notifier = %row.notifier, config_item = %format!("[notifiers.{}]", row.notifier), topic_arn = %row.topic_arn,
        notification = %row.event, error = %error, error_code = %error.code, attempt = row.attempts + 1,
        retry_at = %ts(retry_at), "could not publish notification; it stays queued"
    );
}

/// An EventBridge event read from the queue and acted on (`handled`) or not (`ignored`: it
/// concerns nothing in the config, or it was handled before).
pub struct EventTaken<'a> {
    pub message_id: &'a str,
    pub event_id: &'a str,
    pub source: &'a str,
    pub detail_type: &'a str,
    pub handled: bool,
    pub why: &'a str,
}

impl EventTaken<'_> {
    pub fn emit(&self) {
        let result = if self.handled { "handled" } else { "ignored" };
        metrics::get()
            .events
            .get_or_create(&metrics::ResultL {
                result: result.into(),
            })
            .inc();
        let (m, id, src, dt, why) = (
            self.message_id,
            self.event_id,
            self.source,
            self.detail_type,
            self.why,
        );
        if self.handled {
            tracing::info!(event = "event_handled", message_id = %m, event_id = %id, source = %src, detail_type = %dt, decision = %why, "event handled: {why}");
        } else {
            tracing::info!(event = "event_ignored", message_id = %m, event_id = %id, source = %src, detail_type = %dt, reason = %why, "event ignored: {why}");
        }
    }
}

/// A message whose body is not an EventBridge event: logged with its id and why, never its
/// body; counted; deleted.
pub fn event_rejected(message_id: &str, reason: &str) {
    metrics::get()
        .events
        .get_or_create(&metrics::ResultL {
            result: "rejected".into(),
        })
        .inc();
    tracing::warn!(event = "event_rejected", message_id = %message_id, reason = %reason, "message is not an EventBridge event; deleted");
}

/// The events queue stopped or started answering.
pub fn queue_state(queue_url: &str, error: Option<&AwsError>, retry_in: std::time::Duration) {
    match error {
        Some(e) => tracing::error!(
            event = "events_queue_unreachable", queue_url = %queue_url, error = %e, error_code = %e.code, retry_in_ms = retry_in.as_millis() as u64,
            "cannot receive from the [events] queue; retrying with backoff (schedules and polling go on)"
        ),
        None => {
            tracing::info!(event = "events_queue_reachable", queue_url = %queue_url, "receiving from the [events] queue")
        }
    }
}

pub fn events_delete_failed(queue_url: &str, count: usize, error: &AwsError) {
    tracing::warn!(
        event = "events_delete_failed", queue_url = %queue_url, messages = count, error = %error,
        "cannot delete handled messages; they come back after the queue's visibility timeout and are recognised as handled"
    );
}

/// An `on_event` rule could not fire on an event: a template failed or rendered empty.
pub fn rule_failed(rule: &str, correlation_id: &str, reason: &str) {
    metrics::get()
        .rule_suppressions
        .get_or_create(&metrics::SuppressL {
            rule: rule.to_string(),
            reason: "rule_failed".into(),
        })
        .inc();
    tracing::warn!(event = "rule_failed", rule = %rule, correlation_id = %correlation_id, reason = %reason, decision = "failed", "rule did not fire: {reason}");
}

/// A declared pipeline's create or update landed.
pub struct PipelineApplied<'a> {
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    pub op: crate::reconcile::ApplyOp,
    pub arn: &'a str,
    /// Why it was sent: "definition changed", "created", "put back after drift", …
    pub reason: &'a str,
    pub changes: &'a [String],
}

impl PipelineApplied<'_> {
    pub fn emit(&self) {
        pipeline_result(
            self.pipeline,
            self.op.kind().as_str().trim_start_matches("pipeline_"),
            true,
        );
        let changes = self.changes.join("; ");
        tracing::info!(
            event = self.op.kind().as_str(), pipeline = %self.pipeline, pipeline_name = %self.pipeline_name, arn = %self.arn,
            reason = %self.reason, changes = %changes, changed_paths = self.changes.len(),
            "declared pipeline {} in SageMaker ({})", if self.op == crate::reconcile::ApplyOp::Create { "created" } else { "updated" }, self.reason
        );
    }
}

/// A declared pipeline was changed outside mlopsd.
pub struct PipelineDrifted<'a> {
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    /// "put back" (`reconcile = "apply"`) or "reported" (`"report"`).
    pub action: &'a str,
    pub changes: &'a [String],
}

impl PipelineDrifted<'_> {
    pub fn emit(&self) {
        pipeline_result(self.pipeline, "drifted", false);
        let changes = self.changes.join("; ");
        tracing::warn!(
            event = "pipeline_drifted", pipeline = %self.pipeline, pipeline_name = %self.pipeline_name, action = %self.action,
            changes = %changes, changed_paths = self.changes.len(),
            "declared pipeline was changed outside mlopsd; {}", if self.action == "put back" { "putting the file's definition back" } else { "reported only (reconcile = \"report\")" }
        );
    }
}

/// A declared pipeline could not be compared or applied; retried at the next reconcile.
pub struct PipelineApplyFailed<'a> {
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    pub error: &'a AwsError,
    pub retry_in: std::time::Duration,
}

impl PipelineApplyFailed<'_> {
    pub fn emit(&self) {
        pipeline_result(self.pipeline, "failed", false);
        let e = self.error;
        tracing::error!(
            event = "pipeline_apply_failed", pipeline = %self.pipeline, pipeline_name = %self.pipeline_name,
            operation = e.operation, code = %e.code, error = %e, retry_in_s = self.retry_in.as_secs(),
            "could not apply the declared pipeline; retrying at the next reconcile"
        );
    }
}

fn pipeline_result(pipeline: &str, result: &str, in_sync: bool) {
    let m = metrics::get();
    m.pipeline_applies
        .get_or_create(&metrics::ApplyL {
            pipeline: pipeline.to_string(),
            result: result.to_string(),
        })
        .inc();
    pipeline_sync_gauge(pipeline, in_sync);
}

/// Sets `mlopsd_pipeline_in_sync` for a pipeline.
pub fn pipeline_sync_gauge(pipeline: &str, in_sync: bool) {
    metrics::get()
        .pipeline_in_sync
        .get_or_create(&metrics::PipelineL {
            pipeline: pipeline.to_string(),
        })
        .set(i64::from(in_sync));
}

/// A declared pipeline compared equal to its file.
pub fn pipeline_in_sync(pipeline: &str, pipeline_name: &str, was: &str) {
    pipeline_sync_gauge(pipeline, true);
    if was == "in_sync" {
        tracing::debug!(event = "pipeline_in_sync", pipeline = %pipeline, pipeline_name = %pipeline_name, "declared pipeline is in sync");
    } else {
        tracing::info!(event = "pipeline_in_sync", pipeline = %pipeline, pipeline_name = %pipeline_name, was = %was, "declared pipeline is in sync with its file");
    }
}

/// A start waits for its pipeline's apply to finish.
pub fn start_held(rule: &str, pipeline: &str, run_id: i64) {
    tracing::info!(event = "start_held", rule = %rule, pipeline = %pipeline, run_id, "start waits for the pipeline's apply in flight; it is sent after it");
}

/// The preflight found a problem with an AWS resource the config names (logged once per
/// problem; the item keeps running, and its first use will fail the same way).
pub fn preflight_failed(f: &crate::doctor::Finding) {
    tracing::warn!(
        event = "preflight_failed", kind = f.kind.as_str(), item = %f.name, config_item = %f.config_item(), resource = %f.resource,
        status = f.status.as_str(), reason = %f.detail,
        "preflight: {} {} is {}: {}", f.config_item(), f.resource, f.status.as_str(), f.detail
    );
}

/// HA: this replica leads now (after catching up with the table's log).
pub fn ha_leading(
    table: &str,
    replica: &str,
    fencing: u64,
    applied_seq: u64,
    previous: Option<&str>,
) {
    tracing::info!(
        event = "ha_leading",
        table,
        replica,
        fencing,
        applied_seq,
        previous = previous.unwrap_or(""),
        "this replica leads: it evaluates, decides, starts and publishes"
    );
}

/// HA: this replica stopped leading.
pub fn ha_stepped_down(table: &str, replica: &str, reason: &str) {
    tracing::warn!(
        event = "ha_stepped_down",
        table,
        replica,
        reason,
        "this replica stopped acting and is a standby"
    );
}

/// HA: another replica leads; this one watches.
pub fn ha_following(table: &str, replica: &str, leader: &str, fencing: u64) {
    tracing::info!(
        event = "ha_following",
        table,
        replica,
        leader,
        fencing,
        "another replica leads; this one is a standby"
    );
}

/// HA: the leader runs a config whose hash differs from this replica's.
pub fn ha_config_differs(leader: &str, leader_hash: &str, hash: &str) {
    tracing::warn!(event = "ha_config_differs", leader, leader_hash, hash, "the leader runs a different config than this replica; deploy the same file to every replica");
}

/// HA: the table did not answer (reads of the log or the lease).
pub fn ha_table_unreachable(table: &str, error: &str) {
    tracing::warn!(
        event = "ha_table_unreachable",
        table,
        error,
        "cannot reach the HA table; retrying"
    );
}

/// HA: a snapshot replaced this replica's state (it was behind the compacted log).
pub fn ha_snapshot_restored(table: &str, seq: u64, bytes: usize) {
    tracing::info!(
        event = "ha_snapshot_restored",
        table,
        seq,
        bytes,
        "restored the state from the table's snapshot"
    );
}

/// HA: the leader stored a snapshot and deleted the log before it.
pub fn ha_compacted(table: &str, seq: u64, bytes: usize, deleted: usize) {
    tracing::info!(
        event = "ha_compacted",
        table,
        seq,
        bytes,
        deleted,
        "stored a snapshot of the state and deleted the log before it"
    );
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
