//! Preflight: every AWS resource a config names, read from AWS (never changed) and given a
//! status a person can act on. `mlopsd doctor` prints it; the daemon runs the same checks at
//! start and after a reload that adds or changes items, and shows the problems on `/status`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Value};

use crate::aws::{Aws, AwsError, MetricQuery};
use crate::config::{Config, Declared};

/// What a resource's check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Ok,
    Missing,
    Forbidden,
    NoData,
    Unreachable,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Forbidden => "forbidden",
            Status::NoData => "no_data",
            Status::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource the config names, and what AWS said about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `pipeline`, `build`, `notifier`, `check`, `gate`, `events`.
    pub kind: &'static str,
    /// The config item's name (`[pipelines.NAME]`'s NAME).
    pub name: String,
    /// The AWS resource (pipeline name, topic ARN, …).
    pub resource: String,
    pub status: Status,
    pub detail: String,
}

impl Finding {
    /// The config item, as `[pipelines.NAME]`.
    pub fn config_item(&self) -> String {
        let section = match self.kind {
            "pipeline" => "pipelines",
            "build" => "builds",
            "notifier" => "notifiers",
            "check" => "checks",
            "gate" => "gates",
            "ha" => return "[daemon] ha_table".into(),
            _ => return "[events]".into(),
        };
        format!("[{section}.{}]", self.name)
    }
}

/// Which items to check (the daemon checks only what a reload added or changed).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `None`: every item of that kind.
    pub pipelines: Option<BTreeSet<String>>,
    pub builds: Option<BTreeSet<String>>,
    pub notifiers: Option<BTreeSet<String>>,
    pub checks: Option<BTreeSet<String>>,
    pub gates: Option<BTreeSet<String>>,
    pub events: bool,
    /// Leave out declared pipelines (the daemon's reconcile reads them anyway).
    pub skip_declared: bool,
}

impl Scope {
    pub fn all() -> Scope {
        Scope {
            events: true,
            ..Scope::default()
        }
    }
    pub fn none() -> Scope {
        Scope {
            pipelines: Some(BTreeSet::new()),
            builds: Some(BTreeSet::new()),
            notifiers: Some(BTreeSet::new()),
            checks: Some(BTreeSet::new()),
            gates: Some(BTreeSet::new()),
            events: false,
            skip_declared: false,
        }
    }
    pub fn is_empty(&self) -> bool {
        let empty = |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(BTreeSet::is_empty);
        empty(&self.pipelines)
            && empty(&self.builds)
            && empty(&self.notifiers)
            && empty(&self.checks)
            && empty(&self.gates)
            && !self.events
    }
}

fn wanted(s: &Option<BTreeSet<String>>, name: &str) -> bool {
    s.as_ref().is_none_or(|s| s.contains(name))
}

/// The IAM action an operation needs (as `iam-policy` names it).
fn action(e: &AwsError) -> String {
    // AWS names the denied action in its message ("… is not authorized to perform: X on …").
    if let Some(i) = e.message.find("perform: ") {
        let rest = &e.message[i + 9..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | '<' | '"' | ';'))
            .unwrap_or(rest.len());
        return rest[..end].to_string();
    }
    format!("{}:{}", e.service, e.operation)
}

/// Whether an AWS error is a denial.
pub fn is_denied(e: &AwsError) -> bool {
    e.code.contains("AccessDenied")
        || e.code == "AuthorizationError"
        || e.code == "UnauthorizedOperation"
        || e.code == "AuthorizationErrorException"
        || e.message.contains("not authorized to perform")
}

/// Whether AWS could not be reached at all (transport, credentials), as opposed to an answer.
pub fn is_unreachable(e: &AwsError) -> bool {
    matches!(
        e.code.as_str(),
        "ConnectionError" | "Timeout" | "NoCredentials" | "ResponseError"
    )
}

/// The status and detail an AWS error gives a resource.
fn from_error(e: &AwsError) -> (Status, String) {
    if is_denied(e) {
        (
            Status::Forbidden,
            format!("{} is denied: {}: {}", action(e), e.code, e.message),
        )
    } else if is_unreachable(e) {
        (Status::Unreachable, e.to_string())
    } else {
        (Status::Missing, e.to_string())
    }
}

fn finding(
    kind: &'static str,
    name: &str,
    resource: &str,
    status: Status,
    detail: impl Into<String>,
) -> Finding {
    Finding {
        kind,
        name: name.to_string(),
        resource: resource.to_string(),
        status,
        detail: detail.into(),
    }
}

/// Checks every resource in `scope`: batched like the daemon's own calls (`BatchGetProjects`,
/// `DescribeAlarms` and `GetMetricData` for many at once), read-only.
pub async fn check(aws: &Aws, cfg: &Config, scope: &Scope) -> Vec<Finding> {
    let mut out = Vec::new();
    let now = chrono::Utc::now();

    // Pipelines: DescribePipeline each (with a definition: whether it is in sync).
    let pipes: Vec<(&String, &crate::config::Pipeline)> = cfg
        .pipelines
        .iter()
        .filter(|(n, p)| {
            wanted(&scope.pipelines, n) && !(scope.skip_declared && p.declared.is_some())
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    for (i, (_, p)) in pipes.iter().enumerate() {
        let (aws, sem, name) = (aws.clone(), sem.clone(), p.pipeline_name.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, aws.describe_pipeline(&name).await)
        });
    }
    let mut answers = vec![None; pipes.len()];
    while let Some(Ok((i, a))) = tasks.join_next().await {
        answers[i] = Some(a);
    }
    for ((name, p), a) in pipes.iter().zip(answers) {
        let f = |s, d: String| finding("pipeline", name, &p.pipeline_name, s, d);
        out.push(match a {
            None => f(Status::Unreachable, "the call did not complete".into()),
            Some(Err(e)) => {
                let (s, d) = from_error(&e);
                f(s, d)
            }
            Some(Ok(None)) => match &p.declared {
                Some(d) => f(
                    Status::Ok,
                    format!("not created yet: the daemon creates it from {}", d.file),
                ),
                None => f(
                    Status::Missing,
                    format!(
                        "no SageMaker pipeline named \"{}\" in {} (create it, or declare it with `definition`)",
                        p.pipeline_name, aws.region
                    ),
                ),
            },
            Some(Ok(Some(remote))) => match &p.declared {
                None => f(Status::Ok, "exists".into()),
                Some(d) => f(Status::Ok, sync_detail(&remote, d)),
            },
        });
    }

    // Build projects: BatchGetProjects, up to 100 names a call.
    let builds: Vec<(&String, &String)> = cfg
        .builds
        .iter()
        .filter(|(n, _)| wanted(&scope.builds, n))
        .map(|(n, b)| (n, &b.project_name))
        .collect();
    let names: Vec<String> = builds
        .iter()
        .map(|(_, p)| (*p).clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut missing: Result<BTreeSet<String>, AwsError> = Ok(BTreeSet::new());
    for chunk in names.chunks(100) {
        match aws.missing_projects(chunk).await {
            Ok(m) => {
                if let Ok(all) = missing.as_mut() {
                    all.extend(m);
                }
            }
            Err(e) => {
                missing = Err(e);
                break;
            }
        }
    }
    for (name, project) in builds {
        let f = |s, d: String| finding("build", name, project, s, d);
        out.push(match &missing {
            Err(e) => {
                let (s, d) = from_error(e);
                f(s, d)
            }
            Ok(m) if m.contains(project) => f(
                Status::Missing,
                format!("no CodeBuild project named \"{project}\" in {}", aws.region),
            ),
            Ok(_) => f(Status::Ok, "exists".into()),
        });
    }

    // Notifier topics: GetTopicAttributes each.
    for (name, n) in cfg
        .notifiers
        .iter()
        .filter(|(n, _)| wanted(&scope.notifiers, n))
    {
        let f = |s, d: String| finding("notifier", name, &n.topic_arn, s, d);
        out.push(match aws.topic_exists(&n.topic_arn).await {
            Ok(true) => f(Status::Ok, "exists".into()),
            Ok(false) => f(Status::Missing, format!("no SNS topic {}", n.topic_arn)),
            Err(e) => {
                let (s, d) = from_error(&e);
                f(s, d)
            }
        });
    }

    // Gates: their model package group.
    for (name, g) in cfg.gates.iter().filter(|(n, _)| wanted(&scope.gates, n)) {
        let f = |s, d: String| finding("gate", name, &g.model_package_group, s, d);
        out.push(
            match aws.package_group_exists(&g.model_package_group).await {
                Ok(true) => f(Status::Ok, "exists".into()),
                Ok(false) => f(
                    Status::Missing,
                    format!(
                        "no model package group named \"{}\" in {}",
                        g.model_package_group, aws.region
                    ),
                ),
                Err(e) => {
                    let (s, d) = from_error(&e);
                    f(s, d)
                }
            },
        );
    }

    // Checks: alarms with DescribeAlarms (100 a call), metrics with GetMetricData over their
    // last two periods (batched as the daemon does); no data is then explained with ListMetrics.
    let checks: Vec<(&String, &std::sync::Arc<crate::config::Check>)> = cfg
        .checks
        .iter()
        .filter(|(n, _)| wanted(&scope.checks, n))
        .collect();
    let alarms: Vec<String> = checks
        .iter()
        .filter_map(|(_, c)| c.alarm.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let alarm_states = if alarms.is_empty() {
        Ok(Default::default())
    } else {
        aws.alarm_states(&alarms).await
    };
    let metric_checks: Vec<(&String, &std::sync::Arc<crate::config::Check>)> = checks
        .iter()
        .filter(|(_, c)| c.alarm.is_none())
        .copied()
        .collect();
    let queries: Vec<MetricQuery<'_>> = metric_checks
        .iter()
        .map(|(_, c)| MetricQuery::of(c))
        .collect();
    let (values, _) = if queries.is_empty() {
        (Vec::new(), 0)
    } else {
        aws.latest_values(&queries, now).await
    };
    let mut values = values.into_iter();
    for (name, c) in &checks {
        if let Some(alarm) = &c.alarm {
            let f = |s, d: String| finding("check", name, alarm, s, d);
            out.push(match &alarm_states {
                Ok(m) => match m.get(alarm) {
                    Some(state) => f(Status::Ok, format!("alarm is {state}")),
                    None => f(
                        Status::Missing,
                        format!("no CloudWatch alarm named \"{alarm}\" in {}", aws.region),
                    ),
                },
                Err(e) => {
                    let (s, d) = from_error(e);
                    f(s, d)
                }
            });
            continue;
        }
        let resource = format!("{}/{}", c.namespace, c.metric);
        let f = |s, d: String| finding("check", name, &resource, s, d);
        let v = values.next();
        out.push(match v {
            Some(Ok(Some(v))) => f(Status::Ok, format!("latest value {v}")),
            Some(Ok(None)) => f(Status::NoData, explain_no_data(aws, c).await),
            Some(Err(e)) => {
                let (s, d) = from_error(&e);
                f(s, d)
            }
            None => f(Status::Unreachable, "no answer for this query".into()),
        });
    }

    // The events queue.
    if scope.events {
        if let Some(ev) = &cfg.events {
            let f = |s, d: String| finding("events", "events", &ev.queue_url, s, d);
            out.push(match aws.queue_exists(&ev.queue_url).await {
                Ok(true) => f(Status::Ok, "exists".into()),
                Ok(false) => f(Status::Missing, format!("no SQS queue at {}", ev.queue_url)),
                Err(e) => {
                    let (s, d) = from_error(&e);
                    f(s, d)
                }
            });
        }
    }
    out
}

fn sync_detail(remote: &crate::aws::RemotePipeline, d: &Declared) -> String {
    let aws = crate::config::definition::state_hash(
        &crate::config::definition::canonical_text(&remote.definition),
        &remote.role_arn,
    );
    if aws == d.state_hash() {
        format!("exists, in sync with {}", d.file)
    } else {
        let n = crate::diff::compare(Some(remote), d);
        let count = match n {
            crate::diff::Verdict::Update(c) => c.len(),
            _ => 0,
        };
        format!(
            "exists, differs from {} ({count} change(s); `mlopsd diff` shows them, the daemon applies them)",
            d.file
        )
    }
}

/// Why a metric query has no data: the metric does not exist in the namespace, or it exists
/// with other dimensions (the classic typo), or it has no recent datapoints.
async fn explain_no_data(aws: &Aws, c: &crate::config::Check) -> String {
    let window = crate::duration::format_duration(c.period * 2);
    let dims = |d: &[(String, String)]| {
        if d.is_empty() {
            "no dimensions".to_string()
        } else {
            d.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match aws.metric_dimension_sets(&c.namespace, &c.metric).await {
        Ok(sets) if sets.is_empty() => format!(
            "no datapoints over the last {window}: CloudWatch has no metric \"{}\" in namespace \"{}\" (check both names)",
            c.metric, c.namespace
        ),
        Ok(sets) => {
            let want: BTreeMap<&str, &str> = c
                .dimensions
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let exact = sets.iter().any(|s| {
                s.len() == want.len()
                    && s.iter().all(|(k, v)| want.get(k.as_str()) == Some(&v.as_str()))
            });
            if exact {
                format!(
                    "no datapoints over the last {window} for {} ({}): the metric exists with these dimensions but has no recent data",
                    c.metric,
                    dims(&c.dimensions)
                )
            } else {
                let shown: Vec<String> = sets.iter().take(3).map(|s| format!("{{{}}}", dims(s))).collect();
                format!(
                    "no datapoints over the last {window}: the metric exists, but not with dimensions {{{}}}; it has {}{}",
                    dims(&c.dimensions),
                    shown.join(", "),
                    if sets.len() > 3 { format!(" and {} more", sets.len() - 3) } else { String::new() }
                )
            }
        }
        Err(e) => format!(
            "no datapoints over the last {window} for {} ({}); could not list the metric to say why: {e}",
            c.metric,
            dims(&c.dimensions)
        ),
    }
}

/// The caller, from STS `GetCallerIdentity`.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub arn: String,
    pub account: String,
    pub region: String,
    pub endpoint: String,
}

/// `mlopsd doctor`: prints the identity and one line per resource; returns the exit code
/// (0 all ok, 1 some problem, 2 AWS could not be reached at all).
/// The HA table: it exists with the key schema mlopsd needs.
async fn ha_finding(cfg: &Config, table: &str) -> Finding {
    use crate::aws::HaCheckError as E;
    let f = |status, detail: String| Finding {
        kind: "ha",
        name: table.to_string(),
        resource: format!("dynamodb table {table}"),
        status,
        detail,
    };
    match crate::aws::HaTable::new(&cfg.aws, table)
        .await
        .check()
        .await
    {
        Ok(()) => f(Status::Ok, "exists, keys pk (S) and sk (S)".into()),
        Err(E::Missing(m)) | Err(E::Schema(m)) => f(Status::Missing, m),
        Err(E::Unreachable(m)) if m.contains("AccessDenied") => f(Status::Forbidden, m),
        Err(E::Unreachable(m)) => f(Status::Unreachable, m),
    }
}

pub async fn run(cfg: &Config, as_json: bool) -> u8 {
    let aws = Aws::new(&cfg.aws).await;
    let endpoint = cfg
        .aws
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("AWS ({})", aws.region));
    let identity = aws.caller_identity().await;
    let (identity, findings) = match identity {
        Err(e)
            if is_unreachable(&e)
                || e.code == "InvalidClientTokenId"
                || e.code == "SignatureDoesNotMatch"
                || e.code == "ExpiredToken" =>
        {
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"identity": null, "error": e.to_string(), "resources": []})
                    )
                    .unwrap_or_default()
                );
            } else {
                println!("AWS could not be reached: {e}");
            }
            return 2;
        }
        Err(e) => (Err(e), check(&aws, cfg, &Scope::all()).await),
        Ok((arn, account)) => (
            Ok(Identity {
                arn,
                account,
                region: aws.region.clone(),
                endpoint: endpoint.clone(),
            }),
            check(&aws, cfg, &Scope::all()).await,
        ),
    };
    let mut findings = findings;
    if let Some(t) = &cfg.daemon.ha_table {
        findings.push(ha_finding(cfg, t).await);
    }
    let all_unreachable =
        !findings.is_empty() && findings.iter().all(|f| f.status == Status::Unreachable);
    let code = if all_unreachable {
        2
    } else if findings.iter().all(|f| f.status == Status::Ok) && identity.is_ok() {
        0
    } else {
        1
    };
    if as_json {
        let id = match &identity {
            Ok(i) => {
                json!({"arn": i.arn, "account": i.account, "region": i.region, "endpoint": i.endpoint})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        let res: Vec<Value> = findings
            .iter()
            .map(|f| json!({"kind": f.kind, "name": f.name, "resource": f.resource, "status": f.status.as_str(), "detail": f.detail}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"identity": id, "resources": res}))
                .unwrap_or_default()
        );
        return code;
    }
    match &identity {
        Ok(i) => println!(
            "identity: {} (account {}), region {}, endpoint {}",
            i.arn, i.account, i.region, i.endpoint
        ),
        Err(e) => println!("identity: unknown ({e})"),
    }
    let w = findings
        .iter()
        .map(|f| f.config_item().chars().count())
        .max()
        .unwrap_or(0);
    for f in &findings {
        println!(
            "{:<11} {:<w$}  {}: {}",
            f.status.as_str(),
            f.config_item(),
            f.resource,
            f.detail
        );
    }
    let problems = findings.iter().filter(|f| f.status != Status::Ok).count();
    println!(
        "{} resource(s): {} ok, {problems} with a problem",
        findings.len(),
        findings.len() - problems
    );
    code
}
