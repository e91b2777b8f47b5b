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
    let pipeline_arn = |p: &str| {
        format!(
            "arn:{partition}:sagemaker:{region}:{account}:pipeline/{}",
            sm(p)
        )
    };

    if cfg.checks.values().any(|c| c.alarm.is_none()) {
        st.push(json!({
            "Sid": "ReadCheckMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:GetMetricData"],
            "Resource": "*"
        }));
    }
    let alarms: BTreeSet<&str> = cfg
        .checks
        .values()
        .filter_map(|c| c.alarm.as_deref())
        .collect();
    if !alarms.is_empty() {
        st.push(json!({
            "Sid": "ReadCheckAlarms",
            "Effect": "Allow",
            "Action": ["cloudwatch:DescribeAlarms"],
            "Resource": alarms.iter().map(|a| format!("arn:{partition}:cloudwatch:{region}:{account}:alarm:{a}")).collect::<Vec<_>>()
        }));
    }
    if let Some(ev) = &cfg.events {
        st.push(json!({
            "Sid": "ReadEvents",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            "Resource": [queue_arn(&ev.queue_url, partition, region, account)]
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
        let arns: Vec<String> = pipelines.iter().map(|p| pipeline_arn(p)).collect();
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
    // Declared pipelines: read, create, update and tag them, and pass their roles to SageMaker.
    let declared: Vec<(&str, &str)> = cfg
        .pipelines
        .values()
        .filter_map(|p| {
            p.declared
                .as_ref()
                .map(|d| (p.pipeline_name.as_str(), d.role_arn.as_str()))
        })
        .collect();
    if !declared.is_empty() {
        let arns: BTreeSet<String> = declared.iter().map(|(p, _)| pipeline_arn(p)).collect();
        let roles: BTreeSet<&str> = declared.iter().map(|(_, r)| *r).collect();
        st.push(json!({
            "Sid": "ApplyDeclaredPipelines",
            "Effect": "Allow",
            "Action": ["sagemaker:DescribePipeline", "sagemaker:CreatePipeline", "sagemaker:UpdatePipeline", "sagemaker:AddTags"],
            "Resource": arns.into_iter().collect::<Vec<_>>()
        }));
        st.push(json!({
            "Sid": "PassDeclaredPipelineRoles",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": roles.into_iter().collect::<Vec<_>>(),
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
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
    for d in cfg.pipelines.values().filter_map(|p| p.declared.as_ref()) {
        used.extend(d.notify.iter().map(String::as_str));
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
    // The preflight (`mlopsd doctor`, and the daemon at start and after a reload) reads every
    // resource the config names; these reads are its own (the rest it shares with the loop).
    let mut pre_actions: Vec<&str> = Vec::new();
    let mut pre_res: BTreeSet<String> = BTreeSet::new();
    if !cfg.pipelines.is_empty() {
        pre_actions.push("sagemaker:DescribePipeline");
        pre_res.extend(
            cfg.pipelines
                .values()
                .map(|p| pipeline_arn(&p.pipeline_name)),
        );
    }
    if !cfg.builds.is_empty() {
        pre_actions.push("codebuild:BatchGetProjects");
        pre_res.extend(cfg.builds.values().map(|b| {
            format!(
                "arn:{partition}:codebuild:{region}:{account}:project/{}",
                b.project_name
            )
        }));
    }
    if !cfg.notifiers.is_empty() {
        pre_actions.push("sns:GetTopicAttributes");
        pre_res.extend(cfg.notifiers.values().map(|n| n.topic_arn.clone()));
    }
    if !cfg.gates.is_empty() {
        pre_actions.push("sagemaker:DescribeModelPackageGroup");
        pre_res.extend(cfg.gates.values().map(|g| {
            format!(
                "arn:{partition}:sagemaker:{region}:{account}:model-package-group/{}",
                sm(&g.model_package_group)
            )
        }));
    }
    if !pre_actions.is_empty() {
        st.push(json!({
            "Sid": "Preflight",
            "Effect": "Allow",
            "Action": pre_actions,
            "Resource": pre_res.into_iter().collect::<Vec<_>>()
        }));
    }
    if cfg.checks.values().any(|c| c.alarm.is_none()) {
        // Explains a metric query without data (wrong namespace, metric or dimensions).
        st.push(json!({
            "Sid": "PreflightListMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:ListMetrics"],
            "Resource": "*"
        }));
    }
    if let Some(t) = &cfg.daemon.ha_table {
        // HA: the lease item (GetItem, conditional PutItem), the log (Query, and
        // TransactWriteItems of Puts with a ConditionCheck on the lease), its compaction
        // (snapshot PutItems, BatchWriteItem deletes), the start check.
        st.push(json!({
            "Sid": "HighAvailabilityTable",
            "Effect": "Allow",
            "Action": [
                "dynamodb:DescribeTable",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:ConditionCheckItem",
                "dynamodb:BatchWriteItem"
            ],
            "Resource": format!("arn:{partition}:dynamodb:{region}:{account}:table/{t}")
        }));
    }
    Ok(json!({ "Version": "2012-10-17", "Statement": st }))
}

/// The ARN of a queue from its URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`, or an
/// endpoint's `http://HOST/ACCOUNT/NAME`): region from the host where it says, else the config's.
pub fn queue_arn(url: &str, partition: &str, region: &str, account: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut parts = rest.split('/');
    let host = parts.next().unwrap_or_default();
    let acct = parts
        .next()
        .filter(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or(account);
    let name = parts.next().unwrap_or_default();
    let reg = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split('.').next())
        .unwrap_or(region);
    format!("arn:{partition}:sqs:{reg}:{acct}:{name}")
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

    /// The statement `sid` of a policy (panics, showing the policy, when it has none).
    fn statement(p: &Value, sid: &str) -> Value {
        p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .cloned()
            .unwrap_or_else(|| panic!("{sid} in {p:#}"))
    }

    fn reference() -> Config {
        crate::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mlops.toml"))
            .unwrap()
    }

    #[test]
    fn reference_config_policy_is_scoped() {
        let p = policy(&reference(), "us-east-1", "123456789012", &[]).unwrap();
        let st = p["Statement"].as_array().unwrap();
        let by = |sid: &str| statement(&p, sid);
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
        // The unused pipeline is only read, by the preflight.
        assert_eq!(
            actions(&p),
            [
                "cloudwatch:GetMetricData",
                "sagemaker:DescribePipeline",
                "cloudwatch:ListMetrics"
            ]
        );
        assert_eq!(
            p["Statement"][1]["Resource"],
            json!(["arn:aws:sagemaker:eu-west-1:111122223333:pipeline/p"])
        );
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

    #[test]
    fn events_and_alarm_checks_add_their_actions_only_when_used() {
        let text = "[events]\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/210987654321/mlopsd-events\"\n\n[notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n\n[checks.errors]\nalarm = \"endpoint-5xx\"\n\n[rules.page]\non_check = \"errors\"\nnotify = [\"ops\"]\n";
        let cfg = crate::config::parse(text, Path::new("t.toml")).unwrap();
        let p = policy(&cfg, "us-east-1", "123456789012", &[]).unwrap();
        let a = actions(&p);
        assert!(
            !a.contains(&"cloudwatch:GetMetricData".to_string()),
            "no metric check: {a:?}"
        );
        let by = |sid: &str| statement(&p, sid);
        assert_eq!(
            by("ReadCheckAlarms")["Resource"],
            json!(["arn:aws:cloudwatch:us-east-1:123456789012:alarm:endpoint-5xx"])
        );
        assert_eq!(
            by("ReadEvents")["Action"],
            json!([
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes"
            ])
        );
        assert_eq!(
            by("ReadEvents")["Resource"],
            json!(["arn:aws:sqs:eu-west-1:210987654321:mlopsd-events"])
        );
        let none = policy(&reference(), "us-east-1", "123456789012", &[]).unwrap();
        assert!(
            !actions(&none)
                .iter()
                .any(|x| x.starts_with("sqs:") || x == "cloudwatch:DescribeAlarms"),
            "not without [events] or alarm checks"
        );
        assert_eq!(
            queue_arn(
                "http://127.0.0.1:5000/123456789012/q",
                "aws",
                "us-east-1",
                "999"
            ),
            "arn:aws:sqs:us-east-1:123456789012:q"
        );
    }

    #[test]
    fn ha_adds_the_table_actions_on_its_arn_only() {
        let p = policy(&reference(), "us-east-1", "123456789012", &[]).unwrap();
        assert!(p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["Sid"] != "HighAvailabilityTable"));
        let mut cfg = reference();
        cfg.daemon.ha_table = Some("mlopsd-ha".into());
        let p = policy(&cfg, "us-east-1", "123456789012", &[]).unwrap();
        let s = statement(&p, "HighAvailabilityTable");
        assert_eq!(
            s["Resource"],
            "arn:aws:dynamodb:us-east-1:123456789012:table/mlopsd-ha"
        );
        let acts: Vec<&str> = s["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(acts.contains(&"dynamodb:ConditionCheckItem"));
        assert!(acts.iter().all(|a| a.starts_with("dynamodb:")));
        assert!(!acts.contains(&"dynamodb:*"));
    }

    #[test]
    fn declared_pipelines_add_apply_and_pass_role_only_when_declared() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases/x.toml");
        let text = "[notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:pipes\"\n\n[pipelines.churn]\npipeline_name = \"Churn-Training\"\ndefinition = \"pipelines/small.json\"\nrole_arn = \"arn:aws:iam::123456789012:role/SageMakerPipelineRole\"\nnotify = [\"ops\"]\n";
        let cfg = crate::config::parse(text, &dir).unwrap();
        let p = policy(&cfg, "us-east-1", "123456789012", &[]).unwrap();
        let by = |sid: &str| statement(&p, sid);
        assert_eq!(
            by("ApplyDeclaredPipelines")["Action"],
            json!([
                "sagemaker:DescribePipeline",
                "sagemaker:CreatePipeline",
                "sagemaker:UpdatePipeline",
                "sagemaker:AddTags"
            ])
        );
        assert_eq!(
            by("ApplyDeclaredPipelines")["Resource"],
            json!(["arn:aws:sagemaker:us-east-1:123456789012:pipeline/churn-training"])
        );
        let pass = by("PassDeclaredPipelineRoles");
        assert_eq!(pass["Action"], json!(["iam:PassRole"]));
        assert_eq!(
            pass["Resource"],
            json!(["arn:aws:iam::123456789012:role/SageMakerPipelineRole"])
        );
        assert_eq!(
            pass["Condition"]["StringEquals"]["iam:PassedToService"],
            "sagemaker.amazonaws.com"
        );
        // The pipeline's notifier may publish.
        assert_eq!(
            by("Notify")["Resource"],
            json!(["arn:aws:sns:us-east-1:123456789012:pipes"])
        );
        let none = policy(&reference(), "us-east-1", "123456789012", &[]).unwrap();
        assert!(
            !actions(&none)
                .iter()
                .any(|x| x == "iam:PassRole" || x == "sagemaker:CreatePipeline"),
            "not without a definition"
        );
    }
}
