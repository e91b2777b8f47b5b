//! The loop's working set, shared by its rooms: the config, the store, AWS, the clock, the
//! channel AWS answers come back on. Each concern is a room of its own, an `impl Work` in
//! its own file owning its slice of state: `checks` (evaluate), `rules` (decide and fire),
//! `runs` (start, follow, chain), `gates` (approve or reject), `notices` (queue notifications),
//! `declared` (apply declared pipelines).
//! AWS calls run in spawned tasks that report back as `Msg`s; all state changes happen on
//! the loop.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedSender;

use crate::clock::Clock;
use crate::cloud::{AwsError, Cloud, Gated, PendingPackage, RunStatus};
use crate::config::Config;
use crate::health::Health;
use crate::state::{RunRow, Store};

/// A gate's pending packages, each with its metric (or why it has none).
pub(super) type GateScan = Result<Vec<(PendingPackage, Result<f64, String>)>, AwsError>;

/// Results of AWS calls, sent back to the loop.
#[derive(Debug)]
pub(super) enum Msg {
    /// `large`: the whole batch (of which `results` may be the rest) had 1,000 checks or more.
    CheckResults {
        at: DateTime<Utc>,
        results: Vec<(String, Result<Option<f64>, AwsError>)>,
        large: bool,
    },
    /// What looks at report checks found.
    ReportLooks {
        at: DateTime<Utc>,
        looks: Vec<(String, super::reports::Look)>,
    },
    StartDone {
        run_id: i64,
        result: Result<String, AwsError>,
    },
    /// `poll`: the answer of the poll tick's read (else of one run woken by an event).
    RunStatuses {
        statuses: Vec<(i64, Result<RunStatus, AwsError>)>,
        poll: bool,
    },
    /// A batch from the `[events]` queue.
    Events {
        queue_url: String,
        batch: Vec<crate::inbox::Incoming>,
    },
    GatePackages {
        gate: String,
        result: GateScan,
    },
    GateApplied {
        gate: String,
        arn: String,
        approve: bool,
        result: Result<(), AwsError>,
    },
    /// `DescribePipeline` of a declared pipeline (`None`: it does not exist).
    PipelineDescribed {
        pipeline: String,
        result: Result<Option<crate::cloud::RemotePipeline>, AwsError>,
    },
    /// What a preflight found (`doctor::check` over the items it was asked about).
    Preflight {
        findings: Vec<crate::doctor::Finding>,
    },
    /// What an endpoint block wants and what its endpoint serves.
    EndpointRead {
        endpoint: String,
        result: Box<Result<super::deploys::EndpointRead, AwsError>>,
    },
    /// An answer about a deployment.
    Deploy {
        endpoint: String,
        id: i64,
        answer: Box<super::deploys::DeployAnswer>,
    },
    /// The answer to a declared pipeline's create or update.
    PipelineApplied {
        pipeline: String,
        sending: super::declared::Sending,
        result: Result<String, AwsError>,
    },
}

/// Give up on a start after this many attempts that failed transiently (each attempt is
/// already retried with backoff by the SDK).
pub(super) const MAX_START_ATTEMPTS: i64 = 8;

/// Why a rule is considered now.
#[derive(Debug, Clone)]
pub(super) enum Cause {
    Check {
        check: String,
        correlation_id: String,
        value: Option<f64>,
        /// What a report check's report found (`{{ check.* }}`).
        report: Option<Arc<super::reports::ReportFacts>>,
    },
    Schedule,
    RunEnded {
        run: Box<RunRow>,
        succeeded: bool,
    },
    /// An EventBridge event matched the rule's `on_event` pattern.
    Event(Arc<crate::inbox::Envelope>),
    /// A deployment to an endpoint block succeeded (before its bake) or rolled back / failed.
    Deployed {
        row: Box<crate::state::DeploymentRow>,
        succeeded: bool,
    },
}

impl Cause {
    pub(super) fn correlation_id(&self, now: DateTime<Utc>) -> String {
        match self {
            Cause::Check { correlation_id, .. } => correlation_id.clone(),
            Cause::RunEnded { run, .. } => run.correlation_id.clone(),
            Cause::Schedule => new_correlation_id(now),
            Cause::Event(e) => event_correlation_id(&e.id),
            Cause::Deployed { row, .. } => row.correlation_id.clone(),
        }
    }
    pub(super) fn check(&self) -> Option<&str> {
        match self {
            Cause::Check { check, .. } => Some(check),
            Cause::RunEnded { run, .. } => run.check.as_deref(),
            Cause::Schedule | Cause::Event(_) | Cause::Deployed { .. } => None,
        }
    }
}

/// The correlation id of everything an EventBridge event causes: derived from its id, so a
/// redelivery or a restart gives the same one.
pub(super) fn event_correlation_id(event_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("mlopsd-event\0{event_id}").as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("c-{hex}")
}

/// A fresh id for a new incident.
pub(super) fn new_correlation_id(now: DateTime<Utc>) -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{}",
        std::process::id(),
        now.timestamp_nanos_opt().unwrap_or(0),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let d = Sha256::digest(seed.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("c-{hex}")
}

/// What the loop hands its rooms.
pub(super) struct Parts<C> {
    pub cfg: Arc<Config>,
    pub store: Arc<Store>,
    pub cloud: Gated<C>,
    pub clock: Clock,
    pub tx: UnboundedSender<Msg>,
    pub tracker: tokio_util::task::TaskTracker,
    pub outbox_wake: Arc<tokio::sync::Notify>,
    pub health: Arc<Health>,
    /// Part of every idempotency token (see `Store::store_id`).
    pub store_id: String,
}

/// The loop's working set; its methods live in the room files.
pub(super) struct Work<C> {
    pub(super) cfg: Arc<Config>,
    pub(super) store: Arc<Store>,
    pub(super) cloud: Gated<C>,
    pub(super) clock: Clock,
    pub(super) tx: UnboundedSender<Msg>,
    pub(super) tracker: tokio_util::task::TaskTracker,
    pub(super) outbox_wake: Arc<tokio::sync::Notify>,
    pub(super) health: Arc<Health>,
    pub(super) store_id: String,
    /// runs: starts in flight (not re-driven while so), and whether a poll is in flight.
    pub(super) starting: HashSet<i64>,
    pub(super) following: bool,
    /// gates: approvals being set.
    pub(super) applying: HashSet<(String, String)>,
    /// declared pipelines: applies in flight, and starts held until their pipeline's is done.
    pub(super) reconciling: std::collections::HashMap<String, super::declared::InFlight>,
    pub(super) held: Vec<RunRow>,
    /// declared pipelines waiting for their `DescribePipeline`, and how many are out.
    pub(super) to_describe: std::collections::VecDeque<String>,
    pub(super) describing: usize,
    /// deployments: endpoints with a call out, what was told.
    pub(super) deploys: super::deploys::Deploys,
    /// report checks with a look out, and those to look at again when it is back.
    pub(super) reading: HashSet<String>,
    pub(super) look_again: HashSet<String>,
    /// events: while a batch is taken, the firings it causes (stored with the batch).
    pub(super) events_batch: Option<Vec<super::rules::PendingFiring>>,
}

impl<C: Cloud> Work<C> {
    pub(super) fn new(p: Parts<C>) -> Work<C> {
        Work {
            cfg: p.cfg,
            store: p.store,
            cloud: p.cloud,
            clock: p.clock,
            tx: p.tx,
            tracker: p.tracker,
            outbox_wake: p.outbox_wake,
            health: p.health,
            store_id: p.store_id,
            starting: HashSet::new(),
            following: false,
            applying: HashSet::new(),
            reconciling: std::collections::HashMap::new(),
            held: Vec::new(),
            to_describe: std::collections::VecDeque::new(),
            describing: 0,
            deploys: Default::default(),
            reading: HashSet::new(),
            look_again: HashSet::new(),
            events_batch: None,
        }
    }

    pub(super) fn set_config(&mut self, cfg: Arc<Config>) {
        self.cfg = cfg;
    }

    /// Puts a message back on the loop's queue (the rest of a large batch).
    pub(super) fn requeue(&self, msg: Msg) {
        // The receiver lives as long as the loop; a failed send means it is gone.
        let _ = self.tx.send(msg);
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The one seam for the loop's store calls: an error is logged with what was being done
    /// and what follows from it, counted, and shown on `/healthz` until the same operation
    /// succeeds again; it becomes `None`, never a made-up value.
    pub(super) fn db<T>(
        &self,
        operation: &'static str,
        item: &str,
        consequence: &'static str,
        r: Result<T, crate::state::StoreError>,
    ) -> Option<T> {
        crate::events::stored(&self.health, self.now(), operation, item, consequence, r)
    }
}
