//! SageMaker hosting: models, endpoint configs and endpoints (described, created, updated with
//! a `DeploymentConfig`, cleaned up), and the registry reads a deployment needs (approved
//! versions, a package's tags).

use aws_sdk_sagemaker::types as sm;

use super::{Aws, Observed};
use crate::cloud::{
    Acting, AwsError, EndpointView, Endpoints, ErrorKind, PackageVersion, MANAGED_TAG, VARIANT,
};
use crate::config::{Capacity, Strategy};

fn managed_tag() -> sm::Tag {
    sm::Tag::builder()
        .key(MANAGED_TAG.0)
        .value(MANAGED_TAG.1)
        .build()
}

/// Whether an error says the named resource does not exist (SageMaker answers
/// `ValidationException` "Could not find …" for models, configs and endpoints).
pub(super) fn absent(e: &AwsError) -> bool {
    e.kind == ErrorKind::NotFound
        || (e.code == "ValidationException"
            && (e.message.contains("Could not find") || e.message.contains("does not exist")))
}

/// A create of a name that exists: the name is derived from the decision, so what exists is
/// what an earlier attempt of the same decision made (its answer lost). One attempt per
/// call: the daemon describes and sends again itself.
fn landed(e: AwsError) -> Result<(), AwsError> {
    if e.code == "ValidationException" && e.message.contains("Cannot create already existing") {
        Ok(())
    } else {
        Err(e)
    }
}

fn secs(d: std::time::Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn capacity_percent(p: u32) -> sm::CapacitySize {
    sm::CapacitySize::builder()
        .r#type(sm::CapacitySizeType::CapacityPercent)
        .value(p as i32)
        .build()
}

/// `DeploymentConfig` for `strategy` with `alarms` as `AutoRollbackConfiguration`.
fn deployment_config(strategy: &Strategy, alarms: &[String]) -> sm::DeploymentConfig {
    let mut b = sm::DeploymentConfig::builder();
    let routing = |t: sm::TrafficRoutingConfigType, wait: std::time::Duration| {
        sm::TrafficRoutingConfig::builder()
            .r#type(t)
            .wait_interval_in_seconds(secs(wait))
    };
    let blue_green = |r: sm::TrafficRoutingConfig| {
        sm::BlueGreenUpdatePolicy::builder()
            .traffic_routing_configuration(r)
            .termination_wait_in_seconds(0)
            .build()
    };
    b = match *strategy {
        Strategy::AllAtOnce => b.blue_green_update_policy(blue_green(
            routing(sm::TrafficRoutingConfigType::AllAtOnce, Default::default()).build(),
        )),
        Strategy::Canary { percent, wait } => b.blue_green_update_policy(blue_green(
            routing(sm::TrafficRoutingConfigType::Canary, wait)
                .canary_size(capacity_percent(percent))
                .build(),
        )),
        Strategy::Linear { percent, wait } => b.blue_green_update_policy(blue_green(
            routing(sm::TrafficRoutingConfigType::Linear, wait)
                .linear_step_size(capacity_percent(percent))
                .build(),
        )),
        Strategy::Rolling { percent, wait } => b.rolling_update_policy(
            sm::RollingUpdatePolicy::builder()
                .maximum_batch_size(capacity_percent(percent))
                .wait_interval_in_seconds(secs(wait))
                .build(),
        ),
    };
    if !alarms.is_empty() {
        let mut r = sm::AutoRollbackConfig::builder();
        for a in alarms {
            r = r.alarms(sm::Alarm::builder().alarm_name(a).build());
        }
        b = b.auto_rollback_configuration(r.build());
    }
    b.build()
}

pub(super) fn time(
    t: Option<&aws_smithy_types::DateTime>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = t?;
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

impl Endpoints for Aws {
    async fn approved_versions(&self, group: &str) -> Result<Vec<PackageVersion>, AwsError> {
        Ok(self
            .packages_with_status(group, sm::ModelApprovalStatus::Approved)
            .await?
            .into_iter()
            .filter_map(|(arn, v)| {
                Some(PackageVersion {
                    arn,
                    version: u32::try_from(v?).ok()?,
                })
            })
            .collect())
    }

    async fn package_tags(&self, arn: &str) -> Result<Vec<(String, String)>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self
                .sagemaker
                .list_tags()
                .resource_arn(arn)
                .set_next_token(token.clone())
                .send()
                .observed("sagemaker", "ListTags")
                .await?;
            for t in r.tags() {
                out.push((
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                ));
            }
            token = r.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn describe_endpoint(&self, name: &str) -> Result<Option<EndpointView>, AwsError> {
        let r = match self
            .sagemaker
            .describe_endpoint()
            .endpoint_name(name)
            .send()
            .observed("sagemaker", "DescribeEndpoint")
            .await
        {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(EndpointView {
            status: r
                .endpoint_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            config_name: r.endpoint_config_name().unwrap_or_default().to_string(),
            pending_config: r
                .pending_deployment_summary()
                .and_then(|p| p.endpoint_config_name())
                .map(str::to_string)
                .filter(|s| !s.is_empty()),
            failure_reason: r
                .failure_reason()
                .map(str::to_string)
                .filter(|s| !s.is_empty()),
            last_modified: time(r.last_modified_time()),
        }))
    }

    async fn model_exists(&self, name: &str) -> Result<bool, AwsError> {
        match self
            .sagemaker
            .describe_model()
            .model_name(name)
            .send()
            .observed("sagemaker", "DescribeModel")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn endpoint_config_exists(&self, name: &str) -> Result<bool, AwsError> {
        match self
            .sagemaker
            .describe_endpoint_config()
            .endpoint_config_name(name)
            .send()
            .observed("sagemaker", "DescribeEndpointConfig")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create_model(
        &self,
        _act: &Acting<'_>,
        name: &str,
        package_arn: &str,
        role_arn: &str,
    ) -> Result<(), AwsError> {
        self.sagemaker
            .create_model()
            .model_name(name)
            .execution_role_arn(role_arn)
            .primary_container(
                sm::ContainerDefinition::builder()
                    .model_package_name(package_arn)
                    .build(),
            )
            .tags(managed_tag())
            .customize()
            .config_override(
                aws_sdk_sagemaker::config::Builder::default().retry_config(super::one_attempt()),
            )
            .send()
            .observed("sagemaker", "CreateModel")
            .await
            .map(|_| ())
            .or_else(landed)
    }

    async fn create_endpoint_config(
        &self,
        _act: &Acting<'_>,
        name: &str,
        model: &str,
        capacity: &Capacity,
    ) -> Result<(), AwsError> {
        let v = sm::ProductionVariant::builder()
            .variant_name(VARIANT)
            .model_name(model)
            .initial_variant_weight(1.0);
        let v = match capacity {
            Capacity::Instances {
                instance_type,
                count,
            } => v
                .instance_type(sm::ProductionVariantInstanceType::from(
                    instance_type.as_str(),
                ))
                .initial_instance_count(*count as i32),
            Capacity::Serverless {
                memory_mb,
                max_concurrency,
            } => v.serverless_config(
                sm::ProductionVariantServerlessConfig::builder()
                    .memory_size_in_mb(*memory_mb as i32)
                    .max_concurrency(*max_concurrency as i32)
                    .build(),
            ),
        };
        self.sagemaker
            .create_endpoint_config()
            .endpoint_config_name(name)
            .production_variants(v.build())
            .tags(managed_tag())
            .customize()
            .config_override(
                aws_sdk_sagemaker::config::Builder::default().retry_config(super::one_attempt()),
            )
            .send()
            .observed("sagemaker", "CreateEndpointConfig")
            .await
            .map(|_| ())
            .or_else(landed)
    }

    async fn create_endpoint(
        &self,
        _act: &Acting<'_>,
        name: &str,
        config: &str,
    ) -> Result<(), AwsError> {
        self.sagemaker
            .create_endpoint()
            .endpoint_name(name)
            .endpoint_config_name(config)
            .tags(managed_tag())
            .customize()
            .config_override(
                aws_sdk_sagemaker::config::Builder::default().retry_config(super::one_attempt()),
            )
            .send()
            .observed("sagemaker", "CreateEndpoint")
            .await
            .map(|_| ())
            .or_else(landed)
    }

    /// One attempt: a retried `UpdateEndpoint` whose first attempt landed would be refused
    /// ("Cannot update in-progress endpoint"); the daemon describes before it sends again.
    async fn update_endpoint(
        &self,
        _act: &Acting<'_>,
        name: &str,
        config: &str,
        strategy: &Strategy,
        alarms: &[String],
    ) -> Result<(), AwsError> {
        self.sagemaker
            .update_endpoint()
            .endpoint_name(name)
            .endpoint_config_name(config)
            .deployment_config(deployment_config(strategy, alarms))
            .customize()
            .config_override(
                aws_sdk_sagemaker::config::Builder::default().retry_config(super::one_attempt()),
            )
            .send()
            .observed("sagemaker", "UpdateEndpoint")
            .await?;
        Ok(())
    }

    async fn delete_model(&self, _act: &Acting<'_>, name: &str) -> Result<bool, AwsError> {
        match self
            .sagemaker
            .delete_model()
            .model_name(name)
            .send()
            .observed("sagemaker", "DeleteModel")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete_endpoint_config(
        &self,
        _act: &Acting<'_>,
        name: &str,
    ) -> Result<bool, AwsError> {
        match self
            .sagemaker
            .delete_endpoint_config()
            .endpoint_config_name(name)
            .send()
            .observed("sagemaker", "DeleteEndpointConfig")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
