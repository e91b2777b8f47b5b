//! Table `pipeline_applies`: each declared pipeline's apply state (what was applied, what is
//! decided, what drift was reported).

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{bad_column, from_ms, ms, Sql, Store, R};
use crate::reconcile::{ApplyOp, ApplyRow, SyncState};

/// A declared pipeline's stored apply state, with when it changed and was last compared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PipelineApply {
    pub pipeline: String,
    pub row: ApplyRow,
    pub arn: Option<String>,
    pub changed: Option<DateTime<Utc>>,
    pub checked: Option<DateTime<Utc>>,
}

const APPLY_COLS: &str =
    "pipeline, applied_hash, pending_op, pending_hash, drift_hash, state, detail, arn, changed_ms, checked_ms";

fn apply_row(r: &rusqlite::Row<'_>) -> Sql<PipelineApply> {
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
    pub(crate) fn pipeline_apply(&self, pipeline: &str) -> R<Option<PipelineApply>> {
        self.conn()
            .query_row(
                &format!("SELECT {APPLY_COLS} FROM pipeline_applies WHERE pipeline = ?1"),
                params![pipeline],
                apply_row,
            )
            .optional()
            .map_err(Into::into)
    }

    /// Every declared pipeline's apply state (for `/status`).
    pub(crate) fn pipeline_applies(&self) -> R<Vec<PipelineApply>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {APPLY_COLS} FROM pipeline_applies ORDER BY pipeline"
        ))?;
        let rows = st.query_map([], apply_row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// Stores a pipeline's apply state as compared at `now`; `changed_ms` moves only when the
    /// state does.
    pub(crate) fn save_pipeline_apply(
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
