//! Leadership for high availability (SPEC "More than one machine"): one lease item in a
//! DynamoDB table, taken and renewed by conditional writes, with a fencing number that grows
//! with every new leader.
//!
//! No replica trusts another's clock (as the DynamoDB lock client does): a standby takes over
//! only after it has seen the lease item *unchanged* (same `version`) for the lease duration on
//! its own monotonic clock, and a leader counts its lease from the moment it *sent* the renewal
//! that succeeded, minus a margin, so it stops acting before any standby may take over.
//!
//! `Lease` is the pure state machine (instants are given, nothing is read or written); `drive`
//! runs it against a `cloud::LeaseTable` (DynamoDB in `aws/dynamodb.rs`, in memory in tests).

use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::{Expect, LeaseItem, LeaseTable};

/// A replica's role: the one type the lease, `/status` and the logs use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    Leader {
        fencing: u64,
    },
    Standby {
        /// The replica seen holding the lease, if any.
        leader: Option<String>,
        /// Its fencing number (0: none seen).
        fencing: u64,
    },
}

impl Role {
    /// `leader` or `standby`, as `/status` says it.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Role::Leader { .. } => "leader",
            Role::Standby { .. } => "standby",
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Read the lease item.
    Read,
    /// Write this item, conditioned on `expect` (a takeover or a renewal).
    Write { item: LeaseItem, expect: Expect },
}

/// The lease state machine of one replica.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    me: String,
    duration: Duration,
    role: Role,
    /// Standby: the version last seen and since when (own clock) it has not changed.
    watched: Option<(u64, Instant)>,
    /// Leader: our item, and until when we may act.
    held: Option<(LeaseItem, Instant)>,
    /// The last item seen (for the fencing number a takeover increments).
    last: Option<LeaseItem>,
    /// Why the takeover being tried is allowed: "absent", "expired" or "released".
    taking: &'static str,
}

/// How much earlier than a standby could take over a leader stops acting: a share of the
/// lease for clock-rate differences and scheduling delays.
pub(crate) fn margin(duration: Duration) -> Duration {
    (duration / 5)
        .max(Duration::from_millis(200))
        .min(duration / 2)
}

impl Lease {
    pub(crate) fn new(me: &str, duration: Duration) -> Lease {
        Lease {
            me: me.to_string(),
            duration,
            role: Role::Standby {
                leader: None,
                fencing: 0,
            },
            watched: None,
            held: None,
            last: None,
            taking: "",
        }
    }

    pub(crate) fn role(&self) -> &Role {
        &self.role
    }

    /// Whether this replica may act (evaluate, decide, start, publish) at `now`.
    pub(crate) fn may_act(&self, now: Instant) -> bool {
        matches!(self.role, Role::Leader { .. })
            && self.held.as_ref().is_some_and(|(_, until)| now < *until)
    }

    /// Until when we may act, while we lead.
    pub(crate) fn valid_until(&self) -> Option<Instant> {
        self.held.as_ref().map(|(_, until)| *until)
    }

    /// The fencing number of our lease while we lead.
    pub(crate) fn fencing(&self) -> Option<u64> {
        match self.role {
            Role::Leader { fencing } => Some(fencing),
            Role::Standby { .. } => None,
        }
    }

    /// How often a leader renews (a third of the lease) and a standby looks (as often, but at
    /// least every 5 s: a lease given up is taken soon even when the lease is long).
    pub(crate) fn tick(&self) -> Duration {
        match self.role {
            Role::Leader { .. } => self.duration / 3,
            Role::Standby { .. } => (self.duration / 3).min(Duration::from_secs(5)),
        }
    }

    /// Why the last takeover this replica tried was allowed: `absent` (no lease item yet),
    /// `expired` (unchanged for a whole lease) or `released` (its holder gave it up).
    pub(crate) fn took(&self) -> &'static str {
        self.taking
    }

    /// What to do at `now`: a leader renews; a standby reads.
    pub(crate) fn next(&self) -> Next {
        match (&self.role, &self.held) {
            (Role::Leader { fencing }, Some((item, _))) => Next::Write {
                item: LeaseItem {
                    holder: self.me.clone(),
                    fencing: *fencing,
                    version: item.version + 1,
                    released: false,
                },
                expect: Expect::Held {
                    holder: self.me.clone(),
                    fencing: *fencing,
                },
            },
            _ => Next::Read,
        }
    }

    /// A standby read the item at `now`: keep watching, or try to take over (the item is
    /// absent, or unchanged for the whole lease on our clock).
    pub(crate) fn on_read(&mut self, item: Option<LeaseItem>, now: Instant) -> Option<Next> {
        let Some(item) = item else {
            self.watched = None;
            self.taking = "absent";
            return Some(Next::Write {
                item: LeaseItem {
                    holder: self.me.clone(),
                    fencing: self.last.as_ref().map_or(0, |l| l.fencing) + 1,
                    version: 1,
                    released: false,
                },
                expect: Expect::Absent,
            });
        };
        self.role = Role::Standby {
            leader: Some(item.holder.clone()),
            fencing: item.fencing,
        };
        // A released lease is free at once: its holder wrote its last state before giving
        // it up, and the table refuses any write of its after that.
        let expired = item.released
            || match self.watched {
                Some((v, since)) if v == item.version => now.duration_since(since) >= self.duration,
                _ => {
                    self.watched = Some((item.version, now));
                    false
                }
            };
        self.last = Some(item.clone());
        self.taking = if item.released { "released" } else { "expired" };
        expired.then(|| Next::Write {
            item: LeaseItem {
                holder: self.me.clone(),
                fencing: item.fencing + 1,
                version: item.version + 1,
                released: false,
            },
            expect: Expect::Version(item.version),
        })
    }

    /// The answer to a write sent at `sent` (a takeover or a renewal): `true` means we lead
    /// until `sent + duration - margin`; `false` (the condition failed) that someone else
    /// holds the lease: we are deposed, or lost the race, and watch again.
    pub(crate) fn on_written(&mut self, item: LeaseItem, ok: bool, sent: Instant) {
        if ok {
            self.role = Role::Leader {
                fencing: item.fencing,
            };
            self.held = Some((item.clone(), sent + self.duration - margin(self.duration)));
            self.watched = None;
            self.last = Some(item);
        } else {
            self.step_down();
        }
    }

    /// The write that gives our lease up (a clean stop), while we hold it.
    pub(crate) fn release(&self) -> Option<Next> {
        let (Role::Leader { fencing }, Some((item, _))) = (&self.role, &self.held) else {
            return None;
        };
        Some(Next::Write {
            item: LeaseItem {
                holder: self.me.clone(),
                fencing: *fencing,
                version: item.version + 1,
                released: true,
            },
            expect: Expect::Held {
                holder: self.me.clone(),
                fencing: *fencing,
            },
        })
    }

    /// A write of ours was refused for our fencing number, or the lease could not be renewed
    /// in time: stop acting at once and watch.
    pub(crate) fn step_down(&mut self) {
        let fencing = self.fencing().unwrap_or(0);
        self.role = Role::Standby {
            leader: None,
            fencing,
        };
        self.held = None;
        self.watched = None;
    }
}

/// A change of role, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// We lead now, with this fencing number.
    Leading { fencing: u64 },
    /// We stopped leading (deposed, or the lease could not be renewed in time).
    SteppedDown { reason: String },
    /// Someone else leads.
    Following { leader: String, fencing: u64 },
}

/// Runs the lease for replica `me` until `stop`: renews while leading, watches while not, and
/// sends every change of role. A leader that cannot renew (an error, or no answer) steps down
/// as soon as its lease could lapse, before any standby may take over.
pub async fn drive<T: LeaseTable>(
    table: T,
    me: String,
    duration: Duration,
    changes: tokio::sync::mpsc::UnboundedSender<Change>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut lease = Lease::new(&me, duration);
    let mut following: Option<(String, u64)> = None;
    loop {
        let now = Instant::now();
        if matches!(lease.role(), Role::Leader { .. }) && !lease.may_act(now) {
            lease.step_down();
            let _ = changes.send(Change::SteppedDown {
                reason: "the lease could not be renewed in time".into(),
            });
        }
        let step = match lease.next() {
            Next::Read => match table.read().await {
                Ok(item) => {
                    if let Some(i) = &item {
                        let f = (i.holder.clone(), i.fencing);
                        if i.holder != me && following.as_ref() != Some(&f) {
                            let _ = changes.send(Change::Following {
                                leader: f.0.clone(),
                                fencing: f.1,
                            });
                            following = Some(f);
                        }
                    }
                    lease.on_read(item, Instant::now())
                }
                Err(e) => {
                    tracing::warn!(event = "ha_lease_read_failed", error = %e, "cannot read the lease item; retrying");
                    None
                }
            },
            w @ Next::Write { .. } => Some(w),
        };
        if let Some(Next::Write { item, expect }) = step {
            let was_leader = lease.fencing().is_some();
            let sent = Instant::now();
            // A leader waits for its renewal only as long as its lease lasts: it then stops
            // acting, whatever the write does later. A takeover waits as long as it would last.
            let deadline = lease
                .valid_until()
                .unwrap_or(sent + duration - margin(duration));
            let r = tokio::select! {
                r = table.write(item.clone(), expect) => Some(r),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match r {
                Some(Ok(ok)) => {
                    lease.on_written(item.clone(), ok, sent);
                    match (was_leader, ok) {
                        (false, true) => {
                            following = None;
                            tracing::info!(
                                event = "ha_lease_taken",
                                fencing = item.fencing,
                                took = lease.took(),
                                "took the lease"
                            );
                            let _ = changes.send(Change::Leading {
                                fencing: item.fencing,
                            });
                        }
                        (true, false) => {
                            let _ = changes.send(Change::SteppedDown {
                                reason: "deposed: another replica holds the lease".into(),
                            });
                        }
                        _ => {}
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(event = "ha_lease_write_failed", error = %e, "cannot write the lease item; retrying");
                }
                None => {
                    tracing::warn!(
                        event = "ha_lease_write_timeout",
                        "the lease write did not answer in time"
                    );
                }
            }
        }
        // A leader also wakes when its lease would end, to stop acting at that instant.
        let mut wake = Instant::now() + lease.tick();
        if let Some(until) = lease.valid_until() {
            wake = wake.min(until);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    // A clean stop: the caller has stopped acting, so the lease is given up for a standby to
    // take at once. Bounded: without an answer, the standbys take it after the lease.
    if let Some(Next::Write { item, expect }) = lease.release() {
        let fencing = item.fencing;
        match tokio::time::timeout(lease.tick(), table.write(item, expect)).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    event = "ha_lease_released",
                    fencing,
                    "gave the lease up for a standby to take at once"
                )
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(event = "ha_lease_release_failed", error = %e, "cannot give the lease up; a standby takes it after the lease")
            }
            Err(_) => tracing::warn!(
                event = "ha_lease_release_failed",
                error = "no answer",
                "cannot give the lease up; a standby takes it after the lease"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::AwsError;

    const D: Duration = Duration::from_secs(15);

    fn item(holder: &str, fencing: u64, version: u64) -> LeaseItem {
        LeaseItem {
            holder: holder.into(),
            fencing,
            version,
            released: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_takes_over_only_after_seeing_the_item_unchanged_for_the_lease() {
        let t0 = Instant::now();
        let mut b = Lease::new("b", D);
        assert_eq!(b.on_read(Some(item("a", 1, 7)), t0), None);
        assert_eq!(
            b.on_read(Some(item("a", 1, 7)), t0 + D - Duration::from_millis(1)),
            None
        );
        // A renewal resets the watch.
        assert_eq!(b.on_read(Some(item("a", 1, 8)), t0 + D), None);
        assert_eq!(b.on_read(Some(item("a", 1, 8)), t0 + D + D / 2), None);
        let take = b.on_read(Some(item("a", 1, 8)), t0 + D + D).unwrap();
        assert_eq!(
            take,
            Next::Write {
                item: item("b", 2, 9),
                expect: Expect::Version(8)
            }
        );
        assert!(!b.may_act(t0 + D + D));
        assert_eq!(b.took(), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_stops_acting_before_a_standby_may_take_over() {
        let t0 = Instant::now();
        let mut a = Lease::new("a", D);
        let Some(Next::Write { item: first, .. }) = a.on_read(None, t0) else {
            panic!("an absent item is taken");
        };
        assert_eq!(first, item("a", 1, 1));
        a.on_written(first, true, t0);
        assert_eq!(a.role(), &Role::Leader { fencing: 1 });
        assert!(a.may_act(t0 + D - margin(D) - Duration::from_millis(1)));
        // A standby that read the item right after this write could take over at t0 + D:
        // the leader has stopped before.
        assert!(!a.may_act(t0 + D - margin(D)));
        assert!(!a.may_act(t0 + D));
        // A renewal sent later extends it from when it was sent.
        let Next::Write {
            item: renew,
            expect,
        } = a.next()
        else {
            panic!("a leader renews");
        };
        assert_eq!(renew, item("a", 1, 2));
        assert_eq!(
            expect,
            Expect::Held {
                holder: "a".into(),
                fencing: 1
            }
        );
        a.on_written(renew, true, t0 + D / 3);
        assert!(a.may_act(t0 + D));
        // A refused renewal: deposed at once.
        a.on_written(item("a", 1, 3), false, t0 + D);
        assert!(!a.may_act(t0 + D));
        assert!(matches!(a.role(), Role::Standby { .. }));
    }

    /// An in-memory lease table on which one holder can be cut off (its calls never answer,
    /// as for a process stopped with SIGSTOP or partitioned away).
    #[derive(Clone, Default)]
    struct Mem {
        item: std::sync::Arc<std::sync::Mutex<Option<LeaseItem>>>,
        cut: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        who: String,
    }

    impl Mem {
        fn as_(&self, who: &str) -> Mem {
            Mem {
                who: who.into(),
                ..self.clone()
            }
        }
        /// While cut off, a call waits (and answers once the holder is back).
        async fn gate(&self) {
            while self.cut.lock().unwrap().contains(&self.who) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    impl LeaseTable for Mem {
        async fn read(&self) -> Result<Option<LeaseItem>, AwsError> {
            self.gate().await;
            Ok(self.item.lock().unwrap().clone())
        }
        async fn write(&self, item: LeaseItem, expect: Expect) -> Result<bool, AwsError> {
            self.gate().await;
            let mut cur = self.item.lock().unwrap();
            let ok = match (&*cur, &expect) {
                (None, Expect::Absent) => true,
                (Some(c), Expect::Version(v)) => c.version == *v,
                (Some(c), Expect::Held { holder, fencing }) => {
                    c.holder == *holder && c.fencing == *fencing && !c.released
                }
                _ => false,
            };
            if ok {
                *cur = Some(item);
            }
            Ok(ok)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_leader_steps_down_before_the_standby_takes_over() {
        let mem = Mem::default();
        let (a_tx, mut a_rx) = tokio::sync::mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(drive(mem.as_("a"), "a".into(), D, a_tx, stop.clone()));
        assert_eq!(a_rx.recv().await, Some(Change::Leading { fencing: 1 }));
        tokio::spawn(drive(mem.as_("b"), "b".into(), D, b_tx, stop.clone()));
        assert!(matches!(b_rx.recv().await, Some(Change::Following { .. })));
        // Ten leases of renewals: nothing changes.
        tokio::time::sleep(D * 10).await;
        assert!(a_rx.try_recv().is_err() && b_rx.try_recv().is_err());
        // A is cut off: its renewals never answer.
        mem.cut.lock().unwrap().push("a".into());
        let a_down = match a_rx.recv().await {
            Some(Change::SteppedDown { reason }) => {
                assert!(reason.contains("in time"), "{reason}");
                Instant::now()
            }
            other => panic!("A steps down: {other:?}"),
        };
        assert_eq!(b_rx.recv().await, Some(Change::Leading { fencing: 2 }));
        let b_up = Instant::now();
        assert!(a_down < b_up, "A stopped acting before B took over");
        // A is back (SIGCONT): its first renewal is refused, it follows B.
        mem.cut.lock().unwrap().clear();
        assert_eq!(
            a_rx.recv().await,
            Some(Change::Following {
                leader: "b".into(),
                fencing: 2
            })
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once_and_its_holders_writes_are_refused() {
        let t0 = Instant::now();
        let mut a = Lease::new("a", D);
        assert_eq!(a.release(), None, "a standby has nothing to give up");
        a.on_written(item("a", 3, 10), true, t0);
        let Some(Next::Write { item: gone, expect }) = a.release() else {
            panic!("a leader releases");
        };
        assert!(gone.released && gone.version == 11 && gone.fencing == 3);
        assert_eq!(
            expect,
            Expect::Held {
                holder: "a".into(),
                fencing: 3
            }
        );
        // A standby's first sight of a released item: taken at once, fenced higher.
        let mut b = Lease::new("b", D);
        let take = b.on_read(Some(gone), t0).unwrap();
        let Next::Write { item: took, expect } = take else {
            panic!("a released lease is taken");
        };
        assert_eq!(
            (took.holder.as_str(), took.fencing, took.released),
            ("b", 4, false)
        );
        assert_eq!(expect, Expect::Version(11));
        assert_eq!(b.took(), "released");
        // A standby looks at least every 5 s, whatever the lease; a leader renews at a third.
        assert_eq!(b.tick(), Duration::from_secs(5));
        assert_eq!(a.tick(), D / 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_leader_gives_the_lease_up_and_a_standby_leads_before_the_lease_ends() {
        let mem = Mem::default();
        let (a_tx, mut a_rx) = tokio::sync::mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_a, stop_b) = (
            tokio_util::sync::CancellationToken::new(),
            tokio_util::sync::CancellationToken::new(),
        );
        let a = tokio::spawn(drive(mem.as_("a"), "a".into(), D, a_tx, stop_a.clone()));
        assert_eq!(a_rx.recv().await, Some(Change::Leading { fencing: 1 }));
        tokio::time::sleep(D * 2).await;
        stop_a.cancel();
        a.await.unwrap();
        let held = mem.item.lock().unwrap().clone().unwrap();
        assert!(held.released && held.holder == "a", "{held:?}");
        // A's late renewal after giving it up is refused.
        let late = mem
            .as_("a")
            .write(
                item("a", 1, held.version + 1),
                Expect::Held {
                    holder: "a".into(),
                    fencing: 1,
                },
            )
            .await
            .unwrap();
        assert!(!late);
        // B starts now: it leads at its first read, not after a lease of watching.
        let started = Instant::now();
        tokio::spawn(drive(mem.as_("b"), "b".into(), D, b_tx, stop_b.clone()));
        assert!(matches!(b_rx.recv().await, Some(Change::Following { .. })));
        assert_eq!(b_rx.recv().await, Some(Change::Leading { fencing: 2 }));
        assert_eq!(Instant::now(), started, "taken at B's first read");
        stop_b.cancel();
    }
}
