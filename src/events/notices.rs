//! Notification events: queued, deduplicated, sent, failed.

use super::*;

pub(crate) fn notification_deduplicated(
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

pub(crate) fn notification_sent(row: &crate::state::OutboxRow, message_id: &str) {
    metrics::get()
        .notifications_sent
        .get_or_create(&metrics::notify(&row.notifier, &row.event))
        .inc();
    tracing::info!(
        event = "notification_sent", notifier = %row.notifier, notification = %row.event, rule = %row.rule.clone().unwrap_or_default(),
        check = %row.check.clone().unwrap_or_else(|| "-".into()), correlation_id = %row.correlation_id, message_id = %message_id, "notification sent"
    );
}

pub(crate) fn notification_failed(
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
