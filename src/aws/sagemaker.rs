//! SageMaker: pipeline executions (started, looked up, followed), declared pipelines
//! (described, created, updated) and the model registry (pending packages, approvals).

use std::collections::BTreeMap;

use super::{one_attempt, Aws, Observed};
use crate::cloud::{
    Acting, AwsError, ErrorKind, PendingPackage, Pipelines, Registry, RemotePipeline, RunStatus,
    MANAGED_TAG,
};

impl Pipelines for Aws {
    /// Starts a SageMaker pipeline execution; `token` is the idempotency token and display name.
    /// One attempt only: the daemon retries a start itself, after looking for an execution the
    /// token already started, so never-twice does not depend on the service honouring tokens.
    async fn start_pipeline(
        &self,
        _act: &Acting<'_>,
        pipeline_name: &str,
        params: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<String, AwsError> {
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
                aws_sdk_sagemaker::config::Builder::default().retry_config(one_attempt()),
            )
            .send()
            .observed("sagemaker", "StartPipelineExecution")
            .await?;
        resp.pipeline_execution_arn()
            .map(str::to_string)
            .ok_or_else(|| {
                AwsError::malformed(
                    "sagemaker",
                    "StartPipelineExecution",
                    "PipelineExecutionArn",
                )
            })
    }

    /// Finds an execution this daemon started with `token` (its display name), if any.
    async fn find_pipeline_execution(
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

    async fn pipeline_status(&self, arn: &str) -> Result<RunStatus, AwsError> {
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

    /// `DescribePipeline`; `None` when AWS says there is no such pipeline (`ResourceNotFound`;
    /// some endpoints answer `ValidationException` "Could not find pipeline").
    async fn describe_pipeline(&self, name: &str) -> Result<Option<RemotePipeline>, AwsError> {
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
                .ok_or_else(|| {
                    AwsError::malformed("sagemaker", "DescribePipeline", "PipelineDefinition")
                })?
                .to_string(),
            role_arn: r.role_arn().unwrap_or_default().to_string(),
        }))
    }

    /// `CreatePipeline` with the definition inline, tagged `managed-by = mlopsd`; the token
    /// makes a retried create the same create.
    async fn create_pipeline(
        &self,
        _act: &Acting<'_>,
        name: &str,
        definition: &str,
        role_arn: &str,
        token: &str,
    ) -> Result<String, AwsError> {
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
            .ok_or_else(|| AwsError::malformed("sagemaker", "CreatePipeline", "PipelineArn"))
    }

    async fn update_pipeline(
        &self,
        _act: &Acting<'_>,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> Result<String, AwsError> {
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
}

impl Registry for Aws {
    /// Model packages in `PendingManualApproval` in a group, with their metadata.
    async fn pending_packages(&self, group: &str) -> Result<Vec<PendingPackage>, AwsError> {
        let arns: Vec<String> = self
            .packages_with_status(
                group,
                aws_sdk_sagemaker::types::ModelApprovalStatus::PendingManualApproval,
            )
            .await?
            .into_iter()
            .map(|(arn, _)| arn)
            .collect();
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

    /// Sets a model package's approval status with the reason.
    async fn set_approval(
        &self,
        _act: &Acting<'_>,
        arn: &str,
        approve: bool,
        description: &str,
    ) -> Result<(), AwsError> {
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

    /// Whether a model package group exists (`DescribeModelPackageGroup`).
    async fn package_group_exists(&self, name: &str) -> Result<bool, AwsError> {
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
                if e.kind == ErrorKind::NotFound
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
}

impl Aws {
    /// The (ARN, version) of a group's packages with this approval status, all pages
    /// (`ListModelPackages`; the status is checked again on each summary).
    pub(super) async fn packages_with_status(
        &self,
        group: &str,
        status: aws_sdk_sagemaker::types::ModelApprovalStatus,
    ) -> Result<Vec<(String, Option<i32>)>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self
                .sagemaker
                .list_model_packages()
                .model_package_group_name(group)
                .model_approval_status(status.clone())
                .set_next_token(token.clone())
                .send()
                .observed("sagemaker", "ListModelPackages")
                .await?;
            for s in r.model_package_summary_list() {
                if s.model_approval_status() == Some(&status) {
                    if let Some(a) = s.model_package_arn() {
                        out.push((a.to_string(), s.model_package_version()));
                    }
                }
            }
            token = r.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }
}

/// Whether a `DescribePipeline` error says the pipeline does not exist.
fn pipeline_absent(e: &AwsError) -> bool {
    e.kind == ErrorKind::NotFound
        || (e.code == "ValidationException"
            && (e.message.contains("Could not find pipeline")
                || e.message.contains("does not exist")))
}
