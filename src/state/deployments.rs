//! Table `deployments`: each decision to put a model package version on an endpoint, stored
//! before the first AWS call, and where it is: decided → deploying → baking → baked, or
//! rolling_back → rolled_back, or failed. A call that changes the endpoint is stored as
//! about to be sent (`sent_ms`, `confirmed = 0`) before it is sent, so a restart can tell a
//! call that landed from one that did not.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{bad_column, from_ms, ms, Queued, Sql, Store, R};
use crate::deploy::Op;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DeployState {
    /// Stored; the model and config are being made.
    Decided,
    /// The create or update is sent (or about to be), and followed.
    Deploying,
    /// SageMaker is done; mlopsd watches the rollback alarms until `bake_until`.
    Baking,
    /// mlopsd's update back to the previous config is sent (or about to be), and followed.
    RollingBack,
    Baked,
    RolledBack,
    Failed,
}

impl DeployState {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            DeployState::Decided => "decided",
            DeployState::Deploying => "deploying",
            DeployState::Baking => "baking",
            DeployState::RollingBack => "rolling_back",
            DeployState::Baked => "baked",
            DeployState::RolledBack => "rolled_back",
            DeployState::Failed => "failed",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<DeployState> {
        ALL.into_iter().find(|x| x.as_str() == s)
    }
    pub(crate) fn is_active(&self) -> bool {
        matches!(
            self,
            DeployState::Decided
                | DeployState::Deploying
                | DeployState::Baking
                | DeployState::RollingBack
        )
    }
}

const ALL: [DeployState; 7] = [
    DeployState::Decided,
    DeployState::Deploying,
    DeployState::Baking,
    DeployState::RollingBack,
    DeployState::Baked,
    DeployState::RolledBack,
    DeployState::Failed,
];

const ACTIVE: &str = "('decided', 'deploying', 'baking', 'rolling_back')";

/// A decision, before the first call.
#[derive(Debug, Clone)]
pub(crate) struct NewDeployment<'a> {
    pub endpoint: &'a str,
    pub endpoint_name: &'a str,
    pub version: u32,
    pub package_arn: &'a str,
    pub spec: &'a str,
    /// The model's and the config's name.
    pub resource: &'a str,
    /// What the endpoint served when this was decided (`None`: it did not exist).
    pub prev_config: Option<&'a str>,
    pub prev_version: Option<u32>,
    pub correlation_id: &'a str,
}

/// One stored deployment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeploymentRow {
    pub id: i64,
    pub endpoint: String,
    pub endpoint_name: String,
    pub version: u32,
    pub package_arn: String,
    pub spec: String,
    pub resource: String,
    pub prev_config: Option<String>,
    pub prev_version: Option<u32>,
    pub op: Op,
    pub state: DeployState,
    pub sent: Option<DateTime<Utc>>,
    pub confirmed: bool,
    pub attempts: i64,
    pub reason: Option<String>,
    /// `sagemaker` or `mlopsd`, for a rollback.
    pub rolled_back_by: Option<String>,
    pub correlation_id: String,
    pub decided: Option<DateTime<Utc>>,
    pub succeeded: Option<DateTime<Utc>>,
    pub bake_until: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    /// 0: nothing chained yet, 1: on_success rules considered, 2: on_failure rules considered.
    pub chained: i64,
    /// 0: nothing to reject, 1: the package is to be set Rejected, 2: it was.
    pub reject: i64,
}

impl DeploymentRow {
    /// Whether its on_success / on_failure rules still have to be considered.
    pub(crate) fn chain_due(&self) -> Option<bool> {
        match self.state {
            DeployState::Baking | DeployState::Baked if self.chained < 1 => Some(true),
            DeployState::RolledBack | DeployState::Failed if self.chained < 2 => Some(false),
            _ => None,
        }
    }
}

const COLS: &str = "id, endpoint, endpoint_name, version, package_arn, spec, resource, prev_config, prev_version, op, state, sent_ms, confirmed, attempts, reason, rolled_back_by, correlation_id, decided_ms, succeeded_ms, bake_until_ms, ended_ms, chained, reject";

fn row(r: &rusqlite::Row<'_>) -> Sql<DeploymentRow> {
    let op: String = r.get(9)?;
    let state: String = r.get(10)?;
    let version: i64 = r.get(3)?;
    let prev_version: Option<i64> = r.get(8)?;
    Ok(DeploymentRow {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        endpoint_name: r.get(2)?,
        version: u32::try_from(version)
            .map_err(|_| bad_column(3, "version", &version.to_string()))?,
        package_arn: r.get(4)?,
        spec: r.get(5)?,
        resource: r.get(6)?,
        prev_config: r.get(7)?,
        prev_version: prev_version.and_then(|v| u32::try_from(v).ok()),
        op: Op::parse(&op).ok_or_else(|| bad_column(9, "deployment operation", &op))?,
        state: DeployState::parse(&state)
            .ok_or_else(|| bad_column(10, "deployment state", &state))?,
        sent: from_ms(r.get(11)?),
        confirmed: r.get::<_, i64>(12)? != 0,
        attempts: r.get(13)?,
        reason: r.get(14)?,
        rolled_back_by: r.get(15)?,
        correlation_id: r.get(16)?,
        decided: from_ms(r.get(17)?),
        succeeded: from_ms(r.get(18)?),
        bake_until: from_ms(r.get(19)?),
        ended: from_ms(r.get(20)?),
        chained: r.get(21)?,
        reject: r.get(22)?,
    })
}

/// A move of a deployment to another state (guarded by the state it must be in).
#[derive(Debug, Clone, Default)]
pub(crate) struct Move<'a> {
    pub reason: Option<&'a str>,
    pub rolled_back_by: Option<&'a str>,
    pub succeeded: Option<DateTime<Utc>>,
    pub bake_until: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub reject: bool,
}

impl Store {
    /// Stores a decision with its notices; returns its id.
    pub(crate) fn insert_deployment(
        &self,
        d: &NewDeployment<'_>,
        now: DateTime<Utc>,
        notices: &[Queued],
    ) -> R<(i64, Vec<bool>)> {
        self.write(|w| {
            w.exec(
                "INSERT INTO deployments (endpoint, endpoint_name, version, package_arn, spec, resource, prev_config, prev_version, op, state, correlation_id, decided_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'decided', ?10, ?11)",
                params![d.endpoint, d.endpoint_name, d.version, d.package_arn, d.spec, d.resource, d.prev_config, d.prev_version,
                    if d.prev_config.is_some() { "update" } else { "create" }, d.correlation_id, ms(now)],
            )?;
            let id: i64 = w.query_row("SELECT max(id) FROM deployments", [], |r| r.get(0))?;
            let q = Self::queue_all(w, notices, ms(now))?;
            Ok((id, q))
        })
    }

    pub(crate) fn deployment(&self, id: i64) -> R<Option<DeploymentRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLS} FROM deployments WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
            .map_err(Into::into)
    }

    /// Every deployment not at its end, oldest first.
    pub(crate) fn active_deployments(&self) -> R<Vec<DeploymentRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLS} FROM deployments WHERE state IN {ACTIVE} ORDER BY id"
        ))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// The newest deployment of each endpoint block (for `/status`).
    pub(crate) fn latest_deployments(&self) -> R<Vec<DeploymentRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLS} FROM deployments WHERE id IN (SELECT max(id) FROM deployments GROUP BY endpoint) ORDER BY endpoint"
        ))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// The newest deployment of an endpoint block.
    pub(crate) fn last_deployment(&self, endpoint: &str) -> R<Option<DeploymentRow>> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {COLS} FROM deployments WHERE endpoint = ?1 ORDER BY id DESC LIMIT 1"
                ),
                params![endpoint],
                row,
            )
            .optional()
            .map_err(Into::into)
    }

    /// The newest deployment (of any block) that made `resource` (for the version a config
    /// serves).
    pub(crate) fn deployment_of(&self, resource: &str) -> R<Option<DeploymentRow>> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {COLS} FROM deployments WHERE resource = ?1 ORDER BY id DESC LIMIT 1"
                ),
                params![resource],
                row,
            )
            .optional()
            .map_err(Into::into)
    }

    /// The versions that baked on an endpoint block.
    pub(crate) fn baked_versions(&self, endpoint: &str) -> R<std::collections::HashSet<u32>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT DISTINCT version FROM deployments WHERE endpoint = ?1 AND state = 'baked'",
        )?;
        let rows = st.query_map(params![endpoint], |r| r.get::<_, i64>(0))?;
        Ok(rows
            .filter_map(|v| v.ok().and_then(|v| u32::try_from(v).ok()))
            .collect())
    }

    /// How this version with this spec ended on the endpoint block before, if it was rolled
    /// back or failed there (it is not deployed there again automatically).
    pub(crate) fn failed_before(
        &self,
        endpoint: &str,
        version: u32,
        spec: &str,
    ) -> R<Option<DeploymentRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLS} FROM deployments WHERE endpoint = ?1 AND version = ?2 AND spec = ?3 AND state IN ('rolled_back', 'failed') ORDER BY id DESC LIMIT 1"),
                params![endpoint, version, spec],
                row,
            )
            .optional()
            .map_err(Into::into)
    }

    /// Stores that a call is about to be sent: `op`, at `at`, not yet confirmed (with the
    /// reason for a rollback).
    pub(crate) fn deployment_sending(
        &self,
        id: i64,
        from: DeployState,
        to: DeployState,
        op: Op,
        at: DateTime<Utc>,
        reason: Option<&str>,
    ) -> R<bool> {
        Ok(self.write1(
            "UPDATE deployments SET state = ?3, op = ?4, sent_ms = ?5, confirmed = 0, reason = COALESCE(?6, reason),
               attempts = CASE WHEN op = ?4 THEN attempts + 1 ELSE 1 END WHERE id = ?1 AND state = ?2",
            params![id, from.as_str(), to.as_str(), op.as_str(), ms(at), reason],
        )? == 1)
    }

    /// A call AWS refused as in progress (it did not land): back to `decided`, so it is sent
    /// once the endpoint is `InService` again.
    pub(crate) fn deployment_unsent(&self, id: i64) -> R<()> {
        self.write1(
            "UPDATE deployments SET state = 'decided', sent_ms = NULL, confirmed = 0 WHERE id = ?1 AND state = 'deploying'",
            params![id],
        )?;
        Ok(())
    }

    /// AWS took the call in flight.
    pub(crate) fn deployment_confirmed(&self, id: i64) -> R<()> {
        self.write1(
            "UPDATE deployments SET confirmed = 1 WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Moves a deployment from `from` to `to` with its notices, in one transaction; `None`
    /// when it was not in `from` (its move was made already).
    pub(crate) fn move_deployment(
        &self,
        id: i64,
        from: DeployState,
        to: DeployState,
        m: &Move<'_>,
        now: DateTime<Utc>,
        notices: &[Queued],
    ) -> R<Option<Vec<bool>>> {
        self.write(|w| {
            let n = w.exec(
                "UPDATE deployments SET state = ?3, reason = COALESCE(?4, reason), rolled_back_by = COALESCE(?5, rolled_back_by),
                   succeeded_ms = COALESCE(?6, succeeded_ms), bake_until_ms = COALESCE(?7, bake_until_ms),
                   ended_ms = COALESCE(?8, ended_ms), reject = CASE WHEN ?9 THEN 1 ELSE reject END
                 WHERE id = ?1 AND state = ?2",
                params![id, from.as_str(), to.as_str(), m.reason, m.rolled_back_by, m.succeeded.map(ms), m.bake_until.map(ms), m.ended.map(ms), m.reject],
            )?;
            if n == 0 {
                return Ok(None);
            }
            Self::queue_all(w, notices, ms(now)).map(Some)
        })
    }

    /// Its on_success (1) or on_failure (2) rules were considered.
    pub(crate) fn mark_deployment_chained(&self, id: i64, level: i64) -> R<()> {
        self.write1(
            "UPDATE deployments SET chained = max(chained, ?2) WHERE id = ?1",
            params![id, level],
        )?;
        Ok(())
    }

    /// Deployments whose chain is due (a crash came between the move and the chain).
    pub(crate) fn unchained_deployments(&self) -> R<Vec<DeploymentRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLS} FROM deployments WHERE (state IN ('baking', 'baked') AND chained < 1) OR (state IN ('rolled_back', 'failed') AND chained < 2) ORDER BY id"
        ))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    /// Versions to set Rejected (`on_rollback = "reject"`) that were not yet.
    pub(crate) fn rejects_due(&self) -> R<Vec<DeploymentRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLS} FROM deployments WHERE reject = 1 ORDER BY id"
        ))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<Sql<_>>()?)
    }

    pub(crate) fn mark_rejected(&self, id: i64) -> R<()> {
        self.write1(
            "UPDATE deployments SET reject = 2 WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// The models and configs mlopsd made for an endpoint block that may be deleted: those
    /// of ended deployments not yet cleaned, other than `keep`.
    pub(crate) fn cleanable(&self, endpoint: &str, keep: &[&str]) -> R<Vec<(i64, String)>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT id, resource FROM deployments WHERE endpoint = ?1 AND cleaned = 0 AND state IN ('baked', 'rolled_back', 'failed') ORDER BY id",
        )?;
        let rows = st.query_map(params![endpoint], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows
            .collect::<Sql<Vec<(i64, String)>>>()?
            .into_iter()
            .filter(|(_, n)| !keep.contains(&n.as_str()))
            .collect())
    }

    pub(crate) fn mark_cleaned(&self, ids: &[i64]) -> R<()> {
        self.write(|w| {
            for id in ids {
                w.exec(
                    "UPDATE deployments SET cleaned = 1 WHERE id = ?1",
                    params![id],
                )?;
            }
            Ok(())
        })
    }
}
