//! STS and IAM: who the caller is, whether a role exists.

use super::{Aws, Observed};
use crate::cloud::{AwsError, ErrorKind, Identity};
use crate::config::AwsConfig;

impl Identity for Aws {
    fn region(&self) -> &str {
        &self.region
    }

    /// The caller's (ARN, account), from STS `GetCallerIdentity`.
    async fn caller_identity(&self) -> Result<(String, String), AwsError> {
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

    /// IAM `GetRole` by the role's name (the ARN's last path segment); `NoSuchEntity` → false.
    async fn role_exists(&self, role_arn: &str) -> Result<bool, AwsError> {
        let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
        match self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .observed("iam", "GetRole")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code == "NoSuchEntity" || e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The account id of the caller's credentials (STS `GetCallerIdentity`), and the region.
pub(crate) async fn caller_account(cfg: &AwsConfig) -> Result<(String, String), AwsError> {
    let sdk = super::sdk_config(cfg).await;
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
        .ok_or_else(|| AwsError::malformed("sts", "GetCallerIdentity", "Account"))?;
    Ok((account, region))
}
