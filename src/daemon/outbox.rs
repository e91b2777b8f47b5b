//! The outbox sender: publishes queued notifications to SNS, marks them sent, and backs off
//! on failure. Delivery is at least once: a crash between `Publish` and marking the row sent
//! re-sends that message after restart, with the same `correlation_id`. When marking fails
//! (a full disk), the message is not published again: the mark is retried with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::aws::Cloud;
use crate::clock::{self, Clock};
use crate::events;
use crate::health::Health;
use crate::state::{self, Store};

pub(super) fn backoff(attempts: i64) -> Duration {
    Duration::from_secs((1u64 << attempts.clamp(0, 8) as u32).min(300))
}

/// Published messages whose "sent" mark has not been stored yet: id → (next try, tries).
type Unmarked = BTreeMap<i64, (DateTime<Utc>, i64)>;

pub struct Outbox<C> {
    pub store: Arc<Store>,
    pub cloud: C,
    pub clock: Clock,
    pub health: Arc<Health>,
    pub wake: Arc<Notify>,
}

impl<C: Cloud> Outbox<C> {
    fn db<T>(
        &self,
        operation: &'static str,
        consequence: &'static str,
        r: Result<T, rusqlite::Error>,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                self.health.store_ok(operation);
                Some(v)
            }
            Err(error) => {
                events::StateError {
                    operation,
                    item: "",
                    error: &error,
                    consequence,
                }
                .emit(&self.health, self.clock.now());
                None
            }
        }
    }

    /// Runs until `stop` is cancelled; wakes on `wake` or every 2 s.
    pub async fn run(self, stop: CancellationToken) {
        let mut unmarked = Unmarked::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            self.retry_marks(&mut unmarked).await;
            loop {
                let now = self.clock.now();
                let r = state::off_loop(&self.store, move |s| s.pending_outbox(now, 50)).await;
                let Some(rows) = self.db("read the outbox", "sending waits for the next try", r)
                else {
                    break;
                };
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter(|r| !unmarked.contains_key(&r.id))
                    .collect();
                if rows.is_empty() {
                    break;
                }
                for row in rows {
                    if stop.is_cancelled() {
                        return;
                    }
                    let rule = row.rule.clone().unwrap_or_default();
                    let check = row.check.clone().unwrap_or_else(|| "-".into());
                    let attrs = [
                        ("event", row.event.as_str()),
                        ("rule", rule.as_str()),
                        ("check", check.as_str()),
                        ("correlation_id", row.correlation_id.as_str()),
                    ];
                    match self
                        .cloud
                        .publish(&row.topic_arn, &row.subject, &row.body, &attrs)
                        .await
                    {
                        Ok(id) => {
                            crate::failpoint::hit("after_publish");
                            events::notification_sent(&row, &id);
                            let (rid, at) = (row.id, self.clock.now());
                            let r =
                                state::off_loop(&self.store, move |s| s.mark_sent(rid, at)).await;
                            if self
                                .db(
                                    "mark a notification sent",
                                    "it is not published again; the mark is retried with backoff",
                                    r,
                                )
                                .is_none()
                            {
                                unmarked.insert(
                                    row.id,
                                    (clock::after(at, backoff(1)).unwrap_or(at), 1),
                                );
                            }
                        }
                        Err(e) => {
                            let now = self.clock.now();
                            let next = clock::after(now, backoff(row.attempts + 1)).unwrap_or(now);
                            events::notification_failed(&row, &e, &next);
                            let (rid, msg) = (row.id, e.to_string());
                            let r = state::off_loop(&self.store, move |s| {
                                s.mark_send_failed(rid, &msg, next)
                            })
                            .await;
                            if self
                                .db("store a failed send", "it is tried again at once", r)
                                .is_none()
                            {
                                // Not stored: without a stored retry time, wait here instead.
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stores the "sent" marks that failed before, each when its backoff is over.
    async fn retry_marks(&self, unmarked: &mut Unmarked) {
        let now = self.clock.now();
        let due: Vec<(i64, i64)> = unmarked
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, (_, n))| (*id, *n))
            .collect();
        for (id, tries) in due {
            let r = state::off_loop(&self.store, move |s| s.mark_sent(id, now)).await;
            match self.db(
                "mark a notification sent",
                "it is not published again; the mark is retried with backoff",
                r,
            ) {
                Some(()) => {
                    unmarked.remove(&id);
                }
                None => {
                    unmarked.insert(
                        id,
                        (
                            clock::after(now, backoff(tries + 1)).unwrap_or(now),
                            tries + 1,
                        ),
                    );
                }
            }
        }
    }
}
