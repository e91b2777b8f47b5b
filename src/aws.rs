//! The only module that names `aws_sdk_*`: one SDK config built once from `[aws]`, and
//! narrow calls for what mlopsd does (metrics, runs, notifications, the model registry).
//! Errors come back as `AwsError` (service, operation, code, message); never credentials.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};

use crate::config::{AwsConfig, Check};

/// What went wrong talking to AWS, without credentials or signed URLs.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    /// The AWS error code (`ThrottlingException`, `ValidationException`, …), or the kind of
    /// transport failure (`Timeout`, `ConnectionError`).
    pub code: String,
    pub message: String,
    /// Whether trying again later may succeed (throttling, 5xx, timeouts, connection errors).
    pub transient: bool,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed: {}: {}",
            self.service, self.operation, self.code, self.message
        )
    }
}

impl std::error::Error for AwsError {}

type HttpResponse = aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// The `<Code>` of an XML error body (query or EC2 shape), if there is one.
fn body_code(raw: &HttpResponse) -> Option<String> {
    let t = String::from_utf8_lossy(raw.body().bytes()?);
    let start = t.find("<Code>")? + 6;
    let end = t[start..].find("</Code>")? + start;
    Some(t[start..end].to_string())
}

/// The `<Message>` of an XML error body, if there is one.
fn body_message(raw: &HttpResponse) -> Option<String> {
    let t = String::from_utf8_lossy(raw.body().bytes()?);
    let start = t.find("<Message>")? + 9;
    let end = t[start..].find("</Message>")? + start;
    Some(scrub(&t[start..end]))
}

/// AWS's own message of an answer the SDK could not parse, else "HTTP 403 <start of the body>".
fn body_summary(raw: &HttpResponse) -> String {
    if let Some(m) = body_message(raw) {
        return m;
    }
    let body = raw
        .body()
        .bytes()
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(400)]).into_owned())
        .unwrap_or_default();
    scrub(&format!(
        "HTTP {} {}",
        raw.status().as_u16(),
        body.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

fn classify<E>(
    service: &'static str,
    operation: &'static str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, HttpResponse>,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    let refused = |raw: &HttpResponse| {
        (400..500).contains(&raw.status().as_u16()) && raw.status().as_u16() != 429
    };
    // The SDK's own form, for whoever turns on MLOPSD_LOG=debug (responses, never requests:
    // no credential is in it).
    tracing::debug!(service, operation, detail = %scrub(&format!("{e:?}")), "AWS error detail");
    let transport = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            Some(transport_error(service, &e))
        }
        _ => None,
    };
    if let Some((code, message)) = transport {
        return AwsError {
            service,
            operation,
            code,
            message,
            transient: true,
        };
    }
    let (code, transient) = match &e {
        // An answer the SDK could not parse. A 4xx is still a refusal (some endpoints send XML
        // or HTML error bodies where JSON is expected): take its code from the body.
        SdkError::ResponseError(re) if refused(re.raw()) => {
            let status = re.raw().status().as_u16();
            (
                body_code(re.raw()).unwrap_or_else(|| {
                    if status == 403 {
                        "AccessDenied".into()
                    } else {
                        format!("HTTP{status}")
                    }
                }),
                false,
            )
        }
        SdkError::ResponseError(_) => ("ResponseError".to_string(), true),
        SdkError::ConstructionFailure(_) => ("RequestConstruction".to_string(), false),
        SdkError::ServiceError(se) => {
            // Some endpoints answer in the EC2 error shape (<Errors><Error><Code>…), which the
            // query-protocol parser does not read; then the code comes from the body.
            let code = se
                .err()
                .code()
                .map(str::to_string)
                .or_else(|| body_code(se.raw()))
                .unwrap_or_else(|| "Unknown".to_string());
            let status = se.raw().status().as_u16();
            let transient = status >= 500
                || status == 429
                || matches!(
                    code.as_str(),
                    "Throttling"
                        | "ThrottlingException"
                        | "TooManyRequestsException"
                        | "RequestLimitExceeded"
                        | "ProvisionedThroughputExceededException"
                        | "LimitExceededException"
                        | "ServiceUnavailable"
                        | "InternalFailure"
                        | "InternalError"
                );
            (code, transient)
        }
        _ => ("Unknown".to_string(), true),
    };
    let message = match &e {
        SdkError::ResponseError(re) if refused(re.raw()) => body_summary(re.raw()),
        SdkError::ServiceError(se) => se
            .err()
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| body_summary(se.raw())),
        other => {
            // DisplayErrorContext walks the source chain (e.g. "connection refused").
            let s = format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(other)
            );
            scrub(&s)
        }
    };
    AwsError {
        service,
        operation,
        code,
        message,
        transient,
    }
}

/// What `[aws]` says about where calls go, for messages (set once, when the SDK config is built).
struct Target {
    endpoint_url: Option<String>,
    region: String,
    profile: Option<String>,
}

static TARGET: std::sync::OnceLock<Target> = std::sync::OnceLock::new();

/// The endpoint a service's calls go to, as a person would look for it.
fn endpoint_of(service: &str) -> String {
    let t = TARGET.get();
    if let Some(u) = t.and_then(|t| t.endpoint_url.clone()) {
        return u;
    }
    let region = t
        .map(|t| t.region.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1");
    let host = match service {
        "sagemaker" => "api.sagemaker",
        "cloudwatch" => "monitoring",
        other => other,
    };
    format!("https://{host}.{region}.amazonaws.com")
}

/// A timeout or a failure to send: no credentials (which sources were tried, how to give
/// one), or a connection failure (the endpoint and the OS error). One line, no SDK dump.
fn transport_error<E: std::error::Error + 'static>(service: &str, e: &E) -> (String, String) {
    let full = format!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(e)
    );
    let endpoint = endpoint_of(service);
    if full.contains("credentials") {
        let profile = TARGET
            .get()
            .and_then(|t| t.profile.clone())
            .or_else(|| std::env::var("AWS_PROFILE").ok());
        let tried = match &profile {
            Some(p) => format!("the profile \"{p}\" in ~/.aws/config and ~/.aws/credentials"),
            None => "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the default profile in ~/.aws/config and ~/.aws/credentials".to_string(),
        };
        return (
            "NoCredentials".into(),
            format!(
                "no AWS credentials: tried {tried}, web identity (AWS_WEB_IDENTITY_TOKEN_FILE), the ECS container role and the EC2 instance role (IMDS); none gave any. Set AWS_PROFILE or [aws] profile, export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on an instance with a role"
            ),
        );
    }
    // The innermost cause is the OS's ("Connection refused (os error 111)").
    let mut src: &(dyn std::error::Error + 'static) = e;
    while let Some(s) = src.source() {
        src = s;
    }
    let root = scrub(&src.to_string());
    if full.contains("timeout") || full.contains("timed out") || root.contains("timed out") {
        let limit = TARGET
            .get()
            .map(|_| "aws.attempt_timeout")
            .unwrap_or("the timeout");
        return (
            "Timeout".into(),
            format!("no answer from {endpoint} within {limit} ({root})"),
        );
    }
    (
        "ConnectionError".into(),
        format!("cannot connect to {endpoint}: {root}"),
    )
}

/// Removes anything that looks like a signed URL query or a key from a transport message.
fn scrub(s: &str) -> String {
    s.split_whitespace()
        .map(|w| {
            if w.contains("X-Amz-") || w.contains("Signature=") || w.contains("Credential=") {
                "[redacted]"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Awaits an SDK call, classifies its error and records the call in the metrics.
async fn observe<T, E>(
    service: &'static str,
    operation: &'static str,
    fut: impl std::future::Future<
        Output = Result<T, aws_smithy_runtime_api::client::result::SdkError<E, HttpResponse>>,
    >,
) -> Result<T, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let t0 = std::time::Instant::now();
    let r = fut.await.map_err(|e| classify(service, operation, e));
    crate::metrics::aws_call(
        service,
        operation,
        t0.elapsed().as_secs_f64(),
        r.as_ref().err().map(|e| e.code.as_str()),
    );
    r
}

trait Observed<T, E>:
    std::future::Future<
        Output = Result<T, aws_smithy_runtime_api::client::result::SdkError<E, HttpResponse>>,
    > + Sized
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn observed(
        self,
        service: &'static str,
        operation: &'static str,
    ) -> impl std::future::Future<Output = Result<T, AwsError>> {
        observe(service, operation, self)
    }
}

impl<T, E, F> Observed<T, E> for F
where
    F: std::future::Future<
        Output = Result<T, aws_smithy_runtime_api::client::result::SdkError<E, HttpResponse>>,
    >,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
}

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

/// The tag a pipeline created by mlopsd carries.
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
    pub fn of(c: &'a Check) -> Self {
        MetricQuery {
            namespace: &c.namespace,
            metric: &c.metric,
            dimensions: &c.dimensions,
            statistic: &c.statistic,
            period: c.period,
        }
    }
}

/// The AWS clients, built from one SDK config. Cheap to clone.
#[derive(Clone)]
pub struct Aws {
    cloudwatch: aws_sdk_cloudwatch::Client,
    sagemaker: aws_sdk_sagemaker::Client,
    codebuild: aws_sdk_codebuild::Client,
    sns: aws_sdk_sns::Client,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    sts: aws_sdk_sts::Client,
    pub region: String,
    /// With HA: calls that change AWS (start, approve, publish, apply) are made only while this
    /// replica holds the lease.
    act: Option<std::sync::Arc<crate::lease::ActGate>>,
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

/// What the control loop asks of AWS: read metrics, start and follow runs, read and set
/// model packages, publish. `Aws` is the real one; the loop is generic over it so that a
/// test can drive the real loop on paused time against an in-memory one. Only this module's
/// `Aws` names `aws_sdk_*`.
pub trait Cloud: Clone + Send + Sync + 'static {
    /// Latest value of each query (`None`: no datapoints) and how many calls it took.
    fn latest_values(
        &self,
        queries: &[MetricQuery<'_>],
        now: DateTime<Utc>,
    ) -> impl Future<Output = (Vec<Result<Option<f64>, AwsError>>, usize)> + Send;
    fn start_pipeline(
        &self,
        pipeline_name: &str,
        params: &BTreeMap<String, String>,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn find_pipeline_execution(
        &self,
        pipeline_name: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    fn pipeline_status(
        &self,
        arn: &str,
    ) -> impl Future<Output = Result<RunStatus, AwsError>> + Send;
    fn start_build(
        &self,
        project: &str,
        source_version: Option<&str>,
        env: &BTreeMap<String, String>,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn find_build(
        &self,
        project: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    fn build_statuses(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, RunStatus>, AwsError>> + Send;
    fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attrs: &[(&str, &str)],
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn pending_packages(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<PendingPackage>, AwsError>> + Send;
    fn read_s3(&self, uri: &str) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn set_approval(
        &self,
        arn: &str,
        approve: bool,
        description: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The state (`ALARM`, `OK`, `INSUFFICIENT_DATA`) of each named alarm that exists, in one
    /// `DescribeAlarms` call per 100 names.
    fn alarm_states(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<HashMap<String, String>, AwsError>> + Send;
    /// One long poll of the events queue (up to 10 messages, `RECEIVE_WAIT`).
    fn receive_events(
        &self,
        queue_url: &str,
    ) -> impl Future<Output = Result<Vec<QueueMessage>, AwsError>> + Send;
    /// Deletes handled messages by receipt handle.
    fn delete_events(
        &self,
        queue_url: &str,
        receipts: &[String],
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Reads every resource of `scope` (`doctor::check`): never changes anything.
    fn preflight(
        &self,
        cfg: std::sync::Arc<crate::config::Config>,
        scope: crate::doctor::Scope,
    ) -> impl Future<Output = Vec<crate::doctor::Finding>> + Send;
    /// The pipeline, or `None` when it does not exist.
    fn describe_pipeline(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<RemotePipeline>, AwsError>> + Send;
    /// Creates the pipeline (tagged `MANAGED_TAG`); returns its ARN.
    fn create_pipeline(
        &self,
        name: &str,
        definition: &str,
        role_arn: &str,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// Replaces the pipeline's definition and role; returns its ARN.
    fn update_pipeline(
        &self,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// These clients, changing AWS only while `gate` says this replica leads (HA). An
    /// in-memory cloud ignores it.
    fn with_gate(self, _gate: std::sync::Arc<crate::lease::ActGate>) -> Self {
        self
    }
}

impl Cloud for Aws {
    fn with_gate(self, gate: std::sync::Arc<crate::lease::ActGate>) -> Self {
        self.gated(gate)
    }
    fn preflight(
        &self,
        cfg: std::sync::Arc<crate::config::Config>,
        scope: crate::doctor::Scope,
    ) -> impl Future<Output = Vec<crate::doctor::Finding>> + Send {
        let aws = self.clone();
        async move { crate::doctor::check(&aws, &cfg, &scope).await }
    }
    fn describe_pipeline(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<RemotePipeline>, AwsError>> + Send {
        Aws::describe_pipeline(self, name)
    }
    fn create_pipeline(
        &self,
        name: &str,
        definition: &str,
        role_arn: &str,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send {
        Aws::create_pipeline(self, name, definition, role_arn, token)
    }
    fn update_pipeline(
        &self,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send {
        Aws::update_pipeline(self, name, definition, role_arn)
    }
    fn latest_values(
        &self,
        queries: &[MetricQuery<'_>],
        now: DateTime<Utc>,
    ) -> impl Future<Output = (Vec<Result<Option<f64>, AwsError>>, usize)> + Send {
        Aws::latest_values(self, queries, now)
    }
    fn start_pipeline(
        &self,
        pipeline_name: &str,
        params: &BTreeMap<String, String>,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send {
        Aws::start_pipeline(self, pipeline_name, params, token)
    }
    fn find_pipeline_execution(
        &self,
        pipeline_name: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send {
        Aws::find_pipeline_execution(self, pipeline_name, token)
    }
    fn pipeline_status(
        &self,
        arn: &str,
    ) -> impl Future<Output = Result<RunStatus, AwsError>> + Send {
        Aws::pipeline_status(self, arn)
    }
    fn start_build(
        &self,
        project: &str,
        source_version: Option<&str>,
        env: &BTreeMap<String, String>,
        token: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send {
        Aws::start_build(self, project, source_version, env, token)
    }
    fn find_build(
        &self,
        project: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send {
        Aws::find_build(self, project, token)
    }
    fn build_statuses(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, RunStatus>, AwsError>> + Send {
        Aws::build_statuses(self, ids)
    }
    fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attrs: &[(&str, &str)],
    ) -> impl Future<Output = Result<String, AwsError>> + Send {
        Aws::publish(self, topic_arn, subject, body, attrs)
    }
    fn pending_packages(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<PendingPackage>, AwsError>> + Send {
        Aws::pending_packages(self, group)
    }
    fn read_s3(&self, uri: &str) -> impl Future<Output = Result<String, AwsError>> + Send {
        Aws::read_s3(self, uri)
    }
    fn set_approval(
        &self,
        arn: &str,
        approve: bool,
        description: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        Aws::set_approval(self, arn, approve, description)
    }
    fn alarm_states(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<HashMap<String, String>, AwsError>> + Send {
        Aws::alarm_states(self, names)
    }
    fn receive_events(
        &self,
        queue_url: &str,
    ) -> impl Future<Output = Result<Vec<QueueMessage>, AwsError>> + Send {
        Aws::receive_events(self, queue_url)
    }
    fn delete_events(
        &self,
        queue_url: &str,
        receipts: &[String],
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        Aws::delete_events(self, queue_url, receipts)
    }
}

/// CloudWatch's limits on one `GetMetricData` call.
pub const MAX_QUERIES_PER_CALL: usize = 500;
const MAX_DATAPOINTS_PER_CALL: u64 = 100_800;

/// The account id of the caller's credentials (STS `GetCallerIdentity`), and the region.
pub async fn caller_account(cfg: &AwsConfig) -> Result<(String, String), AwsError> {
    let sdk = sdk_config(cfg).await;
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let sts = aws_sdk_sts::Client::new(&sdk);
    let r = sts
        .get_caller_identity()
        .send()
        .observed("sts", "GetCallerIdentity")
        .await?;
    let account = r
        .account()
        .map(str::to_string)
        .ok_or_else(|| missing("sts", "GetCallerIdentity", "Account"))?;
    Ok((account, region))
}

async fn sdk_config(cfg: &AwsConfig) -> aws_types::SdkConfig {
    let _ = TARGET.set(Target {
        endpoint_url: cfg.endpoint_url.clone(),
        region: if cfg.region.is_empty() {
            std::env::var("AWS_REGION").unwrap_or_default()
        } else {
            cfg.region.clone()
        },
        profile: cfg.profile.clone(),
    });
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(cfg.attempt_timeout)
                .operation_timeout(cfg.attempt_timeout * cfg.max_attempts + Duration::from_secs(10))
                .build(),
        );
    if !cfg.region.is_empty() {
        loader = loader.region(Region::new(cfg.region.clone()));
    }
    if let Some(p) = &cfg.profile {
        loader = loader.profile_name(p);
    }
    if let Some(u) = &cfg.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    loader.load().await
}

impl Aws {
    /// Builds the SDK config from `[aws]`: region, profile, endpoint, retries with backoff,
    /// timeouts; credentials from the standard chain.
    pub async fn new(cfg: &AwsConfig) -> Aws {
        let sdk = sdk_config(cfg).await;
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        let s3conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.endpoint_url.is_some())
            .build();
        Aws {
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            sagemaker: aws_sdk_sagemaker::Client::new(&sdk),
            codebuild: aws_sdk_codebuild::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3conf),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sts: aws_sdk_sts::Client::new(&sdk),
            region,
            act: None,
        }
    }

    /// These clients, making calls that change AWS only while `gate` says this replica leads.
    pub fn gated(mut self, gate: std::sync::Arc<crate::lease::ActGate>) -> Aws {
        self.act = Some(gate);
        self
    }

    /// Refuses a call that changes AWS when this replica does not hold the HA lease now.
    fn acting(&self, service: &'static str, operation: &'static str) -> Result<(), AwsError> {
        match &self.act {
            Some(g) if !g.may_act() => Err(AwsError {
                service,
                operation,
                code: "NotLeader".into(),
                message:
                    "this replica does not hold the HA lease now; the call is left to the leader"
                        .into(),
                transient: true,
            }),
            _ => Ok(()),
        }
    }

    /// Latest value of each query over its recent window, in as few `GetMetricData` calls as
    /// the limits allow (500 queries and 100,800 datapoints a call). `None` = no datapoints.
    /// Also returns how many calls were made (pages included).
    pub async fn latest_values(
        &self,
        queries: &[MetricQuery<'_>],
        now: DateTime<Utc>,
    ) -> (Vec<Result<Option<f64>, AwsError>>, usize) {
        let mut out: Vec<Result<Option<f64>, AwsError>> = vec![Ok(None); queries.len()];
        let mut calls = 0usize;
        for batch in plan_batches(queries) {
            let window = batch.window;
            let start = crate::clock::before(now, window).unwrap_or(DateTime::<Utc>::MIN_UTC);
            let mut req = self
                .cloudwatch
                .get_metric_data()
                .start_time(aws_smithy_types::DateTime::from_millis(
                    start.timestamp_millis(),
                ))
                // A minute past now: a datapoint stamped this very second is included even where
                // the service rounds the end time down (CloudWatch returns nothing from the future).
                .end_time(aws_smithy_types::DateTime::from_millis(
                    now.timestamp_millis() + 60_000,
                ))
                .scan_by(ScanBy::TimestampDescending);
            for &i in &batch.indices {
                let q = &queries[i];
                let dims = q
                    .dimensions
                    .iter()
                    .map(|(k, v)| Dimension::builder().name(k).value(v).build());
                let metric = Metric::builder()
                    .namespace(q.namespace)
                    .metric_name(q.metric)
                    .set_dimensions(Some(dims.collect()))
                    .build();
                let stat = MetricStat::builder()
                    .metric(metric)
                    .period(q.period.as_secs().max(1) as i32)
                    .stat(q.statistic)
                    .build();
                req = req.metric_data_queries(
                    MetricDataQuery::builder()
                        .id(format!("q{i}"))
                        .metric_stat(stat)
                        .return_data(true)
                        .build(),
                );
            }
            let mut token: Option<String> = None;
            let mut found: HashMap<usize, (i64, f64)> = HashMap::new();
            let result: Result<(), AwsError> = async {
                loop {
                    calls += 1;
                    let resp = req
                        .clone()
                        .set_next_token(token.clone())
                        .send()
                        .observed("cloudwatch", "GetMetricData")
                        .await?;
                    for r in resp.metric_data_results() {
                        let Some(idx) = r
                            .id()
                            .and_then(|id| id.strip_prefix('q'))
                            .and_then(|n| n.parse::<usize>().ok())
                        else {
                            continue;
                        };
                        for (t, v) in r.timestamps().iter().zip(r.values()) {
                            let ms = t.to_millis().unwrap_or(0);
                            let e = found.entry(idx).or_insert((ms, *v));
                            if ms > e.0 {
                                *e = (ms, *v);
                            }
                        }
                    }
                    token = resp.next_token().map(str::to_string);
                    if token.is_none() {
                        return Ok(());
                    }
                }
            }
            .await;
            for &i in &batch.indices {
                out[i] = match &result {
                    Ok(()) => Ok(found.get(&i).map(|(_, v)| *v)),
                    Err(e) => Err(e.clone()),
                };
            }
        }
        (out, calls)
    }

    /// Starts a SageMaker pipeline execution; `token` is the idempotency token and display name.
    /// One attempt only: the daemon retries a start itself, after looking for an execution the
    /// token already started, so never-twice does not depend on the service honouring tokens.
    pub async fn start_pipeline(
        &self,
        pipeline_name: &str,
        params: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<String, AwsError> {
        self.acting("sagemaker", "StartPipelineExecution")?;
        let params = params
            .iter()
            .map(|(k, v)| {
                aws_sdk_sagemaker::types::Parameter::builder()
                    .name(k)
                    .value(v)
                    .build()
            })
            .collect();
        let resp = self
            .sagemaker
            .start_pipeline_execution()
            .pipeline_name(pipeline_name)
            .set_pipeline_parameters(Some(params))
            .client_request_token(token)
            .pipeline_execution_display_name(token)
            .customize()
            .config_override(
                aws_sdk_sagemaker::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .observed("sagemaker", "StartPipelineExecution")
            .await?;
        resp.pipeline_execution_arn()
            .map(str::to_string)
            .ok_or_else(|| {
                missing(
                    "sagemaker",
                    "StartPipelineExecution",
                    "PipelineExecutionArn",
                )
            })
    }

    /// Finds an execution this daemon started with `token` (its display name), if any.
    pub async fn find_pipeline_execution(
        &self,
        pipeline_name: &str,
        token: &str,
    ) -> Result<Option<String>, AwsError> {
        let resp = self
            .sagemaker
            .list_pipeline_executions()
            .pipeline_name(pipeline_name)
            .sort_by(aws_sdk_sagemaker::types::SortPipelineExecutionsBy::CreationTime)
            .sort_order(aws_sdk_sagemaker::types::SortOrder::Descending)
            .max_results(100)
            .send()
            .observed("sagemaker", "ListPipelineExecutions")
            .await?;
        Ok(resp
            .pipeline_execution_summaries()
            .iter()
            .find(|s| s.pipeline_execution_display_name() == Some(token))
            .and_then(|s| s.pipeline_execution_arn().map(str::to_string)))
    }

    /// `DescribePipeline`; `None` when AWS says there is no such pipeline (`ResourceNotFound`;
    /// some endpoints answer `ValidationException` "Could not find pipeline").
    pub async fn describe_pipeline(&self, name: &str) -> Result<Option<RemotePipeline>, AwsError> {
        let r = self
            .sagemaker
            .describe_pipeline()
            .pipeline_name(name)
            .send()
            .observed("sagemaker", "DescribePipeline")
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) if pipeline_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(RemotePipeline {
            arn: r.pipeline_arn().unwrap_or_default().to_string(),
            definition: r
                .pipeline_definition()
                .ok_or_else(|| missing("sagemaker", "DescribePipeline", "PipelineDefinition"))?
                .to_string(),
            role_arn: r.role_arn().unwrap_or_default().to_string(),
        }))
    }

    /// `CreatePipeline` with the definition inline, tagged `managed-by = mlopsd`; the token
    /// makes a retried create the same create.
    pub async fn create_pipeline(
        &self,
        name: &str,
        definition: &str,
        role_arn: &str,
        token: &str,
    ) -> Result<String, AwsError> {
        self.acting("sagemaker", "CreatePipeline")?;
        let tag = aws_sdk_sagemaker::types::Tag::builder()
            .key(MANAGED_TAG.0)
            .value(MANAGED_TAG.1)
            .build();
        let r = self
            .sagemaker
            .create_pipeline()
            .pipeline_name(name)
            .pipeline_definition(definition)
            .role_arn(role_arn)
            .client_request_token(token)
            .tags(tag)
            .send()
            .observed("sagemaker", "CreatePipeline")
            .await?;
        r.pipeline_arn()
            .map(str::to_string)
            .ok_or_else(|| missing("sagemaker", "CreatePipeline", "PipelineArn"))
    }

    pub async fn update_pipeline(
        &self,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> Result<String, AwsError> {
        self.acting("sagemaker", "UpdatePipeline")?;
        let r = self
            .sagemaker
            .update_pipeline()
            .pipeline_name(name)
            .pipeline_definition(definition)
            .role_arn(role_arn)
            .send()
            .observed("sagemaker", "UpdatePipeline")
            .await?;
        Ok(r.pipeline_arn().unwrap_or(name).to_string())
    }

    pub async fn pipeline_status(&self, arn: &str) -> Result<RunStatus, AwsError> {
        use aws_sdk_sagemaker::types::PipelineExecutionStatus as S;
        let r = self
            .sagemaker
            .describe_pipeline_execution()
            .pipeline_execution_arn(arn)
            .send()
            .observed("sagemaker", "DescribePipelineExecution")
            .await?;
        Ok(match r.pipeline_execution_status() {
            Some(S::Succeeded) => RunStatus::Succeeded,
            Some(S::Failed) => RunStatus::Failed(
                r.failure_reason()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("Failed")
                    .to_string(),
            ),
            Some(S::Stopped) => RunStatus::Failed("Stopped".into()),
            Some(other) => RunStatus::Running(other.as_str().to_string()),
            None => RunStatus::Running("Unknown".into()),
        })
    }

    /// Starts a CodeBuild build; the token is also set as `MLOPSD_IDEMPOTENCY_TOKEN` so a
    /// restart can find the build again. One attempt only, as for pipelines.
    pub async fn start_build(
        &self,
        project: &str,
        source_version: Option<&str>,
        env: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<String, AwsError> {
        self.acting("codebuild", "StartBuild")?;
        use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType};
        let mut vars = Vec::new();
        for (k, v) in env.iter().chain(std::iter::once((
            &"MLOPSD_IDEMPOTENCY_TOKEN".to_string(),
            &token.to_string(),
        ))) {
            let var = EnvironmentVariable::builder()
                .name(k)
                .value(v)
                .r#type(EnvironmentVariableType::Plaintext)
                .build()
                .map_err(|e| AwsError {
                    service: "codebuild",
                    operation: "StartBuild",
                    code: "InvalidParameter".into(),
                    message: e.to_string(),
                    transient: false,
                })?;
            vars.push(var);
        }
        let resp = self
            .codebuild
            .start_build()
            .project_name(project)
            .set_source_version(source_version.map(str::to_string))
            .set_environment_variables_override(Some(vars))
            .idempotency_token(token)
            .customize()
            .config_override(
                aws_sdk_codebuild::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .observed("codebuild", "StartBuild")
            .await?;
        resp.build_value()
            .and_then(|b| b.id())
            .map(str::to_string)
            .ok_or_else(|| missing("codebuild", "StartBuild", "build.id"))
    }

    /// Finds a recent build of `project` that carries `token`, if any.
    pub async fn find_build(&self, project: &str, token: &str) -> Result<Option<String>, AwsError> {
        let ids = self
            .codebuild
            .list_builds_for_project()
            .project_name(project)
            .sort_order(aws_sdk_codebuild::types::SortOrderType::Descending)
            .send()
            .observed("codebuild", "ListBuildsForProject")
            .await?;
        let ids: Vec<String> = ids.ids().iter().take(100).cloned().collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let r = self
            .codebuild
            .batch_get_builds()
            .set_ids(Some(ids))
            .send()
            .observed("codebuild", "BatchGetBuilds")
            .await?;
        Ok(r.builds()
            .iter()
            .find(|b| {
                b.environment()
                    .map(|e| {
                        e.environment_variables()
                            .iter()
                            .any(|v| v.name() == "MLOPSD_IDEMPOTENCY_TOKEN" && v.value() == token)
                    })
                    .unwrap_or(false)
            })
            .and_then(|b| b.id().map(str::to_string)))
    }

    /// Status of up to 100 builds per call (`BatchGetBuilds`).
    pub async fn build_statuses(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, RunStatus>, AwsError> {
        use aws_sdk_codebuild::types::StatusType as S;
        let mut out = HashMap::new();
        for chunk in ids.chunks(100) {
            let r = self
                .codebuild
                .batch_get_builds()
                .set_ids(Some(chunk.to_vec()))
                .send()
                .observed("codebuild", "BatchGetBuilds")
                .await?;
            for b in r.builds() {
                let Some(id) = b.id() else { continue };
                let st = match b.build_status() {
                    Some(S::Succeeded) => RunStatus::Succeeded,
                    Some(S::InProgress) | None => RunStatus::Running("IN_PROGRESS".into()),
                    Some(other) => RunStatus::Failed(other.as_str().to_string()),
                };
                out.insert(id.to_string(), st);
            }
            for missing_id in r.builds_not_found() {
                out.insert(
                    missing_id.clone(),
                    RunStatus::Failed("build not found".into()),
                );
            }
        }
        Ok(out)
    }

    /// SNS `Publish` with message attributes; returns the message id.
    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attrs: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        self.acting("sns", "Publish")?;
        use aws_sdk_sns::types::MessageAttributeValue;
        let mut req = self
            .sns
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(body);
        for (k, v) in attrs {
            let v = if v.is_empty() { "-" } else { v };
            let a = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v.to_string())
                .build()
                .map_err(|e| AwsError {
                    service: "sns",
                    operation: "Publish",
                    code: "InvalidParameter".into(),
                    message: e.to_string(),
                    transient: false,
                })?;
            req = req.message_attributes(*k, a);
        }
        let r = req.send().observed("sns", "Publish").await?;
        Ok(r.message_id().unwrap_or_default().to_string())
    }

    /// Model packages in `PendingManualApproval` in a group, with their metadata.
    pub async fn pending_packages(&self, group: &str) -> Result<Vec<PendingPackage>, AwsError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self
                .sagemaker
                .list_model_packages()
                .model_package_group_name(group)
                .model_approval_status(
                    aws_sdk_sagemaker::types::ModelApprovalStatus::PendingManualApproval,
                )
                .set_next_token(token.clone())
                .send()
                .observed("sagemaker", "ListModelPackages")
                .await?;
            for s in r.model_package_summary_list() {
                if s.model_approval_status()
                    == Some(&aws_sdk_sagemaker::types::ModelApprovalStatus::PendingManualApproval)
                {
                    if let Some(a) = s.model_package_arn() {
                        arns.push(a.to_string());
                    }
                }
            }
            token = r.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut out = Vec::new();
        for arn in arns {
            let d = self
                .sagemaker
                .describe_model_package()
                .model_package_name(&arn)
                .send()
                .observed("sagemaker", "DescribeModelPackage")
                .await?;
            out.push(PendingPackage {
                metadata: d
                    .customer_metadata_properties()
                    .cloned()
                    .unwrap_or_default(),
                report_uri: d
                    .model_metrics()
                    .and_then(|m| m.model_quality())
                    .and_then(|q| q.statistics())
                    .and_then(|s| s.s3_uri())
                    .map(str::to_string),
                arn,
            });
        }
        Ok(out)
    }

    /// Reads an S3 object (`s3://bucket/key`) as text.
    pub async fn read_s3(&self, uri: &str) -> Result<String, AwsError> {
        let (bucket, key) = uri
            .strip_prefix("s3://")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(|| AwsError {
                service: "s3",
                operation: "GetObject",
                code: "InvalidUri".into(),
                message: format!("not an s3://bucket/key URI: {uri}"),
                transient: false,
            })?;
        let r = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .observed("s3", "GetObject")
            .await?;
        let bytes = r.body.collect().await.map_err(|e| AwsError {
            service: "s3",
            operation: "GetObject",
            code: "ResponseError".into(),
            message: e.to_string(),
            transient: true,
        })?;
        String::from_utf8(bytes.into_bytes().to_vec()).map_err(|_| AwsError {
            service: "s3",
            operation: "GetObject",
            code: "InvalidReport".into(),
            message: format!("{uri} is not UTF-8 text"),
            transient: false,
        })
    }

    /// Sets a model package's approval status with the reason.
    pub async fn set_approval(
        &self,
        arn: &str,
        approve: bool,
        description: &str,
    ) -> Result<(), AwsError> {
        self.acting("sagemaker", "UpdateModelPackage")?;
        use aws_sdk_sagemaker::types::ModelApprovalStatus as M;
        self.sagemaker
            .update_model_package()
            .model_package_arn(arn)
            .model_approval_status(if approve { M::Approved } else { M::Rejected })
            .approval_description(description)
            .send()
            .observed("sagemaker", "UpdateModelPackage")
            .await?;
        Ok(())
    }
}

/// Whether a `DescribePipeline` error says the pipeline does not exist.
fn pipeline_absent(e: &AwsError) -> bool {
    e.code == "ResourceNotFound"
        || e.code == "ResourceNotFoundException"
        || (e.code == "ValidationException"
            && (e.message.contains("Could not find pipeline")
                || e.message.contains("does not exist")))
}

fn missing(service: &'static str, operation: &'static str, field: &str) -> AwsError {
    AwsError {
        service,
        operation,
        code: "MalformedResponse".into(),
        message: format!("response has no {field}"),
        transient: true,
    }
}

impl Aws {
    /// One long poll (`ReceiveMessage`, 20 s, up to 10 messages, the queue's own visibility
    /// timeout). Its attempt may take the whole wait, so its timeout is the wait plus 10 s.
    pub async fn receive_events(&self, queue_url: &str) -> Result<Vec<QueueMessage>, AwsError> {
        let timeouts = TimeoutConfig::builder()
            .operation_attempt_timeout(RECEIVE_WAIT + Duration::from_secs(10))
            .operation_timeout(RECEIVE_WAIT * 3)
            .build();
        let r = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .wait_time_seconds(RECEIVE_WAIT.as_secs() as i32)
            .max_number_of_messages(10)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .observed("sqs", "ReceiveMessage")
            .await?;
        Ok(r.messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    message_id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    pub async fn alarm_states(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, String>, AwsError> {
        let mut out = HashMap::new();
        for chunk in names.chunks(100) {
            let mut token: Option<String> = None;
            loop {
                let r = self
                    .cloudwatch
                    .describe_alarms()
                    .set_alarm_names(Some(chunk.to_vec()))
                    .set_next_token(token.clone())
                    .send()
                    .observed("cloudwatch", "DescribeAlarms")
                    .await?;
                for a in r.metric_alarms() {
                    if let (Some(n), Some(st)) = (a.alarm_name(), a.state_value()) {
                        out.insert(n.to_string(), st.as_str().to_string());
                    }
                }
                for a in r.composite_alarms() {
                    if let (Some(n), Some(st)) = (a.alarm_name(), a.state_value()) {
                        out.insert(n.to_string(), st.as_str().to_string());
                    }
                }
                token = r.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The caller's (ARN, account), from STS `GetCallerIdentity`.
    pub async fn caller_identity(&self) -> Result<(String, String), AwsError> {
        let r = self
            .sts
            .get_caller_identity()
            .send()
            .observed("sts", "GetCallerIdentity")
            .await?;
        Ok((
            r.arn().unwrap_or_default().to_string(),
            r.account().unwrap_or_default().to_string(),
        ))
    }

    /// Which of these CodeBuild projects (at most 100) do not exist: one `BatchGetProjects`.
    pub async fn missing_projects(&self, names: &[String]) -> Result<Vec<String>, AwsError> {
        let r = self
            .codebuild
            .batch_get_projects()
            .set_names(Some(names.to_vec()))
            .send()
            .observed("codebuild", "BatchGetProjects")
            .await?;
        let found: std::collections::HashSet<&str> =
            r.projects().iter().filter_map(|p| p.name()).collect();
        Ok(names
            .iter()
            .filter(|n| !found.contains(n.as_str()))
            .cloned()
            .collect())
    }

    /// Whether an SNS topic exists (`GetTopicAttributes`).
    pub async fn topic_exists(&self, arn: &str) -> Result<bool, AwsError> {
        match self
            .sns
            .get_topic_attributes()
            .topic_arn(arn)
            .send()
            .observed("sns", "GetTopicAttributes")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code == "NotFound" || e.code == "NotFoundException" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a model package group exists (`DescribeModelPackageGroup`).
    pub async fn package_group_exists(&self, name: &str) -> Result<bool, AwsError> {
        match self
            .sagemaker
            .describe_model_package_group()
            .model_package_group_name(name)
            .send()
            .observed("sagemaker", "DescribeModelPackageGroup")
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.code == "ResourceNotFound"
                    || (e.code == "ValidationException"
                        && (e.message.contains("does not exist")
                            || e.message.contains("not found")
                            || e.message.contains("Could not find"))) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether an SQS queue exists (`GetQueueAttributes`).
    pub async fn queue_exists(&self, url: &str) -> Result<bool, AwsError> {
        match self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .observed("sqs", "GetQueueAttributes")
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.code.contains("NonExistentQueue") || e.code.contains("QueueDoesNotExist") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The dimension sets a metric exists with (`ListMetrics`; empty: no such metric in the
    /// namespace). At most a few pages.
    pub async fn metric_dimension_sets(
        &self,
        namespace: &str,
        metric: &str,
    ) -> Result<Vec<Vec<(String, String)>>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..5 {
            let r = self
                .cloudwatch
                .list_metrics()
                .namespace(namespace)
                .metric_name(metric)
                .set_next_token(token.clone())
                .send()
                .observed("cloudwatch", "ListMetrics")
                .await?;
            for m in r.metrics() {
                let mut d: Vec<(String, String)> = m
                    .dimensions()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap_or_default().to_string(),
                            d.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                d.sort();
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            token = r.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes handled messages, one `DeleteMessage` each: the call the IAM action
    /// `sqs:DeleteMessage` names (a batch call is authorized by it on AWS, but not by every
    /// AWS-compatible endpoint), and at most 10 a batch.
    pub async fn delete_events(
        &self,
        queue_url: &str,
        receipts: &[String],
    ) -> Result<(), AwsError> {
        for r in receipts {
            self.sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(r)
                .send()
                .observed("sqs", "DeleteMessage")
                .await?;
        }
        Ok(())
    }
}

/// A group of queries for one `GetMetricData` call, with the window they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub indices: Vec<usize>,
    pub window: Duration,
}

/// Packs queries into as few calls as CloudWatch allows: at most 500 queries and 100,800
/// datapoints per call, where each query over a window `W` returns about `W / period` points.
/// Each query's window is two of its periods, so the latest complete period is included.
pub fn plan_batches(queries: &[MetricQuery<'_>]) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..queries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(queries[i].period));
    let mut out: Vec<Batch> = Vec::new();
    let mut points = 0u64;
    for i in order {
        let p = queries[i].period.max(Duration::from_secs(1));
        let fits = out.last().map(|b| {
            let need = (b.window.as_secs() / p.as_secs()).max(1);
            b.indices.len() < MAX_QUERIES_PER_CALL && points + need <= MAX_DATAPOINTS_PER_CALL
        });
        if fits != Some(true) {
            out.push(Batch {
                indices: Vec::new(),
                window: p * 2,
            });
            points = 0;
        }
        if let Some(b) = out.last_mut() {
            points += (b.window.as_secs() / p.as_secs()).max(1);
            b.indices.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(period_s: u64) -> MetricQuery<'static> {
        MetricQuery {
            namespace: "n",
            metric: "m",
            dimensions: &[],
            statistic: "Average",
            period: Duration::from_secs(period_s),
        }
    }

    #[test]
    fn batches_at_the_500_limit() {
        let qs: Vec<_> = (0..10_000).map(|_| q(60)).collect();
        let b = plan_batches(&qs);
        assert_eq!(b.len(), 20);
        assert!(b.iter().all(|x| x.indices.len() == 500));
        let qs: Vec<_> = (0..501).map(|_| q(300)).collect();
        assert_eq!(plan_batches(&qs).len(), 2);
    }

    #[test]
    fn mixed_periods_share_calls_within_the_datapoint_limit() {
        // 1h and 1m periods: a 2h window gives 120 points per 1-minute query; 500 fit.
        let qs: Vec<_> = (0..1000)
            .map(|i| q(if i % 2 == 0 { 3600 } else { 60 }))
            .collect();
        let b = plan_batches(&qs);
        assert_eq!(b.len(), 2);
        // A 1-day period with 1-second periods cannot share: 172,800 points each.
        let qs = vec![q(86_400), q(1)];
        assert_eq!(plan_batches(&qs).len(), 2);
        let mut seen: Vec<usize> = plan_batches(&qs)
            .into_iter()
            .flat_map(|b| b.indices)
            .collect();
        seen.sort();
        assert_eq!(seen, [0, 1]);
    }

    #[test]
    fn scrub_hides_signed_url_parts() {
        let s = scrub("error sending https://x/?X-Amz-Signature=abc&X-Amz-Credential=AKIA to host");
        assert!(!s.contains("AKIA"));
        assert!(s.contains("[redacted]"));
    }
}

/// The HA table on DynamoDB (partition key `pk`, sort key `sk`, both strings): the lease item
/// is (`pk = "lease"`, `sk = "leader"`).
#[derive(Clone)]
pub struct HaTable {
    client: aws_sdk_dynamodb::Client,
    pub table: String,
    /// This replica's config hash, written on the lease item with each of its writes.
    pub config_hash: std::sync::Arc<std::sync::Mutex<String>>,
    /// The config hash on the lease item as last read (the leader's).
    pub leader_hash: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

const LEASE_PK: &str = "lease";
const LEASE_SK: &str = "leader";

impl HaTable {
    /// The table `table` through `[aws]`'s SDK config (endpoint, credentials, retries).
    pub async fn new(cfg: &AwsConfig, table: &str) -> HaTable {
        let sdk = sdk_config(cfg).await;
        HaTable {
            client: aws_sdk_dynamodb::Client::new(&sdk),
            table: table.to_string(),
            config_hash: Default::default(),
            leader_hash: Default::default(),
        }
    }

    /// Checks that the table exists with the key schema mlopsd needs; the error says what is
    /// wrong with which table.
    pub async fn check(&self) -> Result<(), HaCheckError> {
        use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
        let r = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .observed("dynamodb", "DescribeTable")
            .await;
        let t = match r {
            Ok(r) => r.table,
            Err(e) if e.code == "ResourceNotFoundException" => {
                return Err(HaCheckError::Missing(format!(
                    "the HA table \"{}\" does not exist (create it with partition key `pk` (S) and sort key `sk` (S); the CloudFormation template does)",
                    self.table
                )))
            }
            Err(e) => {
                return Err(HaCheckError::Unreachable(format!(
                    "cannot read the HA table \"{}\": {e}",
                    self.table
                )))
            }
        };
        let Some(t) = t else {
            return Err(HaCheckError::Missing(format!(
                "DescribeTable gave no table for \"{}\"",
                self.table
            )));
        };
        let types: std::collections::HashMap<&str, &ScalarAttributeType> = t
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name(), a.attribute_type()))
            .collect();
        let keys: Vec<(&str, &KeyType)> = t
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type()))
            .collect();
        let want = [("pk", KeyType::Hash), ("sk", KeyType::Range)];
        let ok = keys.len() == 2
            && want.iter().all(|(n, k)| {
                keys.contains(&(*n, k)) && types.get(n) == Some(&&ScalarAttributeType::S)
            });
        if ok {
            Ok(())
        } else {
            let found: Vec<String> = keys
                .iter()
                .map(|(n, k)| {
                    format!(
                        "{n} ({}, {})",
                        k.as_str(),
                        types.get(n).map(|t| t.as_str()).unwrap_or("?")
                    )
                })
                .collect();
            Err(HaCheckError::Schema(format!(
                "the HA table \"{}\" has the key schema {}; mlopsd needs partition key `pk` (S) and sort key `sk` (S)",
                self.table,
                found.join(", ")
            )))
        }
    }
}

impl crate::lease::LeaseTable for HaTable {
    async fn read(&self) -> Result<Option<crate::lease::LeaseItem>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let r = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", V::S(LEASE_PK.into()))
            .key("sk", V::S(LEASE_SK.into()))
            .consistent_read(true)
            .send()
            .observed("dynamodb", "GetItem")
            .await?;
        let Some(item) = r.item else {
            return Ok(None);
        };
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        *self.leader_hash.lock().unwrap_or_else(|p| p.into_inner()) = s("config_hash");
        let n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|x| x.parse::<u64>().ok())
        };
        let released = item
            .get("released")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false);
        match (s("holder"), n("fencing"), n("version")) {
            (Some(holder), Some(fencing), Some(version)) => Ok(Some(crate::lease::LeaseItem {
                holder,
                fencing,
                version,
                released,
            })),
            _ => Err(AwsError {
                service: "dynamodb",
                operation: "GetItem",
                code: "MalformedLease".into(),
                message: format!(
                    "the lease item in \"{}\" lacks holder, fencing or version",
                    self.table
                ),
                transient: false,
            }),
        }
    }

    async fn write(
        &self,
        item: crate::lease::LeaseItem,
        expect: crate::lease::Expect,
    ) -> Result<bool, AwsError> {
        use crate::lease::Expect;
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", V::S(LEASE_PK.into()))
            .item("sk", V::S(LEASE_SK.into()))
            .item("holder", V::S(item.holder.clone()))
            .item("fencing", V::N(item.fencing.to_string()))
            .item("version", V::N(item.version.to_string()));
        let hash = self
            .config_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !hash.is_empty() {
            req = req.item("config_hash", V::S(hash));
        }
        if item.released {
            req = req.item("released", V::Bool(true));
        }
        req = match expect {
            Expect::Absent => req.condition_expression("attribute_not_exists(pk)"),
            Expect::Version(v) => req
                .condition_expression("version = :v")
                .expression_attribute_values(":v", V::N(v.to_string())),
            Expect::Held { holder, fencing } => req
                .condition_expression(
                    "holder = :h AND fencing = :f AND attribute_not_exists(released)",
                )
                .expression_attribute_values(":h", V::S(holder))
                .expression_attribute_values(":f", V::N(fencing.to_string())),
        };
        match req.send().observed("dynamodb", "PutItem").await {
            Ok(_) => Ok(true),
            Err(e) if e.code == "ConditionalCheckFailedException" => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// What is wrong with the HA table, for the start error (and its exit code) and `doctor`.
#[derive(Debug, Clone, PartialEq)]
pub enum HaCheckError {
    Missing(String),
    Schema(String),
    Unreachable(String),
}

impl HaCheckError {
    /// sysexits: a wrong key schema is a configuration error; the rest is unavailable.
    pub fn exit_code(&self) -> i32 {
        match self {
            HaCheckError::Schema(_) => 78,
            HaCheckError::Missing(_) | HaCheckError::Unreachable(_) => 69,
        }
    }
}

impl fmt::Display for HaCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaCheckError::Missing(m) | HaCheckError::Schema(m) | HaCheckError::Unreachable(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Why a log append did not land.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendError {
    /// The lease is no longer ours (or the entry exists already): we were deposed.
    Deposed(String),
    /// AWS did not take it (after the SDK's retries); it may or may not be stored.
    Failed(AwsError),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Deposed(why) => write!(f, "deposed: {why}"),
            AppendError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// The log items of the HA table: `pk = "log"`, `sk = "<seq, 20 digits>#<part, 4 digits>"`.
const LOG_PK: &str = "log";
/// Largest part of a log entry in one item (DynamoDB's item limit is 400 KB).
pub const LOG_PART: usize = 350_000;
/// Most parts of one entry: one `TransactWriteItems` holds 100 items, one is the lease check.
pub const LOG_MAX_PARTS: usize = 11;

fn log_sk(seq: u64, part: usize) -> String {
    format!("{seq:020}#{part:04}")
}

impl HaTable {
    /// Appends log entry `seq` as one transaction: its parts (each only if absent) and a check
    /// that the lease is still `holder`'s with `fencing`. A conflict with a concurrent lease
    /// renewal is tried again (same client token: DynamoDB makes the retry idempotent).
    pub async fn append(
        &self,
        holder: &str,
        fencing: u64,
        seq: u64,
        entry: &[u8],
    ) -> Result<(), AppendError> {
        use aws_sdk_dynamodb::types::{
            AttributeValue as V, ConditionCheck, Put, TransactWriteItem,
        };
        let parts: Vec<&[u8]> = if entry.is_empty() {
            vec![entry]
        } else {
            entry.chunks(LOG_PART).collect()
        };
        if parts.len() > LOG_MAX_PARTS {
            return Err(AppendError::Failed(AwsError {
                service: "dynamodb",
                operation: "TransactWriteItems",
                code: "EntryTooLarge".into(),
                message: format!(
                    "a state write of {} bytes (compressed) is over the {} bytes one DynamoDB transaction holds",
                    entry.len(),
                    LOG_PART * LOG_MAX_PARTS
                ),
                transient: false,
            }));
        }
        let build = |e: aws_smithy_types::error::operation::BuildError| {
            AppendError::Failed(AwsError {
                service: "dynamodb",
                operation: "TransactWriteItems",
                code: "BuildError".into(),
                message: e.to_string(),
                transient: false,
            })
        };
        let mut items = Vec::with_capacity(parts.len() + 1);
        for (i, p) in parts.iter().enumerate() {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", V::S(LOG_PK.into()))
                .item("sk", V::S(log_sk(seq, i)))
                .item("d", V::B(aws_smithy_types::Blob::new(p.to_vec())))
                .item("n", V::N(parts.len().to_string()))
                .item("f", V::N(fencing.to_string()))
                .condition_expression("attribute_not_exists(sk)")
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", V::S(LEASE_PK.into()))
            .key("sk", V::S(LEASE_SK.into()))
            .condition_expression("holder = :h AND fencing = :f AND attribute_not_exists(released)")
            .expression_attribute_values(":h", V::S(holder.into()))
            .expression_attribute_values(":f", V::N(fencing.to_string()))
            .build()
            .map_err(build)?;
        items.push(TransactWriteItem::builder().condition_check(check).build());
        // At most 36 characters; the same for every retry of this entry.
        let token = {
            use sha2::{Digest, Sha256};
            let d = Sha256::digest(format!("{holder}\0{fencing}\0{seq}").as_bytes());
            d.iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let mut conflicts = 0u32;
        loop {
            let r = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .send()
                .observed("dynamodb", "TransactWriteItems")
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.code == "TransactionCanceledException" => {
                    if e.message.contains("ConditionalCheckFailed") {
                        return Err(AppendError::Deposed(format!(
                            "state write {seq} was refused: the lease is no longer held by {holder} with fencing {fencing}, or entry {seq} is in the log already"
                        )));
                    }
                    if e.message.contains("TransactionConflict") && conflicts < 10 {
                        conflicts += 1;
                        tokio::time::sleep(Duration::from_millis(20 * conflicts as u64)).await;
                        continue;
                    }
                    return Err(AppendError::Failed(e));
                }
                Err(e) => return Err(AppendError::Failed(e)),
            }
        }
    }

    /// The log entries after `after`, in order (strongly consistent reads). An entry is
    /// whole: its parts were written in one transaction.
    pub async fn read_log(&self, after: u64) -> Result<Vec<(u64, Vec<u8>)>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND sk >= :from")
            .expression_attribute_values(":p", V::S(LOG_PK.into()))
            .expression_attribute_values(":from", V::S(format!("{:020}", after + 1)))
            .consistent_read(true);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for item in self.query_all(q).await? {
            let sk = item.get("sk").and_then(|v| v.as_s().ok());
            let d = item.get("d").and_then(|v| v.as_b().ok());
            let parsed = sk
                .and_then(|s| s.split_once('#'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)));
            let (Some((seq, part)), Some(d)) = (parsed, d) else {
                return Err(AwsError {
                    service: "dynamodb",
                    operation: "Query",
                    code: "MalformedLog".into(),
                    message: format!(
                        "a log item in \"{}\" has no sequence number or data (sk {:?})",
                        self.table, sk
                    ),
                    transient: false,
                });
            };
            match out.last_mut() {
                Some((s, buf)) if *s == seq && part > 0 => buf.extend_from_slice(d.as_ref()),
                _ => out.push((seq, d.as_ref().to_vec())),
            }
        }
        Ok(out)
    }

    /// Every item a query matches, page after page.
    async fn query_all(
        &self,
        q: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>, AwsError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = q
                .clone()
                .set_exclusive_start_key(start.take())
                .send()
                .observed("dynamodb", "Query")
                .await?;
            out.extend(r.items.unwrap_or_default());
            match r.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// The newest log entry's sequence number (0: none).
    pub async fn last_seq(&self) -> Result<u64, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let r = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", V::S(LOG_PK.into()))
            .consistent_read(true)
            .scan_index_forward(false)
            .limit(1)
            .send()
            .observed("dynamodb", "Query")
            .await?;
        Ok(r.items()
            .first()
            .and_then(|i| i.get("sk"))
            .and_then(|v| v.as_s().ok())
            .and_then(|s| s.split_once('#'))
            .and_then(|(a, _)| a.parse().ok())
            .unwrap_or(0))
    }
}

/// The snapshot items: parts `pk = "snap"`, `sk = "<seq>#<part>"`, and the pointer to the
/// newest whole one, `sk = "latest"`.
const SNAP_PK: &str = "snap";
const SNAP_LATEST: &str = "latest";

impl HaTable {
    /// The newest snapshot: (its last log entry, its parts, its bytes), if any (strongly
    /// consistent).
    pub async fn latest_snapshot(&self) -> Result<Option<(u64, usize, u64)>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let r = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", V::S(SNAP_PK.into()))
            .key("sk", V::S(SNAP_LATEST.into()))
            .consistent_read(true)
            .send()
            .observed("dynamodb", "GetItem")
            .await?;
        let n = |k: &str| {
            r.item
                .as_ref()
                .and_then(|i| i.get(k))
                .and_then(|v| v.as_n().ok())
                .and_then(|x| x.parse::<u64>().ok())
        };
        Ok(match (n("seq"), n("n")) {
            (Some(s), Some(p)) => Some((s, p as usize, n("bytes").unwrap_or(0))),
            _ => None,
        })
    }

    /// Stores a snapshot as of log entry `seq` (its parts, then the pointer, which only moves
    /// forward). Returns false when a newer snapshot was there already.
    pub async fn put_snapshot(&self, seq: u64, data: &[u8]) -> Result<bool, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let parts: Vec<&[u8]> = data.chunks(LOG_PART).collect();
        for (i, p) in parts.iter().enumerate() {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", V::S(SNAP_PK.into()))
                .item("sk", V::S(log_sk(seq, i)))
                .item("d", V::B(aws_smithy_types::Blob::new(p.to_vec())))
                .send()
                .observed("dynamodb", "PutItem")
                .await?;
        }
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", V::S(SNAP_PK.into()))
            .item("sk", V::S(SNAP_LATEST.into()))
            .item("seq", V::N(seq.to_string()))
            .item("n", V::N(parts.len().to_string()))
            .item("bytes", V::N(data.len().to_string()))
            .condition_expression("attribute_not_exists(sk) OR seq < :s")
            .expression_attribute_values(":s", V::N(seq.to_string()))
            .send()
            .observed("dynamodb", "PutItem")
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.code == "ConditionalCheckFailedException" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The parts of snapshot `seq`, joined.
    pub async fn read_snapshot(&self, seq: u64, parts: usize) -> Result<Vec<u8>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":p", V::S(SNAP_PK.into()))
            .expression_attribute_values(":a", V::S(log_sk(seq, 0)))
            .expression_attribute_values(":b", V::S(log_sk(seq, 9999)))
            .consistent_read(true);
        let mut out = Vec::new();
        let mut got = 0;
        for i in self.query_all(q).await? {
            if let Some(d) = i.get("d").and_then(|v| v.as_b().ok()) {
                out.extend_from_slice(d.as_ref());
                got += 1;
            }
        }
        if got != parts {
            return Err(AwsError {
                service: "dynamodb",
                operation: "Query",
                code: "IncompleteSnapshot".into(),
                message: format!(
                    "snapshot {seq} in \"{}\" has {got} of its {parts} parts",
                    self.table
                ),
                transient: true,
            });
        }
        Ok(out)
    }

    /// Deletes the log entries up to `seq` and the snapshots older than `seq` (after a
    /// snapshot at `seq` is the latest). Returns how many items went.
    pub async fn compact_through(&self, seq: u64) -> Result<usize, AwsError> {
        use aws_sdk_dynamodb::types::{AttributeValue as V, DeleteRequest, WriteRequest};
        let mut keys: Vec<(String, String)> = Vec::new();
        for (pk, below) in [(LOG_PK, log_sk(seq, 9999)), (SNAP_PK, log_sk(seq, 0))] {
            let q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND sk < :b")
                .expression_attribute_values(":p", V::S(pk.into()))
                .expression_attribute_values(":b", V::S(below.clone()))
                .projection_expression("pk, sk");
            for i in self.query_all(q).await? {
                if let Some(sk) = i.get("sk").and_then(|v| v.as_s().ok()) {
                    // The pointer sorts after the digits: never below a seq key.
                    keys.push((pk.to_string(), sk.clone()));
                }
            }
        }
        for chunk in keys.chunks(25) {
            let mut reqs: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for (pk, sk) in chunk {
                let del = DeleteRequest::builder()
                    .key("pk", V::S(pk.clone()))
                    .key("sk", V::S(sk.clone()))
                    .build()
                    .map_err(|e| AwsError {
                        service: "dynamodb",
                        operation: "BatchWriteItem",
                        code: "BuildError".into(),
                        message: e.to_string(),
                        transient: false,
                    })?;
                reqs.push(WriteRequest::builder().delete_request(del).build());
            }
            let mut pending = Some(reqs);
            let mut tries = 0;
            while let Some(reqs) = pending.take() {
                let r = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, reqs)
                    .send()
                    .observed("dynamodb", "BatchWriteItem")
                    .await?;
                let left = r
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .filter(|v| !v.is_empty());
                if let Some(left) = left {
                    tries += 1;
                    if tries > 8 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50 << tries.min(5))).await;
                    pending = Some(left);
                }
            }
        }
        Ok(keys.len())
    }
}
