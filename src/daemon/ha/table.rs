//! The HA table as this replica's parts use it: `Watched`, the lease driver's view (it
//! records for `/status` when the table answered and the lease changed, and opens the leader
//! gate on each renewal), and `Sink`, the leader's store log sink (each state write appended
//! to the table before its local commit; a refusal or no answer demotes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cloud::{ActGate, AppendError, AwsError, Expect, HaLog, LeaseItem, LeaseTable};
use crate::events;
use crate::lease;
use crate::state::LogSink;

/// The lease table as the driver uses it, recording for `/status` and `/healthz` when the
/// table last answered and the lease item last changed, and opening the act gate on each
/// renewal that succeeded.
#[derive(Clone)]
pub(super) struct Watched<T> {
    pub(super) table: T,
    pub(super) me: String,
    pub(super) lease: Duration,
    pub(super) gate: Arc<ActGate>,
    pub(super) health: Arc<crate::health::Health>,
    pub(super) last: Arc<Mutex<Option<(String, u64, u64)>>>,
    /// Set while this replica cannot catch up with the log (an entry it cannot apply, the
    /// table unreadable): it does not take, or keep, the lease, so another replica leads.
    pub(super) abstain: Arc<std::sync::atomic::AtomicBool>,
}

impl<T: HaLog> Watched<T> {
    fn answered(&self, err: Option<&AwsError>) {
        let now = std::time::Instant::now();
        self.health.update_ha(|i| match err {
            None => {
                i.contact = Some(now);
                i.contact_error = None;
            }
            Some(e) => i.contact_error = Some(e.to_string()),
        });
        if let Some(e) = err {
            events::ha_table_unreachable(self.table.name(), &e.to_string());
        }
    }
}

impl<T: HaLog> LeaseTable for Watched<T> {
    async fn read(&self) -> Result<Option<LeaseItem>, AwsError> {
        let r = self.table.read().await;
        self.answered(r.as_ref().err());
        if let Ok(Some(item)) = &r {
            let key = (item.holder.clone(), item.fencing, item.version);
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.as_ref() != Some(&key) {
                *last = Some(key);
                let now = std::time::Instant::now();
                let leader_hash = self.table.leader_config_hash();
                self.health.update_ha(|i| {
                    i.lease_changed = Some(now);
                    if item.holder != self.me {
                        i.saw_leader(&item.holder, item.fencing);
                        i.leader_config_hash = leader_hash;
                    }
                });
            }
        }
        r
    }

    async fn write(&self, item: LeaseItem, expect: Expect) -> Result<bool, AwsError> {
        if item.holder == self.me
            && !item.released
            && self.abstain.load(std::sync::atomic::Ordering::SeqCst)
        {
            // As if the condition failed: a standby does not take over, a leader steps down.
            return Ok(false);
        }
        // The config this replica runs now (reloads, as leader or standby, update it).
        if let Some(i) = self.health.ha() {
            self.table.set_config_hash(&i.config_hash);
        }
        let sent = tokio::time::Instant::now();
        let r = self.table.write(item.clone(), expect).await;
        self.answered(r.as_ref().err());
        if matches!(r, Ok(true)) && item.holder == self.me && !item.released {
            self.gate
                .renewed(sent, self.lease, lease::margin(self.lease));
            let now = std::time::Instant::now();
            self.health.update_ha(|i| i.lease_changed = Some(now));
        }
        r
    }
}

/// The leader's log sink: appends each state write to the table (blocking the caller, the
/// loop's thread or a blocking-pool thread, as a SQLite commit does) and demotes this
/// replica on any write that was refused or left without answer.
pub(super) struct Sink<T> {
    pub(super) table: T,
    pub(super) me: String,
    pub(super) fencing: u64,
    pub(super) gate: Arc<ActGate>,
    pub(super) demote: CancellationToken,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) wait: Duration,
    /// Bytes appended to the log by this leadership, for compaction.
    pub(super) appended: Arc<std::sync::atomic::AtomicU64>,
}

impl<T: HaLog> LogSink for Sink<T> {
    fn append(&self, seq: u64, entry: Vec<u8>) -> Result<(), String> {
        if self.demote.is_cancelled() || !self.gate.may_act() {
            self.demote.cancel();
            return Err("this replica does not hold the lease now".into());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (table, me, fencing) = (self.table.clone(), self.me.clone(), self.fencing);
        let (gate, wait) = (self.gate.clone(), self.wait);
        let size = entry.len() as u64;
        self.handle.spawn(async move {
            // Throttling, 5xx and dropped connections are tried again (the SDK's attempts
            // first, then here with backoff, the same client token each time) while the
            // lease lasts and the caller waits.
            let until = tokio::time::Instant::now() + wait;
            let mut backoff = Duration::from_millis(25);
            let r = loop {
                let r = table.append(&me, fencing, seq, &entry).await;
                match &r {
                    Err(AppendError::Failed(e))
                        if e.transient()
                            && gate.may_act()
                            && tokio::time::Instant::now() + backoff < until =>
                    {
                        tracing::warn!(event = "ha_write_retry", seq, error = %e, "the HA table did not take a state write; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(400));
                    }
                    _ => break r,
                }
            };
            let _ = tx.send(r);
        });
        let r = match rx.recv_timeout(self.wait + Duration::from_millis(100)) {
            Ok(Ok(())) => {
                self.appended
                    .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(AppendError::Deposed(why))) => {
                self.gate.revoke();
                why
            }
            Ok(Err(AppendError::Failed(e))) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.wait.as_millis()),
        };
        self.demote.cancel();
        Err(r)
    }
}
