//! Room: events from the `[events]` SQS queue. A consumer task long-polls the queue (never in
//! the loop's turn) and hands each batch to the loop as `Msg::Events`; the loop remembers each
//! event id (a redelivery within 7 days causes nothing new), wakes what the event concerns —
//! a followed run is described, a gate runs — and only then deletes the messages. The event is
//! a hint: what is decided rests on AWS's answer to that read.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::work::{Cause, Msg, Work};
use crate::clock::Clock;
use crate::cloud::{Cloud, Gated, RunStatus};
use crate::config::{RunKind, Trigger};
use crate::events;
use crate::health::Health;
use crate::inbox::{self, Hint, Incoming};
use crate::state::{RunRow, RunState};

/// The longest wait between receives while the queue cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

/// The most long polls in flight at once while there is a backlog.
pub(crate) const MAX_RECEIVERS: usize = 8;

/// Long-polls the queue until `stop`; unreachable → backoff, shown on `/status`. One poll is
/// always out; while batches come back full (a backlog), each full batch adds another, up to
/// `MAX_RECEIVERS`; an added one ends at its first batch that is not full (or error), so an
/// empty queue costs one long poll at a time.
pub(super) struct Consumer<C> {
    pub cloud: Gated<C>,
    pub queue_url: String,
    pub tx: UnboundedSender<Msg>,
    pub health: Arc<Health>,
    pub clock: Clock,
}

/// What the pollers share.
struct Pollers {
    active: std::sync::atomic::AtomicUsize,
    tasks: tokio_util::task::TaskTracker,
    stop: CancellationToken,
}

impl<C: Cloud> Consumer<C> {
    pub(super) async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let p = Arc::new(Pollers {
            active: std::sync::atomic::AtomicUsize::new(1),
            tasks: tokio_util::task::TaskTracker::new(),
            stop,
        });
        this.poll(p.clone(), true).await;
        p.tasks.close();
        p.tasks.wait().await;
    }

    /// One poller: the first (`base`) runs until `stop`; an added one until the backlog ends.
    fn poll(
        self: &Arc<Self>,
        p: Arc<Pollers>,
        base: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        use std::sync::atomic::Ordering;
        let this = self.clone();
        Box::pin(async move {
            let mut failures = 0u32;
            loop {
                let r = tokio::select! {
                    _ = p.stop.cancelled() => break,
                    r = this.cloud.receive_events(&this.queue_url) => r,
                };
                match r {
                    Ok(msgs) => {
                        if failures > 0 || this.health.queue().is_none() {
                            events::queue_state(&this.queue_url, None, Duration::ZERO);
                        }
                        failures = 0;
                        this.health.queue_answered(None, this.clock.now());
                        let full = msgs.len() >= 10;
                        if !msgs.is_empty() && !this.hand_over(msgs) {
                            break; // the loop is gone: shutting down
                        }
                        if full {
                            let more = p
                                .active
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    (n < MAX_RECEIVERS).then_some(n + 1)
                                })
                                .is_ok();
                            if more {
                                p.tasks.spawn(this.poll(p.clone(), false));
                            }
                        } else if !base {
                            break;
                        }
                    }
                    // The base poller tells and backs off; an added one just ends.
                    Err(_) if !base => break,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let wait = backoff(failures);
                        if failures == 1 || failures.is_power_of_two() {
                            events::queue_state(&this.queue_url, Some(&e), wait);
                        }
                        this.health
                            .queue_answered(Some(e.to_string()), this.clock.now());
                        tokio::select! {
                            _ = p.stop.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            p.active.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// A received batch to the loop; `false` when the loop is gone.
    fn hand_over(&self, msgs: Vec<crate::cloud::QueueMessage>) -> bool {
        let batch: Vec<Incoming> = msgs
            .into_iter()
            .map(|m| Incoming {
                event: inbox::parse(&m.body),
                message_id: m.message_id,
                receipt: m.receipt,
            })
            .collect();
        self.tx
            .send(Msg::Events {
                queue_url: self.queue_url.clone(),
                batch,
            })
            .is_ok()
    }
}

impl<C: Cloud> Work<C> {
    /// A batch from the queue. Events handled before (a redelivery) are skipped; each new one
    /// wakes what it concerns and fires the `on_event` rules it matches (each firing stored
    /// with the event's id, so it happens at most once); then the ids are remembered, and only
    /// then are the messages deleted. If the ids cannot be stored, nothing is deleted: the
    /// messages come back, and what they fired before is not fired again.
    pub(super) fn on_events(&mut self, queue_url: &str, batch: Vec<Incoming>) {
        let now = self.now();
        let ids: Vec<&str> = batch
            .iter()
            .filter_map(|m| m.event.as_ref().ok().map(|e| e.id.as_str()))
            .collect();
        let r = self.store.events_seen(&ids);
        let Some(seen) = self.db(
            "read remembered event ids",
            "",
            "the messages stay on the queue and are read again",
            r,
        ) else {
            return;
        };
        let mut seen = seen.into_iter();
        let mut this_batch = std::collections::HashSet::new();
        // The batch's firings are stored with its ids, in one transaction.
        self.events_batch = Some(Vec::new());
        let mut delete = Vec::new();
        let mut fresh_ids = Vec::new();
        for m in &batch {
            match &m.event {
                Err(reason) => {
                    events::event_rejected(&m.message_id, reason);
                    delete.push(m.receipt.clone());
                }
                Ok(e) => {
                    let before = seen.next().unwrap_or(false) || !this_batch.insert(e.id.clone());
                    let (handled, why) = if before {
                        (false, "already handled (a redelivery)".to_string())
                    } else {
                        fresh_ids.push(e.id.clone());
                        self.take_event(e)
                    };
                    events::EventTaken {
                        message_id: &m.message_id,
                        event_id: &e.id,
                        source: &e.source,
                        detail_type: &e.detail_type,
                        handled,
                        why: &why,
                    }
                    .emit();
                    delete.push(m.receipt.clone());
                }
            }
        }
        let pending = self.events_batch.take().unwrap_or_default();
        let fresh: Vec<&str> = fresh_ids.iter().map(String::as_str).collect();
        let firings: Vec<crate::state::BatchFiring<'_>> = pending
            .iter()
            .map(|p| crate::state::BatchFiring {
                rule: &p.rule,
                state: &p.state,
                runs: &p.runs,
                once: p.once.as_deref(),
                notices: &p.notices,
            })
            .collect();
        let r = self.store.record_events_batch(&firings, &fresh, now);
        drop(firings);
        let Some((stored, _)) = self.db(
            "store an events batch (its ids and firings)",
            "",
            "nothing it fired is started; the messages stay on the queue and are read again",
            r,
        ) else {
            return;
        };
        for (p, fired) in pending.iter().zip(stored) {
            self.fired(p, None, fired);
        }
        crate::failpoint::hit("after_event_stored");
        self.delete_messages(queue_url, delete);
    }

    /// A new event: the hint it carries, and the `on_event` rules it matches.
    fn take_event(&mut self, e: &inbox::Envelope) -> (bool, String) {
        let (mut acted, mut what) = self.wake(&inbox::hint(e));
        let rules: Vec<String> = self
            .cfg
            .rules
            .iter()
            .filter(|(_, r)| matches!(&r.trigger, Trigger::Event(p) if inbox::matches(p, e)))
            .map(|(n, _)| n.clone())
            .collect();
        if !rules.is_empty() {
            let ev = Arc::new(e.clone());
            for r in &rules {
                self.fire_rule(r, Cause::Event(ev.clone()));
            }
            let fired = format!("matched on_event rule(s) {}", rules.join(", "));
            what = if acted {
                format!("{what}; {fired}")
            } else {
                fired
            };
            acted = true;
        }
        (acted, what)
    }

    /// Wakes what a hint concerns; (acted, what was done or why not).
    fn wake(&mut self, hint: &Hint) -> (bool, String) {
        match hint {
            Hint::PipelineRun(arn) | Hint::Build(arn) => {
                let r = self.store.run_by_arn(arn);
                match self
                    .db(
                        "find a run by its ARN",
                        arn,
                        "the run is read at the next poll",
                        r,
                    )
                    .flatten()
                {
                    Some(run) if run.status == RunState::Started => {
                        let what = format!("reading {} {} now", run.target(), arn);
                        self.follow_one(run);
                        (true, what)
                    }
                    Some(run) => (
                        false,
                        format!("run {arn} is {} already", run.status.as_str()),
                    ),
                    None => (false, format!("no followed run is {arn}")),
                }
            }
            Hint::Packages(group) => {
                let gates: Vec<String> = self
                    .cfg
                    .gates
                    .iter()
                    .filter(|(_, g)| &g.model_package_group == group)
                    .map(|(n, _)| n.clone())
                    .collect();
                let endpoints = self.endpoints_of_group(group);
                if gates.is_empty() && endpoints.is_empty() {
                    return (
                        false,
                        format!("no gate or endpoint watches model package group {group}"),
                    );
                }
                for g in &gates {
                    self.run_gate(g);
                }
                self.reconcile_endpoints(Some(&endpoints), "package_event");
                let mut what = Vec::new();
                if !gates.is_empty() {
                    what.push(format!("running gate(s) {} now", gates.join(", ")));
                }
                if !endpoints.is_empty() {
                    what.push(format!("reading endpoint(s) {} now", endpoints.join(", ")));
                }
                (true, what.join("; "))
            }
            Hint::Endpoint(name) => {
                let woken = self.wake_endpoint(name);
                if woken.is_empty() {
                    (false, format!("no deployment is going on endpoint {name}"))
                } else {
                    (true, format!("describing endpoint {name} now"))
                }
            }
            Hint::Alarm(name) => {
                let checks = self.wake_alarm(name);
                if checks.is_empty() {
                    (false, format!("no check reads alarm {name}"))
                } else {
                    (
                        true,
                        format!("evaluating check(s) {} now", checks.join(", ")),
                    )
                }
            }
            Hint::Object { bucket, key } => {
                let names: Vec<String> = self
                    .cfg
                    .checks
                    .iter()
                    .filter(|(_, c)| {
                        c.report()
                            .is_some_and(|r| r.bucket == *bucket && r.holds(key))
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                if names.is_empty() && !self.cfg.checks.values().any(|c| c.report().is_some()) {
                    (false, "no rule or item concerns this event".to_string())
                } else if names.is_empty() {
                    (false, format!("no report check reads s3://{bucket}/{key}"))
                } else {
                    let what = format!("reading report check(s) {} now", names.join(", "));
                    self.evaluate_checks(names, self.now());
                    (true, what)
                }
            }
            Hint::None => (false, "no rule or item concerns this event".to_string()),
        }
    }

    /// Reads one followed run now (the answer is handled as a poll's would be).
    fn follow_one(&self, run: RunRow) {
        let (cloud, tx) = (self.cloud.clone(), self.tx.clone());
        self.tracker.spawn(async move {
            let Some(arn) = run.arn.clone() else { return };
            let status = match run.kind {
                RunKind::Pipeline => cloud.pipeline_status(&arn).await,
                RunKind::Build => cloud
                    .build_statuses(std::slice::from_ref(&arn))
                    .await
                    .map(|m| {
                        m.get(&arn)
                            .cloned()
                            .unwrap_or(RunStatus::Running("not in the answer".into()))
                    }),
            };
            let _ = tx.send(Msg::RunStatuses {
                statuses: vec![(run.id, status)],
                poll: false,
            });
        });
    }

    /// Deletes from the queue the messages came from (a reload may have changed `[events]`;
    /// the consumer keeps its queue until a restart).
    fn delete_messages(&self, queue_url: &str, receipts: Vec<String>) {
        if receipts.is_empty() {
            return;
        }
        let (cloud, url) = (self.cloud.clone(), queue_url.to_string());
        self.tracker.spawn(async move {
            let deleted = match cloud.acting() {
                Ok(act) => cloud.delete_events(&act, &url, &receipts).await,
                Err(e) => Err(e),
            };
            match deleted {
                Ok(0) => {}
                Ok(left) => events::events_delete_left(&url, left),
                Err(e) => events::events_delete_failed(&url, receipts.len(), &e),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_to_a_minute() {
        let b: Vec<u64> = (1..=9).map(|n| super::backoff(n).as_secs()).collect();
        assert_eq!(b, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
