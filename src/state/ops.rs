//! The store's queries for the control loop: check and rule state, runs (decided → started →
//! ended), the notification outbox with its dedupe memory, and gate decisions. Each public
//! function is one transaction.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{Store, W};
use crate::config::{RunKind, Target};
use crate::engine::{CheckState, RuleState};
use crate::reconcile::{ApplyOp, ApplyRow, SyncState};

type R<T> = Result<T, rusqlite::Error>;
/// A check's stored state and when it was last evaluated.
pub type StateAt = (CheckState, Option<DateTime<Utc>>);
/// One stored value of a check: (at, value, breached).
pub type ValueAt = (DateTime<Utc>, Option<f64>, bool);

/// Where a decided run is: `Decided` (stored, start not confirmed) → `Started` (AWS gave an
/// ARN or build id) → `Succeeded` | `Failed`; or `StartFailed` when AWS refused the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Decided,
    Started,
    Succeeded,
    Failed,
    StartFailed,
}

impl RunState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunState::Decided => "decided",
            RunState::Started => "started",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::StartFailed => "start_failed",
        }
    }
    pub fn parse(s: &str) -> Option<RunState> {
        [
            RunState::Decided,
            RunState::Started,
            RunState::Succeeded,
            RunState::Failed,
            RunState::StartFailed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
    /// Decided or started: counts against `max_concurrent`.
    pub fn is_active(&self) -> bool {
        matches!(self, RunState::Decided | RunState::Started)
    }
}

/// A gate's verdict on one model package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateDecision {
    Approved,
    Rejected,
    /// The package has no usable metric; it stays pending (reported once).
    NoMetric,
}

impl GateDecision {
    pub fn as_str(&self) -> &'static str {
        match self {
            GateDecision::Approved => "approved",
            GateDecision::Rejected => "rejected",
            GateDecision::NoMetric => "no_metric",
        }
    }
    pub fn parse(s: &str) -> Option<GateDecision> {
        [
            GateDecision::Approved,
            GateDecision::Rejected,
            GateDecision::NoMetric,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One stored gate decision.
#[derive(Debug, Clone, PartialEq)]
pub struct GateDecisionRow {
    pub gate: String,
    pub arn: String,
    pub decision: GateDecision,
    pub value: Option<f64>,
    pub reason: String,
    pub at: Option<DateTime<Utc>>,
}

/// A value read from a column that does not parse as its type: the store is damaged.
fn bad_column(col: usize, what: &str, found: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        format!("unknown {what} {found:?} in the state store").into(),
    )
}

fn run_kind(r: &rusqlite::Row<'_>, col: usize) -> R<RunKind> {
    let s: String = r.get(col)?;
    RunKind::parse(&s).ok_or_else(|| bad_column(col, "run kind", &s))
}

fn gate_decision(r: &rusqlite::Row<'_>, col: usize) -> R<GateDecision> {
    let s: String = r.get(col)?;
    GateDecision::parse(&s).ok_or_else(|| bad_column(col, "gate decision", &s))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(DateTime::<Utc>::from_timestamp_millis)
}

/// How long a handled EventBridge event id is remembered (a redelivery within it does nothing).
pub const EVENT_MEMORY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// How many recent values per check are kept (for the status page).
pub const KEEP_VALUES: i64 = 200;

/// One evaluation to store.
pub struct CheckEval<'a> {
    pub name: &'a str,
    pub state: &'a CheckState,
    pub value: Option<f64>,
    pub breached: bool,
    pub at: DateTime<Utc>,
}

/// A decided start, before AWS is called.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub kind: RunKind,
    pub target: String,
    pub token: String,
    pub request: String,
    pub correlation_id: String,
    pub check: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub rule: String,
    pub firing: i64,
    pub kind: RunKind,
    pub target: String,
    pub token: String,
    pub request: String,
    pub correlation_id: String,
    pub check: Option<String>,
    pub status: RunState,
    pub arn: Option<String>,
    pub detail: Option<String>,
    pub decided: Option<DateTime<Utc>>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub attempts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
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
pub struct Outgoing<'a> {
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
pub struct Queued {
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
    pub fn as_outgoing(&self) -> Outgoing<'_> {
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

const RUN_COLS: &str = "id, rule, firing, kind, target, token, request, correlation_id, check_name, status, arn, detail, decided_ms, started_ms, ended_ms, attempts";

impl RunRow {
    pub fn target(&self) -> Target {
        Target {
            kind: self.kind,
            name: self.target.clone(),
        }
    }
}

fn run_row(r: &rusqlite::Row<'_>) -> R<RunRow> {
    let status: String = r.get(9)?;
    Ok(RunRow {
        id: r.get(0)?,
        rule: r.get(1)?,
        firing: r.get(2)?,
        kind: run_kind(r, 3)?,
        target: r.get(4)?,
        token: r.get(5)?,
        request: r.get(6)?,
        correlation_id: r.get(7)?,
        check: r.get(8)?,
        status: RunState::parse(&status).ok_or_else(|| bad_column(9, "run status", &status))?,
        arn: r.get(10)?,
        detail: r.get(11)?,
        decided: from_ms(r.get(12)?),
        started: from_ms(r.get(13)?),
        ended: from_ms(r.get(14)?),
        attempts: r.get(15)?,
    })
}

const GATE_COLS: &str = "gate, package_arn, decision, value, reason, decided_ms";

fn gate_row(r: &rusqlite::Row<'_>) -> R<GateDecisionRow> {
    Ok(GateDecisionRow {
        gate: r.get(0)?,
        arn: r.get(1)?,
        decision: gate_decision(r, 2)?,
        value: r.get(3)?,
        reason: r.get(4)?,
        at: from_ms(r.get(5)?),
    })
}

impl Store {
    pub fn check_state(&self, name: &str) -> R<CheckState> {
        let row = self
            .conn()
            .query_row("SELECT breach_count, breaching, correlation_id, last_value FROM check_state WHERE name = ?1", params![name], |r| {
                Ok(CheckState { breach_count: r.get::<_, i64>(0)? as u32, breaching: r.get::<_, i64>(1)? != 0, correlation_id: r.get(2)?, last_value: r.get(3)? })
            })
            .optional()?;
        Ok(row.unwrap_or_default())
    }

    /// Every check's state and when it was last evaluated.
    pub fn check_states(&self) -> R<std::collections::HashMap<String, StateAt>> {
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
        rows.collect()
    }

    /// Active (decided or started) runs by target.
    pub fn active_run_counts(&self) -> R<std::collections::HashMap<Target, u32>> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT kind, target, COUNT(*) FROM runs WHERE status IN ('decided', 'started') GROUP BY kind, target")?;
        let rows = st.query_map([], |r| {
            Ok((
                Target {
                    kind: run_kind(r, 0)?,
                    name: r.get(1)?,
                },
                r.get::<_, i64>(2)? as u32,
            ))
        })?;
        rows.collect()
    }

    /// Stores a batch of evaluations (state + recent values, bounded) in one transaction.
    /// The notifications of these evaluations (breached, recovered) are queued in the same
    /// transaction: a crash never keeps a breach and loses its notice. Returns, for each
    /// notice, whether it was queued (else deduplicated).
    pub fn save_check_evals(
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

    /// The newest `limit` values of every check, oldest first per check: one query for the
    /// status page however many checks there are.
    pub fn all_check_values(
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

    /// Every rule's stored state.
    pub fn rule_states(&self) -> R<std::collections::HashMap<String, RuleState>> {
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
        rows.collect()
    }

    pub fn rule_state(&self, name: &str) -> R<RuleState> {
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

    fn put_rule_state(w: &mut W<'_>, name: &str, s: &RuleState) -> R<()> {
        w.exec(
            "INSERT INTO rule_state (name, firings, last_fired_ms, cooldown_until_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET firings = excluded.firings, last_fired_ms = excluded.last_fired_ms, cooldown_until_ms = excluded.cooldown_until_ms",
            params![name, s.firings as i64, s.last_fired.map(ms), s.cooldown_until.map(ms)],
        )?;
        Ok(())
    }

    /// Writes a rule's new state and its decided runs in one transaction, before any AWS
    /// call. Returns the run ids.
    pub fn record_firing(
        &self,
        rule: &str,
        state: &RuleState,
        runs: &[NewRun],
        now: DateTime<Utc>,
    ) -> R<Vec<i64>> {
        Ok(self
            .record_firing_once(rule, state, runs, now, None)?
            .unwrap_or_default())
    }

    /// `record_firing`, at most once per `once` key (an EventBridge event id and the rule):
    /// the key is stored in the same transaction, and `None` means it was there already —
    /// nothing is written, the firing happened before.
    pub fn record_firing_once(
        &self,
        rule: &str,
        state: &RuleState,
        runs: &[NewRun],
        now: DateTime<Utc>,
        once: Option<&str>,
    ) -> R<Option<Vec<i64>>> {
        Ok(self
            .record_firing_with(rule, state, runs, now, once, &[])?
            .map(|(ids, _)| ids))
    }

    /// `record_firing_once` that also queues `notices` (a notify-only rule's message) in the
    /// same transaction; returns the run ids and which notices were queued.
    pub fn record_firing_with(
        &self,
        rule: &str,
        state: &RuleState,
        runs: &[NewRun],
        now: DateTime<Utc>,
        once: Option<&str>,
        notices: &[Queued],
    ) -> R<Option<(Vec<i64>, Vec<bool>)>> {
        self.write(|w| {
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
        })
    }

    /// Which of these event ids were handled before (within `EVENT_MEMORY`).
    pub fn events_seen(&self, ids: &[&str]) -> R<Vec<bool>> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT 1 FROM events_seen WHERE id = ?1")?;
        ids.iter().map(|id| st.exists(params![id])).collect()
    }

    /// A dry-run firing: the rule's state moves (cooldown), no run is recorded.
    pub fn record_rule_state(&self, rule: &str, state: &RuleState) -> R<()> {
        self.write(|w| Self::put_rule_state(w, rule, state))
    }

    /// Lets a rule fire again (after a start that failed for good).
    pub fn clear_cooldown(&self, rule: &str) -> R<()> {
        self.write1(
            "UPDATE rule_state SET cooldown_until_ms = NULL WHERE name = ?1",
            params![rule],
        )?;
        Ok(())
    }

    /// Runs of a target that are decided or started (not yet ended).
    pub fn active_runs(&self, t: &Target) -> R<u32> {
        self.conn().query_row(
            "SELECT COUNT(*) FROM runs WHERE kind = ?1 AND target = ?2 AND status IN ('decided', 'started')",
            params![t.kind.as_str(), t.name],
            |r| r.get::<_, i64>(0).map(|n| n as u32),
        )
    }

    pub fn runs_with_status(&self, status: RunState) -> R<Vec<RunRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE status = ?1 ORDER BY id"
        ))?;
        let rows = st.query_map(params![status.as_str()], run_row)?;
        rows.collect()
    }

    pub fn run(&self, id: i64) -> R<Option<RunRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                params![id],
                run_row,
            )
            .optional()
    }

    /// The most recent runs, newest first.
    pub fn recent_runs(&self, limit: i64) -> R<Vec<RunRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN_COLS} FROM runs ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit], run_row)?;
        rows.collect()
    }

    pub fn note_start_attempt(&self, id: i64) -> R<()> {
        self.write1(
            "UPDATE runs SET attempts = attempts + 1 WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Marks a decided run started and queues its notices in the same transaction (a crash
    /// keeps both or neither). `None`: the run was no longer `decided` (nothing written).
    pub fn mark_started(
        &self,
        id: i64,
        arn: &str,
        at: DateTime<Utc>,
        notices: &[Queued],
    ) -> R<Option<Vec<bool>>> {
        self.move_run(
            "UPDATE runs SET status = 'started', arn = ?2, started_ms = ?3 WHERE id = ?1 AND status = 'decided'",
            params![id, arn, ms(at)],
            at,
            notices,
        )
    }

    /// Records that AWS refused a decided run's start, with its notices; `None` if the run
    /// was no longer `decided` (so a start failure chains and notifies once, like `mark_ended`).
    pub fn mark_start_failed(
        &self,
        id: i64,
        detail: &str,
        at: DateTime<Utc>,
        notices: &[Queued],
    ) -> R<Option<Vec<bool>>> {
        self.move_run(
            "UPDATE runs SET status = 'start_failed', detail = ?2, ended_ms = ?3, chained = 0 WHERE id = ?1 AND status = 'decided'",
            params![id, detail, ms(at)],
            at,
            notices,
        )
    }

    /// Marks a run ended, with its notices; `None` if it had already ended (so its end is
    /// handled once).
    pub fn mark_ended(
        &self,
        id: i64,
        succeeded: bool,
        detail: &str,
        at: DateTime<Utc>,
        notices: &[Queued],
    ) -> R<Option<Vec<bool>>> {
        self.move_run(
            "UPDATE runs SET status = ?2, detail = ?3, ended_ms = ?4, chained = 0 WHERE id = ?1 AND status = 'started'",
            params![id, if succeeded { "succeeded" } else { "failed" }, detail, ms(at)],
            at,
            notices,
        )
    }

    /// Moves a run to its next state (`update`, guarded by the state it must be in) and
    /// queues its notices in the same transaction; `None` when the run was not in that state.
    fn move_run(
        &self,
        update: &str,
        params: &[&dyn rusqlite::ToSql],
        at: DateTime<Utc>,
        notices: &[Queued],
    ) -> R<Option<Vec<bool>>> {
        self.write(|w| {
            if w.exec(update, params)? == 0 {
                return Ok(None);
            }
            Self::queue_all(w, notices, ms(at)).map(Some)
        })
    }

    /// A run's end was chained: its on_success / on_failure rules were considered.
    pub fn mark_chained(&self, id: i64) -> R<()> {
        self.write1("UPDATE runs SET chained = 1 WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Ended runs whose chain was not considered yet (a crash came between).
    pub fn unchained_runs(&self) -> R<Vec<RunRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE chained = 0 ORDER BY id"
        ))?;
        let rows = st.query_map([], run_row)?;
        rows.collect()
    }

    fn queue_all(w: &mut W<'_>, notices: &[Queued], now_ms: i64) -> R<Vec<bool>> {
        notices
            .iter()
            .map(|n| Self::enqueue_in(w, &n.as_outgoing(), now_ms))
            .collect()
    }

    /// The run AWS knows by this ARN (a SageMaker execution ARN, or a build id).
    pub fn run_by_arn(&self, arn: &str) -> R<Option<RunRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE arn = ?1 ORDER BY id DESC LIMIT 1"),
                params![arn],
                run_row,
            )
            .optional()
    }

    /// Remembers EventBridge event ids in one transaction, forgetting those older than
    /// `EVENT_MEMORY`; for each id, whether it is new (not handled before).
    pub fn mark_events_seen(&self, ids: &[&str], now: DateTime<Utc>) -> R<Vec<bool>> {
        let forget = ms(now) - EVENT_MEMORY.as_millis() as i64;
        self.write(|w| {
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
        })
    }

    /// Queues a notification unless the same (notifier, rule, event) went out within the
    /// repeat interval. Returns whether it was queued.
    pub fn enqueue(&self, n: &Outgoing<'_>, now: DateTime<Utc>) -> R<bool> {
        self.write(|w| Self::enqueue_in(w, n, ms(now)))
    }

    fn enqueue_in(w: &mut W<'_>, n: &Outgoing<'_>, now_ms: i64) -> R<bool> {
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
    pub fn pending_outbox(&self, now: DateTime<Utc>, limit: i64) -> R<Vec<OutboxRow>> {
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
        rows.collect()
    }

    /// When the earliest unsent notification is due (`None`: nothing is queued).
    pub fn next_outbox_attempt(&self) -> R<Option<DateTime<Utc>>> {
        let ms: Option<i64> = self.conn().query_row(
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE sent_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(from_ms(ms))
    }

    pub fn outbox_unsent(&self) -> R<i64> {
        self.conn().query_row(
            "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL",
            [],
            |r| r.get(0),
        )
    }

    pub fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> R<()> {
        self.write1(
            "UPDATE outbox SET sent_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, ms(at)],
        )?;
        Ok(())
    }

    pub fn mark_send_failed(&self, id: i64, error: &str, next_attempt: DateTime<Utc>) -> R<()> {
        self.write1(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1",
            params![id, error, ms(next_attempt)],
        )?;
        Ok(())
    }

    /// The gate's recorded decision on a package, if any: (decision, applied).
    pub fn gate_decision(&self, gate: &str, arn: &str) -> R<Option<(GateDecision, bool)>> {
        self.conn()
            .query_row(
                "SELECT decision, applied FROM gate_decisions WHERE gate = ?1 AND package_arn = ?2",
                params![gate, arn],
                |r| Ok((gate_decision(r, 0)?, r.get::<_, i64>(1)? != 0)),
            )
            .optional()
    }

    pub fn record_gate_decision(
        &self,
        gate: &str,
        arn: &str,
        decision: GateDecision,
        value: Option<f64>,
        reason: &str,
        at: DateTime<Utc>,
    ) -> R<()> {
        self.write1(
            "INSERT INTO gate_decisions (gate, package_arn, decision, value, reason, decided_ms, applied) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
             ON CONFLICT (gate, package_arn) DO UPDATE SET decision = excluded.decision, value = excluded.value, reason = excluded.reason,
               decided_ms = excluded.decided_ms, applied = 0",
            params![gate, arn, decision.as_str(), value, reason, ms(at)],
        )?;
        Ok(())
    }

    pub fn mark_gate_applied(&self, gate: &str, arn: &str) -> R<()> {
        self.write1(
            "UPDATE gate_decisions SET applied = 1 WHERE gate = ?1 AND package_arn = ?2",
            params![gate, arn],
        )?;
        Ok(())
    }

    /// Approvals and rejections stored but not yet applied to AWS.
    pub fn unapplied_gate_decisions(&self) -> R<Vec<GateDecisionRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!("SELECT {GATE_COLS} FROM gate_decisions WHERE applied = 0 AND decision IN ('approved', 'rejected')"))?;
        let rows = st.query_map([], gate_row)?;
        rows.collect()
    }

    /// Recent gate decisions, newest first.
    pub fn recent_gate_decisions(&self, limit: i64) -> R<Vec<GateDecisionRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {GATE_COLS} FROM gate_decisions ORDER BY decided_ms DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit], gate_row)?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out<'a>(event: &'a str, interval_s: u64) -> Outgoing<'a> {
        Outgoing {
            notifier: "ops",
            topic_arn: "arn:aws:sns:us-east-1:1:t",
            event,
            rule: "r",
            check: None,
            correlation_id: "c-1",
            subject: "s",
            body: "b",
            repeat_interval: std::time::Duration::from_secs(interval_s),
        }
    }

    #[test]
    fn repeat_interval_dedupes_per_notifier_rule_event() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(s.enqueue(&out("run_started", 3600), t0).unwrap());
        assert!(!s
            .enqueue(
                &out("run_started", 3600),
                t0 + chrono::Duration::minutes(59)
            )
            .unwrap());
        assert!(
            s.enqueue(&out("run_failed", 3600), t0 + chrono::Duration::minutes(59))
                .unwrap(),
            "another event"
        );
        assert!(s
            .enqueue(
                &out("run_started", 3600),
                t0 + chrono::Duration::minutes(60)
            )
            .unwrap());
        assert_eq!(s.outbox_unsent().unwrap(), 3);
        let rows = s
            .pending_outbox(t0 + chrono::Duration::hours(2), 10)
            .unwrap();
        s.mark_sent(rows[0].id, t0).unwrap();
        s.mark_send_failed(rows[1].id, "boom", t0 + chrono::Duration::days(1))
            .unwrap();
        assert_eq!(
            s.pending_outbox(t0 + chrono::Duration::hours(2), 10)
                .unwrap()
                .len(),
            1,
            "sent and backed-off rows are not pending"
        );
    }

    #[test]
    fn recent_values_are_bounded_per_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let st = CheckState::default();
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        for i in 0..(KEEP_VALUES + 50) {
            let e = CheckEval {
                name: "c",
                state: &st,
                value: Some(i as f64),
                breached: false,
                at: t0 + chrono::Duration::seconds(i),
            };
            s.save_check_evals(&[e], &[], t0).unwrap();
        }
        let all = s.all_check_values(KEEP_VALUES as usize + 10).unwrap();
        let v = &all["c"];
        assert_eq!(v.len() as i64, KEEP_VALUES);
        assert_eq!(s.all_check_values(3).unwrap()["c"].len(), 3, "the newest 3");
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
        assert_eq!(
            v.last().unwrap().1,
            Some((KEEP_VALUES + 49) as f64),
            "the newest are kept"
        );
    }

    #[test]
    fn event_ids_are_remembered_seven_days() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(
            s.mark_events_seen(&["a", "b", "a"], t0).unwrap(),
            [true, true, false]
        );
        assert_eq!(
            s.mark_events_seen(&["a"], t0 + chrono::Duration::days(6))
                .unwrap(),
            [false],
            "redelivered within 7 days"
        );
        assert_eq!(
            s.mark_events_seen(&["b"], t0 + chrono::Duration::days(8))
                .unwrap(),
            [true],
            "forgotten after 7 days"
        );
    }

    #[test]
    fn a_decision_is_stored_whole_and_ends_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let st = RuleState {
            firings: 1,
            last_fired: Some(now),
            cooldown_until: None,
        };
        let run = NewRun {
            kind: RunKind::Pipeline,
            target: "p".into(),
            token: "mlopsd-x".into(),
            request: "{}".into(),
            correlation_id: "c".into(),
            check: None,
        };
        let ids = s.record_firing("r", &st, &[run], now).unwrap();
        let t = Target {
            kind: RunKind::Pipeline,
            name: "p".into(),
        };
        assert_eq!(s.active_runs(&t).unwrap(), 1);
        assert_eq!(s.rule_state("r").unwrap(), st);
        let notice = |event: &str| Queued {
            notifier: "ops".into(),
            topic_arn: "arn:t".into(),
            event: event.into(),
            rule: "r".into(),
            check: None,
            correlation_id: "c".into(),
            subject: "s".into(),
            body: "b".into(),
            repeat_interval: std::time::Duration::ZERO,
        };
        assert_eq!(
            s.mark_started(ids[0], "arn:1", now, &[notice("run_started")])
                .unwrap(),
            Some(vec![true])
        );
        assert_eq!(
            s.mark_started(ids[0], "arn:1", now, &[notice("run_started")])
                .unwrap(),
            None,
            "started once: no second notice"
        );
        assert!(s
            .mark_ended(ids[0], true, "Succeeded", now, &[notice("run_succeeded")])
            .unwrap()
            .is_some());
        assert!(
            s.mark_ended(ids[0], true, "Succeeded", now, &[notice("run_succeeded")])
                .unwrap()
                .is_none(),
            "the end is handled once"
        );
        assert_eq!(
            s.outbox_unsent().unwrap(),
            2,
            "each notice queued with its change, once"
        );
        assert_eq!(s.active_runs(&t).unwrap(), 0);
        assert_eq!(s.run(ids[0]).unwrap().unwrap().status, RunState::Succeeded);
    }
}

/// A declared pipeline's stored apply state, with when it changed and was last compared.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineApply {
    pub pipeline: String,
    pub row: ApplyRow,
    pub arn: Option<String>,
    pub changed: Option<DateTime<Utc>>,
    pub checked: Option<DateTime<Utc>>,
}

const APPLY_COLS: &str =
    "pipeline, applied_hash, pending_op, pending_hash, drift_hash, state, detail, arn, changed_ms, checked_ms";

fn apply_row(r: &rusqlite::Row<'_>) -> R<PipelineApply> {
    let op: Option<String> = r.get(2)?;
    let pending_hash: Option<String> = r.get(3)?;
    let pending = match (op, pending_hash) {
        (Some(o), Some(h)) => Some((
            ApplyOp::parse(&o).ok_or_else(|| bad_column(2, "apply operation", &o))?,
            h,
        )),
        _ => None,
    };
    let state: String = r.get(5)?;
    Ok(PipelineApply {
        pipeline: r.get(0)?,
        row: ApplyRow {
            applied: r.get(1)?,
            pending,
            drift: r.get(4)?,
            state: SyncState::parse(&state)
                .ok_or_else(|| bad_column(5, "pipeline state", &state))?,
            detail: r.get(6)?,
        },
        arn: r.get(7)?,
        changed: from_ms(r.get(8)?),
        checked: from_ms(r.get(9)?),
    })
}

impl Store {
    /// The stored apply state of a declared pipeline (`None`: never compared).
    pub fn pipeline_apply(&self, pipeline: &str) -> R<Option<PipelineApply>> {
        self.conn()
            .query_row(
                &format!("SELECT {APPLY_COLS} FROM pipeline_applies WHERE pipeline = ?1"),
                params![pipeline],
                apply_row,
            )
            .optional()
    }

    /// Every declared pipeline's apply state (for `/status`).
    pub fn pipeline_applies(&self) -> R<Vec<PipelineApply>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {APPLY_COLS} FROM pipeline_applies ORDER BY pipeline"
        ))?;
        let rows = st.query_map([], apply_row)?;
        rows.collect()
    }

    /// Stores a pipeline's apply state as compared at `now`; `changed_ms` moves only when the
    /// state does.
    pub fn save_pipeline_apply(
        &self,
        pipeline: &str,
        row: &ApplyRow,
        arn: Option<&str>,
        now: DateTime<Utc>,
    ) -> R<()> {
        let (op, hash) = match &row.pending {
            Some((o, h)) => (Some(o.as_str()), Some(h.as_str())),
            None => (None, None),
        };
        self.write1(
            "INSERT INTO pipeline_applies (pipeline, applied_hash, pending_op, pending_hash, drift_hash, state, detail, arn, changed_ms, checked_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT (pipeline) DO UPDATE SET applied_hash = excluded.applied_hash, pending_op = excluded.pending_op,
               pending_hash = excluded.pending_hash, drift_hash = excluded.drift_hash, detail = excluded.detail,
               arn = COALESCE(excluded.arn, arn), checked_ms = excluded.checked_ms,
               changed_ms = CASE WHEN state = excluded.state THEN changed_ms ELSE excluded.changed_ms END,
               state = excluded.state",
            params![pipeline, row.applied, op, hash, row.drift, row.state.as_str(), row.detail, arn, ms(now)],
        )?;
        Ok(())
    }
}
