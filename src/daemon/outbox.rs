//! The outbox sender: publishes queued notifications to SNS, marks them sent, and backs off
//! on failure. Delivery is at least once: a crash between `Publish` and marking the row sent
//! re-sends that message after restart, with the same `correlation_id`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::state::Store;

fn backoff(attempts: i64) -> Duration {
    Duration::from_secs((1u64 << attempts.clamp(0, 8) as u32).min(300))
}

/// Runs until `stop` is cancelled; wakes on `wake` or every 2 s.
pub async fn run(store: Arc<Store>, aws: Aws, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        loop {
            let rows = match store.pending_outbox(Utc::now(), 50) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(event = "state_error", error = %e, "cannot read the outbox");
                    break;
                }
            };
            if rows.is_empty() {
                break;
            }
            for row in rows {
                if stop.is_cancelled() {
                    return;
                }
                let rule = row.rule.clone().unwrap_or_default();
                let check = row.check.clone().unwrap_or_else(|| "-".into());
                let attrs = [("event", row.event.as_str()), ("rule", rule.as_str()), ("check", check.as_str()), ("correlation_id", row.correlation_id.as_str())];
                match aws.publish(&row.topic_arn, &row.subject, &row.body, &attrs).await {
                    Ok(id) => {
                        crate::failpoint::hit("after_publish");
                        if let Err(e) = store.mark_sent(row.id, Utc::now()) {
                            tracing::error!(event = "state_error", error = %e, "cannot mark notification sent; it may be sent again");
                        }
                        crate::metrics::get().notifications_sent.get_or_create(&crate::metrics::notify(&row.notifier, &row.event)).inc();
                        tracing::info!(
                            event = "notification_sent", notifier = %row.notifier, notification = %row.event, rule = %rule,
                            check = %check, correlation_id = %row.correlation_id, message_id = %id, "notification sent"
                        );
                    }
                    Err(e) => {
                        let next = Utc::now() + chrono::Duration::from_std(backoff(row.attempts + 1)).unwrap_or(chrono::Duration::seconds(60));
                        let config_item = format!("[notifiers.{}]", row.notifier);
                        crate::metrics::get().notifications_failed.get_or_create(&crate::metrics::notify(&row.notifier, &row.event)).inc();
                        tracing::error!(
                            event = "notification_failed", notifier = %row.notifier, config_item = %config_item, topic_arn = %row.topic_arn,
                            notification = %row.event, error = %e, error_code = %e.code, attempt = row.attempts + 1,
                            retry_at = %next.to_rfc3339(), "could not publish notification; it stays queued"
                        );
                        let _ = store.mark_send_failed(row.id, &e.to_string(), next);
                    }
                }
            }
        }
    }
}
