//! `[endpoints.NAME]`: what a SageMaker real-time endpoint should serve and how a new version
//! reaches it (validated types; read in `build/endpoints.rs`).

use std::fmt;
use std::time::Duration;

/// An endpoint block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    /// The SageMaker endpoint's name (created when absent).
    pub endpoint_name: String,
    pub model_package_group: String,
    /// `version = N`: this version instead of the newest.
    pub version: Option<u32>,
    /// The model's role (`CreateModel`).
    pub execution_role_arn: String,
    pub capacity: Capacity,
    pub strategy: Strategy,
    /// SageMaker rolls back while any is in `ALARM`; mlopsd watches them during the bake.
    pub rollback_alarms: Vec<String>,
    /// How long mlopsd watches the alarms after SageMaker is done (`None`: no bake).
    pub bake: Option<Duration>,
    pub on_rollback: OnRollback,
    /// Only a version that is `baked` on this endpoint block.
    pub promote_from: Option<String>,
    /// Only a version whose model package carries this tag.
    pub require_tag: Option<(String, String)>,
    pub notify: Vec<String>,
    /// Decide and log only; nothing that changes AWS is called.
    pub dry_run: bool,
}

/// What serves the model: instances or serverless.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capacity {
    Instances {
        instance_type: String,
        count: u32,
    },
    Serverless {
        memory_mb: u32,
        max_concurrency: u32,
    },
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Instances {
                instance_type,
                count,
            } => write!(f, "{count} × {instance_type}"),
            Capacity::Serverless {
                memory_mb,
                max_concurrency,
            } => write!(
                f,
                "serverless {memory_mb} MB, max concurrency {max_concurrency}"
            ),
        }
    }
}

/// How traffic moves to the new config (`UpdateEndpoint`'s `DeploymentConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Blue/green, all traffic at once.
    AllAtOnce,
    /// Blue/green: `percent` of capacity first, the rest after `wait`.
    Canary { percent: u32, wait: Duration },
    /// Blue/green: `percent` of capacity per step, `wait` between steps.
    Linear { percent: u32, wait: Duration },
    /// Rolling: batches of `percent` of capacity, `wait` between batches.
    Rolling { percent: u32, wait: Duration },
}

impl Strategy {
    /// The longest SageMaker's traffic shifting takes by the strategy alone (its waits).
    pub(crate) fn waits(&self) -> Duration {
        match *self {
            Strategy::AllAtOnce => Duration::ZERO,
            Strategy::Canary { wait, .. } => wait,
            Strategy::Linear { percent, wait } | Strategy::Rolling { percent, wait } => {
                wait * 100u32.div_ceil(percent.max(1))
            }
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| crate::duration::format_duration(*d);
        match self {
            Strategy::AllAtOnce => f.write_str("all_at_once"),
            Strategy::Canary { percent, wait } => {
                write!(f, "canary {percent}%, wait {}", secs(wait))
            }
            Strategy::Linear { percent, wait } => {
                write!(f, "linear {percent}%, wait {}", secs(wait))
            }
            Strategy::Rolling { percent, wait } => {
                write!(f, "rolling {percent}%, wait {}", secs(wait))
            }
        }
    }
}

/// What a rollback does to the version besides telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRollback {
    Notify,
    /// Also set the model package `Rejected` with the reason.
    Reject,
}

impl Endpoint {
    /// A hash of what the endpoint serves besides the version: the role and the capacity.
    /// An edit of these is a new decision (new model and config names).
    pub(crate) fn spec_hash(&self) -> String {
        let text = format!("{}\0{:?}", self.execution_role_arn, self.capacity);
        crate::config::content_hash(&text)[..8].to_string()
    }
}
