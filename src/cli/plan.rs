//! `mlopsd plan`: every schedule's next fire times and what each rule would do. No AWS calls.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::clock::{ts, ts_in};
use crate::config::{
    Config, ItemKind, RunKind, Source, Start, Threshold, Timed, Trigger, Upstream,
};
use crate::duration::format_duration;

/// One schedule in the plan.
pub(super) struct PlannedSchedule {
    pub kind: ItemKind,
    pub name: String,
    pub timed: Timed,
    pub next: Vec<DateTime<Utc>>,
}

pub(super) fn plan(cfg: &Config, from: DateTime<Utc>, count: usize) -> Vec<PlannedSchedule> {
    cfg.scheduled()
        .into_iter()
        .map(|(kind, name, t)| PlannedSchedule {
            kind,
            name: name.clone(),
            timed: t.clone(),
            next: t.schedule.upcoming(t.timezone, from, count),
        })
        .collect()
}

/// What a report check takes from each new report, for people.
pub(crate) fn report_reads(ch: &crate::config::Check) -> String {
    use crate::config::ReportRead;
    let filters = |f: &crate::config::Filters| {
        let mut s = String::new();
        if !f.check_types.is_empty() {
            s.push_str(&format!(" of type {}", f.check_types.join("|")));
        }
        if !f.features.is_empty() {
            s.push_str(&format!(" on {}", f.features.join("|")));
        }
        s
    };
    match &ch.source {
        Source::Monitor(m) => format!("violations{}", filters(&m.filters)),
        Source::Report(r) => {
            let file = r
                .file
                .as_deref()
                .map(|f| format!(" (*{f})"))
                .unwrap_or_default();
            match &r.read {
                ReportRead::Value(p) => format!("the value at {p}{file}"),
                ReportRead::Violations { path, filters: f } => {
                    format!("the violations at {path}{}{file}", filters(f))
                }
            }
        }
        _ => String::new(),
    }
}

/// A one-line account of what a rule does, for `plan` and logs.
pub(super) fn describe_rule(cfg: &Config, name: &str) -> String {
    let Some(r) = cfg.rules.get(name) else {
        return String::new();
    };
    let when = match &r.trigger {
        Trigger::Check(c) => match cfg.checks.get(c) {
            Some(ch) => {
                let th = match (&ch.source, ch.threshold) {
                    (Source::Alarm(a), _) => format!("alarm {a} in ALARM"),
                    (Source::Metric(m), Threshold::Above(v)) => {
                        format!("{} {} > {v}", m.statistic, m.metric)
                    }
                    (Source::Metric(m), Threshold::Below(v)) => {
                        format!("{} {} < {v}", m.statistic, m.metric)
                    }
                    (Source::Monitor(_) | Source::Report(_), th) => {
                        format!(
                            "{}: {} {th} in a new report",
                            ch.source_text(),
                            report_reads(ch)
                        )
                    }
                };
                let times = if ch.for_count == 1 {
                    "once".to_string()
                } else {
                    format!("{} consecutive evaluations", ch.for_count)
                };
                format!("when check {c} breaches ({th}) {times}")
            }
            None => format!("when check {c} breaches"),
        },
        Trigger::Schedule(t) => format!("at \"{}\" ({})", t.expression, t.timezone),
        Trigger::Success(Upstream::Run(t)) => format!("when a run of {t} succeeds"),
        Trigger::Failure(Upstream::Run(t)) => format!("when a run of {t} fails"),
        Trigger::Success(Upstream::Endpoint(e)) => {
            format!("when a deployment to [endpoints.{e}] succeeds")
        }
        Trigger::Failure(Upstream::Endpoint(e)) => {
            format!("when a deployment to [endpoints.{e}] rolls back or fails")
        }
        Trigger::Event(p) => format!("on an event ({p})"),
    };
    let mut acts = Vec::new();
    for s in &r.start {
        match s {
            Start::Pipeline { name, parameters } => {
                let real = cfg
                    .pipelines
                    .get(name)
                    .map(|p| p.pipeline_name.as_str())
                    .unwrap_or("?");
                let params: Vec<String> =
                    parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                acts.push(format!(
                    "start pipeline {name} ({real}) with {{{}}}",
                    params.join(", ")
                ));
            }
            Start::Build {
                name,
                source_version,
                environment,
            } => {
                let real = cfg
                    .builds
                    .get(name)
                    .map(|p| p.project_name.as_str())
                    .unwrap_or("?");
                let env: Vec<String> = environment
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                acts.push(format!(
                    "start build {name} ({real}) at {} with env {{{}}}",
                    source_version
                        .as_deref()
                        .unwrap_or("the project's default source version"),
                    env.join(", ")
                ));
            }
        }
    }
    if !r.notify.is_empty() {
        acts.push(format!("notify {}", r.notify.join(", ")));
    }
    let mut s = format!("{when}: {}", acts.join("; "));
    if let Some(c) = r.cooldown {
        s.push_str(&format!("; cooldown {}", format_duration(c)));
    }
    for st in &r.start {
        let t = st.target();
        let max = match t.kind {
            RunKind::Pipeline => cfg.pipelines.get(&t.name).map(|p| p.max_concurrent),
            RunKind::Build => cfg.builds.get(&t.name).map(|p| p.max_concurrent),
        };
        if let Some(m) = max {
            s.push_str(&format!("; at most {m} active run(s) of {t}"));
        }
    }
    if r.dry_run {
        s.push_str(" [dry run: logs \"would start\", changes nothing]");
    }
    s
}

pub(super) fn to_json(cfg: &Config, plan: &[PlannedSchedule]) -> Value {
    let schedules: Vec<Value> = plan
        .iter()
        .map(|p| {
            json!({
                "kind": p.kind.as_str(),
                "name": p.name,
                "expression": p.timed.expression,
                "timezone": p.timed.timezone.name(),
                "next": p.next.iter().map(ts).collect::<Vec<_>>(),
                "next_local": p.next.iter().map(|t| ts_in(t, p.timed.timezone)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let rules: Vec<Value> = cfg
        .rules
        .iter()
        .map(|(name, r)| {
            let trigger = match &r.trigger {
                Trigger::Check(c) => json!({"on_check": c}),
                Trigger::Schedule(t) => json!({"on_schedule": t.expression, "timezone": t.timezone.name()}),
                Trigger::Success(t) => json!({"on_success": t.to_string()}),
                Trigger::Failure(t) => json!({"on_failure": t.to_string()}),
                Trigger::Event(p) => json!({"on_event": {
                    "source": p.source,
                    "detail_type": p.detail_type,
                    "match": p.matches.iter().map(|(k, m)| (k.clone(), match m {
                        crate::config::Matcher::Equals(v) => v.clone(),
                        crate::config::Matcher::Prefix(x) => json!({"prefix": x}),
                        crate::config::Matcher::AnyOf(v) => json!({"any_of": v}),
                    })).collect::<serde_json::Map<String, Value>>(),
                }}),
            };
            let starts: Vec<Value> = r
                .start
                .iter()
                .map(|s| match s {
                    Start::Pipeline { name, parameters } => json!({"start_pipeline": name, "parameters": parameters}),
                    Start::Build { name, source_version, environment } => {
                        json!({"start_build": name, "source_version": source_version, "environment": environment})
                    }
                })
                .collect();
            json!({
                "name": name,
                "trigger": trigger,
                "actions": starts,
                "notify": r.notify,
                "cooldown": r.cooldown.map(format_duration),
                "dry_run": r.dry_run,
                "description": describe_rule(cfg, name),
            })
        })
        .collect();
    let endpoints: Vec<Value> = cfg
        .endpoints
        .iter()
        .map(|(name, e)| {
            json!({
                "name": name,
                "endpoint_name": e.endpoint_name,
                "model_package_group": e.model_package_group,
                "strategy": e.strategy.to_string(),
                "rollback_alarms": e.rollback_alarms,
                "bake": e.bake.map(format_duration),
                "promote_from": e.promote_from,
                "dry_run": e.dry_run,
                "description": describe_endpoint(e),
            })
        })
        .collect();
    json!({ "schedules": schedules, "rules": rules, "endpoints": endpoints })
}

/// What an endpoint block does, in a sentence.
fn describe_endpoint(e: &crate::config::Endpoint) -> String {
    let what = match (&e.version, &e.promote_from) {
        (Some(v), _) => format!("version {v} of {}", e.model_package_group),
        (None, Some(from)) => format!(
            "the newest version of {} that baked on [endpoints.{from}]",
            e.model_package_group
        ),
        (None, None) => format!("the newest Approved version of {}", e.model_package_group),
    };
    let mut s = format!(
        "deploys {what}{} to endpoint {} ({}, {})",
        match &e.require_tag {
            Some((k, v)) => format!(" tagged {k} = {v}"),
            None => String::new(),
        },
        e.endpoint_name,
        e.capacity,
        e.strategy
    );
    if !e.rollback_alarms.is_empty() {
        s.push_str(&format!(
            "; SageMaker rolls back on {}",
            e.rollback_alarms.join(", ")
        ));
    }
    if let Some(b) = e.bake {
        s.push_str(&format!(
            "; mlopsd bakes it {} and rolls back to the previous config on an alarm",
            format_duration(b)
        ));
    }
    if e.on_rollback == crate::config::OnRollback::Reject {
        s.push_str("; a rolled-back version is set Rejected");
    }
    if e.dry_run {
        s.push_str(" [dry run: logs \"would deploy\", changes nothing]");
    }
    s
}

pub(super) fn to_text(
    cfg: &Config,
    plan: &[PlannedSchedule],
    from: DateTime<Utc>,
    count: usize,
) -> String {
    let mut out = format!("Next {count} fire times after {}:\n", ts(&from));
    for p in plan {
        out.push_str(&format!(
            "\n{} {}  \"{}\"  [{}]\n",
            p.kind,
            p.name,
            p.timed.expression,
            p.timed.timezone.name()
        ));
        if p.next.is_empty() {
            out.push_str("  (never fires again)\n");
        }
        for t in &p.next {
            let local = t.with_timezone(&p.timed.timezone);
            out.push_str(&format!(
                "  {}   {} {}\n",
                ts(t),
                local.format("%Y-%m-%d %H:%M:%S%.f"),
                local.format("%Z")
            ));
        }
    }
    if !cfg.rules.is_empty() {
        out.push_str("\nRules:\n");
        for name in cfg.rules.keys() {
            out.push_str(&format!("  {name}: {}\n", describe_rule(cfg, name)));
        }
    }
    if !cfg.endpoints.is_empty() {
        out.push_str("\nEndpoints:\n");
        for (name, e) in &cfg.endpoints {
            out.push_str(&format!("  {name}: {}\n", describe_endpoint(e)));
        }
    }
    out
}
