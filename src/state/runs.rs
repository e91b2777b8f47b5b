//! Table `runs`: every decided start (decided → started → succeeded | failed, or
//! start_failed), written before AWS is called, moved once per state.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::Queued;
use super::{bad_column, from_ms, ms, Sql, Store, R};
use crate::config::{RunKind, Target};

/// Where a decided run is: `Decided` (stored, start not confirmed) → `Started` (AWS gave an
/// ARN or build id) → `Succeeded` | `Failed`; or `StartFailed` when AWS refused the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RunState {
    Decided,
    Started,
    Succeeded,
    Failed,
    StartFailed,
}

impl RunState {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            RunState::Decided => "decided",
            RunState::Started => "started",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::StartFailed => "start_failed",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<RunState> {
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
}

/// A decided start, before AWS is called.
#[derive(Debug, Clone)]
pub(crate) struct NewRun {
    pub kind: RunKind,
    pub target: String,
    pub token: String,
    pub request: String,
    pub correlation_id: String,
    pub check: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunRow {
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

const RUN_COLS: &str = "id, rule, firing, kind, target, token, request, correlation_id, check_name, status, arn, detail, decided_ms, started_ms, ended_ms, attempts";

impl RunRow {
    pub(crate) fn target(&self) -> Target {
        Target {
            kind: self.kind,
            name: self.target.clone(),
        }
    }
}

fn run_kind(r: &rusqlite::Row<'_>, col: usize) -> Sql<RunKind> {
    let s: String = r.get(col)?;
    RunKind::parse(&s).ok_or_else(|| bad_column(col, "run kind", &s))
}

fn run_row(r: &rusqlite::Row<'_>) -> Sql<RunRow> {
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

impl Store {
    /// Active (decided or started) runs by target.
    pub(crate) fn active_run_counts(&self) -> R<std::collections::HashMap<Target, u32>> {
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
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// Runs of a target that are decided or started (not yet ended).
    pub(crate) fn active_runs(&self, t: &Target) -> R<u32> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM runs WHERE kind = ?1 AND target = ?2 AND status IN ('decided', 'started')",
            params![t.kind.as_str(), t.name],
            |r| r.get::<_, i64>(0).map(|n| n as u32),
        )?)
    }

    pub(crate) fn runs_with_status(&self, status: RunState) -> R<Vec<RunRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE status = ?1 ORDER BY id"
        ))?;
        let rows = st.query_map(params![status.as_str()], run_row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    pub(crate) fn run(&self, id: i64) -> R<Option<RunRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                params![id],
                run_row,
            )
            .optional()
            .map_err(Into::into)
    }

    /// The most recent runs, newest first.
    pub(crate) fn recent_runs(&self, limit: i64) -> R<Vec<RunRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN_COLS} FROM runs ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit], run_row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    pub(crate) fn note_start_attempt(&self, id: i64) -> R<()> {
        self.write1(
            "UPDATE runs SET attempts = attempts + 1 WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Marks a decided run started and queues its notices in the same transaction (a crash
    /// keeps both or neither). `None`: the run was no longer `decided` (nothing written).
    pub(crate) fn mark_started(
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
    pub(crate) fn mark_start_failed(
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
    pub(crate) fn mark_ended(
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
    pub(crate) fn mark_chained(&self, id: i64) -> R<()> {
        self.write1("UPDATE runs SET chained = 1 WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Ended runs whose chain was not considered yet (a crash came between).
    pub(crate) fn unchained_runs(&self) -> R<Vec<RunRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE chained = 0 ORDER BY id"
        ))?;
        let rows = st.query_map([], run_row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// The run AWS knows by this ARN (a SageMaker execution ARN, or a build id).
    pub(crate) fn run_by_arn(&self, arn: &str) -> R<Option<RunRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE arn = ?1 ORDER BY id DESC LIMIT 1"),
                params![arn],
                run_row,
            )
            .optional()
            .map_err(Into::into)
    }
}
