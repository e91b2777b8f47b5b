//! Check events: evaluated, failed, an incident opened or closed.

use super::*;

pub(crate) struct CheckFailed<'a> {
    pub check: &'a str,
    pub error: &'a AwsError,
}

impl CheckFailed<'_> {
    pub(crate) fn emit(&self) {
        let e = self.error;
        tracing::warn!(event = "check_failed", check = %self.check, error = %e, code = %e.code, transient = e.transient(), "could not evaluate check; its state is unchanged");
    }
}

pub(crate) struct CheckEvaluated<'a> {
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
    pub(crate) fn emit(&self) {
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
pub(crate) struct CheckIncident<'a> {
    pub recovered: bool,
    pub check: &'a str,
    pub value: Option<f64>,
    pub threshold: &'a crate::config::Threshold,
    pub correlation_id: &'a str,
}

impl CheckIncident<'_> {
    pub(crate) fn emit(&self) {
        let (v, th, c) = (value_text(self.value), self.threshold, self.correlation_id);
        if self.recovered {
            tracing::info!(event = "check_recovered", check = %self.check, value = %v, threshold = %th, correlation_id = %c, "check recovered");
        } else {
            tracing::warn!(event = "check_breached", check = %self.check, value = %v, threshold = %th, correlation_id = %c, "check breached");
        }
    }
}

/// Any check's read failed: counted (`mlopsd_check_errors_total`) and shown on `/status`;
/// `true` when the cause is new.
pub(crate) fn read_failed(
    health: &crate::health::Health,
    check: &str,
    error: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> bool {
    metrics::get()
        .check_errors
        .get_or_create(&metrics::check(check))
        .inc();
    health.check_failed(check, error, at)
}

/// A report check's read failed. Logged once per new cause (the same error again is only
/// counted), and shown on `/status`.
pub(crate) fn report_failed(
    health: &crate::health::Health,
    check: &str,
    error: &str,
    at: chrono::DateTime<chrono::Utc>,
) {
    if read_failed(health, check, error, at) {
        tracing::warn!(event = "check_failed", check = %check, error = %error, "could not read the check's report; its state is unchanged");
    }
}

/// A report check reads again after an error.
pub(crate) fn report_read(health: &crate::health::Health, check: &str) {
    if health.check_read(check) {
        tracing::info!(event = "check_read_again", check = %check, "the check's report reads again");
    }
}

/// A new report or execution was read (its evaluation follows).
pub(crate) fn report_new(
    check: &str,
    seen: &str,
    uri: &str,
    violations: usize,
    failed: Option<&str>,
) {
    tracing::info!(event = "report_read", check = %check, seen = %seen, report_uri = %uri, violations, failed = %failed.unwrap_or_default(), "a new report was read");
}
