//! Table `events_seen`: EventBridge event ids handled (remembered `EVENT_MEMORY`), and the
//! keys of firings that must happen once (`fired\0RULE\0EVENT`, `chained\0RULE\0RUN`) or
//! of notices told once within it (`deploy-skip\0…`).

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{ms, Queued, Sql, Store, R, W};

/// How long a handled EventBridge event id is remembered (a redelivery within it does nothing).
pub(crate) const EVENT_MEMORY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl Store {
    /// Which of these event ids were handled before (within `EVENT_MEMORY`).
    pub(crate) fn events_seen(&self, ids: &[&str]) -> R<Vec<bool>> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT 1 FROM events_seen WHERE id = ?1")?;
        Ok(ids
            .iter()
            .map(|id| st.exists(params![id]))
            .collect::<Sql<_>>()?)
    }

    /// Remembers EventBridge event ids in one transaction, forgetting those older than
    /// `EVENT_MEMORY`; for each id, whether it is new (not handled before).
    #[cfg(test)]
    pub(crate) fn mark_events_seen(&self, ids: &[&str], now: DateTime<Utc>) -> R<Vec<bool>> {
        self.write(|w| Self::events_seen_in(w, ids, now))
    }

    pub(super) fn events_seen_in(w: &mut W<'_>, ids: &[&str], now: DateTime<Utc>) -> R<Vec<bool>> {
        let forget = ms(now) - EVENT_MEMORY.as_millis() as i64;
        w.exec(
            "DELETE FROM events_seen WHERE seen_ms < ?1",
            params![forget],
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(
                w.exec(
                    "INSERT OR IGNORE INTO events_seen (id, seen_ms) VALUES (?1, ?2)",
                    params![id, ms(now)],
                )? == 1,
            );
        }
        Ok(out)
    }

    /// Queues `notices` with `key` remembered, in one transaction, unless `key` was seen
    /// within `EVENT_MEMORY`: `None` then (told already), else which notices were queued.
    pub(crate) fn tell_once(
        &self,
        key: &str,
        notices: &[Queued],
        now: DateTime<Utc>,
    ) -> R<Option<Vec<bool>>> {
        self.write(|w| {
            let fresh = w.exec(
                "INSERT OR IGNORE INTO events_seen (id, seen_ms) VALUES (?1, ?2)",
                params![key, ms(now)],
            )? == 1;
            if !fresh {
                return Ok(None);
            }
            Self::queue_all(w, notices, ms(now)).map(Some)
        })
    }
}
