//! Room: deployments (SPEC "Deploy"). Reads what each `[endpoints.NAME]` block wants (the
//! registry) and what its endpoint serves; decides a deployment (stored before any call);
//! makes the model and config (a describe before each create); stores each create or update
//! as about to be sent, sends it, follows it by `DescribeEndpoint` and judges it by the config
//! the endpoint serves; bakes (the rollback alarms) and rolls back; tells, chains, rejects and
//! cleans up. One deployment per endpoint at a time; only the leader acts (every write takes
//! an `Acting`).

use std::collections::HashMap;
use std::sync::Arc;

use super::work::{new_correlation_id, Cause, Msg, Work};
use crate::cloud::{AlarmState, AwsError, Cloud, EndpointView, PackageVersion};
use crate::config::{Endpoint, OnRollback, Strategy, Trigger, Upstream};
use crate::deploy::{self, Op, Verdict};
use crate::events;
use crate::notify::{Kind, Message};
use crate::state::{DeployState, DeploymentRow, Move, NewDeployment, Queued};

/// Give up on sending a deployment's call after this many attempts that did not land.
const MAX_SENDS: i64 = 8;

/// What the read of an endpoint block found: the version it wants (or why none) and the
/// endpoint as it is.
#[derive(Debug)]
pub(crate) struct EndpointRead {
    pub wanted: Result<PackageVersion, String>,
    pub view: Option<EndpointView>,
}

/// An answer about one deployment.
#[derive(Debug)]
pub(super) enum DeployAnswer {
    /// The model and config exist (made now, or found).
    Prepared(Result<(), AwsError>),
    /// The create or update (or rollback) was answered.
    Sent(Result<(), AwsError>),
    /// `DescribeEndpoint` (and, while baking, the rollback alarms).
    Observed {
        view: Result<Option<EndpointView>, AwsError>,
        alarms: Option<Result<HashMap<String, AlarmState>, AwsError>>,
    },
    /// The package was set Rejected (`on_rollback = "reject"`).
    Rejected(Result<(), AwsError>),
    /// Older models and configs deleted (these rows' resources).
    Cleaned {
        ids: Vec<i64>,
        result: Result<Vec<String>, AwsError>,
    },
}

/// The deploy room's in-memory part: which endpoint blocks have a call out, and what was
/// told last (so a waiting endpoint is logged once per reason).
#[derive(Debug, Default)]
pub(super) struct Deploys {
    busy: std::collections::HashSet<String>,
    told: HashMap<String, String>,
    rejecting: std::collections::HashSet<i64>,
}

impl<C: Cloud> Work<C> {
    /// Reads the endpoint blocks named (all when `None`) that have no deployment going.
    pub(super) fn reconcile_endpoints(&mut self, only: Option<&[String]>, why: &str) {
        let names: Vec<String> = self
            .cfg
            .endpoints
            .keys()
            .filter(|n| only.is_none_or(|o| o.contains(n)))
            .cloned()
            .collect();
        for name in names {
            if self.deploys.busy.contains(&name) {
                continue;
            }
            let r = self.store.last_deployment(&name);
            let Some(last) = self.db(
                "read the last deployment",
                &name,
                "read at the next reconcile",
                r,
            ) else {
                continue;
            };
            if last.as_ref().is_some_and(|d| d.state.is_active()) {
                continue;
            }
            self.read_endpoint(&name, why);
        }
    }

    /// The endpoint blocks that deploy from a model package group (after a gate approved a
    /// package, or a package event).
    pub(super) fn endpoints_of_group(&self, group: &str) -> Vec<String> {
        self.cfg
            .endpoints
            .iter()
            .filter(|(_, e)| e.model_package_group == group)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn read_endpoint(&mut self, name: &str, why: &str) {
        let Some(ep) = self.cfg.endpoints.get(name).cloned() else {
            return;
        };
        let baked = match &ep.promote_from {
            Some(from) => {
                let r = self.store.baked_versions(from);
                match self.db("read baked versions", name, "read at the next reconcile", r) {
                    Some(b) => Some(b),
                    None => return,
                }
            }
            None => None,
        };
        tracing::debug!(event = "endpoint_read", endpoint = %name, why, "reading the registry and the endpoint");
        self.deploys.busy.insert(name.to_string());
        let (cloud, tx, n) = (self.cloud.clone(), self.tx.clone(), name.to_string());
        self.tracker.spawn(async move {
            let result = read(&*cloud, &ep, baked.as_ref()).await;
            let _ = tx.send(Msg::EndpointRead {
                endpoint: n,
                result: Box::new(result),
            });
        });
    }

    /// Decides, from what the read found, whether a deployment starts now.
    pub(super) fn on_endpoint_read(
        &mut self,
        name: String,
        result: Result<EndpointRead, AwsError>,
    ) {
        self.deploys.busy.remove(&name);
        let Some(ep) = self.cfg.endpoints.get(&name).cloned() else {
            return;
        };
        let read = match result {
            Ok(r) => r,
            Err(e) => return events::deploy_read_failed(&name, &e),
        };
        let served = read.view.as_ref().map(|v| v.config_name.clone());
        let served_version = served.as_deref().and_then(|c| {
            let r = self.store.deployment_of(c);
            self.db("read the served version", &name, "shown as unknown", r)
                .flatten()
                .map(|d| d.version)
                .or_else(|| deploy::version_of(c))
        });
        events::endpoint_serves(&name, served_version);
        let now = self.now();
        self.health.endpoint_seen(&name, |e| {
            e.wanted = read.wanted.as_ref().ok().map(|w| w.version);
            e.served_config = served.clone();
            e.served_version = served_version;
            e.status = read.view.as_ref().map(|v| v.status.clone());
            e.at = Some(now);
        });
        let r = self.store.last_deployment(&name);
        match self.db(
            "read the last deployment",
            &name,
            "decided at the next reconcile",
            r,
        ) {
            Some(Some(d)) if d.state.is_active() => return,
            Some(_) => {}
            None => return,
        }
        let wanted = match read.wanted {
            Ok(w) => w,
            Err(why) => return self.waits(&name, &why),
        };
        let spec = ep.spec_hash();
        let resource = deploy::resource_name(&ep.endpoint_name, wanted.version, &spec);
        if let Some(v) = &read.view {
            if v.config_name == resource {
                return self.waits(
                    &name,
                    &format!("in sync: version {} is served", wanted.version),
                );
            }
            if v.pending_config.as_deref() == Some(resource.as_str()) {
                return self.waits(
                    &name,
                    &format!(
                        "version {} is being deployed by someone else",
                        wanted.version
                    ),
                );
            }
        }
        let r = self.store.failed_before(&name, wanted.version, &spec);
        match self.db(
            "read earlier deployments",
            &name,
            "decided at the next reconcile",
            r,
        ) {
            Some(Some(before)) => return self.skip(&ep, &name, &wanted, &before),
            Some(None) => {}
            None => return,
        }
        if let Some(v) = read.view.as_ref().filter(|v| v.status != "InService") {
            let why = format!(
                "the endpoint is {}{}; it is waited for, never fought",
                v.status,
                v.failure_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            return self.waits(&name, &why);
        }
        let op = if read.view.is_some() {
            Op::Update
        } else {
            Op::Create
        };
        if ep.dry_run {
            let key = format!("dry run: would deploy version {}", wanted.version);
            if self.deploys.told.get(&name) != Some(&key) {
                events::deploy_would_start(&name, &ep.endpoint_name, wanted.version, op.as_str());
                self.deploys.told.insert(name.clone(), key);
            }
            return;
        }
        self.decide(
            &name,
            &ep,
            &wanted,
            &spec,
            &resource,
            served,
            served_version,
        );
    }

    /// Logs why an endpoint is left as it is, once per reason.
    fn waits(&mut self, name: &str, why: &str) {
        self.health
            .endpoint_seen(name, |e| e.waiting = Some(why.to_string()));
        if self.deploys.told.get(name).map(String::as_str) != Some(why) {
            events::deploy_waits(name, why);
            self.deploys.told.insert(name.to_string(), why.to_string());
        }
    }

    /// A version rolled back or failed here before: not deployed again; told once a week.
    fn skip(&mut self, ep: &Endpoint, name: &str, wanted: &PackageVersion, before: &DeploymentRow) {
        let why = format!(
            "version {} {} on this endpoint before ({}); a newer version or an edit of the block is a new decision",
            wanted.version,
            before.state.as_str().replace('_', " "),
            before.reason.as_deref().unwrap_or("no reason given")
        );
        let key = format!("deploy-skip\0{name}\0{}\0{}", wanted.version, before.spec);
        let r = self.store.mark_events_seen(&[key.as_str()], self.now());
        if let Some(fresh) = self.db("remember a skipped version", name, "told again later", r) {
            if fresh.first() == Some(&true) {
                let corr = new_correlation_id(self.now());
                let m = deploy_message(Kind::DeploySkipped, name, ep, wanted.version, &corr)
                    .with("package_arn", &wanted.arn)
                    .with("reason", &why);
                self.notify(name, &ep.notify, m);
                events::Deployed {
                    endpoint: name,
                    endpoint_name: &ep.endpoint_name,
                    version: wanted.version,
                    result: "skipped",
                    correlation_id: &corr,
                    reason: Some(&why),
                }
                .emit();
            }
        }
        self.waits(name, &why);
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        name: &str,
        ep: &Endpoint,
        wanted: &PackageVersion,
        spec: &str,
        resource: &str,
        prev_config: Option<String>,
        prev_version: Option<u32>,
    ) {
        let now = self.now();
        let corr = new_correlation_id(now);
        let mut m = deploy_message(Kind::DeployStarted, name, ep, wanted.version, &corr)
            .with("package_arn", &wanted.arn)
            .with("config", resource)
            .with("strategy", ep.strategy)
            .with(
                "operation",
                if prev_config.is_some() {
                    "update"
                } else {
                    "create"
                },
            );
        if let Some(p) = prev_version {
            m = m.with("from_version", p);
        }
        if let Some(c) = &prev_config {
            m = m.with("from_config", c);
        }
        let notices = self.render_endpoint(name, &m);
        let d = NewDeployment {
            endpoint: name,
            endpoint_name: &ep.endpoint_name,
            version: wanted.version,
            package_arn: &wanted.arn,
            spec,
            resource,
            prev_config: prev_config.as_deref(),
            prev_version,
            correlation_id: &corr,
        };
        let r = self.store.insert_deployment(&d, now, &notices);
        let Some((id, queued)) = self.db(
            "store a deployment",
            name,
            "decided again at the next reconcile",
            r,
        ) else {
            return;
        };
        self.deploys.told.remove(name);
        self.health.endpoint_seen(name, |e| e.waiting = None);
        events::Deployed {
            endpoint: name,
            endpoint_name: &ep.endpoint_name,
            version: wanted.version,
            result: "started",
            correlation_id: &corr,
            reason: None,
        }
        .emit();
        self.queued(&notices, &queued);
        crate::failpoint::hit_for("after_deploy_decision", name);
        let r = self.store.deployment(id);
        if let Some(Some(row)) = self.db("read a deployment", name, "driven at the next poll", r) {
            self.drive(row);
        }
    }

    /// Every deployment not at its end moves on (poll), and what a crash left is finished:
    /// chains, rejections.
    pub(super) fn drive_deployments(&mut self) {
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
    pub(super) fn wake_endpoint(&mut self, endpoint_name: &str) -> Vec<String> {
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
    fn drive(&mut self, row: DeploymentRow) {
        if self.deploys.busy.contains(&row.endpoint) {
            return;
        }
        let Some(ep) = self.cfg.endpoints.get(&row.endpoint).cloned() else {
            // The block was removed: what was started is still followed to its end.
            return self.observe(row, None);
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
    fn spawn_for(
        &mut self,
        row: &DeploymentRow,
        f: impl std::future::Future<Output = DeployAnswer> + Send + 'static,
    ) {
        self.deploys.busy.insert(row.endpoint.clone());
        self.spawn_aside(row, f);
    }

    /// Runs a call that leaves the endpoint alone (a rejection, a clean-up) in a task.
    fn spawn_aside(
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
    fn prepare(&mut self, row: DeploymentRow, ep: Arc<Endpoint>) {
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
                Ok(())
            }
            .await;
            DeployAnswer::Prepared(result)
        });
    }

    /// Sends the call the row is about to make (stored as such before this).
    fn send(&mut self, row: DeploymentRow) {
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

    fn observe(&mut self, row: DeploymentRow, alarms: Option<Vec<String>>) {
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
    pub(super) fn on_deploy(&mut self, endpoint: String, id: i64, answer: DeployAnswer) {
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
                events::gate_applied(&row.endpoint, &row.package_arn, false, &r);
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

    fn on_prepared(&mut self, row: DeploymentRow, result: Result<(), AwsError>) {
        if row.state != DeployState::Decided {
            return;
        }
        match result {
            Ok(()) => {
                let r = self.store.deployment_sending(
                    row.id,
                    DeployState::Decided,
                    DeployState::Deploying,
                    row.op,
                    self.now(),
                    None,
                );
                if let Some(true) = self.db(
                    "store the call about to be sent",
                    &row.endpoint,
                    "sent at the next poll",
                    r,
                ) {
                    let r = self.store.deployment(row.id);
                    if let Some(Some(row)) = self.db(
                        "read a deployment",
                        &row.endpoint,
                        "sent at the next poll",
                        r,
                    ) {
                        self.send(row);
                    }
                }
            }
            Err(e) if e.transient() || e.kind == crate::cloud::ErrorKind::NotLeader => {
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

    fn on_sent(&mut self, row: DeploymentRow, result: Result<(), AwsError>) {
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
            Err(e)
                if e.transient()
                    || e.kind == crate::cloud::ErrorKind::NotLeader
                    || e.message.contains("in-progress") =>
            {
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

    fn on_observed(&mut self, row: DeploymentRow, view: Result<Option<EndpointView>, AwsError>) {
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
                let r =
                    self.store
                        .deployment_sending(row.id, state, state, row.op, self.now(), None);
                if let Some(true) = self.db(
                    "store the call about to be sent",
                    &row.endpoint,
                    "sent at the next poll",
                    r,
                ) {
                    let r = self.store.deployment(row.id);
                    if let Some(Some(row)) = self.db(
                        "read a deployment",
                        &row.endpoint,
                        "sent at the next poll",
                        r,
                    ) {
                        self.send(row);
                    }
                }
            }
            (Verdict::Busy(why), _) => self.waits(&row.endpoint, &why),
            // (only a deploying or rolling-back deployment is described)
            (Verdict::Reverted(_), _) => {}
        }
    }

    /// SageMaker is done on the new config: bake (or baked at once without a bake).
    fn succeeded(&mut self, row: &DeploymentRow) {
        let now = self.now();
        let ep = self.cfg.endpoints.get(&row.endpoint).cloned();
        let bake = ep
            .as_ref()
            .and_then(|e| e.bake.filter(|_| !e.rollback_alarms.is_empty()));
        let bake_until = bake.and_then(|b| crate::clock::after(now, b));
        let mut notices = Vec::new();
        let mut m = self.row_message(Kind::DeploySucceeded, row);
        if let Some(u) = bake_until {
            m = m.with("bake_until", crate::clock::ts(&u));
        }
        notices.extend(self.render_endpoint(&row.endpoint, &m));
        let to = if bake_until.is_some() {
            DeployState::Baking
        } else {
            DeployState::Baked
        };
        if to == DeployState::Baked {
            notices.extend(
                self.render_endpoint(&row.endpoint, &self.row_message(Kind::DeployBaked, row)),
            );
        }
        let mv = Move {
            succeeded: Some(now),
            bake_until,
            ended: (to == DeployState::Baked).then_some(now),
            ..Move::default()
        };
        if !self.moved(row, to, &mv, &notices, "succeeded") {
            return;
        }
        let row = &DeploymentRow {
            state: to,
            ..row.clone()
        };
        events::endpoint_serves(&row.endpoint, Some(row.version));
        self.health.endpoint_seen(&row.endpoint, |e| {
            e.served_config = Some(row.resource.clone());
            e.served_version = Some(row.version);
            e.status = Some("InService".into());
        });
        if to == DeployState::Baked {
            self.emit(row, "baked", None);
        }
        self.chain_deployment(row, true);
        if to == DeployState::Baked {
            self.clean_up(
                row,
                &[Some(row.resource.as_str()), row.prev_config.as_deref()],
            );
        }
    }

    /// A look at the rollback alarms during the bake.
    fn on_bake_look(
        &mut self,
        row: DeploymentRow,
        alarms: Result<HashMap<String, AlarmState>, AwsError>,
    ) {
        if row.state != DeployState::Baking {
            return;
        }
        let alarms = match alarms {
            Ok(a) => a,
            Err(e) => return events::deploy_call_failed(&row.endpoint, "DescribeAlarms", &e, true),
        };
        let mut firing: Vec<&String> = alarms
            .iter()
            .filter(|(_, s)| **s == AlarmState::Alarm)
            .map(|(n, _)| n)
            .collect();
        firing.sort();
        crate::failpoint::hit_for("during_bake", &row.endpoint);
        if let Some(first) = firing.first() {
            let why = format!("alarm {first} in ALARM during the bake");
            if row.prev_config.is_none() {
                return self.end(&row, DeployState::Failed, &format!("{why}; the endpoint was created by this deployment, so there is no previous config to roll back to"), None);
            }
            let r = self.store.deployment_sending(
                row.id,
                DeployState::Baking,
                DeployState::RollingBack,
                Op::Rollback,
                self.now(),
                Some(&why),
            );
            if let Some(true) = self.db(
                "store the rollback about to be sent",
                &row.endpoint,
                "decided again at the next poll",
                r,
            ) {
                tracing::warn!(event = "deploy_rolling_back", endpoint = %row.endpoint, version = row.version, reason = %why, correlation_id = %row.correlation_id, "rolling back to the previous config");
                let r = self.store.deployment(row.id);
                if let Some(Some(row)) = self.db(
                    "read a deployment",
                    &row.endpoint,
                    "sent at the next poll",
                    r,
                ) {
                    self.send(row);
                }
            }
            return;
        }
        let now = self.now();
        if row.bake_until.is_some_and(|u| now >= u) {
            let notices =
                self.render_endpoint(&row.endpoint, &self.row_message(Kind::DeployBaked, &row));
            let mv = Move {
                ended: Some(now),
                ..Move::default()
            };
            if self.moved(&row, DeployState::Baked, &mv, &notices, "baked") {
                self.clean_up(
                    &row,
                    &[Some(row.resource.as_str()), row.prev_config.as_deref()],
                );
            }
        }
    }

    /// A deployment ends rolled back or failed: told, chained on failure, the version
    /// rejected when the block says so.
    fn end(&mut self, row: &DeploymentRow, to: DeployState, why: &str, by: Option<&str>) {
        let now = self.now();
        let ep = self.cfg.endpoints.get(&row.endpoint).cloned();
        let reject = to == DeployState::RolledBack
            && ep
                .as_ref()
                .is_some_and(|e| e.on_rollback == OnRollback::Reject);
        let kind = if to == DeployState::RolledBack {
            Kind::DeployRolledBack
        } else {
            Kind::DeployFailed
        };
        let mut m = self.row_message(kind, row).with("reason", why);
        if let Some(b) = by {
            m = m.with("by", b);
            if let Some(p) = row.prev_version {
                m = m.with("to_version", p);
            }
            m = m.with("from_version", row.version);
        }
        let notices = self.render_endpoint(&row.endpoint, &m);
        let mv = Move {
            reason: Some(why),
            rolled_back_by: by,
            ended: Some(now),
            reject,
            ..Move::default()
        };
        let result = if to == DeployState::RolledBack {
            "rolled_back"
        } else {
            "failed"
        };
        if !self.moved(row, to, &mv, &notices, result) {
            return;
        }
        let row = &DeploymentRow {
            state: to,
            reason: Some(why.to_string()),
            ..row.clone()
        };
        self.chain_deployment(row, false);
        if reject {
            self.reject(row);
        }
        if to == DeployState::RolledBack {
            events::endpoint_serves(&row.endpoint, row.prev_version);
            self.health.endpoint_seen(&row.endpoint, |e| {
                e.served_config = row.prev_config.clone();
                e.served_version = row.prev_version;
                e.status = Some("InService".into());
            });
            self.clean_up(row, &[row.prev_config.as_deref()]);
        }
    }

    /// Stores a move with its notices; false when it was made already (or not stored).
    fn moved(
        &mut self,
        row: &DeploymentRow,
        to: DeployState,
        mv: &Move<'_>,
        notices: &[Queued],
        result: &'static str,
    ) -> bool {
        let r = self
            .store
            .move_deployment(row.id, row.state, to, mv, self.now(), notices);
        match self.db(
            "store a deployment's move",
            &row.endpoint,
            "judged again at the next poll",
            r,
        ) {
            Some(Some(queued)) => {
                self.emit(row, result, mv.reason);
                self.queued(notices, &queued);
                true
            }
            _ => false,
        }
    }

    fn emit(&self, row: &DeploymentRow, result: &'static str, reason: Option<&str>) {
        events::Deployed {
            endpoint: &row.endpoint,
            endpoint_name: &row.endpoint_name,
            version: row.version,
            result,
            correlation_id: &row.correlation_id,
            reason,
        }
        .emit();
    }

    /// Fires the `on_success` / `on_failure = "endpoint:NAME"` rules (each once for this
    /// deployment and outcome), then marks it chained.
    fn chain_deployment(&mut self, row: &DeploymentRow, succeeded: bool) {
        let up = Upstream::Endpoint(row.endpoint.clone());
        let rules: Vec<String> = self
            .cfg
            .rules
            .iter()
            .filter(|(_, r)| match &r.trigger {
                Trigger::Success(u) => succeeded && *u == up,
                Trigger::Failure(u) => !succeeded && *u == up,
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        for r in rules {
            self.fire_rule(
                &r,
                Cause::Deployed {
                    row: Box::new(row.clone()),
                    succeeded,
                },
            );
        }
        let r = self
            .store
            .mark_deployment_chained(row.id, if succeeded { 1 } else { 2 });
        self.db(
            "mark a deployment chained",
            &row.endpoint,
            "chained again (each rule fires once)",
            r,
        );
    }

    /// Sets the version Rejected with the reason (`on_rollback = "reject"`).
    fn reject(&mut self, row: &DeploymentRow) {
        if !self.deploys.rejecting.insert(row.id) {
            return;
        }
        let cloud = self.cloud.clone();
        let (arn, why) = (
            row.package_arn.clone(),
            format!(
                "mlopsd: rolled back on endpoint {}: {}",
                row.endpoint_name,
                row.reason.as_deref().unwrap_or("rollback")
            ),
        );
        self.spawn_aside(row, async move {
            let r = match cloud.acting() {
                Ok(act) => cloud.set_approval(&act, &arn, false, &why).await,
                Err(e) => Err(e),
            };
            DeployAnswer::Rejected(r)
        });
    }

    /// Deletes the models and configs mlopsd made for this endpoint block, but those in
    /// `keep` and whatever the endpoint serves or deploys now (described first).
    fn clean_up(&mut self, row: &DeploymentRow, keep: &[Option<&str>]) {
        let keep: Vec<&str> = keep.iter().flatten().copied().collect();
        let r = self.store.cleanable(&row.endpoint, &keep);
        let Some(list) = self.db(
            "list models to delete",
            &row.endpoint,
            "deleted after the next deployment",
            r,
        ) else {
            return;
        };
        if list.is_empty() {
            return;
        }
        let cloud = self.cloud.clone();
        let name = row.endpoint_name.clone();
        self.spawn_aside(row, async move {
            let result = async {
                let live = cloud.describe_endpoint(&name).await?;
                let in_use: Vec<String> = live
                    .iter()
                    .flat_map(|v| [Some(v.config_name.clone()), v.pending_config.clone()])
                    .flatten()
                    .collect();
                let act = cloud.acting()?;
                let mut deleted = Vec::new();
                for (_, n) in list.iter().filter(|(_, n)| !in_use.contains(n)) {
                    cloud.delete_endpoint_config(&act, n).await?;
                    cloud.delete_model(&act, n).await?;
                    deleted.push(n.clone());
                }
                Ok(deleted)
            }
            .await;
            DeployAnswer::Cleaned {
                ids: list.iter().map(|(i, _)| *i).collect(),
                result,
            }
        });
    }

    fn row_message(&self, kind: Kind, row: &DeploymentRow) -> Message {
        let mut m = Message::new(kind, &row.endpoint, None, &row.correlation_id)
            .with("endpoint", &row.endpoint_name)
            .with("version", row.version)
            .with("package_arn", &row.package_arn)
            .with("config", &row.resource);
        if let Some(p) = row.prev_version {
            m = m.with("previous_version", p);
        }
        m
    }

    /// An endpoint block's notification for each of its notifiers.
    fn render_endpoint(&self, name: &str, m: &Message) -> Vec<Queued> {
        let Some(ep) = self.cfg.endpoints.get(name) else {
            return Vec::new();
        };
        self.render_for(name, &ep.notify, m)
    }
}

fn deploy_message(kind: Kind, name: &str, ep: &Endpoint, version: u32, corr: &str) -> Message {
    Message::new(kind, name, None, corr)
        .with("endpoint", &ep.endpoint_name)
        .with("version", version)
        .with("model_package_group", &ep.model_package_group)
}

/// The registry and the endpoint, read for one block: the candidates newest first, the
/// first that carries `require_tag` (looking at 20 at most), and `DescribeEndpoint`. Also
/// `mlopsd diff`'s read (which gives the versions live on the `promote_from` endpoint as
/// `baked`: it has no store).
pub(crate) async fn read<C: Cloud>(
    cloud: &C,
    ep: &Endpoint,
    baked: Option<&std::collections::HashSet<u32>>,
) -> Result<EndpointRead, AwsError> {
    let approved = cloud.approved_versions(&ep.model_package_group).await?;
    let wanted = match deploy::candidates(ep, &approved, baked) {
        Err(why) => Err(why),
        Ok(c) => match &ep.require_tag {
            None => Ok(c[0].clone()),
            Some((k, v)) => {
                let mut found = None;
                for p in c.iter().take(20) {
                    let tags = cloud.package_tags(&p.arn).await?;
                    if tags.iter().any(|(tk, tv)| tk == k && tv == v) {
                        found = Some(p.clone());
                        break;
                    }
                }
                found.ok_or_else(|| format!("no candidate version carries the tag {k} = {v}"))
            }
        },
    };
    let view = cloud.describe_endpoint(&ep.endpoint_name).await?;
    Ok(EndpointRead { wanted, view })
}
