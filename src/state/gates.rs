//! Table `gate_decisions`: each gate's verdict on a package, stored before the approval is
//! set, and whether it was applied.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{bad_column, from_ms, ms, Sql, Store, R};

/// A gate's verdict on one model package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum GateDecision {
    Approved,
    Rejected,
    /// The package has no usable metric; it stays pending (reported once).
    NoMetric,
}

impl GateDecision {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            GateDecision::Approved => "approved",
            GateDecision::Rejected => "rejected",
            GateDecision::NoMetric => "no_metric",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<GateDecision> {
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
pub(crate) struct GateDecisionRow {
    pub gate: String,
    pub arn: String,
    pub decision: GateDecision,
    pub value: Option<f64>,
    pub reason: String,
    pub at: Option<DateTime<Utc>>,
}

const GATE_COLS: &str = "gate, package_arn, decision, value, reason, decided_ms";

fn gate_decision(r: &rusqlite::Row<'_>, col: usize) -> Sql<GateDecision> {
    let s: String = r.get(col)?;
    GateDecision::parse(&s).ok_or_else(|| bad_column(col, "gate decision", &s))
}

fn gate_row(r: &rusqlite::Row<'_>) -> Sql<GateDecisionRow> {
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
    /// The gate's recorded decision on a package, if any: (decision, applied).
    pub(crate) fn gate_decision(&self, gate: &str, arn: &str) -> R<Option<(GateDecision, bool)>> {
        self.conn()
            .query_row(
                "SELECT decision, applied FROM gate_decisions WHERE gate = ?1 AND package_arn = ?2",
                params![gate, arn],
                |r| Ok((gate_decision(r, 0)?, r.get::<_, i64>(1)? != 0)),
            )
            .optional()
            .map_err(Into::into)
    }

    pub(crate) fn record_gate_decision(
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

    pub(crate) fn mark_gate_applied(&self, gate: &str, arn: &str) -> R<()> {
        self.write1(
            "UPDATE gate_decisions SET applied = 1 WHERE gate = ?1 AND package_arn = ?2",
            params![gate, arn],
        )?;
        Ok(())
    }

    /// Approvals and rejections stored but not yet applied to AWS.
    pub(crate) fn unapplied_gate_decisions(&self) -> R<Vec<GateDecisionRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!("SELECT {GATE_COLS} FROM gate_decisions WHERE applied = 0 AND decision IN ('approved', 'rejected')"))?;
        let rows = st.query_map([], gate_row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// Recent gate decisions, newest first.
    pub(crate) fn recent_gate_decisions(&self, limit: i64) -> R<Vec<GateDecisionRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {GATE_COLS} FROM gate_decisions ORDER BY decided_ms DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit], gate_row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }
}
