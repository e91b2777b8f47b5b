//! The outbox sender: publishes queued notifications to SNS, marks them sent, and backs off
//! on failure. Delivery is at least once: a crash between `Publish` and marking the row sent
//! re-sends that message after restart, with the same `correlation_id`. When marking fails
//! (a full disk), the message is not published again: the mark is retried with backoff; a
//! failed publish whose retry time cannot be stored waits its backoff in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{self, Clock};
use crate::cloud::{Cloud, Gated};
use crate::events;
use crate::health::Health;
use crate::state::{self, Store};

pub(super) fn backoff(attempts: i64) -> Duration {
    Duration::from_secs((1u64 << attempts.clamp(0, 8) as u32).min(300))
}

/// The longest the sender sleeps with nothing due (a store read error is retried then).
const IDLE: Duration = Duration::from_secs(60);

/// Messages held in memory, by outbox id: published but whose "sent" mark is not stored
/// (`unmarked`: next try of the mark, tries), or failed whose retry time is not stored
/// (`held`: not before).
#[derive(Default)]
struct Memory {
    unmarked: BTreeMap<i64, (DateTime<Utc>, i64)>,
    held: BTreeMap<i64, DateTime<Utc>>,
}

impl Memory {
    fn holds(&self, id: i64) -> bool {
        self.unmarked.contains_key(&id) || self.held.contains_key(&id)
    }
    fn is_empty(&self) -> bool {
        self.unmarked.is_empty() && self.held.is_empty()
    }
    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.unmarked
            .values()
            .map(|(at, _)| *at)
            .chain(self.held.values().copied())
            .min()
    }
}

pub(super) struct Outbox<C> {
    pub store: Arc<Store>,
    pub cloud: Gated<C>,
    pub clock: Clock,
    pub health: Arc<Health>,
    pub wake: Arc<Notify>,
}

const MARK_SENT: &str = "mark a notification sent";
const MARK_CONSEQUENCE: &str = "it is not published again; the mark is retried with backoff";

impl<C: Cloud> Outbox<C> {
    fn db<T>(
        &self,
        operation: &'static str,
        consequence: &'static str,
        r: Result<T, crate::state::StoreError>,
    ) -> Option<T> {
        crate::events::stored(
            &self.health,
            self.clock.now(),
            operation,
            "",
            consequence,
            r,
        )
    }

    /// How long to sleep: until the earliest queued message or held one is due, at most
    /// `IDLE` (a new message wakes the sender at once).
    async fn idle_for(&self, mem: &Memory) -> Duration {
        let now = self.clock.now();
        let r = state::off_loop(&self.store, |s| s.next_outbox_attempt()).await;
        let queued = self
            .db("read the outbox", "sending waits for the next try", r)
            .unwrap_or(None);
        // A row due already while messages are held is most likely one of them: they are due
        // when their own time says.
        let queued = queued.filter(|t| *t > now || mem.is_empty());
        match queued.into_iter().chain(mem.next_due()).min() {
            Some(t) => (t - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(100), IDLE),
            None => IDLE,
        }
    }

    /// Runs until `stop` is cancelled; wakes on `wake` or when something queued is due.
    pub(super) async fn run(self, stop: CancellationToken) {
        let mut mem = Memory::default();
        loop {
            let idle = self.idle_for(&mem).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
            self.retry_marks(&mut mem).await;
            let now = self.clock.now();
            mem.held.retain(|_, at| *at > now);
            loop {
                let now = self.clock.now();
                let r = state::off_loop(&self.store, move |s| s.pending_outbox(now, 50)).await;
                let Some(rows) = self.db("read the outbox", "sending waits for the next try", r)
                else {
                    break;
                };
                let rows: Vec<_> = rows.into_iter().filter(|r| !mem.holds(r.id)).collect();
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
                    let published = match self.cloud.acting() {
                        Ok(act) => {
                            self.cloud
                                .publish(&act, &row.topic_arn, &row.subject, &row.body, &attrs)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    match published {
                        Ok(id) => {
                            crate::failpoint::hit("after_publish");
                            events::notification_sent(&row, &id);
                            let (rid, at) = (row.id, self.clock.now());
                            let r =
                                state::off_loop(&self.store, move |s| s.mark_sent(rid, at)).await;
                            if self.db(MARK_SENT, MARK_CONSEQUENCE, r).is_none() {
                                mem.unmarked.insert(
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
                                .db(
                                    "store a failed send",
                                    "it is held in memory until its backoff is over",
                                    r,
                                )
                                .is_none()
                            {
                                mem.held.insert(row.id, next);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stores the "sent" marks that failed before, each when its backoff is over.
    async fn retry_marks(&self, mem: &mut Memory) {
        let now = self.clock.now();
        let due: Vec<(i64, i64)> = mem
            .unmarked
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, (_, n))| (*id, *n))
            .collect();
        for (id, tries) in due {
            let r = state::off_loop(&self.store, move |s| s.mark_sent(id, now)).await;
            match self.db(MARK_SENT, MARK_CONSEQUENCE, r) {
                Some(()) => {
                    mem.unmarked.remove(&id);
                }
                None => {
                    mem.unmarked.insert(
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
