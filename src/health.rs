//! What `/healthz` reports beyond the loop's heartbeat: state store operations that failed
//! and have not succeeded since (nor failed again for `FAULT_MEMORY`: an operation that is
//! never retried does not hold the daemon unhealthy for ever). Written by the loop and the
//! outbox, read by HTTP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub(crate) use crate::lease::Role;

/// One failing store operation: what was being done, the error, since when, how often.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoreFault {
    pub operation: &'static str,
    pub error: String,
    pub since: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub count: u64,
}

/// How long a failure that did not recur (and was not followed by a success) is shown.
pub(crate) const FAULT_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

/// How the `[events]` queue answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueHealth {
    pub reachable: bool,
    /// Since when it has been (un)reachable.
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
    /// Receives that failed in a row.
    pub failures: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Health {
    any: AtomicBool,
    faults: Mutex<BTreeMap<&'static str, StoreFault>>,
    queue: Mutex<Option<QueueHealth>>,
    /// The preflight's last finding for each (kind, item) it read, and when it last ran.
    preflight: Mutex<Preflight>,
    /// With HA: this replica's role and what it knows of the table and the leader.
    ha: Mutex<Option<HaInfo>>,
    /// What the last read of each endpoint block found.
    endpoints: Mutex<BTreeMap<String, EndpointSeen>>,
    /// Each check whose last read failed: why, since when, how many reads in a row.
    check_errors: Mutex<BTreeMap<String, CheckError>>,
}

/// Why a check could not be read (a report missing, not JSON, too large, denied, …): an
/// error of that check, never "ok".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckError {
    pub error: String,
    pub since: DateTime<Utc>,
    pub count: u64,
}

/// What the last read of an endpoint block found: the version it wants (or why none), the
/// config its endpoint serves, and why it is left as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EndpointSeen {
    pub wanted: Option<u32>,
    pub served_config: Option<String>,
    pub served_version: Option<u32>,
    pub status: Option<String>,
    pub waiting: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// What `/status` and `/healthz` show of high availability.
#[derive(Debug, Clone)]
pub(crate) struct HaInfo {
    pub table: String,
    pub replica: String,
    /// Leading with a fencing number, or a standby (with the leader it saw).
    pub role: Role,
    pub lease: std::time::Duration,
    /// When the lease item was last seen to change (a standby) or last renewed (the leader),
    /// on this replica's monotonic clock.
    pub lease_changed: Option<std::time::Instant>,
    /// The last log entry in this replica's file.
    pub applied_seq: u64,
    /// The last answer from the table, and the error since then if any.
    pub contact: Option<std::time::Instant>,
    pub contact_error: Option<String>,
    /// Why this replica cannot follow the table's log now (it does not lead meanwhile).
    pub log_error: Option<String>,
    pub started: std::time::Instant,
    pub config_hash: String,
    /// The leader's config hash as written on the lease item.
    pub leader_config_hash: Option<String>,
    pub role_since: DateTime<Utc>,
}

impl HaInfo {
    /// Cut off: no answer from the table for a whole lease (or none since the start).
    pub(crate) fn cut_off(&self) -> Option<std::time::Duration> {
        let since = self.contact.unwrap_or(self.started);
        let age = since.elapsed();
        (age > self.lease).then_some(age)
    }
    pub(crate) fn config_differs(&self) -> bool {
        matches!(self.role, Role::Standby { .. })
            && self
                .leader_config_hash
                .as_ref()
                .is_some_and(|h| *h != self.config_hash)
    }
    /// The replica that leads, as far as this one knows.
    pub(crate) fn leader(&self) -> Option<&str> {
        match &self.role {
            Role::Leader { .. } => Some(&self.replica),
            Role::Standby { leader, .. } => leader.as_deref(),
        }
    }
    /// The leader's fencing number, when one is known.
    pub(crate) fn fencing(&self) -> Option<u64> {
        match &self.role {
            Role::Leader { fencing } => Some(*fencing),
            Role::Standby { fencing: 0, .. } => None,
            Role::Standby { fencing, .. } => Some(*fencing),
        }
    }
    /// A standby saw `leader` hold the lease with `fencing` (a leader keeps its own role).
    pub(crate) fn saw_leader(&mut self, leader: &str, fencing: u64) {
        if let Role::Standby { .. } = self.role {
            self.role = Role::Standby {
                leader: Some(leader.to_string()),
                fencing,
            };
        }
    }
}

/// What the daemon's preflight found (`doctor::check` over the running config).
#[derive(Debug, Clone, Default)]
pub(crate) struct Preflight {
    pub findings: BTreeMap<(crate::doctor::ResourceKind, String), crate::doctor::Finding>,
    pub checked_at: Option<DateTime<Utc>>,
}

impl Health {
    pub(crate) fn set_ha(&self, info: HaInfo) {
        *self.ha.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }
    /// Changes the HA info, when there is some.
    pub(crate) fn update_ha(&self, f: impl FnOnce(&mut HaInfo)) {
        if let Some(i) = self.ha.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            f(i)
        }
    }
    pub(crate) fn ha(&self) -> Option<HaInfo> {
        self.ha.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records that `operation` failed (logged and counted by `events::StateError`).
    pub(crate) fn store_failed(&self, operation: &'static str, error: &str, at: DateTime<Utc>) {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let e = f.entry(operation).or_insert_with(|| StoreFault {
            operation,
            error: String::new(),
            since: at,
            last: at,
            count: 0,
        });
        e.error = error.to_string();
        e.last = at;
        e.count += 1;
        self.any.store(true, Ordering::Release);
    }

    /// Records that `operation` succeeded: a fault it had is over.
    pub(crate) fn store_ok(&self, operation: &'static str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(operation);
        self.any.store(!f.is_empty(), Ordering::Release);
    }

    /// A receive from the events queue answered (`error: None`) or failed.
    pub(crate) fn queue_answered(&self, error: Option<String>, at: DateTime<Utc>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let reachable = error.is_none();
        let changed = q.as_ref().is_none_or(|x| x.reachable != reachable);
        let prev = q.take();
        *q = Some(QueueHealth {
            reachable,
            since: if changed {
                at
            } else {
                prev.as_ref().map_or(at, |p| p.since)
            },
            failures: if reachable {
                0
            } else {
                prev.map_or(0, |p| p.failures).saturating_add(1)
            },
            last_error: error,
        });
        crate::metrics::get()
            .events_queue_up
            .set(i64::from(reachable));
    }

    /// Takes a preflight's findings (replacing those of the same items); returns the ones
    /// that are new problems (not reported with this status and detail before).
    pub(crate) fn preflight_found(
        &self,
        found: Vec<crate::doctor::Finding>,
        at: DateTime<Utc>,
    ) -> Vec<crate::doctor::Finding> {
        let mut p = self.preflight.lock().unwrap_or_else(|x| x.into_inner());
        p.checked_at = Some(at);
        let mut new = Vec::new();
        for f in found {
            let key = (f.kind, f.name.clone());
            let was = p.findings.get(&key);
            if f.status != crate::doctor::Status::Ok
                && was.is_none_or(|w| w.status != f.status || w.detail != f.detail)
            {
                new.push(f.clone());
            }
            p.findings.insert(key, f);
        }
        new
    }

    /// Forgets findings of items no longer in the config.
    pub(crate) fn preflight_keep(&self, keep: impl Fn(crate::doctor::ResourceKind, &str) -> bool) {
        let mut p = self.preflight.lock().unwrap_or_else(|x| x.into_inner());
        p.findings.retain(|(k, n), _| keep(*k, n));
    }

    pub(crate) fn preflight(&self) -> Preflight {
        self.preflight
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .clone()
    }

    /// Updates what is known of an endpoint block.
    /// A check's read failed; `true` when this cause is new (log it), `false` when the
    /// last read failed the same way.
    pub(crate) fn check_failed(&self, name: &str, error: &str, at: DateTime<Utc>) -> bool {
        let mut m = self.check_errors.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(name) {
            Some(e) if e.error == error => {
                e.count += 1;
                false
            }
            _ => {
                m.insert(
                    name.to_string(),
                    CheckError {
                        error: error.to_string(),
                        since: at,
                        count: 1,
                    },
                );
                true
            }
        }
    }
    /// A check was read: its error, if any, is over. `true` when there was one.
    pub(crate) fn check_read(&self, name: &str) -> bool {
        self.check_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }
    pub(crate) fn check_errors(&self) -> BTreeMap<String, CheckError> {
        self.check_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn endpoint_seen(&self, name: &str, f: impl FnOnce(&mut EndpointSeen)) {
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(name.to_string()).or_default());
    }

    pub(crate) fn endpoints(&self) -> BTreeMap<String, EndpointSeen> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn queue(&self) -> Option<QueueHealth> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The operations failing at `now`, oldest first.
    pub(crate) fn store_faults(&self, now: DateTime<Utc>) -> Vec<StoreFault> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let recent = |x: &&StoreFault| {
            crate::clock::after(x.last, FAULT_MEMORY).is_none_or(|until| now < until)
        };
        let mut v: Vec<StoreFault> = f.values().filter(recent).cloned().collect();
        v.sort_by_key(|x| x.since);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_lasts_until_its_operation_succeeds() {
        let h = Health::default();
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(h.store_faults(t).is_empty());
        h.store_failed("store check evaluations", "disk full", t);
        h.store_failed("store check evaluations", "disk full", t);
        h.store_failed("queue notification", "disk full", t);
        h.store_ok("read rule state");
        assert_eq!(
            h.store_faults(t).len(),
            2,
            "another operation's success ends nothing"
        );
        assert_eq!(h.store_faults(t)[0].count + h.store_faults(t)[1].count, 3);
        h.store_ok("store check evaluations");
        assert_eq!(h.store_faults(t).len(), 1);
        let later = crate::clock::after(t, FAULT_MEMORY).unwrap();
        assert!(
            h.store_faults(later).is_empty(),
            "a failure that did not recur is forgotten"
        );
        h.store_ok("queue notification");
        assert!(h.store_faults(t).is_empty());
    }
}
