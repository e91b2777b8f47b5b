//! Table `rule_state`: each rule's firings and cooldown; a firing stored with its decided runs
//! and notices in one transaction.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{from_ms, ms, Sql, Store, R, W};
use super::{NewRun, Queued};
use crate::engine::RuleState;

/// What storing a firing gave: its runs' ids and which notices were queued; `None` when its
/// once-key was there already.
pub(crate) type Stored = Option<(Vec<i64>, Vec<bool>)>;

/// One firing of an events batch, borrowed from the loop's pending list.
pub(crate) struct BatchFiring<'a> {
    pub rule: &'a str,
    pub state: &'a RuleState,
    pub runs: &'a [NewRun],
    pub once: Option<&'a str>,
    pub notices: &'a [Queued],
}

impl Store {
    /// Every rule's stored state.
    pub(crate) fn rule_states(&self) -> R<std::collections::HashMap<String, RuleState>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT name, firings, last_fired_ms, cooldown_until_ms FROM rule_state",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                RuleState {
                    firings: r.get::<_, i64>(1)? as u64,
                    last_fired: from_ms(r.get(2)?),
                    cooldown_until: from_ms(r.get(3)?),
                },
            ))
        })?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    pub(crate) fn rule_state(&self, name: &str) -> R<RuleState> {
        let row = self
            .conn()
            .query_row(
                "SELECT firings, last_fired_ms, cooldown_until_ms FROM rule_state WHERE name = ?1",
                params![name],
                |r| {
                    Ok(RuleState {
                        firings: r.get::<_, i64>(0)? as u64,
                        last_fired: from_ms(r.get(1)?),
                        cooldown_until: from_ms(r.get(2)?),
                    })
                },
            )
            .optional()?;
        Ok(row.unwrap_or_default())
    }

    pub(super) fn put_rule_state(w: &mut W<'_>, name: &str, s: &RuleState) -> R<()> {
        w.exec(
            "INSERT INTO rule_state (name, firings, last_fired_ms, cooldown_until_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET firings = excluded.firings, last_fired_ms = excluded.last_fired_ms, cooldown_until_ms = excluded.cooldown_until_ms",
            params![name, s.firings as i64, s.last_fired.map(ms), s.cooldown_until.map(ms)],
        )?;
        Ok(())
    }

    /// Writes a rule's new state, its decided runs (and, for a notify-only rule, its
    /// `notices`) in one transaction, before any AWS call; at most once per `once` key (an
    /// event's or a run end's): the key is stored in the same transaction, and `None` means
    /// it was there already — nothing is written, the firing happened before. Returns the run
    /// ids and which notices were queued.
    pub(crate) fn record_firing(
        &self,
        rule: &str,
        state: &RuleState,
        runs: &[NewRun],
        now: DateTime<Utc>,
        once: Option<&str>,
        notices: &[Queued],
    ) -> R<Stored> {
        self.write(|w| Self::firing_in(w, rule, state, runs, now, once, notices))
    }

    /// An events batch's firings and its new event ids, in one transaction: for each firing
    /// what `record_firing` answers, and for each id whether it is new.
    pub(crate) fn record_events_batch(
        &self,
        firings: &[BatchFiring<'_>],
        ids: &[&str],
        now: DateTime<Utc>,
    ) -> R<(Vec<Stored>, Vec<bool>)> {
        self.write(|w| {
            let mut out = Vec::with_capacity(firings.len());
            for f in firings {
                out.push(Self::firing_in(
                    w, f.rule, f.state, f.runs, now, f.once, f.notices,
                )?);
            }
            let seen = Self::events_seen_in(w, ids, now)?;
            Ok((out, seen))
        })
    }

    fn firing_in(
        w: &mut W<'_>,
        rule: &str,
        state: &RuleState,
        runs: &[NewRun],
        now: DateTime<Utc>,
        once: Option<&str>,
        notices: &[Queued],
    ) -> R<Option<(Vec<i64>, Vec<bool>)>> {
        if let Some(key) = once {
            if w.exec(
                "INSERT OR IGNORE INTO events_seen (id, seen_ms) VALUES (?1, ?2)",
                params![key, ms(now)],
            )? == 0
            {
                return Ok(None);
            }
        }
        Self::put_rule_state(w, rule, state)?;
        let mut ids = Vec::new();
        for r in runs {
            w.exec(
                "INSERT INTO runs (rule, firing, kind, target, token, request, correlation_id, check_name, status, decided_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'decided', ?9)",
                params![rule, state.firings as i64, r.kind.as_str(), r.target, r.token, r.request, r.correlation_id, r.check, ms(now)],
            )?;
            ids.push(w.last_insert_rowid());
        }
        let queued = Self::queue_all(w, notices, ms(now))?;
        Ok(Some((ids, queued)))
    }

    /// A dry-run firing: the rule's state moves (cooldown), no run is recorded.
    pub(crate) fn record_rule_state(&self, rule: &str, state: &RuleState) -> R<()> {
        self.write(|w| Self::put_rule_state(w, rule, state))
    }

    /// Lets a rule fire again (after a start that failed for good).
    pub(crate) fn clear_cooldown(&self, rule: &str) -> R<()> {
        self.write1(
            "UPDATE rule_state SET cooldown_until_ms = NULL WHERE name = ?1",
            params![rule],
        )?;
        Ok(())
    }
}
