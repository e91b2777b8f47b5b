//! `mlopsd iam-policy`: the least-privilege IAM policy this exact config needs. Each action is
//! scoped to the ARNs the config names; `"Resource": "*"` only where AWS allows nothing
//! narrower (`cloudwatch:GetMetricData`, `sagemaker:ListModelPackages`); nothing for features the
//! config does not use. Pure: the account id is passed in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::config::{Config, GateMetric, RunKind};

/// SageMaker resource names appear lowercased in ARNs.
fn sm(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// How this account's ARNs are spelled.
struct Arns<'a> {
    partition: &'static str,
    region: &'a str,
    account: &'a str,
}

impl Arns<'_> {
    fn pipeline(&self, p: &str) -> String {
        let Arns {
            partition,
            region,
            account,
        } = self;
        format!(
            "arn:{partition}:sagemaker:{region}:{account}:pipeline/{}",
            sm(p)
        )
    }
    fn project(&self, p: &str) -> String {
        let Arns {
            partition,
            region,
            account,
        } = self;
        format!("arn:{partition}:codebuild:{region}:{account}:project/{p}")
    }
    fn sagemaker(&self, what: &str) -> String {
        let Arns {
            partition,
            region,
            account,
        } = self;
        format!("arn:{partition}:sagemaker:{region}:{account}:{what}")
    }
}

/// A statement allowing `actions` on `resource`.
fn allow(sid: &str, actions: &[&str], resource: impl Into<Value>) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource.into()})
}

/// The policy document for `cfg` in `region` and `account`. `report_buckets` are the S3 buckets
/// holding evaluation reports, needed when a gate uses `report_path`.
pub(crate) fn policy(
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
    let a = Arns {
        partition,
        region,
        account,
    };
    let mut st: Vec<Value> = Vec::new();
    st.extend(checks(cfg, &a));
    st.extend(report_checks(cfg, &a, report_buckets)?);
    st.extend(events(cfg, &a));
    st.extend(runs(cfg, &a));
    st.extend(notify(cfg));
    st.extend(gates(cfg, &a, report_buckets)?);
    st.extend(endpoints(cfg, &a));
    st.extend(preflight(cfg, &a));
    st.extend(ha(cfg, &a));
    Ok(json!({ "Version": "2012-10-17", "Statement": st }))
}

/// Metric checks read `GetMetricData` (no narrower resource); alarm checks their alarms.
fn checks(cfg: &Config, a: &Arns<'_>) -> Vec<Value> {
    let mut st = Vec::new();
    if cfg.checks.values().any(|c| c.metric().is_some()) {
        st.push(allow(
            "ReadCheckMetrics",
            &["cloudwatch:GetMetricData"],
            "*",
        ));
    }
    let alarms: BTreeSet<&str> = cfg.checks.values().filter_map(|c| c.alarm()).collect();
    if !alarms.is_empty() {
        let Arns {
            partition,
            region,
            account,
        } = a;
        let arns: Vec<String> = alarms
            .iter()
            .map(|x| format!("arn:{partition}:cloudwatch:{region}:{account}:alarm:{x}"))
            .collect();
        st.push(allow(
            "ReadCheckAlarms",
            &["cloudwatch:DescribeAlarms"],
            arns,
        ));
    }
    st
}

/// Report checks: a monitor's schedule and the processing jobs of its executions (named by
/// Model Monitor, so any); a report prefix listed (`s3:prefix` condition) and its objects
/// read. A monitor's reports are where its schedule writes them: the `--report-bucket`s.
fn report_checks(
    cfg: &Config,
    a: &Arns<'_>,
    report_buckets: &[String],
) -> Result<Vec<Value>, String> {
    let mut st = Vec::new();
    let partition = a.partition;
    let monitors: BTreeSet<&str> = cfg
        .checks
        .values()
        .filter_map(|c| match &c.source {
            crate::config::Source::Monitor(m) => Some(m.schedule.as_str()),
            _ => None,
        })
        .collect();
    if !monitors.is_empty() {
        st.push(allow(
            "ReadMonitoringSchedules",
            &["sagemaker:DescribeMonitoringSchedule"],
            monitors
                .iter()
                .map(|m| a.sagemaker(&format!("monitoring-schedule/{}", sm(m))))
                .collect::<Vec<_>>(),
        ));
        st.push(allow(
            "ReadMonitoringExecutions",
            &["sagemaker:DescribeProcessingJob"],
            a.sagemaker("processing-job/*"),
        ));
        if report_buckets.is_empty() {
            return Err("a check reads a Model Monitor schedule (`monitor`); name the bucket(s) its reports are written to (the schedule's MonitoringOutputs) with --report-bucket".into());
        }
        st.push(allow(
            "ReadMonitorReports",
            &["s3:GetObject"],
            report_buckets
                .iter()
                .map(|b| format!("arn:{partition}:s3:::{b}/*"))
                .collect::<Vec<_>>(),
        ));
    }
    let mut prefixes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in cfg.checks.values() {
        if let Some(r) = c.report() {
            prefixes.entry(&r.bucket).or_default().insert(&r.prefix);
        }
    }
    for (i, (bucket, ps)) in prefixes.iter().enumerate() {
        let list: Vec<String> = ps.iter().map(|p| format!("{p}*")).collect();
        let mut list_st = allow(
            &format!("ListReportPrefixes{}", i + 1),
            &["s3:ListBucket"],
            format!("arn:{partition}:s3:::{bucket}"),
        );
        list_st["Condition"] = json!({"StringLike": {"s3:prefix": list}});
        st.push(list_st);
        st.push(allow(
            &format!("ReadReports{}", i + 1),
            &["s3:GetObject"],
            ps.iter()
                .map(|p| format!("arn:{partition}:s3:::{bucket}/{p}*"))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(st)
}

/// `[events]`: the queue, long-polled and its handled messages deleted.
fn events(cfg: &Config, a: &Arns<'_>) -> Option<Value> {
    let ev = cfg.events.as_ref()?;
    Some(allow(
        "ReadEvents",
        &[
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
        ],
        vec![queue_arn(&ev.queue_url, a.partition, a.region, a.account)],
    ))
}

/// Starting and following runs of the targets some rule starts (a pipeline defined but never
/// started needs nothing), and applying declared pipelines.
fn runs(cfg: &Config, a: &Arns<'_>) -> Vec<Value> {
    let mut pipelines = BTreeSet::new();
    let mut projects = BTreeSet::new();
    for s in cfg.rules.values().flat_map(|r| &r.start) {
        let t = s.target();
        match t.kind {
            RunKind::Pipeline => {
                pipelines.extend(cfg.pipelines.get(&t.name).map(|p| &p.pipeline_name))
            }
            RunKind::Build => projects.extend(cfg.builds.get(&t.name).map(|b| &b.project_name)),
        }
    }
    let mut st = Vec::new();
    if !pipelines.is_empty() {
        let arns: Vec<String> = pipelines.iter().map(|p| a.pipeline(p)).collect();
        let execs: Vec<String> = arns.iter().map(|x| format!("{x}/execution/*")).collect();
        st.push(allow(
            "StartAndFindPipelineRuns",
            &[
                "sagemaker:StartPipelineExecution",
                "sagemaker:ListPipelineExecutions",
            ],
            arns,
        ));
        st.push(allow(
            "FollowPipelineRuns",
            &["sagemaker:DescribePipelineExecution"],
            execs,
        ));
    }
    st.extend(declared(cfg, a));
    if !projects.is_empty() {
        let arns: Vec<String> = projects.iter().map(|p| a.project(p)).collect();
        st.push(allow(
            "StartFindAndFollowBuilds",
            &[
                "codebuild:StartBuild",
                "codebuild:BatchGetBuilds",
                "codebuild:ListBuildsForProject",
            ],
            arns,
        ));
    }
    st
}

/// Declared pipelines: read, create, update and tag them, and pass their roles to SageMaker.
fn declared(cfg: &Config, a: &Arns<'_>) -> Vec<Value> {
    let declared: Vec<(&str, &str)> = cfg
        .pipelines
        .values()
        .filter_map(|p| {
            p.declared
                .as_ref()
                .map(|d| (p.pipeline_name.as_str(), d.role_arn.as_str()))
        })
        .collect();
    if declared.is_empty() {
        return Vec::new();
    }
    let arns: BTreeSet<String> = declared.iter().map(|(p, _)| a.pipeline(p)).collect();
    let roles: BTreeSet<&str> = declared.iter().map(|(_, r)| *r).collect();
    let mut pass = allow(
        "PassDeclaredPipelineRoles",
        &["iam:PassRole"],
        roles.into_iter().collect::<Vec<_>>(),
    );
    pass["Condition"] = json!({"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}});
    vec![
        allow(
            "ApplyDeclaredPipelines",
            &[
                "sagemaker:DescribePipeline",
                "sagemaker:CreatePipeline",
                "sagemaker:UpdatePipeline",
                "sagemaker:AddTags",
            ],
            arns.into_iter().collect::<Vec<_>>(),
        ),
        pass,
    ]
}

/// The topics of notifiers some rule, gate or declared pipeline uses.
fn notify(cfg: &Config) -> Option<Value> {
    let used: BTreeSet<&str> = cfg
        .rules
        .values()
        .flat_map(|r| &r.notify)
        .chain(cfg.gates.values().flat_map(|g| &g.notify))
        .chain(cfg.endpoints.values().flat_map(|e| &e.notify))
        .chain(
            cfg.pipelines
                .values()
                .filter_map(|p| p.declared.as_ref())
                .flat_map(|d| &d.notify),
        )
        .map(String::as_str)
        .collect();
    let topics: BTreeSet<String> = used
        .iter()
        .filter_map(|n| cfg.notifiers.get(*n))
        .map(|n| n.topic_arn.clone())
        .collect();
    (!topics.is_empty()).then(|| {
        allow(
            "Notify",
            &["sns:Publish"],
            topics.into_iter().collect::<Vec<_>>(),
        )
    })
}

/// Gates: list pending packages (no narrower resource), read and approve them in their
/// groups, read evaluation reports from the buckets given.
fn gates(cfg: &Config, a: &Arns<'_>, report_buckets: &[String]) -> Result<Vec<Value>, String> {
    if cfg.gates.is_empty() {
        return Ok(Vec::new());
    }
    let groups: BTreeSet<String> = cfg
        .gates
        .values()
        .map(|g| g.model_package_group.clone())
        .collect();
    let mut st = vec![
        allow(
            "ListPendingModelPackages",
            &["sagemaker:ListModelPackages"],
            "*",
        ),
        allow(
            "ReadAndApproveModelPackages",
            &[
                "sagemaker:DescribeModelPackage",
                "sagemaker:UpdateModelPackage",
            ],
            groups
                .iter()
                .map(|g| a.sagemaker(&format!("model-package/{}/*", sm(g))))
                .collect::<Vec<_>>(),
        ),
    ];
    if cfg
        .gates
        .values()
        .any(|g| matches!(g.metric, GateMetric::Report(_)))
    {
        if report_buckets.is_empty() {
            return Err("a gate reads its metric from an evaluation report in S3 (`report_path`); name the bucket(s) that hold the reports with --report-bucket".into());
        }
        let partition = a.partition;
        st.push(allow(
            "ReadEvaluationReports",
            &["s3:GetObject"],
            report_buckets
                .iter()
                .map(|b| format!("arn:{partition}:s3:::{b}/*"))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(st)
}

/// The names mlopsd gives an endpoint's models and configs (`NAME-vN-HASH`, the name cut so
/// the whole fits 63 characters), as an ARN pattern.
fn resource_prefix(endpoint_name: &str) -> String {
    // "-v4294967295-" + 8 hash characters is the longest tail: a name of up to 42
    // characters is never cut.
    let n = sm(endpoint_name);
    if n.len() <= 42 {
        format!("{n}-v*")
    } else {
        format!("{}*", &n[..42])
    }
}

/// `[endpoints.*]`: read the group's Approved versions (ListModelPackages has no narrower
/// resource), describe and make the models, configs and the endpoint under their own names
/// (tagged at creation: `AddTags`), update it, delete older models and configs, read the
/// rollback alarms, pass the model's role; `UpdateModelPackage` with `on_rollback = "reject"`,
/// `ListTags` on the group's packages with `require_tag`.
fn endpoints(cfg: &Config, a: &Arns<'_>) -> Vec<Value> {
    use crate::config::OnRollback;
    if cfg.endpoints.is_empty() {
        return Vec::new();
    }
    let eps: Vec<&crate::config::Endpoint> = cfg.endpoints.values().map(|e| &**e).collect();
    let mut hosting: BTreeSet<String> = BTreeSet::new();
    for e in &eps {
        hosting.insert(a.sagemaker(&format!("endpoint/{}", sm(&e.endpoint_name))));
        let prefix = resource_prefix(&e.endpoint_name);
        hosting.insert(a.sagemaker(&format!("endpoint-config/{prefix}")));
        hosting.insert(a.sagemaker(&format!("model/{prefix}")));
    }
    let mut st = vec![
        allow(
            "ListApprovedModelPackages",
            &["sagemaker:ListModelPackages"],
            "*",
        ),
        allow(
            "DeployToEndpoints",
            &[
                "sagemaker:DescribeEndpoint",
                "sagemaker:DescribeEndpointConfig",
                "sagemaker:DescribeModel",
                "sagemaker:CreateModel",
                "sagemaker:CreateEndpointConfig",
                "sagemaker:CreateEndpoint",
                "sagemaker:UpdateEndpoint",
                "sagemaker:DeleteModel",
                "sagemaker:DeleteEndpointConfig",
                "sagemaker:AddTags",
            ],
            hosting.into_iter().collect::<Vec<_>>(),
        ),
    ];
    let roles: BTreeSet<&str> = eps.iter().map(|e| e.execution_role_arn.as_str()).collect();
    let mut pass = allow(
        "PassEndpointModelRoles",
        &["iam:PassRole"],
        roles.into_iter().collect::<Vec<_>>(),
    );
    pass["Condition"] = json!({"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}});
    st.push(pass);
    let Arns {
        partition,
        region,
        account,
    } = a;
    let alarms: BTreeSet<String> = eps
        .iter()
        .flat_map(|e| &e.rollback_alarms)
        .map(|x| format!("arn:{partition}:cloudwatch:{region}:{account}:alarm:{x}"))
        .collect();
    if !alarms.is_empty() {
        st.push(allow(
            "ReadRollbackAlarms",
            &["cloudwatch:DescribeAlarms"],
            alarms.into_iter().collect::<Vec<_>>(),
        ));
    }
    let packages = |pred: &dyn Fn(&crate::config::Endpoint) -> bool| -> Vec<String> {
        eps.iter()
            .filter(|e| pred(e))
            .map(|e| a.sagemaker(&format!("model-package/{}/*", sm(&e.model_package_group))))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let reject = packages(&|e| e.on_rollback == OnRollback::Reject);
    if !reject.is_empty() {
        st.push(allow(
            "RejectRolledBackVersions",
            &["sagemaker:UpdateModelPackage"],
            reject,
        ));
    }
    let tagged = packages(&|e| e.require_tag.is_some());
    if !tagged.is_empty() {
        st.push(allow("ReadPromotionTags", &["sagemaker:ListTags"], tagged));
    }
    st
}

/// The preflight (`mlopsd doctor`, and the daemon at start and after a reload) reads every
/// resource the config names; these reads are its own (the rest it shares with the loop).
fn preflight(cfg: &Config, a: &Arns<'_>) -> Vec<Value> {
    let mut actions: Vec<&str> = Vec::new();
    let mut res: BTreeSet<String> = BTreeSet::new();
    if !cfg.pipelines.is_empty() {
        actions.push("sagemaker:DescribePipeline");
        res.extend(cfg.pipelines.values().map(|p| a.pipeline(&p.pipeline_name)));
    }
    if !cfg.builds.is_empty() {
        actions.push("codebuild:BatchGetProjects");
        res.extend(cfg.builds.values().map(|b| a.project(&b.project_name)));
    }
    if !cfg.notifiers.is_empty() {
        actions.push("sns:GetTopicAttributes");
        res.extend(cfg.notifiers.values().map(|n| n.topic_arn.clone()));
    }
    let groups: BTreeSet<&str> = cfg
        .gates
        .values()
        .map(|g| g.model_package_group.as_str())
        .chain(
            cfg.endpoints
                .values()
                .map(|e| e.model_package_group.as_str()),
        )
        .collect();
    if !groups.is_empty() {
        actions.push("sagemaker:DescribeModelPackageGroup");
        res.extend(
            groups
                .iter()
                .map(|g| a.sagemaker(&format!("model-package-group/{}", sm(g)))),
        );
    }
    let mut st = Vec::new();
    let roles: BTreeSet<&str> = cfg
        .endpoints
        .values()
        .map(|e| e.execution_role_arn.as_str())
        .collect();
    if !roles.is_empty() {
        st.push(allow(
            "PreflightEndpointRoles",
            &["iam:GetRole"],
            roles.into_iter().collect::<Vec<_>>(),
        ));
    }
    if !actions.is_empty() {
        st.push(allow(
            "Preflight",
            &actions,
            res.into_iter().collect::<Vec<_>>(),
        ));
    }
    if cfg.checks.values().any(|c| c.metric().is_some()) {
        // Explains a metric query without data (wrong namespace, metric or dimensions).
        st.push(allow(
            "PreflightListMetrics",
            &["cloudwatch:ListMetrics"],
            "*",
        ));
    }
    st
}

/// HA: the lease item (GetItem, conditional PutItem), the log (Query, and TransactWriteItems
/// of Puts with a ConditionCheck on the lease), its compaction (snapshot PutItems,
/// BatchWriteItem deletes), the start check.
fn ha(cfg: &Config, a: &Arns<'_>) -> Option<Value> {
    let t = cfg.daemon.ha_table.as_ref()?;
    let Arns {
        partition,
        region,
        account,
    } = a;
    Some(allow(
        "HighAvailabilityTable",
        &[
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:ConditionCheckItem",
            "dynamodb:BatchWriteItem",
        ],
        format!("arn:{partition}:dynamodb:{region}:{account}:table/{t}"),
    ))
}

/// The ARN of a queue from its URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`, or an
/// endpoint's `http://HOST/ACCOUNT/NAME`): region from the host where it says, else the config's.
pub(crate) fn queue_arn(url: &str, partition: &str, region: &str, account: &str) -> String {
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
    fn endpoints_get_their_own_names_roles_alarms_and_tags() {
        let spec = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/SPEC.md"),
        )
        .unwrap();
        let start = spec.find("[endpoints.churn-staging]").unwrap();
        let end = start + spec[start..].find("```").unwrap();
        let text = format!(
            "[notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n[builds.churn-ci]\nproject_name = \"p\"\n{}",
            &spec[start..end]
        );
        let cfg = crate::config::parse(&text, Path::new("x")).unwrap();
        let p = policy(&cfg, "us-east-1", "123456789012", &[]).unwrap();
        let deploy = statement(&p, "DeployToEndpoints");
        let res: Vec<&str> = deploy["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(res.contains(&"arn:aws:sagemaker:us-east-1:123456789012:endpoint/churn-prod"));
        assert!(res.contains(
            &"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/churn-staging-v*"
        ));
        assert!(res.contains(&"arn:aws:sagemaker:us-east-1:123456789012:model/churn-prod-v*"));
        assert!(!res.contains(&"*"), "never every endpoint");
        let acts = actions(&p);
        for a in [
            "sagemaker:CreateModel",
            "sagemaker:CreateEndpointConfig",
            "sagemaker:CreateEndpoint",
            "sagemaker:UpdateEndpoint",
            "sagemaker:DeleteEndpointConfig",
            "sagemaker:AddTags",
            "iam:PassRole",
            "cloudwatch:DescribeAlarms",
            "sagemaker:ListTags",
            "iam:GetRole",
        ] {
            assert!(acts.iter().any(|x| x == a), "{a} in {acts:?}");
        }
        assert_eq!(
            statement(&p, "PassEndpointModelRoles")["Condition"]["StringEquals"]
                ["iam:PassedToService"],
            "sagemaker.amazonaws.com"
        );
        assert_eq!(
            statement(&p, "ReadPromotionTags")["Resource"],
            json!([
                "arn:aws:sagemaker:us-east-1:123456789012:model-package/ml-model-package-group/*"
            ])
        );
        // No `on_rollback = "reject"` in SPEC's example: no UpdateModelPackage.
        assert!(!acts.iter().any(|x| x == "sagemaker:UpdateModelPackage"));
        assert_eq!(
            resource_prefix(&"a".repeat(50)),
            format!("{}*", "a".repeat(42))
        );
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
