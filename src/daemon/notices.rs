//! Room: notifications. Renders a notification for each of a rule's (or gate's) notifiers and
//! queues it in the store's outbox (deduplicated per `repeat_interval`); the outbox sender
//! publishes it. A dry-run rule queues nothing.

use super::work::Work;
use crate::cloud::Cloud;
use crate::doctor::ResourceKind;
use crate::events;
use crate::notify::{self, Message};
use crate::state::Outgoing;

impl<C: Cloud> Work<C> {
    pub(super) fn notify_rule(&self, rule: &str, m: Message) {
        let cfg = self.cfg.clone();
        let Some(r) = cfg.rules.get(rule) else { return };
        if r.dry_run {
            events::dry_run_notification(rule, m.kind.as_str());
            return;
        }
        self.notify(rule, &r.notify, m);
    }

    /// A rule's notification rendered for each of its notifiers, to be queued in the same
    /// transaction as the state change it tells of (nothing for a dry-run rule).
    pub(super) fn render_rule(&self, rule: &str, m: &Message) -> Vec<crate::state::Queued> {
        let Some(r) = self.cfg.rules.get(rule) else {
            return Vec::new();
        };
        if r.dry_run {
            events::dry_run_notification(rule, m.kind.as_str());
            return Vec::new();
        }
        self.render_for(rule, &r.notify, m)
    }

    /// A notification rendered for each of `notifiers`, as `rule` (a rule, gate or endpoint
    /// block) tells it, to be queued with the state change it tells of.
    pub(super) fn render_for(
        &self,
        rule: &str,
        notifiers: &[String],
        m: &Message,
    ) -> Vec<crate::state::Queued> {
        notifiers
            .iter()
            .filter_map(|n| {
                let nc = self.cfg.notifiers.get(n)?;
                let (subject, body) = notify::render(nc, m);
                Some(crate::state::Queued {
                    notifier: n.clone(),
                    topic_arn: nc.topic_arn.clone(),
                    event: m.kind.as_str().to_string(),
                    rule: rule.to_string(),
                    check: m.check.clone(),
                    correlation_id: m.correlation_id.clone(),
                    subject,
                    body,
                    repeat_interval: nc.repeat_interval,
                })
            })
            .collect()
    }

    /// After notices were queued (`queued[i]` false: deduplicated): logs and wakes the sender.
    pub(super) fn queued(&self, notices: &[crate::state::Queued], queued: &[bool]) {
        for (n, q) in notices.iter().zip(queued) {
            if !q {
                events::notification_deduplicated(
                    &n.notifier,
                    &n.rule,
                    &n.event,
                    &n.correlation_id,
                );
            }
        }
        if queued.iter().any(|q| *q) {
            self.outbox_wake.notify_one();
        }
    }

    pub(super) fn notify(&self, rule: &str, notifiers: &[String], m: Message) {
        let now = self.now();
        let mut queued = false;
        for n in notifiers {
            let Some(nc) = self.cfg.notifiers.get(n) else {
                continue;
            };
            let (subject, body) = notify::render(nc, &m);
            let out = Outgoing {
                notifier: n,
                topic_arn: &nc.topic_arn,
                event: m.kind.as_str(),
                rule,
                check: m.check.as_deref(),
                correlation_id: &m.correlation_id,
                subject: &subject,
                body: &body,
                repeat_interval: nc.repeat_interval,
            };
            let r = self.store.enqueue(&out, now);
            match self.db("queue a notification", n, "it is not sent", r) {
                Some(true) => queued = true,
                Some(false) => {
                    events::notification_deduplicated(n, rule, m.kind.as_str(), &m.correlation_id)
                }
                None => {}
            }
        }
        if queued {
            self.outbox_wake.notify_one();
        }
    }
}

impl<C: Cloud> Work<C> {
    /// Reads the AWS resources of `scope` in a task of its own (not tracked: a shutdown does not
    /// wait for it, and it changes nothing); the answer is `Msg::Preflight`. Declared pipelines
    /// are left to their reconcile.
    pub(super) fn preflight(&self, mut scope: crate::doctor::Scope) {
        if scope.is_empty() {
            return;
        }
        scope.skip_declared = true;
        let (cloud, tx, cfg) = (self.cloud.clone(), self.tx.clone(), self.cfg.clone());
        tokio::spawn(async move {
            let findings = crate::doctor::check(&*cloud, &cfg, &scope).await;
            let _ = tx.send(super::work::Msg::Preflight { findings });
        });
    }

    /// Takes a preflight's findings: each new problem is logged once (`preflight_failed`),
    /// all are shown on `/status`, and `mlopsd_preflight_problems` counts them.
    pub(super) fn on_preflight(&self, findings: Vec<crate::doctor::Finding>) {
        let cfg = self.cfg.clone();
        // Only items still in the config (a reload may have removed some meanwhile).
        let findings: Vec<_> = findings
            .into_iter()
            .filter(|f| item_exists(&cfg, f.kind, &f.name))
            .collect();
        let n = findings.len();
        for f in self.health.preflight_found(findings, self.now()) {
            events::preflight_failed(&f);
        }
        self.health
            .preflight_keep(|kind, name| item_exists(&cfg, kind, name));
        let problems = self
            .health
            .preflight()
            .findings
            .values()
            .filter(|f| f.status != crate::doctor::Status::Ok)
            .count();
        crate::metrics::get()
            .preflight_problems
            .set(problems as i64);
        tracing::info!(
            event = "preflight_done",
            resources = n,
            problems,
            "preflight read the AWS resources the config names"
        );
    }
}

fn item_exists(cfg: &crate::config::Config, kind: ResourceKind, name: &str) -> bool {
    match kind {
        ResourceKind::Pipeline => cfg.pipelines.contains_key(name),
        ResourceKind::Build => cfg.builds.contains_key(name),
        ResourceKind::Notifier => cfg.notifiers.contains_key(name),
        ResourceKind::Check => cfg.checks.contains_key(name),
        ResourceKind::Gate => cfg.gates.contains_key(name),
        ResourceKind::Events => cfg.events.is_some(),
        ResourceKind::Endpoint => cfg.endpoints.contains_key(name),
        ResourceKind::Ha => false,
    }
}
