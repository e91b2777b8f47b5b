//! Gate events: a package decided, its approval set.

use super::*;

pub(crate) fn gate_failed(gate: &str, group: &str, error: &AwsError) {
    tracing::warn!(event = "gate_failed", gate = %gate, group = %group, error = %error, "could not read the model registry; trying again at the next fire");
}

pub(crate) struct GateDecided<'a> {
    pub gate: &'a str,
    pub arn: &'a str,
    pub decision: crate::state::GateDecision,
    pub value: Option<f64>,
    pub reason: &'a str,
}

impl GateDecided<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) fn gate_applied(gate: &str, arn: &str, approve: bool, result: &Result<(), AwsError>) {
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
