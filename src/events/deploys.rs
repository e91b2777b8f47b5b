//! Deploy events: a deployment decided, moved (succeeded, baked, rolled back, failed), a
//! version skipped, an endpoint waited for, a call that failed.

use super::*;

/// A deployment reached a step that is counted: `started`, `succeeded`, `baked`,
/// `rolled_back`, `failed`, `skipped`.
pub(crate) struct Deployed<'a> {
    pub endpoint: &'a str,
    pub endpoint_name: &'a str,
    pub version: u32,
    pub result: &'static str,
    pub correlation_id: &'a str,
    pub reason: Option<&'a str>,
}

impl Deployed<'_> {
    pub(crate) fn emit(&self) {
        metrics::get()
            .deployments
            .get_or_create(&metrics::DeployL {
                endpoint: self.endpoint.to_string(),
                result: self.result.to_string(),
            })
            .inc();
        let reason = self.reason.unwrap_or("");
        match self.result {
            "rolled_back" | "failed" => {
                tracing::warn!(event = "deploy_ended", endpoint = %self.endpoint, endpoint_name = %self.endpoint_name, version = self.version, result = self.result, reason = %reason, correlation_id = %self.correlation_id, "deployment did not hold")
            }
            "skipped" => {
                tracing::warn!(event = "deploy_skipped", endpoint = %self.endpoint, endpoint_name = %self.endpoint_name, version = self.version, reason = %reason, correlation_id = %self.correlation_id, "version not deployed")
            }
            _ => {
                tracing::info!(event = "deploy_progress", endpoint = %self.endpoint, endpoint_name = %self.endpoint_name, version = self.version, result = self.result, reason = %reason, correlation_id = %self.correlation_id, "deployment moved")
            }
        }
    }
}

/// The version an endpoint serves, as mlopsd last saw it.
pub(crate) fn endpoint_serves(endpoint: &str, version: Option<u32>) {
    metrics::get()
        .endpoint_version
        .get_or_create(&metrics::EndpointL {
            endpoint: endpoint.to_string(),
        })
        .set(version.map_or(0, i64::from));
}

/// Nothing to do for an endpoint now, and why (logged when the reason changes).
pub(crate) fn deploy_waits(endpoint: &str, why: &str) {
    tracing::info!(event = "deploy_waiting", endpoint = %endpoint, reason = %why, "endpoint left as it is for now");
}

/// A dry-run endpoint block would deploy.
pub(crate) fn deploy_would_start(endpoint: &str, endpoint_name: &str, version: u32, op: &str) {
    tracing::info!(event = "deploy_dry_run", endpoint = %endpoint, endpoint_name = %endpoint_name, version, operation = %op, decision = "would_deploy", "dry run: would deploy this version (nothing is called)");
}

/// An AWS call of a deployment failed: retried at the next poll, or the deployment failed.
pub(crate) fn deploy_call_failed(endpoint: &str, step: &str, error: &AwsError, retried: bool) {
    if retried {
        tracing::warn!(event = "deploy_call_retry", endpoint = %endpoint, step = %step, error = %error, "deployment call failed; trying again at the next poll");
    } else {
        tracing::error!(event = "deploy_call_failed", endpoint = %endpoint, step = %step, error = %error, "deployment call refused");
    }
}

/// What the endpoint reconcile read could not be read.
pub(crate) fn deploy_read_failed(endpoint: &str, error: &AwsError) {
    tracing::warn!(event = "deploy_read_failed", endpoint = %endpoint, error = %error, "could not read the registry or the endpoint; trying again at the next reconcile");
}

/// mlopsd sends the endpoint back to the previous config (an alarm during the bake).
pub(crate) fn deploy_rolling_back(endpoint: &str, version: u32, why: &str, correlation_id: &str) {
    tracing::warn!(event = "deploy_rolling_back", endpoint = %endpoint, version, reason = %why, correlation_id = %correlation_id, "rolling back to the previous config");
}

/// `on_rollback = "reject"`: the outcome of setting the rolled-back version Rejected.
pub(crate) fn deploy_rejected(endpoint: &str, arn: &str, result: &Result<(), AwsError>) {
    match result {
        Ok(()) => {
            tracing::info!(event = "deploy_rejected", endpoint = %endpoint, arn = %arn, "rolled-back version set Rejected")
        }
        Err(e) if e.transient() => {
            tracing::warn!(event = "deploy_reject_retry", endpoint = %endpoint, arn = %arn, error = %e, "could not set the version Rejected; retrying on the next poll")
        }
        Err(e) => {
            tracing::error!(event = "deploy_reject_failed", endpoint = %endpoint, arn = %arn, error = %e, "could not set the version Rejected; giving up")
        }
    }
}

/// Older models and configs mlopsd made were deleted.
pub(crate) fn deploy_cleaned(endpoint: &str, names: &[String]) {
    tracing::info!(event = "deploy_cleaned", endpoint = %endpoint, deleted = %names.join(","), "older models and endpoint configs deleted (the live one and the previous kept)");
}
