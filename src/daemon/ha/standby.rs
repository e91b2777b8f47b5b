//! A standby: it keeps the config validated and hot-reloaded (the same reload as the leader's,
//! fast path included), applies the table's log to its file, serves HTTP, and waits until the
//! lease driver says it leads — `next_event` waits, `handle` acts.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{log, Replica};
use crate::cloud::HaLog;
use crate::daemon::control::{Control, Controls, Exit, Trigger};
use crate::daemon::reload::{self, ReloadOutcome};
use crate::daemon::{Base, Loaded, RunError};
use crate::events;

/// How a standby's time ended.
pub(super) enum Phase {
    Stop(Exit),
    /// This replica took the lease with this fencing number.
    Lead(u64),
}

/// What a standby waits for.
enum Event {
    Control(Control),
    /// The lease driver's answer changed (`Err`: the driver is gone).
    Lease(Result<(), ()>),
    /// Apply the table's log (every third of a lease).
    Tail,
    /// Turn at least this often (the heartbeat `/healthz` reads).
    Heartbeat,
}

struct Standby<'a, T> {
    base: &'a Base,
    loaded: &'a mut Loaded,
    replica: &'a mut Replica<T>,
    controls: Controls,
    tail: Interval,
    heartbeat: Interval,
    shutdown: &'a CancellationToken,
    /// The leader config hash last told to differ from ours.
    told_differs: Option<String>,
}

/// A standby until this replica leads or is asked to stop.
pub(super) async fn run<T: HaLog>(
    base: &Base,
    loaded: &mut Loaded,
    replica: &mut Replica<T>,
    shutdown: &CancellationToken,
) -> Result<Phase, RunError> {
    let controls = Controls::new(&base.path, &loaded.cfg)?;
    let mut tail = tokio::time::interval(loaded.cfg.daemon.ha_lease / 3);
    tail.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut s = Standby {
        base,
        loaded,
        replica,
        controls,
        tail,
        heartbeat: tokio::time::interval(Duration::from_secs(5)),
        shutdown,
        told_differs: None,
    };
    loop {
        if let Some(fencing) = s.leading() {
            return Ok(Phase::Lead(fencing));
        }
        s.tell_config_differs();
        let event = s.next_event().await;
        if let Some(phase) = s.handle(event).await? {
            return Ok(phase);
        }
    }
}

impl<T: HaLog> Standby<'_, T> {
    /// The fencing number this replica leads with, once the driver says so and the gate is open.
    fn leading(&mut self) -> Option<u64> {
        let f = (*self.replica.lead.borrow_and_update())?;
        self.replica.gate.may_act().then_some(f)
    }

    async fn next_event(&mut self) -> Event {
        let now = self.base.clock.now();
        self.base
            .heartbeat
            .store(now.timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            _ = self.shutdown.cancelled() => Event::Control(Control::Stop(Exit::Requested)),
            c = self.controls.next() => Event::Control(c),
            r = self.replica.lead.changed() => Event::Lease(r.map_err(|_| ())),
            _ = self.tail.tick() => Event::Tail,
            _ = self.heartbeat.tick() => Event::Heartbeat,
        }
    }

    async fn handle(&mut self, event: Event) -> Result<Option<Phase>, RunError> {
        match event {
            Event::Control(Control::Stop(exit)) => return Ok(Some(Phase::Stop(exit))),
            Event::Control(Control::Reload(trigger)) => self.reload(trigger),
            Event::Lease(Ok(())) | Event::Heartbeat => {}
            Event::Lease(Err(())) => {
                return Err(RunError::Other("the HA lease driver stopped".into()))
            }
            Event::Tail => self.tail().await,
        }
        Ok(None)
    }

    /// Applies the table's log; a replica that cannot follow it must not lead from a stale
    /// file, so it abstains from the lease meanwhile.
    async fn tail(&mut self) {
        let table = &self.replica.table;
        match log::tail(table, &self.base.store).await {
            Ok(seq) => {
                self.replica.abstain(false);
                self.base.health.update_ha(|i| {
                    i.applied_seq = seq;
                    i.log_error = None;
                });
            }
            Err(e) => {
                self.replica.abstain(true);
                self.base
                    .health
                    .update_ha(|i| i.log_error = Some(e.clone()));
                events::ha_table_unreachable(table.name(), &e);
            }
        }
    }

    /// The leader's reload's twin: the file validated whole, kept if good, shown on
    /// `/status`, its hash written on the lease with this replica's next write.
    fn reload(&mut self, trigger: Trigger) {
        let t0 = std::time::Instant::now();
        let outcome = match reload::reread(self.loaded, &self.base.path) {
            Err(e) => ReloadOutcome::Rejected(e),
            Ok(r) => {
                let (new, outcome) = r.take(self.loaded);
                if let Some(new) = new {
                    self.loaded.cfg = std::sync::Arc::new(new);
                }
                outcome
            }
        };
        self.replica.table.set_config_hash(&self.loaded.hash);
        reload::tell(self.base, self.loaded, trigger, &outcome, t0, "standby");
        self.controls.watch_files(&self.loaded.cfg);
    }

    /// Says once per leader config that it differs from this replica's.
    fn tell_config_differs(&mut self) {
        let Some(i) = self.base.health.ha() else {
            return;
        };
        if !i.config_differs() {
            self.told_differs = None;
            return;
        }
        let theirs = i.leader_config_hash.clone().unwrap_or_default();
        if self.told_differs.as_deref() != Some(theirs.as_str()) {
            events::ha_config_differs(i.leader().unwrap_or("?"), &theirs, &i.config_hash);
            self.told_differs = Some(theirs);
        }
    }
}
