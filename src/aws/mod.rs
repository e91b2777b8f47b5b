//! The adapter: the only module that names `aws_sdk_*`. One SDK config built once from
//! `[aws]` (region, profile, endpoint, retries with backoff, timeouts), one client per
//! service, and one file per service implementing the port's trait for it (`cloud`).
//! Every call goes through `observed`: its error classified (`classify`), its latency and
//! outcome counted in the metrics.

mod classify;
mod cloudwatch;
mod codebuild;
mod dynamodb;
mod endpoints;
mod monitoring;
mod s3;
mod sagemaker;
mod sns;
mod sqs;
mod sts;

pub use dynamodb::HaTable;
pub(crate) use sts::caller_account;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::cloud::AwsError;
use crate::config::AwsConfig;
use classify::SdkError;

/// The AWS clients, built from one SDK config. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Aws {
    cloudwatch: aws_sdk_cloudwatch::Client,
    sagemaker: aws_sdk_sagemaker::Client,
    codebuild: aws_sdk_codebuild::Client,
    sns: aws_sdk_sns::Client,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    sts: aws_sdk_sts::Client,
    iam: aws_sdk_iam::Client,
    region: String,
}

impl Aws {
    /// Builds the SDK config from `[aws]`: region, profile, endpoint, retries with backoff,
    /// timeouts; credentials from the standard chain.
    pub(crate) async fn new(cfg: &AwsConfig) -> Aws {
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
            iam: aws_sdk_iam::Client::new(&sdk),
            region,
        }
    }
}

pub(crate) async fn sdk_config(cfg: &AwsConfig) -> aws_types::SdkConfig {
    let _ = classify::TARGET.set(classify::Target {
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

/// An SDK call's future, awaited with its error classified and the call recorded in the
/// metrics (`mlopsd_aws_calls_total`, latency, errors by code).
trait Observed<T, E>: std::future::Future<Output = Result<T, SdkError<E>>> + Sized
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    async fn observed(self, service: &'static str, operation: &'static str) -> Result<T, AwsError> {
        let t0 = std::time::Instant::now();
        let r = self
            .await
            .map_err(|e| classify::classify(service, operation, e));
        crate::metrics::aws_call(
            service,
            operation,
            t0.elapsed().as_secs_f64(),
            r.as_ref().err().map(|e| e.code.as_str()),
        );
        r
    }
}

impl<T, E, F> Observed<T, E> for F
where
    F: std::future::Future<Output = Result<T, SdkError<E>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
}

/// SDK settings for a start call: one attempt, since the daemon retries a start itself after
/// looking for a run its token already started.
fn one_attempt() -> RetryConfig {
    RetryConfig::disabled()
}
