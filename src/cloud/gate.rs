//! The leader gate: every call that changes AWS takes an `Acting`, and only `Gated::acting`
//! makes one, while this replica may act. A standby, or a leader whose lease could have
//! lapsed, cannot make such a call: the types do not let the code try.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::AwsError;

/// Whether this replica may act now (make calls that change AWS, write state): set from each
/// lease renewal that succeeded to the instant its lease could lapse for others, cleared on a
/// step-down. Shared by the lease driver's table, the store's log sink and `Gated`.
#[derive(Debug, Default)]
pub struct ActGate {
    until: Mutex<Option<Instant>>,
}

impl ActGate {
    pub fn may_act(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|u| Instant::now() < u)
    }
    /// A renewal sent at `sent` succeeded: act until `sent + duration - margin`.
    pub fn renewed(&self, sent: Instant, duration: Duration, margin: Duration) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent + duration - margin);
    }
    pub fn revoke(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Proof that this replica may change AWS at the moment it was made: every trait method that
/// changes AWS takes one. Only `Gated::acting` makes it; it lives no longer than that borrow.
#[derive(Debug)]
pub struct Acting<'a> {
    _gate: PhantomData<&'a ()>,
}

/// The clients the loop holds: reads go straight through (`Deref`), writes need `acting()`.
#[derive(Debug, Clone)]
pub struct Gated<C> {
    cloud: C,
    /// `None`: a single machine, which always acts.
    gate: Option<Arc<ActGate>>,
}

impl<C> Gated<C> {
    /// A single machine: it always may act.
    pub fn open(cloud: C) -> Gated<C> {
        Gated { cloud, gate: None }
    }

    /// An HA replica: it may act while `gate` says it leads.
    pub fn new(cloud: C, gate: Arc<ActGate>) -> Gated<C> {
        Gated {
            cloud,
            gate: Some(gate),
        }
    }

    /// Leave to make one call that changes AWS, or the `NotLeader` error that call gives.
    pub fn acting(&self) -> Result<Acting<'_>, AwsError> {
        match &self.gate {
            Some(g) if !g.may_act() => Err(AwsError::not_leader()),
            _ => Ok(Acting { _gate: PhantomData }),
        }
    }
}

impl<C> std::ops::Deref for Gated<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.cloud
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ErrorKind;

    #[tokio::test(start_paused = true)]
    async fn a_write_needs_the_gate_open_now() {
        assert!(Gated::open(()).acting().is_ok(), "a single machine acts");
        let gate = Arc::new(ActGate::default());
        let g = Gated::new((), gate.clone());
        assert_eq!(
            g.acting().unwrap_err().kind,
            ErrorKind::NotLeader,
            "a standby"
        );
        gate.renewed(
            Instant::now(),
            Duration::from_secs(15),
            Duration::from_secs(3),
        );
        assert!(g.acting().is_ok(), "the leader, within its lease");
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(
            g.acting().is_err(),
            "no write once the lease could have lapsed"
        );
        gate.renewed(
            Instant::now(),
            Duration::from_secs(15),
            Duration::from_secs(3),
        );
        gate.revoke();
        assert!(g.acting().is_err(), "a step-down closes it at once");
    }
}
