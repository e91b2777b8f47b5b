//! `/status`: one typed document, everything an operator asks "what is it doing and why".
//! The server builds it (a fixed number of store queries, however many checks and rules
//! there are); the status page renders it; `mlopsd status` reads it back with the same types.
//! Every struct takes missing fields as their defaults, so a client reads an older or newer
//! daemon's document.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::View;
use crate::clock::ts;
use crate::config::{Start, Threshold, Trigger};
use crate::doctor::{Finding, ResourceKind, Status};
use crate::duration::format_duration;
use crate::health::{Health, Preflight};
use crate::reconcile::SyncState;
use crate::state::Store;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StatusDoc {
    pub generated_at: String,
    pub version: String,
    pub config: ConfigInfo,
    pub checks: Vec<CheckInfo>,
    pub rules: Vec<RuleInfo>,
    pub runs: Vec<RunInfo>,
    pub gates: Vec<GateInfo>,
    pub pipelines: Vec<PipelineInfo>,
    pub endpoints: Vec<EndpointInfo>,
    pub preflight: PreflightInfo,
    /// `single`, `standby` or `leader`.
    pub role: String,
    pub ha: Option<HaStatus>,
    pub events: Option<EventsInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ConfigInfo {
    pub path: String,
    pub hash: String,
    pub loaded_at: String,
    pub last_reload: Option<ReloadStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ReloadStatus {
    pub at: String,
    pub ok: bool,
    pub trigger: String,
    pub error: Option<String>,
}

/// A problem the preflight found with a resource an item names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ResourceKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub item: String,
    pub resource: String,
    pub status: Option<Status>,
    pub detail: String,
}

impl Problem {
    fn of(f: &Finding) -> Problem {
        Problem {
            kind: None,
            name: None,
            item: f.config_item(),
            resource: f.resource.clone(),
            status: Some(f.status),
            detail: f.detail.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ThresholdOp {
    #[default]
    Above,
    Below,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ThresholdInfo {
    pub op: ThresholdOp,
    pub value: f64,
}

/// Where a check is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CheckPhase {
    Breaching,
    /// Breached, fewer than `for` times in a row.
    Pending,
    Ok,
    #[default]
    #[serde(rename = "not evaluated")]
    NotEvaluated,
}

impl CheckPhase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckPhase::Breaching => "breaching",
            CheckPhase::Pending => "pending",
            CheckPhase::Ok => "ok",
            CheckPhase::NotEvaluated => "not evaluated",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CheckErrorInfo {
    pub error: String,
    pub since: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ValueInfo {
    pub at: String,
    pub value: Option<f64>,
    pub breached: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct CheckInfo {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub next_fire: Option<String>,
    pub metric: String,
    pub statistic: String,
    pub threshold: ThresholdInfo,
    #[serde(rename = "for")]
    pub for_count: u32,
    pub state: CheckPhase,
    pub breach_count: u32,
    pub correlation_id: Option<String>,
    pub last_value: Option<f64>,
    pub last_evaluated: Option<String>,
    pub values: Vec<ValueInfo>,
    pub preflight: Option<Problem>,
    /// Why the last read failed (a report missing, unreadable, not JSON, too large, denied;
    /// an AWS error), since when and how many reads in a row; absent once a read succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<CheckErrorInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TargetInfo {
    pub target: String,
    pub active_runs: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RuleInfo {
    pub name: String,
    pub trigger: String,
    pub preflight: Vec<Problem>,
    pub next_fire: Option<String>,
    pub firings: u64,
    pub last_fired: Option<String>,
    pub cooldown_until: Option<String>,
    pub cooldown: Option<String>,
    pub dry_run: bool,
    pub targets: Vec<TargetInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RunInfo {
    pub id: i64,
    pub rule: String,
    pub target: String,
    pub status: String,
    pub arn: Option<String>,
    pub detail: Option<String>,
    pub correlation_id: String,
    pub check: Option<String>,
    pub decided: Option<String>,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_s: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DecisionInfo {
    pub arn: String,
    pub decision: String,
    pub value: Option<f64>,
    pub reason: String,
    pub at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct GateInfo {
    pub name: String,
    pub preflight: Vec<Problem>,
    pub model_package_group: String,
    pub schedule: String,
    pub next_fire: Option<String>,
    pub decisions: Vec<DecisionInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DeclaredInfo {
    pub definition: String,
    pub definition_hash: String,
    pub role_arn: String,
    pub reconcile: String,
    /// `in_sync`, `pending`, `applying`, `drifted`, `failed`, …
    pub state: String,
    pub detail: Option<String>,
    pub arn: Option<String>,
    pub since: Option<String>,
    pub last_compared: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PipelineInfo {
    pub name: String,
    pub pipeline_name: String,
    pub preflight: Option<Problem>,
    pub max_concurrent: u32,
    pub declared: Option<DeclaredInfo>,
}

/// An endpoint block: what it serves, what it wants, its deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct EndpointInfo {
    pub name: String,
    pub endpoint_name: String,
    pub model_package_group: String,
    pub strategy: String,
    pub preflight: Option<Problem>,
    /// The version the endpoint serves (as mlopsd last saw it or deployed it).
    pub version: Option<u32>,
    /// The version the block wants (the last read of the registry).
    pub wanted: Option<u32>,
    /// The config the endpoint serves.
    pub config: Option<String>,
    /// The newest deployment's state (`deploying`, `baking`, `baked`, `rolled_back`, …),
    /// `none` before the first.
    pub state: String,
    pub deployment_version: Option<u32>,
    pub bake_left_s: Option<f64>,
    pub reason: Option<String>,
    pub correlation_id: Option<String>,
    pub since: Option<String>,
    /// Why the endpoint is left as it is, when it is.
    pub waiting: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PreflightInfo {
    pub checked_at: Option<String>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct HaStatus {
    pub table: String,
    pub replica: String,
    pub role: String,
    pub role_since: String,
    pub leader: Option<String>,
    pub fencing: Option<u64>,
    pub lease_ms: u64,
    /// Since the lease item last changed (a standby's view) or was last renewed (the leader).
    pub lease_age_ms: Option<u64>,
    pub applied_seq: u64,
    pub table_reachable: bool,
    pub table_error: Option<String>,
    pub log_error: Option<String>,
    pub config_hash: String,
    pub leader_config_hash: Option<String>,
    pub config_differs: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct EventsInfo {
    pub queue_url: String,
    /// `starting`, `receiving` or `unreachable`.
    pub state: String,
    pub since: Option<String>,
    pub last_error: Option<String>,
    pub failures: u32,
}

/// Builds the document from what the loop published, the store and `Health`.
pub(crate) fn build(
    view: &View,
    store: &Store,
    health: &Health,
    now: DateTime<Utc>,
    values: usize,
) -> StatusDoc {
    let pre = health.preflight();
    StatusDoc {
        generated_at: ts(&now),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config: ConfigInfo {
            path: view.path.clone(),
            hash: view.hash.clone(),
            loaded_at: ts(&view.loaded_at),
            last_reload: view.last_reload.as_ref().map(|r| ReloadStatus {
                at: ts(&r.at),
                ok: r.ok,
                trigger: r.trigger.clone(),
                error: r.error.clone(),
            }),
        },
        checks: checks(view, store, health, &pre, now, values),
        rules: rules(view, store, &pre, now),
        runs: runs(store, now),
        gates: gates(view, store, &pre, now),
        pipelines: pipelines(view, store, &pre),
        endpoints: endpoints(view, store, health, &pre, now),
        preflight: PreflightInfo {
            checked_at: pre.checked_at.map(|t| ts(&t)),
            problems: pre
                .findings
                .values()
                .filter(|f| f.status != Status::Ok)
                .map(|f| Problem {
                    kind: Some(f.kind),
                    name: Some(f.name.clone()),
                    ..Problem::of(f)
                })
                .collect(),
        },
        role: health
            .ha()
            .map_or("single", |i| i.role.as_str())
            .to_string(),
        ha: ha(store, health),
        events: view.cfg.events.as_ref().map(|ev| {
            let q = health.queue();
            EventsInfo {
                queue_url: ev.queue_url.clone(),
                state: match &q {
                    None => "starting",
                    Some(q) if q.reachable => "receiving",
                    Some(_) => "unreachable",
                }
                .into(),
                since: q.as_ref().map(|q| ts(&q.since)),
                last_error: q.as_ref().and_then(|q| q.last_error.clone()),
                failures: q.as_ref().map_or(0, |q| q.failures),
            }
        }),
    }
}

/// The preflight's problem with one resource, if it has one.
fn problem(pre: &Preflight, kind: ResourceKind, name: &str) -> Option<Problem> {
    pre.findings
        .get(&(kind, name.to_string()))
        .filter(|f| f.status != Status::Ok)
        .map(Problem::of)
}

/// A rule's or gate's problems: its targets' and its notifiers'.
fn problems_of(pre: &Preflight, items: &[(ResourceKind, &str)], notify: &[String]) -> Vec<Problem> {
    items
        .iter()
        .copied()
        .chain(notify.iter().map(|n| (ResourceKind::Notifier, n.as_str())))
        .filter_map(|(k, n)| problem(pre, k, n))
        .collect()
}

fn checks(
    view: &View,
    store: &Store,
    health: &Health,
    pre: &Preflight,
    now: DateTime<Utc>,
    values: usize,
) -> Vec<CheckInfo> {
    let states = store.check_states().unwrap_or_default();
    let mut errors = health.check_errors();
    let mut all_values = store.all_check_values(values).unwrap_or_default();
    view.cfg
        .checks
        .iter()
        .map(|(name, c)| {
            let (st, last_eval) = states.get(name).cloned().unwrap_or_default();
            let state = if st.breaching {
                CheckPhase::Breaching
            } else if st.breach_count > 0 {
                CheckPhase::Pending
            } else if last_eval.is_some() {
                CheckPhase::Ok
            } else {
                CheckPhase::NotEvaluated
            };
            CheckInfo {
                name: name.clone(),
                schedule: c.timed.expression.clone(),
                timezone: c.timed.timezone.name().to_string(),
                next_fire: c
                    .timed
                    .schedule
                    .next_after(c.timed.timezone, now)
                    .map(|t| ts(&t)),
                metric: c.source_text(),
                statistic: c.metric().map(|m| m.statistic.clone()).unwrap_or_default(),
                threshold: ThresholdInfo {
                    op: match c.threshold {
                        Threshold::Above(_) => ThresholdOp::Above,
                        Threshold::Below(_) => ThresholdOp::Below,
                    },
                    value: c.threshold.value(),
                },
                for_count: c.for_count,
                state,
                breach_count: st.breach_count,
                correlation_id: st.correlation_id,
                last_value: st.last_value,
                last_evaluated: last_eval.map(|t| ts(&t)),
                values: all_values
                    .remove(name)
                    .unwrap_or_default()
                    .iter()
                    .map(|(t, v, b)| ValueInfo {
                        at: ts(t),
                        value: *v,
                        breached: *b,
                    })
                    .collect(),
                preflight: problem(pre, ResourceKind::Check, name),
                error: errors.remove(name).map(|e| CheckErrorInfo {
                    error: e.error,
                    since: ts(&e.since),
                    count: e.count,
                }),
            }
        })
        .collect()
}

fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Check(c) => format!("on_check {c}"),
        Trigger::Schedule(t) => format!("on_schedule \"{}\" ({})", t.expression, t.timezone),
        Trigger::Success(t) => format!("on_success {t}"),
        Trigger::Failure(t) => format!("on_failure {t}"),
        Trigger::Event(p) => format!("on_event {p}"),
    }
}

fn rules(view: &View, store: &Store, pre: &Preflight, now: DateTime<Utc>) -> Vec<RuleInfo> {
    let rule_states = store.rule_states().unwrap_or_default();
    let active = store.active_run_counts().unwrap_or_default();
    view.cfg
        .rules
        .iter()
        .map(|(name, r)| {
            let st = rule_states.get(name).cloned().unwrap_or_default();
            let items: Vec<(ResourceKind, &str)> = r
                .start
                .iter()
                .map(|s| match s {
                    Start::Pipeline { name, .. } => (ResourceKind::Pipeline, name.as_str()),
                    Start::Build { name, .. } => (ResourceKind::Build, name.as_str()),
                })
                .collect();
            RuleInfo {
                name: name.clone(),
                trigger: trigger_text(&r.trigger),
                preflight: problems_of(pre, &items, &r.notify),
                next_fire: match &r.trigger {
                    Trigger::Schedule(t) => t.schedule.next_after(t.timezone, now).map(|x| ts(&x)),
                    _ => None,
                },
                firings: st.firings,
                last_fired: st.last_fired.map(|t| ts(&t)),
                cooldown_until: st.cooldown_until.filter(|c| *c > now).map(|t| ts(&t)),
                cooldown: r.cooldown.map(format_duration),
                dry_run: r.dry_run,
                targets: r
                    .start
                    .iter()
                    .map(|s| {
                        let t = s.target();
                        TargetInfo {
                            target: t.to_string(),
                            active_runs: active.get(&t).copied().unwrap_or(0),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn runs(store: &Store, now: DateTime<Utc>) -> Vec<RunInfo> {
    store
        .recent_runs(50)
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let end = r.ended.unwrap_or(now);
            RunInfo {
                id: r.id,
                target: r.target().to_string(),
                status: r.status.as_str().to_string(),
                duration_s: r.started.map(|s| (end - s).num_seconds()),
                decided: r.decided.map(|t| ts(&t)),
                started: r.started.map(|t| ts(&t)),
                ended: r.ended.map(|t| ts(&t)),
                rule: r.rule,
                arn: r.arn,
                detail: r.detail,
                correlation_id: r.correlation_id,
                check: r.check,
            }
        })
        .collect()
}

fn gates(view: &View, store: &Store, pre: &Preflight, now: DateTime<Utc>) -> Vec<GateInfo> {
    let decisions = store.recent_gate_decisions(200).unwrap_or_default();
    view.cfg
        .gates
        .iter()
        .map(|(name, g)| GateInfo {
            name: name.clone(),
            preflight: problems_of(pre, &[(ResourceKind::Gate, name.as_str())], &g.notify),
            model_package_group: g.model_package_group.clone(),
            schedule: g.timed.expression.clone(),
            next_fire: g
                .timed
                .schedule
                .next_after(g.timed.timezone, now)
                .map(|t| ts(&t)),
            decisions: decisions
                .iter()
                .filter(|d| &d.gate == name)
                .take(10)
                .map(|d| DecisionInfo {
                    arn: d.arn.clone(),
                    decision: d.decision.as_str().to_string(),
                    value: d.value,
                    reason: d.reason.clone(),
                    at: d.at.map(|t| ts(&t)),
                })
                .collect(),
        })
        .collect()
}

fn pipelines(view: &View, store: &Store, pre: &Preflight) -> Vec<PipelineInfo> {
    let applies = store.pipeline_applies().unwrap_or_default();
    view.cfg
        .pipelines
        .iter()
        .map(|(name, p)| PipelineInfo {
            name: name.clone(),
            pipeline_name: p.pipeline_name.clone(),
            preflight: problem(pre, ResourceKind::Pipeline, name),
            max_concurrent: p.max_concurrent,
            declared: p.declared.as_ref().map(|d| {
                let a = applies.iter().find(|a| &a.pipeline == name);
                let row = a.map(|a| a.row.clone()).unwrap_or_default();
                // A stored "in sync" is of the state applied then: a file edited since is
                // not in sync until it is applied.
                let state = match row.state {
                    SyncState::InSync
                        if row.applied.as_deref() != Some(d.state_hash().as_str()) =>
                    {
                        "pending"
                    }
                    s => s.as_str(),
                };
                DeclaredInfo {
                    definition: d.file.clone(),
                    definition_hash: d.definition.hash.clone(),
                    role_arn: d.role_arn.clone(),
                    reconcile: d.reconcile.as_str().to_string(),
                    state: state.to_string(),
                    detail: row.detail,
                    arn: a.and_then(|a| a.arn.clone()),
                    since: a.and_then(|a| a.changed).map(|t| ts(&t)),
                    last_compared: a.and_then(|a| a.checked).map(|t| ts(&t)),
                }
            }),
        })
        .collect()
}

fn endpoints(
    view: &View,
    store: &Store,
    health: &Health,
    pre: &Preflight,
    now: DateTime<Utc>,
) -> Vec<EndpointInfo> {
    use crate::state::DeployState;
    let latest = store.latest_deployments().unwrap_or_default();
    let seen = health.endpoints();
    view.cfg
        .endpoints
        .iter()
        .map(|(name, e)| {
            let d = latest.iter().find(|d| &d.endpoint == name);
            let s = seen.get(name).cloned().unwrap_or_default();
            // What is live by mlopsd's own record: the new version once SageMaker is done,
            // else the one before.
            let by_deploy = d.map(|d| match d.state {
                DeployState::Baking | DeployState::Baked => {
                    (Some(d.version), Some(d.resource.clone()))
                }
                _ => (d.prev_version, d.prev_config.clone()),
            });
            let (version, config) = match (&s.served_config, by_deploy) {
                (Some(c), _) => (s.served_version, Some(c.clone())),
                (None, Some(x)) => x,
                (None, None) => (None, None),
            };
            EndpointInfo {
                name: name.clone(),
                endpoint_name: e.endpoint_name.clone(),
                model_package_group: e.model_package_group.clone(),
                strategy: e.strategy.to_string(),
                preflight: problem(pre, ResourceKind::Endpoint, name),
                version,
                wanted: s.wanted,
                config,
                state: d.map_or("none", |d| d.state.as_str()).to_string(),
                deployment_version: d.map(|d| d.version),
                bake_left_s: d
                    .filter(|d| d.state == DeployState::Baking)
                    .and_then(|d| d.bake_until)
                    .map(|u| ((u - now).num_milliseconds().max(0) as f64) / 1000.0),
                reason: d.and_then(|d| d.reason.clone()),
                correlation_id: d.map(|d| d.correlation_id.clone()),
                since: d.and_then(|d| d.ended.or(d.decided)).map(|t| ts(&t)),
                waiting: s.waiting,
                dry_run: e.dry_run,
            }
        })
        .collect()
}

fn ha(store: &Store, health: &Health) -> Option<HaStatus> {
    let i = health.ha()?;
    Some(HaStatus {
        table: i.table.clone(),
        replica: i.replica.clone(),
        role: i.role.as_str().to_string(),
        role_since: ts(&i.role_since),
        leader: i.leader().map(str::to_string),
        fencing: i.fencing(),
        lease_ms: i.lease.as_millis() as u64,
        lease_age_ms: i.lease_changed.map(|t| t.elapsed().as_millis() as u64),
        applied_seq: store.applied_seq().unwrap_or(i.applied_seq),
        table_reachable: i.cut_off().is_none(),
        table_error: i.contact_error.clone(),
        log_error: i.log_error.clone(),
        config_differs: i.config_differs(),
        config_hash: i.config_hash,
        leader_config_hash: i.leader_config_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mlopsd status` reads back exactly what the server wrote, and the wire names are the
    /// documented ones (`for`, `"not evaluated"`, snake_case statuses and kinds).
    #[test]
    fn the_document_reads_back_as_written() {
        let doc = StatusDoc {
            role: "leader".into(),
            checks: vec![CheckInfo {
                name: "drift".into(),
                for_count: 2,
                threshold: ThresholdInfo {
                    op: ThresholdOp::Below,
                    value: 0.5,
                },
                values: vec![ValueInfo {
                    at: "2026-01-01T00:00:00Z".into(),
                    value: None,
                    breached: true,
                }],
                preflight: Some(Problem {
                    item: "[checks.drift]".into(),
                    status: Some(Status::NoData),
                    ..Problem::default()
                }),
                ..CheckInfo::default()
            }],
            preflight: PreflightInfo {
                checked_at: None,
                problems: vec![Problem {
                    kind: Some(ResourceKind::Check),
                    name: Some("drift".into()),
                    status: Some(Status::NoData),
                    ..Problem::default()
                }],
            },
            ..StatusDoc::default()
        };
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["checks"][0]["for"], 2);
        assert_eq!(json["checks"][0]["state"], "not evaluated");
        assert_eq!(json["checks"][0]["threshold"]["op"], "below");
        assert_eq!(json["checks"][0]["preflight"]["status"], "no_data");
        assert!(
            json["checks"][0]["preflight"].get("kind").is_none(),
            "an item's own problem names no kind"
        );
        assert_eq!(json["preflight"]["problems"][0]["kind"], "check");
        let back: StatusDoc = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
        let partial: StatusDoc =
            serde_json::from_str(r#"{"version": "0.0.1", "checks": [{"name": "a"}]}"#).unwrap();
        assert_eq!(partial.checks[0].name, "a", "missing fields take defaults");
    }
}
