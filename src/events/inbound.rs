//! `[events]` queue events: an event taken or rejected, the queue's state, deletes.

use super::*;

/// An EventBridge event read from the queue and acted on (`handled`) or not (`ignored`: it
/// concerns nothing in the config, or it was handled before).
pub(crate) struct EventTaken<'a> {
    pub message_id: &'a str,
    pub event_id: &'a str,
    pub source: &'a str,
    pub detail_type: &'a str,
    pub handled: bool,
    pub why: &'a str,
}

impl EventTaken<'_> {
    pub(crate) fn emit(&self) {
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
pub(crate) fn event_rejected(message_id: &str, reason: &str) {
    metrics::get()
        .events
        .get_or_create(&metrics::ResultL {
            result: "rejected".into(),
        })
        .inc();
    tracing::warn!(event = "event_rejected", message_id = %message_id, reason = %reason, "message is not an EventBridge event; deleted");
}

/// The events queue stopped or started answering.
pub(crate) fn queue_state(
    queue_url: &str,
    error: Option<&AwsError>,
    retry_in: std::time::Duration,
) {
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

/// Entries of a `DeleteMessageBatch` that failed twice.
pub(crate) fn events_delete_left(queue_url: &str, count: usize) {
    tracing::warn!(
        event = "events_delete_failed", queue_url = %queue_url, messages = count,
        "some handled messages could not be deleted (the batch said so, twice); they come back after the queue's visibility timeout and are recognised as handled"
    );
}

pub(crate) fn events_delete_failed(queue_url: &str, count: usize, error: &AwsError) {
    tracing::warn!(
        event = "events_delete_failed", queue_url = %queue_url, messages = count, error = %error,
        "cannot delete handled messages; they come back after the queue's visibility timeout and are recognised as handled"
    );
}
