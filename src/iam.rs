//! `mlopsd iam-policy`: the least-privilege IAM policy this exact config needs. Each action is
//! scoped to the ARNs the config names; `"Resource": "*"` only where AWS allows nothing
//! narrower (`cloudwatch:GetMetricData`, `sagemaker:ListModelPackages`); nothing for features the
//! config does not use. Pure: the account id is passed in.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::config::{Config, GateMetric, RunKind};

/// SageMaker resource names appear lowercased in ARNs.
fn sm(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// The policy document for `cfg` in `region` and `account`. `report_buckets` are the S3 buckets
/// holding evaluation reports, needed when a gate uses `report_path`.
pub fn policy(
    cfg: &Config,
    region: &str,
    account: &str,
    report_buckets: &[String],
) -> Result<Value, String> {
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let mut st: Vec<Value> = Vec::new();

    if !cfg.checks.is_empty() {
        st.push(json!({
            "Sid": "ReadCheckMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:GetMetricData"],
            "Resource": "*"
        }));
    }

    // Only targets some rule starts (a pipeline defined but never started needs nothing).
    let mut pipelines = BTreeSet::new();
    let mut projects = BTreeSet::new();
    for r in cfg.rules.values() {
        for s in &r.start {
            let t = s.target();
            match t.kind {
                RunKind::Pipeline => {
                    if let Some(p) = cfg.pipelines.get(&t.name) {
                        pipelines.insert(p.pipeline_name.clone());
                    }
                }
                RunKind::Build => {
                    if let Some(b) = cfg.builds.get(&t.name) {
                        projects.insert(b.project_name.clone());
                    }
                }
            }
        }
    }
    if !pipelines.is_empty() {
        let arns: Vec<String> = pipelines
            .iter()
            .map(|p| {
                format!(
                    "arn:{partition}:sagemaker:{region}:{account}:pipeline/{}",
                    sm(p)
                )
            })
            .collect();
        let execs: Vec<String> = arns.iter().map(|a| format!("{a}/execution/*")).collect();
        st.push(json!({
            "Sid": "StartAndFindPipelineRuns",
            "Effect": "Allow",
            "Action": ["sagemaker:StartPipelineExecution", "sagemaker:ListPipelineExecutions"],
            "Resource": arns
        }));
        st.push(json!({
            "Sid": "FollowPipelineRuns",
            "Effect": "Allow",
            "Action": ["sagemaker:DescribePipelineExecution"],
            "Resource": execs
        }));
    }
    if !projects.is_empty() {
        let arns: Vec<String> = projects
            .iter()
            .map(|p| format!("arn:{partition}:codebuild:{region}:{account}:project/{p}"))
            .collect();
        st.push(json!({
            "Sid": "StartFindAndFollowBuilds",
            "Effect": "Allow",
            "Action": ["codebuild:StartBuild", "codebuild:BatchGetBuilds", "codebuild:ListBuildsForProject"],
            "Resource": arns
        }));
    }

    // Topics of notifiers some rule or gate uses.
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for r in cfg.rules.values() {
        used.extend(r.notify.iter().map(String::as_str));
    }
    for g in cfg.gates.values() {
        used.extend(g.notify.iter().map(String::as_str));
    }
    let topics: BTreeSet<String> = used
        .iter()
        .filter_map(|n| cfg.notifiers.get(*n))
        .map(|n| n.topic_arn.clone())
        .collect();
    if !topics.is_empty() {
        st.push(json!({
            "Sid": "Notify",
            "Effect": "Allow",
            "Action": ["sns:Publish"],
            "Resource": topics.into_iter().collect::<Vec<_>>()
        }));
    }

    if !cfg.gates.is_empty() {
        let groups: BTreeSet<String> = cfg
            .gates
            .values()
            .map(|g| g.model_package_group.clone())
            .collect();
        st.push(json!({
            "Sid": "ListPendingModelPackages",
            "Effect": "Allow",
            "Action": ["sagemaker:ListModelPackages"],
            "Resource": "*"
        }));
        st.push(json!({
            "Sid": "ReadAndApproveModelPackages",
            "Effect": "Allow",
            "Action": ["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
            "Resource": groups.iter().map(|g| format!("arn:{partition}:sagemaker:{region}:{account}:model-package/{}/*", sm(g))).collect::<Vec<_>>()
        }));
        if cfg
            .gates
            .values()
            .any(|g| matches!(g.metric, GateMetric::Report(_)))
        {
            if report_buckets.is_empty() {
                return Err("a gate reads its metric from an evaluation report in S3 (`report_path`); name the bucket(s) that hold the reports with --report-bucket".into());
            }
            st.push(json!({
                "Sid": "ReadEvaluationReports",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": report_buckets.iter().map(|b| format!("arn:{partition}:s3:::{b}/*")).collect::<Vec<_>>()
            }));
        }
    }
    Ok(json!({ "Version": "2012-10-17", "Statement": st }))
}

/// Every action in a policy document, for tests and for the denial test's bookkeeping.
pub fn actions(policy: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in policy["Statement"].as_array().into_iter().flatten() {
        for a in s["Action"].as_array().into_iter().flatten() {
            if let Some(a) = a.as_str() {
                out.push(a.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn reference() -> Config {
        crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mlops.toml"))
            .unwrap()
    }

    #[test]
    fn reference_config_policy_is_scoped() {
        let p = policy(&reference(), "us-east-1", "123456789012", &[]).unwrap();
        let st = p["Statement"].as_array().unwrap();
        let by = |sid: &str| {
            st.iter()
                .find(|s| s["Sid"] == sid)
                .unwrap_or_else(|| panic!("{sid} in {p:#}"))
                .clone()
        };
        assert_eq!(by("ReadCheckMetrics")["Resource"], "*");
        assert_eq!(
            by("StartAndFindPipelineRuns")["Resource"],
            json!(["arn:aws:sagemaker:us-east-1:123456789012:pipeline/ml-training-pipeline"])
        );
        assert_eq!(by("FollowPipelineRuns")["Resource"], json!(["arn:aws:sagemaker:us-east-1:123456789012:pipeline/ml-training-pipeline/execution/*"]));
        assert_eq!(
            by("StartFindAndFollowBuilds")["Resource"],
            json!(["arn:aws:codebuild:us-east-1:123456789012:project/mlops-project-build"])
        );
        assert_eq!(
            by("Notify")["Resource"],
            json!(["arn:aws:sns:us-east-1:123456789012:mlops-alerts"])
        );
        assert_eq!(
            by("ReadAndApproveModelPackages")["Resource"],
            json!([
                "arn:aws:sagemaker:us-east-1:123456789012:model-package/ml-model-package-group/*"
            ])
        );
        assert!(
            st.iter().all(|s| s["Sid"] != "ReadEvaluationReports"),
            "no S3 without report_path"
        );
    }

    #[test]
    fn nothing_for_unused_features() {
        let cfg = crate::config::parse(
            "[checks.c]\nschedule = \"every 1m\"\nnamespace = \"n\"\nmetric = \"m\"\nabove = 1\n[pipelines.unused]\npipeline_name = \"p\"\n",
            Path::new("x"),
        )
        .unwrap();
        let p = policy(&cfg, "eu-west-1", "111122223333", &[]).unwrap();
        assert_eq!(actions(&p), ["cloudwatch:GetMetricData"]);
    }

    #[test]
    fn report_gates_need_a_bucket() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mlops.toml"),
        )
        .unwrap()
        .replace(
            "metric = \"accuracy\"               # CustomerMetadataProperties",
            "report_path = \"a.b\"               # CustomerMetadataProperties",
        );
        let cfg = crate::config::parse(&text, Path::new("x")).unwrap();
        assert!(policy(&cfg, "us-east-1", "1", &[])
            .unwrap_err()
            .contains("--report-bucket"));
        let p = policy(&cfg, "us-east-1", "123456789012", &["reports".into()]).unwrap();
        assert!(p.to_string().contains("arn:aws:s3:::reports/*"));
    }
}
