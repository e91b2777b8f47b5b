//! A deployment's ends: succeeded (and its bake), rolled back, failed; what each tells,
//! chains, rejects and cleans up.

use std::collections::HashMap;

use super::{DeployAnswer, Work};
use crate::cloud::{AlarmState, AwsError, Cloud};
use crate::config::{OnRollback, Trigger, Upstream};
use crate::daemon::work::Cause;
use crate::deploy::Op;
use crate::events;
use crate::notify::{Kind, Message};
use crate::state::{DeployState, DeploymentRow, Move, Queued};

impl<C: Cloud> Work<C> {
    /// SageMaker is done on the new config: bake (or baked at once without a bake).
    pub(super) fn succeeded(&mut self, row: &DeploymentRow) {
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
    pub(super) fn on_bake_look(
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
            if self.store_and_send(&row, DeployState::RollingBack, Op::Rollback, Some(&why)) {
                events::deploy_rolling_back(&row.endpoint, row.version, &why, &row.correlation_id);
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
    pub(super) fn end(
        &mut self,
        row: &DeploymentRow,
        to: DeployState,
        why: &str,
        by: Option<&str>,
    ) {
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
    pub(super) fn moved(
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
                if !to.is_active() {
                    self.after_end(&row.endpoint, to);
                }
                true
            }
            _ => false,
        }
    }

    pub(super) fn emit(&self, row: &DeploymentRow, result: &'static str, reason: Option<&str>) {
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
    pub(super) fn chain_deployment(&mut self, row: &DeploymentRow, succeeded: bool) {
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
    pub(super) fn reject(&mut self, row: &DeploymentRow) {
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
    pub(super) fn clean_up(&mut self, row: &DeploymentRow, keep: &[Option<&str>]) {
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

    pub(super) fn row_message(&self, kind: Kind, row: &DeploymentRow) -> Message {
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
    /// Never held back by `repeat_interval`: each tells one step of one deployment, which
    /// happens once (its move is guarded), and the next deployment's steps are news.
    pub(super) fn render_endpoint(&self, name: &str, m: &Message) -> Vec<Queued> {
        let Some(ep) = self.cfg.endpoints.get(name) else {
            return Vec::new();
        };
        let mut q = self.render_for(name, &ep.notify, m);
        for n in &mut q {
            n.repeat_interval = std::time::Duration::ZERO;
        }
        q
    }

    /// One deployment per endpoint at a time: when one ends, the block reads the registry
    /// again (a version approved meanwhile goes next, not at the next reconcile); when it
    /// baked, so do the blocks promoted from it.
    fn after_end(&mut self, name: &str, to: DeployState) {
        let mut next = vec![name.to_string()];
        if to == DeployState::Baked {
            next.extend(
                self.cfg
                    .endpoints
                    .iter()
                    .filter(|(_, e)| e.promote_from.as_deref() == Some(name))
                    .map(|(n, _)| n.clone()),
            );
        }
        self.reconcile_endpoints(Some(&next), "deployment_ended");
    }
}
