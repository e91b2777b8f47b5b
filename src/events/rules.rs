//! Rule events: fired, suppressed (and why), a dry run, an `on_event` firing that failed.

use super::*;

pub(crate) struct RuleSuppressed<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub reason: &'static str,
    pub detail: &'a str,
    pub correlation_id: &'a str,
}

impl RuleSuppressed<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) struct RuleDryRun<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub correlation_id: &'a str,
    pub starts: Vec<(String, serde_json::Value)>,
    pub notify: &'a [String],
}

impl RuleDryRun<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) fn dry_run_notification(rule: &str, notification: &str) {
    tracing::info!(event = "rule_dry_run", rule = %rule, notification = %notification, decision = "dry_run", "dry run: would notify");
}

pub(crate) struct RuleFired<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub firing: u64,
    pub correlation_id: &'a str,
    pub starts: usize,
    pub value: Option<Option<f64>>,
}

impl RuleFired<'_> {
    pub(crate) fn emit(&self) {
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

/// An `on_event` rule could not fire on an event: a template failed or rendered empty.
pub(crate) fn rule_failed(rule: &str, correlation_id: &str, reason: &str) {
    metrics::get()
        .rule_suppressions
        .get_or_create(&metrics::SuppressL {
            rule: rule.to_string(),
            reason: "rule_failed".into(),
        })
        .inc();
    tracing::warn!(event = "rule_failed", rule = %rule, correlation_id = %correlation_id, reason = %reason, decision = "failed", "rule did not fire: {reason}");
}
