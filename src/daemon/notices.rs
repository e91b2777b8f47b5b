//! Room: notifications. Renders a notification for each of a rule's (or gate's) notifiers and
//! queues it in the store's outbox (deduplicated per `repeat_interval`); the outbox sender
//! publishes it. A dry-run rule queues nothing.

use super::work::Work;
use crate::aws::Cloud;
use crate::events;
use crate::notify::{self, Message};
use crate::state::Outgoing;

impl<C: Cloud> Work<C> {
    pub(super) fn notify_rule(&self, rule: &str, m: Message) {
        let cfg = self.cfg.clone();
        let Some(r) = cfg.rules.get(rule) else { return };
        if r.dry_run {
            events::dry_run_notification(rule, &m.event);
            return;
        }
        self.notify(rule, &r.notify, m);
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
                event: &m.event,
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
                    events::notification_deduplicated(n, rule, &m.event, &m.correlation_id)
                }
                None => {}
            }
        }
        if queued {
            self.outbox_wake.notify_one();
        }
    }
}
