//! The port: what mlopsd asks of AWS, as a few narrow traits over plain data. The loop, the
//! preflight (`doctor`) and the lease depend on these; `aws` is the adapter that implements
//! them with the SDK, and tests implement them in memory.
//!
//! Reads are plain methods. Every call that changes AWS takes an [`Acting`], which only
//! [`Gated::acting`] makes, while this replica may act: a standby cannot make one.
//!
//! Adding an AWS call: its method on the trait of its service here, its body in that
//! service's file under `aws/`, and (if it writes) its action in `iam.rs`.

mod error;
mod gate;
mod ha;

pub use error::{AwsError, ErrorKind};
pub use gate::{ActGate, Acting, Gated};
pub use ha::{AppendError, Expect, HaCheckError, HaLog, LeaseItem, LeaseTable, SnapshotRef};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Capacity, Strategy};

/// The terminal state of a followed run, or that it is still going.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Running(String),
    Succeeded,
    Failed(String),
}

/// A SageMaker pipeline as `DescribePipeline` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemotePipeline {
    pub arn: String,
    /// The definition text as AWS holds it.
    pub definition: String,
    pub role_arn: String,
}

/// The tag a resource created by mlopsd carries.
pub const MANAGED_TAG: (&str, &str) = ("managed-by", "mlopsd");

/// A model package awaiting approval, with what the gate needs to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingPackage {
    pub arn: String,
    pub metadata: HashMap<String, String>,
    /// `ModelMetrics.ModelQuality.Statistics.S3Uri`, if the package has one.
    pub report_uri: Option<String>,
}

/// One metric query of a batched `GetMetricData`, borrowed from its check (a cycle of
/// 10,000 checks copies nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricQuery<'a> {
    pub namespace: &'a str,
    pub metric: &'a str,
    pub dimensions: &'a [(String, String)],
    pub statistic: &'a str,
    pub period: Duration,
}

impl<'a> MetricQuery<'a> {
    pub(crate) fn of(m: &'a crate::config::MetricSource) -> Self {
        MetricQuery {
            namespace: &m.namespace,
            metric: &m.metric,
            dimensions: &m.dimensions,
            statistic: &m.statistic,
            period: m.period,
        }
    }
}

/// A message received from the events queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
}

/// How long one `ReceiveMessage` waits for a message (SQS's longest long poll).
pub const RECEIVE_WAIT: Duration = Duration::from_secs(20);

/// A CloudWatch alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    Alarm,
    Ok,
    InsufficientData,
}

impl AlarmState {
    pub fn parse(s: &str) -> Option<AlarmState> {
        match s {
            "ALARM" => Some(AlarmState::Alarm),
            "OK" => Some(AlarmState::Ok),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Alarm => "ALARM",
            AlarmState::Ok => "OK",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// The caller and where its calls go.
pub trait Identity {
    /// The region calls go to (for messages).
    fn region(&self) -> &str;
    /// The caller's (ARN, account), from STS `GetCallerIdentity`.
    fn caller_identity(&self) -> impl Future<Output = Result<(String, String), AwsError>> + Send;
    /// Whether the IAM role of this ARN exists (IAM `GetRole`).
    fn role_exists(&self, role_arn: &str) -> impl Future<Output = Result<bool, AwsError>> + Send;
}

/// CloudWatch: metrics and alarms.
pub trait Metrics {
    /// Latest value of each query (`None`: no datapoints) and how many calls it took.
    fn latest_values(
        &self,
        queries: &[MetricQuery<'_>],
        now: DateTime<Utc>,
    ) -> impl Future<Output = (Vec<Result<Option<f64>, AwsError>>, usize)> + Send;
    /// The state of each named alarm that exists, in one `DescribeAlarms` call per 100 names.
    fn alarm_states(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<HashMap<String, AlarmState>, AwsError>> + Send;
    /// The dimension sets a metric exists with (empty: no such metric in the namespace).
    fn metric_dimension_sets(
        &self,
        namespace: &str,
        metric: &str,
    ) -> impl Future<Output = Result<Vec<Vec<(String, String)>>, AwsError>> + Send;
}

/// SageMaker Pipelines: executions (started and followed) and declared pipelines.
pub trait Pipelines {
    /// Starts an execution; `token` is the idempotency token and display name. One attempt.
    fn start_pipeline(
        &self,
        act: &Acting<'_>,
        pipeline_name: &str,
        params: &BTreeMap<String, String>,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// An execution started with `token` (its display name), if any.
    fn find_pipeline_execution(
        &self,
        pipeline_name: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    fn pipeline_status(
        &self,
        arn: &str,
    ) -> impl Future<Output = Result<RunStatus, AwsError>> + Send;
    /// The pipeline, or `None` when it does not exist.
    fn describe_pipeline(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<RemotePipeline>, AwsError>> + Send;
    /// Creates the pipeline (tagged `MANAGED_TAG`); returns its ARN.
    fn create_pipeline(
        &self,
        act: &Acting<'_>,
        name: &str,
        definition: &str,
        role_arn: &str,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// Replaces the pipeline's definition and role; returns its ARN.
    fn update_pipeline(
        &self,
        act: &Acting<'_>,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// CodeBuild: builds started and followed, projects.
pub trait Builds {
    /// Starts a build carrying `token` (idempotency token and a variable). One attempt.
    fn start_build(
        &self,
        act: &Acting<'_>,
        project: &str,
        source_version: Option<&str>,
        env: &BTreeMap<String, String>,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// A recent build of `project` that carries `token`, if any.
    fn find_build(
        &self,
        project: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// Status of builds, up to 100 per call.
    fn build_statuses(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, RunStatus>, AwsError>> + Send;
    /// Which of these projects (at most 100) do not exist.
    fn missing_projects(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;
}

/// The SageMaker model registry.
pub trait Registry {
    /// Packages in `PendingManualApproval` in a group, with their metadata.
    fn pending_packages(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<PendingPackage>, AwsError>> + Send;
    /// Sets a package's approval status with the reason.
    fn set_approval(
        &self,
        act: &Acting<'_>,
        arn: &str,
        approve: bool,
        description: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn package_group_exists(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;
}

/// A model package version in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageVersion {
    pub arn: String,
    pub version: u32,
}

/// A SageMaker endpoint as `DescribeEndpoint` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointView {
    /// `Creating`, `Updating`, `SystemUpdating`, `RollingBack`, `InService`, `Deleting`,
    /// `Failed`, `UpdateRollbackFailed`, … as AWS spells it.
    pub status: String,
    /// The config serving traffic.
    pub config_name: String,
    /// The config being deployed (`PendingDeploymentSummary`), while one is.
    pub pending_config: Option<String>,
    pub failure_reason: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
}

/// SageMaker hosting: models, endpoint configs, endpoints; and the registry reads a deployment
/// needs. None of the creates takes an idempotency token: callers describe first.
pub trait Endpoints {
    /// The group's `Approved` versions (all pages).
    fn approved_versions(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<PackageVersion>, AwsError>> + Send;
    /// A model package's tags.
    fn package_tags(
        &self,
        arn: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, AwsError>> + Send;
    /// The endpoint, or `None` when it does not exist.
    fn describe_endpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<EndpointView>, AwsError>> + Send;
    fn model_exists(&self, name: &str) -> impl Future<Output = Result<bool, AwsError>> + Send;
    fn endpoint_config_exists(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;
    /// `CreateModel` with the package as its container, tagged `MANAGED_TAG`.
    fn create_model(
        &self,
        act: &Acting<'_>,
        name: &str,
        package_arn: &str,
        role_arn: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `CreateEndpointConfig` with one variant (`VARIANT`) of `model`, tagged `MANAGED_TAG`.
    fn create_endpoint_config(
        &self,
        act: &Acting<'_>,
        name: &str,
        model: &str,
        capacity: &Capacity,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `CreateEndpoint`, tagged `MANAGED_TAG`.
    fn create_endpoint(
        &self,
        act: &Acting<'_>,
        name: &str,
        config: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `UpdateEndpoint` to `config` with the strategy's `DeploymentConfig` and the alarms'
    /// `AutoRollbackConfiguration` (none: no auto rollback).
    fn update_endpoint(
        &self,
        act: &Acting<'_>,
        name: &str,
        config: &str,
        strategy: &Strategy,
        alarms: &[String],
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Deletes a model; `false` when there was none.
    fn delete_model(
        &self,
        act: &Acting<'_>,
        name: &str,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;
    /// Deletes an endpoint config; `false` when there was none.
    fn delete_endpoint_config(
        &self,
        act: &Acting<'_>,
        name: &str,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;
}

/// The one production variant's name in every config mlopsd makes.
pub const VARIANT: &str = "mlopsd";

/// An S3 object as a listing gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub etag: String,
    pub last_modified: Option<DateTime<Utc>>,
    pub size: i64,
}

/// S3 objects (evaluation reports, drift reports).
pub trait Objects {
    /// An object (`s3://bucket/key`) as text.
    fn read_s3(&self, uri: &str) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// The newest object (by `LastModified`, then key) under `prefix` whose key ends with
    /// `suffix`, over every page of `ListObjectsV2`; `None` when there is none.
    fn newest_object(
        &self,
        bucket: &str,
        prefix: &str,
        suffix: Option<&str>,
    ) -> impl Future<Output = Result<Option<ObjectRef>, AwsError>> + Send;
    /// An object's text; refused (`TooLarge`) when it holds more than `max` bytes.
    fn read_object(
        &self,
        bucket: &str,
        key: &str,
        max: usize,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// A Model Monitor schedule as `DescribeMonitoringSchedule` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorView {
    /// `Pending`, `Failed`, `Scheduled` or `Stopped`.
    pub status: String,
    pub last: Option<MonitorExecution>,
}

/// `LastMonitoringExecutionSummary`.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorExecution {
    pub scheduled: DateTime<Utc>,
    /// `Pending`, `InProgress`, `Completed`, `CompletedWithViolations`, `Failed`, `Stopping`,
    /// `Stopped`.
    pub status: String,
    pub processing_job_arn: Option<String>,
    pub failure_reason: Option<String>,
}

/// SageMaker Model Monitor: schedules and the processing jobs of their executions.
pub trait Monitoring {
    /// The schedule, or `None` when it does not exist.
    fn monitoring_schedule(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<MonitorView>, AwsError>> + Send;
    /// Where a processing job (by ARN or name) wrote its first output (`s3://…`).
    fn processing_output(
        &self,
        job: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
}

/// SNS.
pub trait Notifier {
    /// Publishes with message attributes; returns the message id.
    fn publish(
        &self,
        act: &Acting<'_>,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attrs: &[(&str, &str)],
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn topic_exists(&self, arn: &str) -> impl Future<Output = Result<bool, AwsError>> + Send;
}

/// The `[events]` queue (SQS).
pub trait Queue {
    /// One long poll (up to 10 messages, `RECEIVE_WAIT`).
    fn receive_events(
        &self,
        queue_url: &str,
    ) -> impl Future<Output = Result<Vec<QueueMessage>, AwsError>> + Send;
    /// Deletes handled messages by receipt handle (in batches); how many could not be
    /// deleted (left to the queue's visibility timeout).
    fn delete_events(
        &self,
        act: &Acting<'_>,
        queue_url: &str,
        receipts: &[String],
    ) -> impl Future<Output = Result<usize, AwsError>> + Send;
    fn queue_exists(&self, url: &str) -> impl Future<Output = Result<bool, AwsError>> + Send;
}

/// Everything the daemon asks of AWS. `aws::Aws` is the real one; a test's in-memory one
/// drives the real loop on paused time.
pub trait Cloud:
    Identity
    + Metrics
    + Pipelines
    + Builds
    + Registry
    + Endpoints
    + Objects
    + Monitoring
    + Notifier
    + Queue
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Cloud for T where
    T: Identity
        + Metrics
        + Pipelines
        + Builds
        + Registry
        + Endpoints
        + Objects
        + Monitoring
        + Notifier
        + Queue
        + Clone
        + Send
        + Sync
        + 'static
{
}
