//! Run events: started, a start retried or failed for good, ended, a follow that failed.

use super::*;

pub(crate) struct RunStarted<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub target: &'a Target,
    pub arn: &'a str,
    pub correlation_id: &'a str,
    pub token: &'a str,
}

impl RunStarted<'_> {
    pub(crate) fn emit(&self) {
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

pub(crate) struct StartRetry<'a> {
    pub rule: &'a str,
    pub target: &'a Target,
    pub error: &'a AwsError,
    pub attempt: i64,
    pub correlation_id: &'a str,
}

impl StartRetry<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            event = "start_retry", rule = %self.rule, target = %self.target, error = %self.error, code = %self.error.code,
            attempt = self.attempt, correlation_id = %self.correlation_id,
            "start failed transiently; retrying with the same token on the next poll"
        );
    }
}

/// A decided run that could not be started, for good (AWS refused it, or its stored request
/// is unreadable): `run_failed` with `decision = "start_failed"`.
pub(crate) struct StartFailed<'a> {
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub target: &'a Target,
    pub code: &'a str,
    pub error: &'a str,
    pub correlation_id: &'a str,
}

impl StartFailed<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) struct RunEnded<'a> {
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
    pub(crate) fn emit(&self) {
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

pub(crate) fn follow_failed(rule: &str, arn: &str, error: &AwsError) {
    tracing::warn!(event = "follow_failed", rule = %rule, arn = %arn, error = %error, "could not poll run; trying again next poll");
}
