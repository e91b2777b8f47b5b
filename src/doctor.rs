//! Preflight: every AWS resource a config names, read from AWS (never changed) and given a
//! status a person can act on. `mlopsd doctor` prints it; the daemon runs the same checks at
//! start and after a reload that adds or changes items, and shows the problems on `/status`.
//! It reads through the port (`cloud`), never the adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::cloud::{AwsError, Cloud, ErrorKind, HaCheckError, HaLog, MetricQuery, RemotePipeline};
use crate::config::{Config, Declared, Source};

/// What a resource's check found.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Ok,
    Missing,
    Forbidden,
    NoData,
    Unreachable,
}

impl Status {
    pub(crate) fn as_str(&self) -> &'static str {
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

/// Which kind of config item a resource belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResourceKind {
    Pipeline,
    Build,
    Notifier,
    Check,
    Gate,
    Events,
    Ha,
    Endpoint,
}

impl ResourceKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Pipeline => "pipeline",
            ResourceKind::Build => "build",
            ResourceKind::Notifier => "notifier",
            ResourceKind::Check => "check",
            ResourceKind::Gate => "gate",
            ResourceKind::Events => "events",
            ResourceKind::Ha => "ha",
            ResourceKind::Endpoint => "endpoint",
        }
    }
}

/// One resource the config names, and what AWS said about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    pub kind: ResourceKind,
    /// The config item's name (`[pipelines.NAME]`'s NAME).
    pub name: String,
    /// The AWS resource (pipeline name, topic ARN, …).
    pub resource: String,
    pub status: Status,
    pub detail: String,
}

impl Finding {
    /// The config item, as `[pipelines.NAME]`.
    pub(crate) fn config_item(&self) -> String {
        let section = match self.kind {
            ResourceKind::Pipeline => "pipelines",
            ResourceKind::Build => "builds",
            ResourceKind::Notifier => "notifiers",
            ResourceKind::Check => "checks",
            ResourceKind::Gate => "gates",
            ResourceKind::Endpoint => "endpoints",
            ResourceKind::Ha => return "[daemon] ha_table".into(),
            ResourceKind::Events => return "[events]".into(),
        };
        format!("[{section}.{}]", self.name)
    }
}

/// Which items to check (the daemon checks only what a reload added or changed).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// `None`: every item of that kind.
    pub pipelines: Option<BTreeSet<String>>,
    pub builds: Option<BTreeSet<String>>,
    pub notifiers: Option<BTreeSet<String>>,
    pub checks: Option<BTreeSet<String>>,
    pub gates: Option<BTreeSet<String>>,
    pub endpoints: Option<BTreeSet<String>>,
    pub events: bool,
    /// Leave out declared pipelines (the daemon's reconcile reads them anyway).
    pub skip_declared: bool,
}

impl Scope {
    pub(crate) fn all() -> Scope {
        Scope {
            events: true,
            ..Scope::default()
        }
    }

    /// The items a reload added or changed (declared pipelines left to their reconcile).
    pub(crate) fn touched(diff: &crate::config::diff::ConfigDiff) -> Scope {
        let touched = |d: &crate::config::diff::SectionDiff| {
            Some(d.added.iter().chain(&d.changed).cloned().collect())
        };
        Scope {
            pipelines: touched(&diff.pipelines),
            builds: touched(&diff.builds),
            notifiers: touched(&diff.notifiers),
            checks: touched(&diff.checks),
            gates: touched(&diff.gates),
            endpoints: touched(&diff.endpoints),
            events: false,
            skip_declared: true,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        let empty = |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(BTreeSet::is_empty);
        empty(&self.pipelines)
            && empty(&self.builds)
            && empty(&self.notifiers)
            && empty(&self.checks)
            && empty(&self.gates)
            && empty(&self.endpoints)
            && !self.events
    }
}

fn wanted(s: &Option<BTreeSet<String>>, name: &str) -> bool {
    s.as_ref().is_none_or(|s| s.contains(name))
}

/// The status and detail an AWS error gives a resource.
fn from_error(e: &AwsError) -> (Status, String) {
    match e.kind {
        ErrorKind::Denied => (
            Status::Forbidden,
            format!("{} is denied: {}: {}", e.iam_action(), e.code, e.message),
        ),
        ErrorKind::Unreachable | ErrorKind::Credentials => (Status::Unreachable, e.to_string()),
        _ => (Status::Missing, e.to_string()),
    }
}

fn finding(
    kind: ResourceKind,
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
pub(crate) async fn check<C: Cloud>(aws: &C, cfg: &Config, scope: &Scope) -> Vec<Finding> {
    let mut out = Vec::new();
    pipelines(aws, cfg, scope, &mut out).await;
    builds(aws, cfg, scope, &mut out).await;
    notifiers(aws, cfg, scope, &mut out).await;
    gates(aws, cfg, scope, &mut out).await;
    endpoints(aws, cfg, scope, &mut out).await;
    checks(aws, cfg, scope, &mut out).await;
    if scope.events {
        events(aws, cfg, &mut out).await;
    }
    out
}

/// Pipelines: `DescribePipeline` each (with a definition: whether it is in sync), a few at a time.
async fn pipelines<C: Cloud>(aws: &C, cfg: &Config, scope: &Scope, out: &mut Vec<Finding>) {
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
        let f = |s, d: String| finding(ResourceKind::Pipeline, name, &p.pipeline_name, s, d);
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
                        p.pipeline_name, aws.region()
                    ),
                ),
            },
            Some(Ok(Some(remote))) => match &p.declared {
                None => f(Status::Ok, "exists".into()),
                Some(d) => f(Status::Ok, sync_detail(&remote, d)),
            },
        });
    }
}

/// Build projects: `BatchGetProjects`, up to 100 names a call.
async fn builds<C: Cloud>(aws: &C, cfg: &Config, scope: &Scope, out: &mut Vec<Finding>) {
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
        let f = |s, d: String| finding(ResourceKind::Build, name, project, s, d);
        out.push(match &missing {
            Err(e) => {
                let (s, d) = from_error(e);
                f(s, d)
            }
            Ok(m) if m.contains(project) => f(
                Status::Missing,
                format!(
                    "no CodeBuild project named \"{project}\" in {}",
                    aws.region()
                ),
            ),
            Ok(_) => f(Status::Ok, "exists".into()),
        });
    }
}

/// Notifier topics: `GetTopicAttributes` each.
async fn notifiers<C: Cloud>(aws: &C, cfg: &Config, scope: &Scope, out: &mut Vec<Finding>) {
    for (name, n) in cfg
        .notifiers
        .iter()
        .filter(|(n, _)| wanted(&scope.notifiers, n))
    {
        let f = |s, d: String| finding(ResourceKind::Notifier, name, &n.topic_arn, s, d);
        out.push(match aws.topic_exists(&n.topic_arn).await {
            Ok(true) => f(Status::Ok, "exists".into()),
            Ok(false) => f(Status::Missing, format!("no SNS topic {}", n.topic_arn)),
            Err(e) => {
                let (s, d) = from_error(&e);
                f(s, d)
            }
        });
    }
}

/// Gates: their model package group.
async fn gates<C: Cloud>(aws: &C, cfg: &Config, scope: &Scope, out: &mut Vec<Finding>) {
    for (name, g) in cfg.gates.iter().filter(|(n, _)| wanted(&scope.gates, n)) {
        let f = |s, d: String| finding(ResourceKind::Gate, name, &g.model_package_group, s, d);
        out.push(
            match aws.package_group_exists(&g.model_package_group).await {
                Ok(true) => f(Status::Ok, "exists".into()),
                Ok(false) => f(
                    Status::Missing,
                    format!(
                        "no model package group named \"{}\" in {}",
                        g.model_package_group,
                        aws.region()
                    ),
                ),
                Err(e) => {
                    let (s, d) = from_error(&e);
                    f(s, d)
                }
            },
        );
    }
}

/// Endpoint blocks: the model package group and the rollback alarms must exist; the endpoint
/// may be absent (the first deployment creates it), else its status and config are told.
async fn endpoints<C: Cloud>(aws: &C, cfg: &Config, scope: &Scope, out: &mut Vec<Finding>) {
    for (name, e) in cfg
        .endpoints
        .iter()
        .filter(|(n, _)| wanted(&scope.endpoints, n))
    {
        let f = |s, d: String| finding(ResourceKind::Endpoint, name, &e.endpoint_name, s, d);
        out.push(match endpoint_finding(aws, e).await {
            Ok((s, d)) => f(s, d),
            Err(err) => {
                let (s, d) = from_error(&err);
                f(s, d)
            }
        });
    }
}

async fn endpoint_finding<C: Cloud>(
    aws: &C,
    e: &crate::config::Endpoint,
) -> Result<(Status, String), AwsError> {
    if !aws.package_group_exists(&e.model_package_group).await? {
        return Ok((
            Status::Missing,
            format!(
                "no model package group named \"{}\" in {}",
                e.model_package_group,
                aws.region()
            ),
        ));
    }
    if !aws.role_exists(&e.execution_role_arn).await? {
        return Ok((
            Status::Missing,
            format!("no IAM role {} (execution_role_arn)", e.execution_role_arn),
        ));
    }
    if !e.rollback_alarms.is_empty() {
        let found = aws.alarm_states(&e.rollback_alarms).await?;
        let missing: Vec<&str> = e
            .rollback_alarms
            .iter()
            .filter(|a| !found.contains_key(*a))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Ok((
                Status::Missing,
                format!("rollback alarm(s) {} do not exist", missing.join(", ")),
            ));
        }
    }
    Ok(match aws.describe_endpoint(&e.endpoint_name).await? {
        None => (
            Status::Ok,
            "group, role and alarms exist; the endpoint is absent (the first deployment creates it)"
                .into(),
        ),
        Some(v) => (
            Status::Ok,
            format!(
                "group, role and alarms exist; the endpoint is {} on config {}",
                v.status, v.config_name
            ),
        ),
    })
}

/// Checks: alarms with `DescribeAlarms` (100 a call), metrics with `GetMetricData` over
/// their last two periods (batched as the daemon does); no data is then explained with
/// `ListMetrics`.
async fn checks<C: Cloud>(aws: &C, cfg: &Config, scope: &Scope, out: &mut Vec<Finding>) {
    let now = chrono::Utc::now();
    let checks: Vec<(&String, &std::sync::Arc<crate::config::Check>)> = cfg
        .checks
        .iter()
        .filter(|(n, _)| wanted(&scope.checks, n))
        .collect();
    let alarms: Vec<String> = checks
        .iter()
        .filter_map(|(_, c)| c.alarm().map(str::to_string))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let alarm_states = if alarms.is_empty() {
        Ok(Default::default())
    } else {
        aws.alarm_states(&alarms).await
    };
    let queries: Vec<MetricQuery<'_>> = checks
        .iter()
        .filter_map(|(_, c)| c.metric().map(MetricQuery::of))
        .collect();
    let (values, _) = if queries.is_empty() {
        (Vec::new(), 0)
    } else {
        aws.latest_values(&queries, now).await
    };
    let mut values = values.into_iter();
    for (name, c) in &checks {
        let m = match &c.source {
            Source::Metric(m) => m,
            Source::Monitor(_) | Source::Report(_) => {
                out.push(report_finding(aws, name, c, now).await);
                continue;
            }
            Source::Alarm(alarm) => {
                let f = |s, d: String| finding(ResourceKind::Check, name, alarm, s, d);
                out.push(match &alarm_states {
                    Ok(m) => match m.get(alarm) {
                        Some(state) => f(Status::Ok, format!("alarm is {}", state.as_str())),
                        None => f(
                            Status::Missing,
                            format!("no CloudWatch alarm named \"{alarm}\" in {}", aws.region()),
                        ),
                    },
                    Err(e) => {
                        let (s, d) = from_error(e);
                        f(s, d)
                    }
                });
                continue;
            }
        };
        let resource = format!("{}/{}", m.namespace, m.metric);
        let f = |s, d: String| finding(ResourceKind::Check, name, &resource, s, d);
        let v = values.next();
        out.push(match v {
            Some(Ok(Some(v))) => f(Status::Ok, format!("latest value {v}")),
            Some(Ok(None)) => f(Status::NoData, explain_no_data(aws, m).await),
            Some(Err(e)) => {
                let (s, d) = from_error(&e);
                f(s, d)
            }
            None => f(Status::Unreachable, "no answer for this query".into()),
        });
    }
}

/// A report check: the monitoring schedule exists and is `Scheduled` (with its last
/// execution's age), or the prefix can be listed (with its newest object's age).
async fn report_finding<C: Cloud>(
    aws: &C,
    name: &str,
    c: &crate::config::Check,
    now: chrono::DateTime<chrono::Utc>,
) -> Finding {
    let age = |t: chrono::DateTime<chrono::Utc>| {
        crate::duration::format_duration((now - t).to_std().unwrap_or_default())
    };
    match &c.source {
        Source::Monitor(m) => {
            let f = |s, d: String| finding(ResourceKind::Check, name, &m.schedule, s, d);
            match aws.monitoring_schedule(&m.schedule).await {
                Ok(None) => f(
                    Status::Missing,
                    format!(
                        "no monitoring schedule named \"{}\" in {}",
                        m.schedule,
                        aws.region()
                    ),
                ),
                Ok(Some(v)) if v.status != "Scheduled" => f(
                    Status::NoData,
                    format!(
                        "the monitoring schedule is {}, not Scheduled: no new executions come",
                        v.status
                    ),
                ),
                Ok(Some(v)) => match v.last {
                    Some(l) => f(
                        Status::Ok,
                        format!(
                            "Scheduled; last execution {} ago: {}",
                            age(l.scheduled),
                            l.status
                        ),
                    ),
                    None => f(Status::NoData, "Scheduled; no execution yet".into()),
                },
                Err(e) => {
                    let (s, d) = from_error(&e);
                    f(s, d)
                }
            }
        }
        Source::Report(r) => {
            let uri = r.uri();
            let f = |s, d: String| finding(ResourceKind::Check, name, &uri, s, d);
            match aws
                .newest_object(&r.bucket, &r.prefix, r.file.as_deref())
                .await
            {
                Ok(Some(o)) => f(
                    Status::Ok,
                    format!(
                        "readable; newest report {}{}",
                        o.key,
                        o.last_modified
                            .map(|t| format!(", {} old", age(t)))
                            .unwrap_or_default()
                    ),
                ),
                Ok(None) => f(
                    Status::NoData,
                    format!(
                        "readable, but no object{} under it yet",
                        r.file
                            .as_deref()
                            .map(|x| format!(" ending in {x}"))
                            .unwrap_or_default()
                    ),
                ),
                Err(e) => {
                    let (s, d) = from_error(&e);
                    f(s, d)
                }
            }
        }
        _ => finding(
            ResourceKind::Check,
            name,
            "",
            Status::Unreachable,
            String::new(),
        ),
    }
}

/// The events queue.
async fn events<C: Cloud>(aws: &C, cfg: &Config, out: &mut Vec<Finding>) {
    let Some(ev) = &cfg.events else { return };
    let f = |s, d: String| finding(ResourceKind::Events, "events", &ev.queue_url, s, d);
    out.push(match aws.queue_exists(&ev.queue_url).await {
        Ok(true) => f(Status::Ok, "exists".into()),
        Ok(false) => f(Status::Missing, format!("no SQS queue at {}", ev.queue_url)),
        Err(e) => {
            let (s, d) = from_error(&e);
            f(s, d)
        }
    });
}

fn sync_detail(remote: &RemotePipeline, d: &Declared) -> String {
    let aws = crate::config::definition::state_hash(
        &crate::config::definition::canonical_text(&remote.definition),
        &remote.role_arn,
    );
    if aws == d.state_hash() {
        format!("exists, in sync with {}", d.file)
    } else {
        let n = crate::reconcile::compare(Some(remote), d);
        let count = match n {
            crate::reconcile::Verdict::Update(c) => c.len(),
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
async fn explain_no_data<C: Cloud>(aws: &C, c: &crate::config::MetricSource) -> String {
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

/// The HA table: it exists with the key schema mlopsd needs.
pub(crate) async fn ha_finding<T: HaLog>(table: &T) -> Finding {
    let f = |status, detail: String| Finding {
        kind: ResourceKind::Ha,
        name: table.name().to_string(),
        resource: format!("dynamodb table {}", table.name()),
        status,
        detail,
    };
    match table.check().await {
        Ok(()) => f(Status::Ok, "exists, keys pk (S) and sk (S)".into()),
        Err(HaCheckError::Missing(m)) | Err(HaCheckError::Schema(m)) => f(Status::Missing, m),
        Err(HaCheckError::Denied(m)) => f(Status::Forbidden, m),
        Err(HaCheckError::Unreachable(m)) => f(Status::Unreachable, m),
    }
}
