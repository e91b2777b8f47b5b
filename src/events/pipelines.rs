//! Declared pipeline events: applied, drifted, failed, in sync; a start held for an apply;
//! a preflight problem.

use super::*;

/// A declared pipeline's create or update landed.
pub(crate) struct PipelineApplied<'a> {
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    pub op: crate::reconcile::ApplyOp,
    pub arn: &'a str,
    /// Why it was sent: "definition changed", "created", "put back after drift", …
    pub reason: &'a str,
    pub changes: &'a [String],
}

impl PipelineApplied<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) struct PipelineDrifted<'a> {
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    /// "put back" (`reconcile = "apply"`) or "reported" (`"report"`).
    pub action: &'a str,
    pub changes: &'a [String],
}

impl PipelineDrifted<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) struct PipelineApplyFailed<'a> {
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    pub error: &'a AwsError,
    pub retry_in: std::time::Duration,
}

impl PipelineApplyFailed<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) fn pipeline_sync_gauge(pipeline: &str, in_sync: bool) {
    metrics::get()
        .pipeline_in_sync
        .get_or_create(&metrics::PipelineL {
            pipeline: pipeline.to_string(),
        })
        .set(i64::from(in_sync));
}

/// A declared pipeline compared equal to its file.
pub(crate) fn pipeline_in_sync(pipeline: &str, pipeline_name: &str, was: &str) {
    pipeline_sync_gauge(pipeline, true);
    if was == "in_sync" {
        tracing::debug!(event = "pipeline_in_sync", pipeline = %pipeline, pipeline_name = %pipeline_name, "declared pipeline is in sync");
    } else {
        tracing::info!(event = "pipeline_in_sync", pipeline = %pipeline, pipeline_name = %pipeline_name, was = %was, "declared pipeline is in sync with its file");
    }
}

/// A start waits for its pipeline's apply to finish.
pub(crate) fn start_held(rule: &str, pipeline: &str, run_id: i64) {
    tracing::info!(event = "start_held", rule = %rule, pipeline = %pipeline, run_id, "start waits for the pipeline's apply in flight; it is sent after it");
}

/// The preflight found a problem with an AWS resource the config names (logged once per
/// problem; the item keeps running, and its first use will fail the same way).
pub(crate) fn preflight_failed(f: &crate::doctor::Finding) {
    tracing::warn!(
        event = "preflight_failed", kind = f.kind.as_str(), item = %f.name, config_item = %f.config_item(), resource = %f.resource,
        status = f.status.as_str(), reason = %f.detail,
        "preflight: {} {} is {}: {}", f.config_item(), f.resource, f.status.as_str(), f.detail
    );
}
