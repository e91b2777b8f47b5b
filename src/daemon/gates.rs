//! Room: gates. Reads a group's pending model packages, decides each once (stored first),
//! then sets its approval status; unapplied decisions are re-applied on every poll.

use super::work::{new_correlation_id, GateScan, Msg, Work};
use crate::cloud::{AwsError, Cloud};
use crate::config::GateMetric;
use crate::engine::{self, GateVerdict};
use crate::events;
use crate::notify::{Kind, Message};
use crate::state::GateDecision;

impl<C: Cloud> Work<C> {
    pub(super) fn run_gate(&self, name: &str) {
        let Some(gate) = self.cfg.gates.get(name).cloned() else {
            return;
        };
        let (cloud, tx, gname) = (self.cloud.clone(), self.tx.clone(), name.to_string());
        self.tracker.spawn(async move {
            let result = async {
                let pkgs = cloud.pending_packages(&gate.model_package_group).await?;
                let mut out = Vec::new();
                for p in pkgs {
                    let v = match &gate.metric {
                        GateMetric::Metadata(k) => engine::metadata_value(&p.metadata, k),
                        GateMetric::Report(path) => match &p.report_uri {
                            None => Err("the package has no evaluation report (ModelMetrics.ModelQuality.Statistics)".to_string()),
                            Some(uri) => match cloud.read_s3(uri).await {
                                Ok(text) => engine::report_value(&text, path),
                                Err(e) if e.transient() => return Err(e),
                                Err(e) => Err(format!("cannot read evaluation report {uri}: {e}")),
                            },
                        },
                    };
                    out.push((p, v));
                }
                Ok(out)
            }
            .await;
            let _ = tx.send(Msg::GatePackages { gate: gname, result });
        });
    }

    pub(super) fn on_gate_packages(&mut self, gate_name: String, result: GateScan) {
        let Some(gate) = self.cfg.gates.get(&gate_name).cloned() else {
            return;
        };
        let pkgs = match result {
            Ok(p) => p,
            Err(e) => {
                events::gate_failed(&gate_name, &gate.model_package_group, &e);
                return;
            }
        };
        let metric_name = match &gate.metric {
            GateMetric::Metadata(k) => k.clone(),
            GateMetric::Report(p) => p.clone(),
        };
        let now = self.now();
        for (pkg, value) in pkgs {
            let r = self.store.gate_decision(&gate_name, &pkg.arn);
            // Unknown whether it was decided: decide nothing now (the next fire reads again).
            let Some(prior) = self.db(
                "read a gate decision",
                &gate_name,
                "the package is left for the next fire",
                r,
            ) else {
                continue;
            };
            if let Some((d, _)) = &prior {
                if *d != GateDecision::NoMetric {
                    continue; // decided already; applied by reapply_gates if needed
                }
            }
            match engine::decide_gate(&gate, &metric_name, value) {
                GateVerdict::NoMetric { reason } => {
                    if prior.is_none() {
                        let r = self.store.record_gate_decision(
                            &gate_name,
                            &pkg.arn,
                            GateDecision::NoMetric,
                            None,
                            &reason,
                            now,
                        );
                        self.db(
                            "store a gate decision",
                            &gate_name,
                            "it is reported again at the next fire",
                            r,
                        );
                        events::GateDecided {
                            gate: &gate_name,
                            arn: &pkg.arn,
                            decision: GateDecision::NoMetric,
                            value: None,
                            reason: &reason,
                        }
                        .emit();
                    }
                }
                GateVerdict::Approve { value, reason } => {
                    self.gate_decided(&gate_name, &pkg.arn, GateDecision::Approved, value, &reason)
                }
                GateVerdict::Reject { value, reason } => {
                    self.gate_decided(&gate_name, &pkg.arn, GateDecision::Rejected, value, &reason)
                }
            }
        }
    }

    fn gate_decided(
        &mut self,
        gate_name: &str,
        arn: &str,
        decision: GateDecision,
        value: f64,
        reason: &str,
    ) {
        let Some(gate) = self.cfg.gates.get(gate_name).cloned() else {
            return;
        };
        let now = self.now();
        let r = self
            .store
            .record_gate_decision(gate_name, arn, decision, Some(value), reason, now);
        if self
            .db(
                "store a gate decision",
                gate_name,
                "decided again at the next fire",
                r,
            )
            .is_none()
        {
            return;
        }
        events::GateDecided {
            gate: gate_name,
            arn,
            decision,
            value: Some(value),
            reason,
        }
        .emit();
        let approve = decision == GateDecision::Approved;
        let kind = if approve {
            Kind::GateApproved
        } else {
            Kind::GateRejected
        };
        let corr = new_correlation_id(now);
        let m = Message::new(kind, gate_name, None, &corr)
            .with("arn", arn)
            .with("value", value)
            .with("reason", reason)
            .with("model_package_group", &gate.model_package_group);
        self.notify(gate_name, &gate.notify, m);
        self.apply_gate(gate_name, arn, approve, reason);
    }

    fn apply_gate(&mut self, gate: &str, arn: &str, approve: bool, reason: &str) {
        if !self.applying.insert((gate.to_string(), arn.to_string())) {
            return;
        }
        let (cloud, tx) = (self.cloud.clone(), self.tx.clone());
        let (g, a, r) = (gate.to_string(), arn.to_string(), reason.to_string());
        self.tracker.spawn(async move {
            let result = match cloud.acting() {
                Ok(act) => cloud.set_approval(&act, &a, approve, &r).await,
                Err(e) => Err(e),
            };
            let _ = tx.send(Msg::GateApplied {
                gate: g,
                arn: a,
                approve,
                result,
            });
        });
    }

    pub(super) fn reapply_gates(&mut self) {
        let r = self.store.unapplied_gate_decisions();
        let Some(list) = self.db(
            "read unapplied gate decisions",
            "",
            "they are applied at the next poll",
            r,
        ) else {
            return;
        };
        for d in list {
            if !self.applying.contains(&(d.gate.clone(), d.arn.clone())) {
                self.apply_gate(
                    &d.gate,
                    &d.arn,
                    d.decision == GateDecision::Approved,
                    &d.reason,
                );
            }
        }
    }

    pub(super) fn on_gate_applied(
        &mut self,
        gate: String,
        arn: String,
        approve: bool,
        result: Result<(), AwsError>,
    ) {
        self.applying.remove(&(gate.clone(), arn.clone()));
        events::gate_applied(&gate, &arn, approve, &result);
        // An approval is what endpoint blocks of the group deploy: they read it now.
        if approve && result.is_ok() {
            if let Some(g) = self.cfg.gates.get(&gate).cloned() {
                let eps = self.endpoints_of_group(&g.model_package_group);
                if !eps.is_empty() {
                    self.reconcile_endpoints(Some(&eps), "gate_approved");
                }
            }
        }
        // Applied, or refused for good: either way not applied again. Transient: next poll.
        if !matches!(&result, Err(e) if e.transient()) {
            let r = self.store.mark_gate_applied(&gate, &arn);
            self.db(
                "mark a gate decision applied",
                &gate,
                "it is applied again at the next poll (the status is the same)",
                r,
            );
        }
    }
}
