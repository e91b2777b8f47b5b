//! Table `check_state` and `check_values`: each check's state (breach count, incident) and
//! its recent values, stored with the notices an evaluation causes.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::Queued;
use super::{from_ms, ms, Sql, Store, R};
use crate::engine::CheckState;

/// How many recent values per check are kept (for the status page).
pub(crate) const KEEP_VALUES: i64 = 200;

/// A check's stored state and when it was last evaluated.
pub(crate) type StateAt = (CheckState, Option<DateTime<Utc>>);
/// One stored value of a check: (at, value, breached).
pub(crate) type ValueAt = (DateTime<Utc>, Option<f64>, bool);

/// One evaluation to store.
pub(crate) struct CheckEval<'a> {
    pub name: &'a str,
    pub state: &'a CheckState,
    pub value: Option<f64>,
    pub breached: bool,
    pub at: DateTime<Utc>,
    /// A report check's new report: (its key, what it found as JSON), stored with the
    /// evaluation so one report is never evaluated twice.
    pub report: Option<(&'a str, &'a str)>,
}

/// A report check's stored marks: the report last evaluated and the one whose rules were
/// considered (they differ after a crash between the two).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReportMarks {
    pub seen: Option<String>,
    pub acted: Option<String>,
}

impl Store {
    pub(crate) fn check_state(&self, name: &str) -> R<CheckState> {
        let row = self
            .conn()
            .query_row("SELECT breach_count, breaching, correlation_id, last_value FROM check_state WHERE name = ?1", params![name], |r| {
                Ok(CheckState { breach_count: r.get::<_, i64>(0)? as u32, breaching: r.get::<_, i64>(1)? != 0, correlation_id: r.get(2)?, last_value: r.get(3)? })
            })
            .optional()?;
        Ok(row.unwrap_or_default())
    }

    /// Every check's state and when it was last evaluated.
    pub(crate) fn check_states(&self) -> R<std::collections::HashMap<String, StateAt>> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT name, breach_count, breaching, correlation_id, last_value, last_eval_ms FROM check_state")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    CheckState {
                        breach_count: r.get::<_, i64>(1)? as u32,
                        breaching: r.get::<_, i64>(2)? != 0,
                        correlation_id: r.get(3)?,
                        last_value: r.get(4)?,
                    },
                    from_ms(r.get(5)?),
                ),
            ))
        })?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// Stores a batch of evaluations (state + recent values, bounded) in one transaction.
    /// The notifications of these evaluations (breached, recovered) are queued in the same
    /// transaction: a crash never keeps a breach and loses its notice. Returns, for each
    /// notice, whether it was queued (else deduplicated).
    pub(crate) fn save_check_evals(
        &self,
        evals: &[CheckEval<'_>],
        notices: &[Queued],
        now: DateTime<Utc>,
    ) -> R<Vec<bool>> {
        self.write(|w| {
            for e in evals {
                w.exec(
                    "INSERT INTO check_state (name, breach_count, breaching, correlation_id, last_value, last_eval_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (name) DO UPDATE SET breach_count = excluded.breach_count, breaching = excluded.breaching,
                       correlation_id = excluded.correlation_id, last_value = excluded.last_value, last_eval_ms = excluded.last_eval_ms",
                    params![
                        e.name,
                        e.state.breach_count as i64,
                        e.state.breaching as i64,
                        e.state.correlation_id,
                        e.state.last_value,
                        ms(e.at)
                    ],
                )?;
                if let Some((seen, facts)) = e.report {
                    w.exec(
                        "UPDATE check_state SET report_seen = ?2, report_facts = ?3 WHERE name = ?1",
                        params![e.name, seen, facts],
                    )?;
                }
                w.exec(
                    "INSERT OR REPLACE INTO check_values (name, at_ms, value, breached) VALUES (?1, ?2, ?3, ?4)",
                    params![e.name, ms(e.at), e.value, e.breached as i64],
                )?;
                w.exec(
                    "DELETE FROM check_values WHERE name = ?1 AND at_ms <= (SELECT at_ms FROM check_values WHERE name = ?1 ORDER BY at_ms DESC LIMIT 1 OFFSET ?2)",
                    params![e.name, KEEP_VALUES],
                )?;
            }
            notices
                .iter()
                .map(|n| Self::enqueue_in(w, &n.as_outgoing(), ms(now)))
                .collect()
        })
    }

    /// Every report check's marks, by check.
    pub(crate) fn report_marks(&self) -> R<std::collections::HashMap<String, ReportMarks>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT name, report_seen, report_acted FROM check_state WHERE report_seen IS NOT NULL",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                ReportMarks {
                    seen: r.get(1)?,
                    acted: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// What a check's last report found (JSON), and its key.
    pub(crate) fn report_facts(&self, name: &str) -> R<Option<(String, String)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT report_seen, report_facts FROM check_state WHERE name = ?1 AND report_seen IS NOT NULL AND report_facts IS NOT NULL",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The rules of these checks' reports were considered (one transaction).
    pub(crate) fn mark_reports_acted(&self, marks: &[(&str, &str)]) -> R<()> {
        if marks.is_empty() {
            return Ok(());
        }
        self.write(|w| {
            for (name, seen) in marks {
                w.exec(
                    "UPDATE check_state SET report_acted = ?2 WHERE name = ?1",
                    params![name, seen],
                )?;
            }
            Ok(())
        })
    }

    /// The newest `limit` values of every check, oldest first per check: one query for the
    /// status page however many checks there are.
    pub(crate) fn all_check_values(
        &self,
        limit: usize,
    ) -> R<std::collections::HashMap<String, Vec<ValueAt>>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT name, at_ms, value, breached FROM (
               SELECT name, at_ms, value, breached, ROW_NUMBER() OVER (PARTITION BY name ORDER BY at_ms DESC) AS rn FROM check_values)
             WHERE rn <= ?1 ORDER BY name, at_ms ASC",
        )?;
        let rows = st.query_map(params![limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<f64>>(2)?,
                r.get::<_, i64>(3)? != 0,
            ))
        })?;
        let mut out: std::collections::HashMap<String, Vec<ValueAt>> =
            std::collections::HashMap::new();
        for row in rows {
            let (n, t, v, b) = row?;
            if let Some(t) = DateTime::<Utc>::from_timestamp_millis(t) {
                out.entry(n).or_default().push((t, v, b));
            }
        }
        Ok(out)
    }
}
