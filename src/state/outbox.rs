//! Tables `outbox` and `dedupe`: notifications to send (at least once) and the memory that
//! keeps `repeat_interval`.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{from_ms, ms, Sql, Store, R, W};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub notifier: String,
    pub topic_arn: String,
    pub event: String,
    pub rule: Option<String>,
    pub check: Option<String>,
    pub correlation_id: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
}

/// A notification ready to enqueue (already rendered).
pub(crate) struct Outgoing<'a> {
    pub notifier: &'a str,
    pub topic_arn: &'a str,
    pub event: &'a str,
    pub rule: &'a str,
    pub check: Option<&'a str>,
    pub correlation_id: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// The notifier's `repeat_interval`: the same (notifier, rule, event) is not re-sent sooner.
    pub repeat_interval: std::time::Duration,
}

/// An owned notification to queue (rendered before the transaction that queues it).
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub notifier: String,
    pub topic_arn: String,
    pub event: String,
    pub rule: String,
    pub check: Option<String>,
    pub correlation_id: String,
    pub subject: String,
    pub body: String,
    pub repeat_interval: std::time::Duration,
}

impl Queued {
    pub(crate) fn as_outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            notifier: &self.notifier,
            topic_arn: &self.topic_arn,
            event: &self.event,
            rule: &self.rule,
            check: self.check.as_deref(),
            correlation_id: &self.correlation_id,
            subject: &self.subject,
            body: &self.body,
            repeat_interval: self.repeat_interval,
        }
    }
}

impl Store {
    pub(super) fn queue_all(w: &mut W<'_>, notices: &[Queued], now_ms: i64) -> R<Vec<bool>> {
        notices
            .iter()
            .map(|n| Self::enqueue_in(w, &n.as_outgoing(), now_ms))
            .collect()
    }

    /// Queues a notification unless the same (notifier, rule, event) went out within the
    /// repeat interval. Returns whether it was queued.
    pub(crate) fn enqueue(&self, n: &Outgoing<'_>, now: DateTime<Utc>) -> R<bool> {
        self.write(|w| Self::enqueue_in(w, n, ms(now)))
    }

    pub(super) fn enqueue_in(w: &mut W<'_>, n: &Outgoing<'_>, now_ms: i64) -> R<bool> {
        let last: Option<i64> = w
            .query_row(
                "SELECT last_sent_ms FROM dedupe WHERE notifier = ?1 AND rule = ?2 AND event = ?3",
                params![n.notifier, n.rule, n.event],
                |r| r.get(0),
            )
            .optional()?;
        let interval = n.repeat_interval.as_millis() as i64;
        if let Some(last) = last {
            if interval > 0 && now_ms - last < interval {
                return Ok(false);
            }
        }
        w.exec(
            "INSERT INTO dedupe (notifier, rule, event, last_sent_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (notifier, rule, event) DO UPDATE SET last_sent_ms = excluded.last_sent_ms",
            params![n.notifier, n.rule, n.event, now_ms],
        )?;
        w.exec(
            "INSERT INTO outbox (notifier, topic_arn, event, rule, check_name, correlation_id, subject, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![n.notifier, n.topic_arn, n.event, n.rule, n.check, n.correlation_id, n.subject, n.body, now_ms],
        )?;
        Ok(true)
    }

    /// Unsent notifications whose next attempt is due.
    pub(crate) fn pending_outbox(&self, now: DateTime<Utc>, limit: i64) -> R<Vec<OutboxRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT id, notifier, topic_arn, event, rule, check_name, correlation_id, subject, body, attempts FROM outbox
             WHERE sent_ms IS NULL AND next_attempt_ms <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![ms(now), limit], |r| {
            Ok(OutboxRow {
                id: r.get(0)?,
                notifier: r.get(1)?,
                topic_arn: r.get(2)?,
                event: r.get(3)?,
                rule: r.get(4)?,
                check: r.get(5)?,
                correlation_id: r.get(6)?,
                subject: r.get(7)?,
                body: r.get(8)?,
                attempts: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// When the earliest unsent notification is due (`None`: nothing is queued).
    pub(crate) fn next_outbox_attempt(&self) -> R<Option<DateTime<Utc>>> {
        let ms: Option<i64> = self.conn().query_row(
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE sent_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(from_ms(ms))
    }

    #[cfg(test)]
    pub(crate) fn outbox_unsent(&self) -> R<i64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    pub(crate) fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> R<()> {
        self.write1(
            "UPDATE outbox SET sent_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, ms(at)],
        )?;
        Ok(())
    }

    pub(crate) fn mark_send_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: DateTime<Utc>,
    ) -> R<()> {
        self.write1(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1",
            params![id, error, ms(next_attempt)],
        )?;
        Ok(())
    }
}
