//! The control loop of a single machine or of the HA leader: `next_event` waits (only the
//! `select!`) and returns a closed `Event`; `handle` does the work (only the `match`). AWS
//! calls run in spawned tasks whose answers come back as `Event::Answer`; every decision is
//! taken here, on the loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::{Control, Controls, Exit, Trigger};
use super::reload::{self, ReloadOutcome};
use super::timer::Timer;
use super::work::{Cause, Msg, Parts, Work};
use super::{inbound, outbox, release_memory, systemd, timed_of, Base, Ended, Loaded, RunError};
use crate::cloud::{Cloud, Gated};
use crate::config::diff::ConfigDiff;
use crate::config::{CatchUp, Config, ItemKind};
use crate::events;
use crate::state::StateError;

/// The longest the loop sleeps without looking at the clock again (wall-clock jumps, watchdog).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Most check results evaluated in one turn of the loop (~30 ms of work at 10,000 checks).
const CHECK_SLICE: usize = 1000;

/// What the loop waits for.
#[derive(Debug)]
enum Event {
    /// Asked to stop, or to reload.
    Control(Control),
    /// Scheduled items are due.
    Due,
    /// An AWS call's answer.
    Answer(Msg),
    /// Poll followed runs, re-drive decided starts (`daemon.poll_interval`).
    Poll,
    /// Compare declared pipelines with SageMaker (`daemon.reconcile_interval`).
    Reconcile,
    /// Tell systemd's watchdog the loop turns.
    Watchdog,
    /// Turn at least this often (the heartbeat `/healthz` reads).
    Heartbeat,
}

/// The loop's periodic ticks.
struct Ticks {
    poll: Interval,
    reconcile: Interval,
    watchdog: Option<Interval>,
    heartbeat: Interval,
}

fn interval(every: Duration) -> Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Ticks {
    fn new(cfg: &Config) -> Ticks {
        Ticks {
            poll: interval(cfg.daemon.poll_interval),
            reconcile: interval(cfg.daemon.reconcile_interval),
            // The first watchdog ping goes out at once.
            watchdog: systemd::watchdog_interval().map(|every| {
                let mut i = tokio::time::interval(every);
                i.set_missed_tick_behavior(MissedTickBehavior::Delay);
                i
            }),
            heartbeat: tokio::time::interval(Duration::from_secs(5)),
        }
    }
    /// A reload may change the intervals.
    fn follow(&mut self, cfg: &Config) {
        if self.poll.period() != cfg.daemon.poll_interval {
            self.poll = interval(cfg.daemon.poll_interval);
        }
        if self.reconcile.period() != cfg.daemon.reconcile_interval {
            self.reconcile = interval(cfg.daemon.reconcile_interval);
        }
    }
}

struct Daemon<'a, C> {
    base: &'a Base,
    loaded: &'a mut Loaded,
    timer: Timer,
    tracker: TaskTracker,
    work: Work<C>,
    answers: mpsc::UnboundedReceiver<Msg>,
    controls: Controls,
    ticks: Ticks,
    shutdown: &'a CancellationToken,
    /// Cancelled when this replica stops leading (HA).
    demote: CancellationToken,
    /// Stops the outbox sender and the events consumer.
    stop_tasks: CancellationToken,
}

/// Runs the control loop until `shutdown` or a signal (and, for an HA leader, `demote`).
pub(crate) async fn active<C: Cloud>(
    base: &Base,
    loaded: &mut Loaded,
    cloud: Gated<C>,
    shutdown: &CancellationToken,
    demote: Option<CancellationToken>,
) -> Result<Ended, RunError> {
    let mut d = start(base, loaded, cloud, shutdown, demote)?;
    systemd::ready("running");
    events::daemon_ready(base.store.path(), d.timer.len());
    // The preflight reads every resource the config names, after READY and beside the
    // schedules: a misspelt name shows on /status before its first use.
    d.work.preflight(crate::doctor::Scope::all());
    let exit = loop {
        let event = d.next_event().await;
        if let Some(exit) = d.handle(event) {
            break exit;
        }
    };
    Ok(d.stop(exit).await)
}

/// The loop's working set, its tasks (outbox sender, events consumer) and its first turn:
/// declared pipelines compared, then what a previous run left re-driven.
fn start<'a, C: Cloud>(
    base: &'a Base,
    loaded: &'a mut Loaded,
    cloud: Gated<C>,
    shutdown: &'a CancellationToken,
    demote: Option<CancellationToken>,
) -> Result<Daemon<'a, C>, RunError> {
    let (clock, store, health) = (base.clock, &base.store, &base.health);
    let cfg = loaded.cfg.clone();
    let tracker = TaskTracker::new();
    let (tx, answers) = mpsc::unbounded_channel::<Msg>();
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let store_id = store.store_id().map_err(|source| {
        RunError::State(StateError::Sqlite {
            path: store.path().to_path_buf(),
            source,
        })
    })?;
    let stop_tasks = CancellationToken::new();
    let sender = outbox::Outbox {
        store: store.clone(),
        cloud: cloud.clone(),
        clock,
        health: health.clone(),
        wake: outbox_wake.clone(),
    };
    tracker.spawn(sender.run(stop_tasks.clone()));
    if let Some(ev) = &cfg.events {
        let consumer = inbound::Consumer {
            cloud: cloud.clone(),
            queue_url: ev.queue_url.clone(),
            tx: tx.clone(),
            health: health.clone(),
            clock,
        };
        tracing::info!(event = "events_consumer_started", queue_url = %ev.queue_url, "reading EventBridge events from the [events] queue");
        tracker.spawn(consumer.run(stop_tasks.clone()));
    }
    let work = Work::new(Parts {
        cfg: cfg.clone(),
        store: store.clone(),
        cloud,
        clock,
        tx,
        tracker: tracker.clone(),
        outbox_wake: outbox_wake.clone(),
        health: health.clone(),
        store_id,
    });
    let mut d = Daemon {
        base,
        controls: Controls::new(&base.path, &cfg)?,
        ticks: Ticks::new(&cfg),
        loaded,
        timer: Timer::default(),
        tracker,
        work,
        answers,
        shutdown,
        demote: demote.unwrap_or_default(),
        stop_tasks,
    };
    d.schedule_start(clock.now());
    release_memory();
    // Declared pipelines are compared (and applied) first, so that starts re-driven below
    // for a pipeline being applied wait for its apply.
    d.work.reconcile(None, "start");
    // Resume what a previous run left: decided starts, followed runs, unapplied gates,
    // deployments; then read what each endpoint block wants.
    d.work.follow_tick();
    d.work.reconcile_endpoints(None, "start");
    // A report evaluated before a restart whose rules were not considered is considered now;
    // an event-only report check reads what arrived while down.
    d.work.sweep_reports(false);
    outbox_wake.notify_one();
    Ok(d)
}

impl<C: Cloud> Daemon<'_, C> {
    /// Waits for the next thing to do. Every arm is cancel-safe.
    async fn next_event(&mut self) -> Event {
        let now = self.base.clock.now();
        self.base
            .heartbeat
            .store(now.timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
        let sleep_for = self
            .timer
            .peek()
            .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        let watchdog = async {
            match self.ticks.watchdog.as_mut() {
                Some(w) => w.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => Event::Control(Control::Stop(Exit::Requested)),
            _ = self.demote.cancelled() => Event::Control(Control::Stop(Exit::SteppedDown)),
            c = self.controls.next() => Event::Control(c),
            Some(msg) = self.answers.recv() => Event::Answer(msg),
            _ = self.ticks.poll.tick() => Event::Poll,
            _ = self.ticks.reconcile.tick() => Event::Reconcile,
            _ = watchdog => Event::Watchdog,
            _ = self.ticks.heartbeat.tick() => Event::Heartbeat,
            _ = tokio::time::sleep(sleep_for) => Event::Due,
        }
    }

    /// Does what `event` asks; `Some` ends the loop.
    fn handle(&mut self, event: Event) -> Option<Exit> {
        match event {
            Event::Control(Control::Stop(exit)) => return Some(exit),
            Event::Control(Control::Reload(trigger)) => self.reload(trigger),
            Event::Due => self.fire_due(self.base.clock.now()),
            Event::Answer(msg) => self.answer(msg, false),
            Event::Poll => self.work.follow_tick(),
            Event::Reconcile => {
                self.work.reconcile(None, "reconcile_interval");
                self.work.reconcile_endpoints(None, "reconcile_interval");
                // Event-only report checks: a look in case an event was lost.
                self.work.sweep_reports(true);
            }
            Event::Watchdog => systemd::watchdog(),
            Event::Heartbeat => {}
        }
        None
    }

    /// Puts every scheduled item on the timer at startup, with one catch-up fire for
    /// `catch_up = "once"` rules that missed a fire while the daemon was down.
    fn schedule_start(&mut self, now: DateTime<Utc>) {
        let cfg = self.loaded.cfg.clone();
        for (kind, name, timed) in cfg.scheduled() {
            let key = (kind, name.clone());
            let mut next = timed.schedule.next_after(timed.timezone, now);
            let catch_up = kind == ItemKind::Rule
                && cfg.rules.get(name).map(|r| r.catch_up) == Some(CatchUp::Once);
            if catch_up {
                let r = self.base.store.last_fire(kind, name);
                let last = self
                    .work
                    .db("read the last fire", name, "no catch-up", r)
                    .flatten();
                if let Some(missed) = last
                    .and_then(|l| timed.schedule.next_after(timed.timezone, l))
                    .filter(|m| *m <= now)
                {
                    tracing::info!(event = "catch_up", rule = %name, missed = %crate::clock::ts(&missed), "rule missed a fire while mlopsd was down; catching up once");
                    next = Some(now);
                }
            }
            events::schedule_next(kind.as_str(), name, next.as_ref());
            self.timer.set(key, next);
        }
    }

    /// Takes an AWS call's answer. While shutting down, only answers that record what
    /// already happened are taken; the rest is redone from the store on the next start.
    fn answer(&mut self, msg: Msg, shutting_down: bool) {
        match msg {
            Msg::StartDone { run_id, result } => {
                if !(shutting_down && result.is_err()) {
                    self.work.on_start_done(run_id, result)
                }
            }
            Msg::GateApplied {
                gate,
                arn,
                approve,
                result,
            } => self.work.on_gate_applied(gate, arn, approve, result),
            // A create or update that went through is recorded even while shutting down.
            Msg::PipelineApplied {
                pipeline,
                sending,
                result,
            } => {
                if !(shutting_down && result.is_err()) {
                    self.work.on_pipeline_applied(pipeline, sending, result)
                }
            }
            // What a deployment's call did is recorded even while shutting down.
            Msg::Deploy {
                endpoint,
                id,
                answer,
            } => self.work.on_deploy(endpoint, id, *answer),
            _ if shutting_down => {}
            Msg::CheckResults { at, results, large } => self.check_results(at, results, large),
            Msg::ReportLooks { at, looks } => self.work.on_report_looks(at, looks),
            Msg::RunStatuses { statuses, poll } => self.work.on_run_statuses(statuses, poll),
            Msg::Events { queue_url, batch } => self.work.on_events(&queue_url, batch),
            Msg::GatePackages { gate, result } => self.work.on_gate_packages(gate, result),
            Msg::Preflight { findings } => self.work.on_preflight(findings),
            Msg::PipelineDescribed { pipeline, result } => {
                self.work.on_pipeline_described(pipeline, result)
            }
            Msg::EndpointRead { endpoint, result } => self.work.on_endpoint_read(endpoint, *result),
        }
    }

    /// A big batch of check results is taken a slice per turn of the loop: due items,
    /// reloads and other answers wait for one slice, not for 10,000 evaluations.
    fn check_results(
        &mut self,
        at: DateTime<Utc>,
        mut results: Vec<(String, Result<Option<f64>, crate::cloud::AwsError>)>,
        large: bool,
    ) {
        let rest = (results.len() > CHECK_SLICE).then(|| results.split_off(CHECK_SLICE));
        tracing::debug!(
            event = "check_results_taken",
            checks = results.len(),
            remaining = rest.as_ref().map_or(0, Vec::len),
            "evaluating a slice of a batch"
        );
        self.work.on_check_results(at, results);
        match rest {
            Some(rest) => self.work.requeue(Msg::CheckResults {
                at,
                results: rest,
                large,
            }),
            // A big batch leaves many freed pages behind; give them back.
            None if large => release_memory(),
            None => {}
        }
    }

    fn fire_due(&mut self, now: DateTime<Utc>) {
        let due = self.timer.pop_due(now);
        if due.is_empty() {
            return;
        }
        let cfg = self.loaded.cfg.clone();
        let mut rule_fires = Vec::new();
        let mut checks = Vec::new();
        for ((kind, name), at) in &due {
            events::schedule_fired(kind.as_str(), name, at, &now);
            match kind {
                ItemKind::Rule => rule_fires.push((name.clone(), *at)),
                ItemKind::Check => checks.push(name.clone()),
                ItemKind::Gate => self.work.run_gate(name),
            }
        }
        if let (Some(first), Some(last)) = (due.first().map(|d| d.1), due.last().map(|d| d.1)) {
            tracing::debug!(
                event = "schedule_batch",
                items = due.len(),
                checks = checks.len(),
                lateness_ms_max = (now - first).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                lateness_ms_min = (now - last).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                "due items popped"
            );
        }
        // All checks due now go out in one batched evaluation.
        self.work.evaluate_checks(checks, now);
        if !rule_fires.is_empty() {
            let r = self.base.store.record_fires(ItemKind::Rule, &rule_fires);
            self.work.db(
                "record rule fires",
                "",
                "a catch_up = \"once\" rule may catch up a fire it had",
                r,
            );
            for (name, _) in &rule_fires {
                self.work.fire_rule(name, Cause::Schedule);
            }
        }
        // Re-arm each item from the later of its due time and now: missed fires are not replayed.
        for ((kind, name), at) in due {
            if let Some(t) = timed_of(&cfg, kind, &name) {
                let next = t.schedule.next_after(t.timezone, at.max(now));
                events::schedule_next(kind.as_str(), &name, next.as_ref());
                self.timer.set((kind, name), next);
            }
        }
    }

    /// Validates the file whole; applies it as a diff, or keeps the old config.
    fn reload(&mut self, trigger: Trigger) {
        let t0 = std::time::Instant::now();
        systemd::reloading();
        let outcome = match reload::reread(self.loaded, &self.base.path) {
            Err(e) => ReloadOutcome::Rejected(e),
            Ok(r) => {
                let (new, outcome) = r.take(self.loaded);
                if let (Some(new), Some(diff)) = (new, outcome.diff()) {
                    self.apply(new, diff, self.base.clock.now());
                }
                outcome
            }
        };
        reload::tell(self.base, self.loaded, trigger, &outcome, t0, "running");
        self.controls.watch_files(&self.loaded.cfg);
        self.ticks.follow(&self.loaded.cfg);
    }

    /// Swaps in a new config. Only the diff's items are touched: new or rescheduled ones are
    /// armed from `now`, removed ones (and rules no longer on a schedule) stop, and every
    /// other item keeps its next fire time.
    fn apply(&mut self, new: Config, diff: &ConfigDiff, now: DateTime<Utc>) {
        let old = std::mem::replace(&mut self.loaded.cfg, Arc::new(new));
        let cfg = self.loaded.cfg.clone();
        self.work.set_config(cfg.clone());
        // Declared pipelines whose definition or role changed (or that are new) are applied now.
        let state = |c: &Config, n: &str| {
            c.pipelines
                .get(n)
                .and_then(|p| p.declared.as_ref())
                .map(|d| d.state_hash())
        };
        let to_apply: Vec<String> = diff
            .pipelines
            .added
            .iter()
            .chain(&diff.pipelines.changed)
            .filter(|n| state(&cfg, n).is_some() && state(&cfg, n) != state(&old, n))
            .cloned()
            .collect();
        self.work.reconcile(Some(to_apply), "reload");
        let endpoints: Vec<String> = diff
            .endpoints
            .added
            .iter()
            .chain(&diff.endpoints.changed)
            .cloned()
            .collect();
        if !endpoints.is_empty() {
            self.work.reconcile_endpoints(Some(&endpoints), "reload");
        }
        // Items added or changed are read again by the preflight.
        self.work.preflight(crate::doctor::Scope::touched(diff));
        for (kind, section) in [
            (ItemKind::Check, &diff.checks),
            (ItemKind::Rule, &diff.rules),
            (ItemKind::Gate, &diff.gates),
        ] {
            for name in &section.removed {
                self.timer.remove(&(kind, name.clone()));
            }
            for name in section.added.iter().chain(&section.changed) {
                let key = (kind, name.clone());
                match timed_of(&cfg, kind, name) {
                    None => self.timer.remove(&key),
                    Some(t)
                        if timed_of(&old, kind, name) == Some(t) && self.timer.contains(&key) => {}
                    Some(t) => {
                        let next = t.schedule.next_after(t.timezone, now);
                        events::schedule_next(kind.as_str(), name, next.as_ref());
                        self.timer.set(key, next);
                    }
                }
            }
        }
    }

    /// Ends the loop: a demoted leader hands over at once; a stop lets in-flight calls finish
    /// within `shutdown_grace` (their answers that record what happened are still taken).
    async fn stop(mut self, exit: Exit) -> Ended {
        self.stop_tasks.cancel();
        self.tracker.close();
        if exit == Exit::SteppedDown && !self.shutdown.is_cancelled() {
            // A deposed leader records nothing more (the store refuses its writes); what it
            // was doing is resumed by the new leader from the table. Its tasks (the outbox,
            // calls in flight: AWS refuses the gated ones at once) end before this replica
            // is a standby, so none of them outlives this leadership into a next one.
            let lease = self.loaded.cfg.daemon.ha_lease;
            if tokio::time::timeout(lease, self.tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    event = "ha_tasks_left",
                    tasks = self.tracker.len(),
                    "calls of the old leadership still running after a lease"
                );
            }
            return Ended::Demoted;
        }
        systemd::stopping();
        events::daemon_stopping(exit.as_str());
        let grace = self.loaded.cfg.daemon.shutdown_grace;
        let clean = tokio::time::timeout(grace, async {
            let tracker = self.tracker.clone();
            let wait = tracker.wait();
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(msg) = self.answers.recv() => self.answer(msg, true),
                }
            }
            while let Ok(msg) = self.answers.try_recv() {
                self.answer(msg, true);
            }
        })
        .await
        .is_ok();
        if !clean {
            tracing::warn!(event = "shutdown_grace_exceeded", grace_ms = grace.as_millis() as u64, "in-flight work did not finish within shutdown_grace; it is abandoned and resumes from the state store on the next start");
        }
        if let Err(e) = self.base.store.checkpoint() {
            tracing::warn!(error = %e, "state store checkpoint at shutdown failed (the WAL keeps the data)");
        }
        events::daemon_stopped(clean);
        Ended::Stopped
    }
}
