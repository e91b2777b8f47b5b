//! Following a deployment: each step driven (the model and config made, the call stored as
//! about to be sent and sent, the endpoint described), and the answers taken.

use std::sync::Arc;

use super::{DeployAnswer, Work};
use crate::cloud::{AwsError, Cloud, EndpointView, ErrorKind};
use crate::config::{Endpoint, Strategy};
use crate::daemon::work::Msg;
use crate::deploy::{self, Op, Verdict};
use crate::events;
use crate::state::{DeployState, DeploymentRow};

/// Give up on sending a deployment's call after this many attempts that did not land.
const MAX_SENDS: i64 = 8;

impl<C: Cloud> Work<C> {
    /// Every deployment not at its end moves on (poll), and what a crash left is finished:
    /// chains, rejections.
    pub(in crate::daemon) fn drive_deployments(&mut self) {
        let r = self.store.active_deployments();
        if let Some(rows) = self.db("read active deployments", "", "driven at the next poll", r) {
            for row in rows {
                self.drive(row);
            }
        }
        let r = self.store.unchained_deployments();
        if let Some(rows) = self.db(
            "read unchained deployments",
            "",
            "chained at the next poll",
            r,
        ) {
            for row in rows {
                if let Some(succeeded) = row.chain_due() {
                    self.chain_deployment(&row, succeeded);
                }
            }
        }
        let r = self.store.rejects_due();
        if let Some(rows) = self.db(
            "read versions to reject",
            "",
            "rejected at the next poll",
            r,
        ) {
            for row in rows {
                self.reject(&row);
            }
        }
    }

    /// Wakes the deployment on this SageMaker endpoint (an endpoint event's hint).
    pub(in crate::daemon) fn wake_endpoint(&mut self, endpoint_name: &str) -> Vec<String> {
        let r = self.store.active_deployments();
        let rows = self
            .db(
                "read active deployments",
                endpoint_name,
                "read at the next poll",
                r,
            )
            .unwrap_or_default();
        let mut woken = Vec::new();
        for row in rows
            .into_iter()
            .filter(|r| r.endpoint_name == endpoint_name)
        {
            woken.push(row.endpoint.clone());
            self.drive(row);
        }
        woken
    }

    /// The next step of a deployment, unless a call of its endpoint is out.
    pub(super) fn drive(&mut self, row: DeploymentRow) {
        if self.deploys.busy.contains(&row.endpoint) {
            return;
        }
        let Some(ep) = self.cfg.endpoints.get(&row.endpoint).cloned() else {
            // The block was removed: a call that was sent is still followed to its end; a
            // bake (its alarms gone with the block) or an unsent decision waits for the block.
            if matches!(row.state, DeployState::Deploying | DeployState::RollingBack) {
                self.observe(row, None);
            }
            return;
        };
        match row.state {
            DeployState::Decided => self.prepare(row, ep),
            DeployState::Deploying | DeployState::RollingBack => self.observe(row, None),
            DeployState::Baking => {
                let alarms = ep.rollback_alarms.clone();
                self.observe(row, Some(alarms))
            }
            _ => {}
        }
    }

    /// Runs a call of a deployment in a task; its endpoint is busy until the answer.
    pub(super) fn spawn_for(
        &mut self,
        row: &DeploymentRow,
        f: impl std::future::Future<Output = DeployAnswer> + Send + 'static,
    ) {
        self.deploys.busy.insert(row.endpoint.clone());
        self.spawn_aside(row, f);
    }

    /// Runs a call that leaves the endpoint alone (a rejection, a clean-up) in a task.
    pub(super) fn spawn_aside(
        &self,
        row: &DeploymentRow,
        f: impl std::future::Future<Output = DeployAnswer> + Send + 'static,
    ) {
        let (tx, id, endpoint) = (self.tx.clone(), row.id, row.endpoint.clone());
        self.tracker.spawn(async move {
            let answer = f.await;
            let _ = tx.send(Msg::Deploy {
                endpoint,
                id,
                answer: Box::new(answer),
            });
        });
    }

    /// The model, then the config: each described first, created when absent.
    pub(super) fn prepare(&mut self, row: DeploymentRow, ep: Arc<Endpoint>) {
        let cloud = self.cloud.clone();
        let r = row.clone();
        self.spawn_for(&row, async move {
            let result = async {
                if !cloud.model_exists(&r.resource).await? {
                    let act = cloud.acting()?;
                    cloud
                        .create_model(&act, &r.resource, &r.package_arn, &ep.execution_role_arn)
                        .await?;
                }
                crate::failpoint::hit_for("after_model", &r.endpoint);
                if !cloud.endpoint_config_exists(&r.resource).await? {
                    let act = cloud.acting()?;
                    cloud
                        .create_endpoint_config(&act, &r.resource, &r.resource, &ep.capacity)
                        .await?;
                }
                crate::failpoint::hit_for("after_config", &r.endpoint);
                ready_to_send(&*cloud, &r).await
            }
            .await;
            DeployAnswer::Prepared(result)
        });
    }

    /// Stores that `op` is about to be sent (moving `row` to `to`, with the reason of a
    /// rollback), then sends it; false when it was not stored (it is decided again later).
    pub(super) fn store_and_send(
        &mut self,
        row: &DeploymentRow,
        to: DeployState,
        op: Op,
        reason: Option<&str>,
    ) -> bool {
        let r = self
            .store
            .deployment_sending(row.id, row.state, to, op, self.now(), reason);
        if self.db(
            "store the call about to be sent",
            &row.endpoint,
            "decided again at the next poll",
            r,
        ) != Some(true)
        {
            return false;
        }
        let r = self.store.deployment(row.id);
        if let Some(Some(row)) = self.db(
            "read a deployment",
            &row.endpoint,
            "sent at the next poll",
            r,
        ) {
            self.send(row);
        }
        true
    }

    /// Sends the call the row is about to make (stored as such before this).
    pub(super) fn send(&mut self, row: DeploymentRow) {
        let strategy = self
            .cfg
            .endpoints
            .get(&row.endpoint)
            .map(|e| (e.strategy, e.rollback_alarms.clone()));
        let cloud = self.cloud.clone();
        let r = row.clone();
        self.spawn_for(&row, async move {
            let result = async {
                let act = cloud.acting()?;
                match r.op {
                    Op::Create => {
                        cloud
                            .create_endpoint(&act, &r.endpoint_name, &r.resource)
                            .await
                    }
                    Op::Update => {
                        let (s, alarms) = strategy.unwrap_or((Strategy::AllAtOnce, Vec::new()));
                        cloud
                            .update_endpoint(&act, &r.endpoint_name, &r.resource, &s, &alarms)
                            .await
                    }
                    Op::Rollback => {
                        let prev = r.prev_config.as_deref().unwrap_or_default();
                        cloud
                            .update_endpoint(
                                &act,
                                &r.endpoint_name,
                                prev,
                                &Strategy::AllAtOnce,
                                &[],
                            )
                            .await
                    }
                }
            }
            .await;
            crate::failpoint::hit_for("after_deploy_sent", &r.endpoint);
            DeployAnswer::Sent(result)
        });
    }

    pub(super) fn observe(&mut self, row: DeploymentRow, alarms: Option<Vec<String>>) {
        let cloud = self.cloud.clone();
        let name = row.endpoint_name.clone();
        self.spawn_for(&row, async move {
            let alarms = match alarms {
                Some(a) => Some(cloud.alarm_states(&a).await),
                None => None,
            };
            let view = if alarms.is_some() {
                Ok(None)
            } else {
                cloud.describe_endpoint(&name).await
            };
            DeployAnswer::Observed { view, alarms }
        });
    }

    /// Takes an answer about deployment `id`.
    pub(in crate::daemon) fn on_deploy(&mut self, endpoint: String, id: i64, answer: DeployAnswer) {
        if !matches!(
            answer,
            DeployAnswer::Rejected(_) | DeployAnswer::Cleaned { .. }
        ) {
            self.deploys.busy.remove(&endpoint);
        }
        let r = self.store.deployment(id);
        let Some(Some(row)) = self.db("read a deployment", &endpoint, "driven at the next poll", r)
        else {
            return;
        };
        match answer {
            DeployAnswer::Prepared(r) => self.on_prepared(row, r),
            DeployAnswer::Sent(r) => self.on_sent(row, r),
            DeployAnswer::Observed { view, alarms } => match alarms {
                Some(a) => self.on_bake_look(row, a),
                None => self.on_observed(row, view),
            },
            DeployAnswer::Rejected(r) => {
                self.deploys.rejecting.remove(&row.id);
                events::deploy_rejected(&row.endpoint, &row.package_arn, &r);
                if !matches!(&r, Err(e) if e.transient()) {
                    let r = self.store.mark_rejected(row.id);
                    self.db(
                        "mark a version rejected",
                        &endpoint,
                        "set Rejected again",
                        r,
                    );
                }
            }
            DeployAnswer::Cleaned { ids, result } => match result {
                Ok(names) => {
                    events::deploy_cleaned(&endpoint, &names);
                    let r = self.store.mark_cleaned(&ids);
                    self.db(
                        "mark models cleaned",
                        &endpoint,
                        "deleted again (absent is fine)",
                        r,
                    );
                }
                Err(e) => events::deploy_call_failed(&endpoint, "clean up", &e, true),
            },
        }
    }

    pub(super) fn on_prepared(&mut self, row: DeploymentRow, result: Result<(), AwsError>) {
        if row.state != DeployState::Decided {
            return;
        }
        match result {
            Ok(()) => {
                self.store_and_send(&row, DeployState::Deploying, row.op, None);
            }
            Err(e) if e.transient() => {
                events::deploy_call_failed(&row.endpoint, "model and config", &e, true)
            }
            Err(e) => {
                events::deploy_call_failed(&row.endpoint, "model and config", &e, false);
                self.end(
                    &row,
                    DeployState::Failed,
                    &format!("could not make the model or config: {e}"),
                    None,
                );
            }
        }
    }

    pub(super) fn on_sent(&mut self, row: DeploymentRow, result: Result<(), AwsError>) {
        if !matches!(row.state, DeployState::Deploying | DeployState::RollingBack) {
            return;
        }
        match result {
            Ok(()) => {
                let r = self.store.deployment_confirmed(row.id);
                self.db(
                    "confirm a sent call",
                    &row.endpoint,
                    "confirmed by the next describe",
                    r,
                );
            }
            // Unknown whether it landed: the next describe tells.
            // Refused, so it did not land: someone else's change began after the describe.
            // Back to deciding: the call is sent once the endpoint is InService again.
            Err(e) if e.message.contains("in-progress") && row.state == DeployState::Deploying => {
                events::deploy_call_failed(&row.endpoint, row.op.as_str(), &e, true);
                let r = self.store.deployment_unsent(row.id);
                self.db(
                    "store a refused call as unsent",
                    &row.endpoint,
                    "the next describe decides",
                    r,
                );
            }
            Err(e) if e.transient() || e.message.contains("in-progress") => {
                events::deploy_call_failed(&row.endpoint, row.op.as_str(), &e, true)
            }
            Err(e) => {
                events::deploy_call_failed(&row.endpoint, row.op.as_str(), &e, false);
                let why = match row.op {
                    Op::Rollback => format!(
                        "the rollback to {} was refused: {e}",
                        row.prev_config.as_deref().unwrap_or("?")
                    ),
                    _ => format!(
                        "{} refused: {e}",
                        if row.op == Op::Create {
                            "CreateEndpoint"
                        } else {
                            "UpdateEndpoint"
                        }
                    ),
                };
                self.end(&row, DeployState::Failed, &why, None);
            }
        }
    }

    pub(super) fn on_observed(
        &mut self,
        row: DeploymentRow,
        view: Result<Option<EndpointView>, AwsError>,
    ) {
        if !matches!(row.state, DeployState::Deploying | DeployState::RollingBack) {
            return; // moved meanwhile (only a call in flight is judged)
        }
        let view = match view {
            Ok(v) => v,
            Err(e) => {
                return events::deploy_call_failed(&row.endpoint, "DescribeEndpoint", &e, true)
            }
        };
        let Some(sent_at) = row.sent else { return };
        let target = match row.op {
            Op::Rollback => row.prev_config.clone().unwrap_or_default(),
            _ => row.resource.clone(),
        };
        let deadline = match self.cfg.endpoints.get(&row.endpoint) {
            Some(ep) => deploy::deadline(ep, row.op, sent_at),
            None => deploy::deadline_default(sent_at),
        };
        let s = deploy::Sent {
            op: row.op,
            target: &target,
            at: sent_at,
            confirmed: row.confirmed,
            deadline,
        };
        match (deploy::judge(&s, view.as_ref(), self.now()), row.state) {
            (Verdict::Going { landed, status }, _) => {
                if landed {
                    let r = self.store.deployment_confirmed(row.id);
                    self.db(
                        "confirm a landed call",
                        &row.endpoint,
                        "confirmed by the next describe",
                        r,
                    );
                }
                tracing::debug!(event = "deploy_following", endpoint = %row.endpoint, status = %status, "deployment going");
            }
            (Verdict::Done, DeployState::Deploying) => self.succeeded(&row),
            (Verdict::Done, _) => self.end(
                &row,
                DeployState::RolledBack,
                &row.reason.clone().unwrap_or_default(),
                Some("mlopsd"),
            ),
            (Verdict::Reverted(why), DeployState::Deploying) => {
                self.end(&row, DeployState::RolledBack, &why, Some("sagemaker"))
            }
            (Verdict::Reverted(why) | Verdict::Failed(why), DeployState::RollingBack) => self.end(
                &row,
                DeployState::Failed,
                &format!("the rollback to {target} did not take: {why}"),
                None,
            ),
            (Verdict::Failed(why), _) => self.end(&row, DeployState::Failed, &why, None),
            (Verdict::NotLanded, _) if row.attempts >= MAX_SENDS => self.end(
                &row,
                DeployState::Failed,
                &format!(
                    "the {} call did not land after {} attempts",
                    row.op.as_str(),
                    row.attempts
                ),
                None,
            ),
            (Verdict::NotLanded, state) => {
                self.store_and_send(&row, state, row.op, None);
            }
            (Verdict::Busy(why), _) => self.waits(&row.endpoint, &why),
            // (only a deploying or rolling-back deployment is described)
            (Verdict::Reverted(_), _) => {}
        }
    }
}

/// Whether the endpoint is as the stored call expects it, just before it is stored as about
/// to be sent: absent for a create, `InService` for an update (a change someone else began
/// meanwhile is waited for; one that removed or created the endpoint ends the deployment).
async fn ready_to_send<C: Cloud>(cloud: &C, r: &DeploymentRow) -> Result<(), AwsError> {
    let view = cloud.describe_endpoint(&r.endpoint_name).await?;
    let refuse = |kind, code: &str, msg: String| {
        Err(AwsError::new(
            "sagemaker",
            "DescribeEndpoint",
            kind,
            code,
            &msg,
        ))
    };
    match (r.op, view) {
        (Op::Create, Some(v)) => refuse(
            ErrorKind::Refused,
            "EndpointCreatedMeanwhile",
            format!(
                "the endpoint was created meanwhile by someone else (on config {})",
                v.config_name
            ),
        ),
        (Op::Create, None) => Ok(()),
        (_, None) => refuse(
            ErrorKind::Refused,
            "EndpointGone",
            "the endpoint was deleted meanwhile".into(),
        ),
        (_, Some(v)) if v.status != "InService" => refuse(
            ErrorKind::Transient,
            "EndpointBusy",
            format!("the endpoint is {}; waiting for it", v.status),
        ),
        _ => Ok(()),
    }
}
