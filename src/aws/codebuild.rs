//! CodeBuild: builds started (with the token as a variable, so a restart can find them),
//! looked up, followed; projects checked.

use std::collections::{BTreeMap, HashMap};

use super::{one_attempt, Aws, Observed};
use crate::cloud::{Acting, AwsError, Builds, ErrorKind, RunStatus};

/// The build variable that carries a start's idempotency token.
const TOKEN_VARIABLE: &str = "MLOPSD_IDEMPOTENCY_TOKEN";

impl Builds for Aws {
    /// Starts a CodeBuild build; the token is also set as `MLOPSD_IDEMPOTENCY_TOKEN` so a
    /// restart can find the build again. One attempt only, as for pipelines.
    async fn start_build(
        &self,
        _act: &Acting<'_>,
        project: &str,
        source_version: Option<&str>,
        env: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<String, AwsError> {
        use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType};
        let mut vars = Vec::new();
        for (k, v) in env.iter().chain(std::iter::once((
            &TOKEN_VARIABLE.to_string(),
            &token.to_string(),
        ))) {
            let var = EnvironmentVariable::builder()
                .name(k)
                .value(v)
                .r#type(EnvironmentVariableType::Plaintext)
                .build()
                .map_err(|e| {
                    AwsError::new(
                        "codebuild",
                        "StartBuild",
                        ErrorKind::Refused,
                        "InvalidParameter",
                        e.to_string(),
                    )
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
                aws_sdk_codebuild::config::Builder::default().retry_config(one_attempt()),
            )
            .send()
            .observed("codebuild", "StartBuild")
            .await?;
        resp.build_value()
            .and_then(|b| b.id())
            .map(str::to_string)
            .ok_or_else(|| AwsError::malformed("codebuild", "StartBuild", "build.id"))
    }

    /// Finds a recent build of `project` that carries `token`, if any.
    async fn find_build(&self, project: &str, token: &str) -> Result<Option<String>, AwsError> {
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
                            .any(|v| v.name() == TOKEN_VARIABLE && v.value() == token)
                    })
                    .unwrap_or(false)
            })
            .and_then(|b| b.id().map(str::to_string)))
    }

    /// Status of up to 100 builds per call (`BatchGetBuilds`).
    async fn build_statuses(&self, ids: &[String]) -> Result<HashMap<String, RunStatus>, AwsError> {
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

    /// Which of these CodeBuild projects (at most 100) do not exist: one `BatchGetProjects`.
    async fn missing_projects(&self, names: &[String]) -> Result<Vec<String>, AwsError> {
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
}
