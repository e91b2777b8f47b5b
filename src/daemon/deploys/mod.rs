//! Room: deployments (SPEC "Deploy"). Reads what each `[endpoints.NAME]` block wants (the
//! registry) and what its endpoint serves; decides a deployment (stored before any call);
//! makes the model and config (a describe before each create); stores each create or update
//! as about to be sent, sends it, follows it by `DescribeEndpoint` and judges it by the config
//! the endpoint serves; bakes (the rollback alarms) and rolls back; tells, chains, rejects and
//! cleans up. One deployment per endpoint at a time; only the leader acts (every write takes
//! an `Acting`).

use std::collections::HashMap;

mod end;
mod follow;

use super::work::{new_correlation_id, Msg, Work};
use crate::cloud::{AlarmState, AwsError, Cloud, EndpointView, PackageVersion};
use crate::config::Endpoint;
use crate::deploy::{self, Op};
use crate::events;
use crate::notify::{Kind, Message};
use crate::state::{DeploymentRow, NewDeployment};

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
        // Told once (a week) per version and spec: the key and the notice are one transaction.
        let key = format!("deploy-skip\0{name}\0{}\0{}", wanted.version, before.spec);
        let now = self.now();
        let corr = new_correlation_id(now);
        let m = deploy_message(Kind::DeploySkipped, name, ep, wanted.version, &corr)
            .with("package_arn", &wanted.arn)
            .with("reason", &why);
        let notices = self.render_endpoint(name, &m);
        let r = self.store.tell_once(&key, &notices, now);
        if let Some(Some(queued)) =
            self.db("tell a skipped version", name, "told at the next read", r)
        {
            self.queued(&notices, &queued);
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
