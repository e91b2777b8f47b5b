//! `[rules.NAME]`: exactly one trigger, at least one action (start a pipeline or a build,
//! notify), and the options (cooldown, dry run, catch-up). Each part is read by a short
//! function of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono_tz::Tz;

use super::common::*;
use super::pipelines::check_declared_params;
use super::Refs;
use crate::config::reader::{Diags, Sp, Table};
use crate::config::*;

pub(in crate::config) const RULE_KEYS: &[&str] = &[
    "on_check",
    "on_schedule",
    "on_success",
    "on_failure",
    "on_event",
    "timezone",
    "start_pipeline",
    "start_build",
    "parameters",
    "environment",
    "source_version",
    "notify",
    "cooldown",
    "dry_run",
    "catch_up",
];

const TRIGGERS: [&str; 5] = [
    "on_check",
    "on_schedule",
    "on_success",
    "on_failure",
    "on_event",
];

/// What a rule's block holds, read but not yet checked against each other.
struct Actions {
    start_pipeline: Option<Sp<String>>,
    start_build: Option<Sp<String>>,
    parameters: Option<Sp<BTreeMap<String, String>>>,
    environment: Option<Sp<BTreeMap<String, String>>>,
    source_version: Option<Sp<String>>,
    notify: Option<Vec<String>>,
}

/// The items a rule starts from, and whether the rule's values may be `event` templates.
pub(super) struct Known<'a> {
    pub(super) pipelines: &'a BTreeMap<String, Pipeline>,
    pub(super) builds: &'a BTreeMap<String, Build>,
    /// The checks that were read (one that failed to build is absent, and not reported again).
    pub(super) checks: &'a BTreeMap<String, Arc<crate::config::Check>>,
    pub(super) has_events: bool,
}

pub(super) fn read_rule(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    known: &Known<'_>,
    refs: &mut Refs,
) -> Option<Rule> {
    let triggers: Vec<&'static str> = TRIGGERS.into_iter().filter(|k| t.has(k)).collect();
    let mut ok = one_trigger(d, t, &triggers);
    let trigger = read_trigger(d, t, &triggers, default_tz, known.has_events, refs);
    ok &= trigger.as_ref().is_some_and(|(_, ok)| *ok);
    let on_schedule = triggers.contains(&"on_schedule");
    ok &= timezone_only_on_schedule(d, t, on_schedule);
    let on_event = triggers == ["on_event"];
    let names = Names {
        event: on_event,
        check: match trigger.as_ref().map(|(t, _)| t) {
            Some(Trigger::Check(c)) => known.checks.get(c).map(|check| check.reads_report()),
            _ => Some(false),
        },
    };
    let (mut actions, actions_ok) = read_actions(d, t, &names, refs);
    ok &= actions_ok;
    let notify = actions.notify.take();
    let start = starts(d, t, actions, known, on_event, refs);
    ok &= start.is_some();
    let cooldown = match super::daemon::bounded(
        d,
        t,
        "cooldown",
        std::time::Duration::ZERO,
        std::time::Duration::MAX,
        "",
    ) {
        Ok(c) => c,
        Err(()) => {
            ok = false;
            None
        }
    };
    let dry_run = match t.boolean(d, "dry_run") {
        Some(b) => b.v,
        None => {
            ok &= !t.has("dry_run");
            false
        }
    };
    let catch_up = catch_up(d, t, on_schedule, &mut ok);
    let (trigger, _) = trigger?;
    if !ok {
        return None;
    }
    let mut start = start?;
    start.shrink_to_fit();
    Some(Rule {
        trigger,
        start,
        notify: notify.unwrap_or_default(),
        cooldown,
        dry_run,
        catch_up,
    })
}

/// Exactly one trigger.
fn one_trigger(d: &mut Diags, t: &Table<'_, '_>, triggers: &[&str]) -> bool {
    if triggers.is_empty() {
        d.push(t.span.clone(), format!("[{}] needs a trigger: one of `on_check`, `on_schedule`, `on_success`, `on_failure`, `on_event`", t.path));
        return false;
    }
    if triggers.len() > 1 {
        let second = t.key_span(triggers[1]).unwrap_or(t.span.clone());
        d.push(
            second,
            format!(
                "[{}] has more than one trigger ({}); a rule has exactly one",
                t.path,
                triggers.join(", ")
            ),
        );
        return false;
    }
    true
}

/// The first trigger, and whether it may be used here (`on_event` needs `[events]`).
fn read_trigger(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    triggers: &[&'static str],
    default_tz: Option<Tz>,
    has_events: bool,
    refs: &mut Refs,
) -> Option<(Trigger, bool)> {
    let mut ok = true;
    let trigger = match triggers.first().copied() {
        Some("on_check") => t.string(d, "on_check").map(|c| {
            refs.checks.push(c.clone());
            Trigger::Check(c.v)
        }),
        Some("on_schedule") => timed(d, t, "on_schedule", default_tz).map(Trigger::Schedule),
        Some("on_success") => t
            .string(d, "on_success")
            .and_then(|v| parse_target(d, &v, "on_success", refs))
            .map(Trigger::Success),
        Some("on_failure") => t
            .string(d, "on_failure")
            .and_then(|v| parse_target(d, &v, "on_failure", refs))
            .map(Trigger::Failure),
        Some("on_event") => {
            if !has_events {
                let span = t.key_span("on_event").unwrap_or(t.span.clone());
                d.push(span, "`on_event` needs an [events] section with the `queue_url` EventBridge delivers to");
                ok = false;
            }
            super::events::read_event_pattern(d, t).map(|p| Trigger::Event(Arc::new(p)))
        }
        _ => None,
    };
    // Read the other triggers too, so they are not also "unknown keys".
    for k in triggers.iter().skip(1) {
        let _ = t.raw(k);
    }
    trigger.map(|x| (x, ok))
}

fn timezone_only_on_schedule(d: &mut Diags, t: &mut Table<'_, '_>, on_schedule: bool) -> bool {
    if on_schedule {
        return true;
    }
    match t.string(d, "timezone") {
        Some(z) => {
            d.push(
                z.span,
                "`timezone` only applies to a rule with `on_schedule`",
            );
            false
        }
        None => true,
    }
}

/// The actions and their values; each value may be a template only in an `on_event` rule.
fn read_actions(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    names: &Names,
    refs: &mut Refs,
) -> (Actions, bool) {
    let mut ok = true;
    let a = Actions {
        start_pipeline: t.string(d, "start_pipeline"),
        start_build: t.string(d, "start_build"),
        parameters: t.string_map(d, "parameters"),
        environment: t.string_map(d, "environment"),
        source_version: t.string(d, "source_version"),
        notify: notify_list(d, t, refs),
    };
    for m in [&a.parameters, &a.environment].into_iter().flatten() {
        for (k, v) in &m.v {
            if let Err(e) = check_value_template(v, names) {
                d.push(m.span.clone(), format!("`{k}`: {e}"));
                ok = false;
            }
        }
    }
    if a.start_pipeline.is_none()
        && a.start_build.is_none()
        && a.notify.as_ref().is_none_or(Vec::is_empty)
    {
        d.push(
            t.span.clone(),
            format!(
                "[{}] needs at least one action: `start_pipeline`, `start_build` or `notify`",
                t.path
            ),
        );
        ok = false;
    }
    ok &= values_have_their_action(d, &a);
    (a, ok)
}

/// `parameters` go with `start_pipeline`, `environment` and `source_version` with
/// `start_build`.
fn values_have_their_action(d: &mut Diags, a: &Actions) -> bool {
    let mut ok = true;
    if let (None, Some(p)) = (&a.start_pipeline, &a.parameters) {
        d.push(
            p.span.clone(),
            "`parameters` needs `start_pipeline` (they are merged over that pipeline's)",
        );
        ok = false;
    }
    if a.start_build.is_none() {
        for (k, v) in [
            (
                "environment",
                a.environment.as_ref().map(|x| x.span.clone()),
            ),
            (
                "source_version",
                a.source_version.as_ref().map(|x| x.span.clone()),
            ),
        ] {
            if let Some(span) = v {
                d.push(span, format!("`{k}` needs `start_build`"));
                ok = false;
            }
        }
    }
    ok
}

/// The starts, with the target's values merged under the rule's; `None` when a target is
/// unknown (reported with the references) or a parameter does not fit its declaration.
fn starts(
    d: &mut Diags,
    t: &Table<'_, '_>,
    a: Actions,
    known: &Known<'_>,
    on_event: bool,
    refs: &mut Refs,
) -> Option<Vec<Start>> {
    let mut ok = true;
    let mut start = Vec::new();
    if let Some(p) = a.start_pipeline {
        refs.pipelines.push(p.clone());
        match known.pipelines.get(&p.v) {
            Some(pl) => {
                if let (Some(decl), Some(params)) = (&pl.declared, &a.parameters) {
                    ok &= check_declared_params(
                        d,
                        t,
                        &params.v,
                        &decl.file,
                        &decl.definition,
                        on_event,
                    );
                }
                start.push(Start::Pipeline {
                    name: p.v,
                    parameters: merged(&pl.parameters, a.parameters.as_ref().map(|o| &o.v)),
                });
            }
            None => ok = false,
        }
    }
    if let Some(b) = a.start_build {
        refs.builds.push(b.clone());
        match known.builds.get(&b.v) {
            Some(bl) => start.push(Start::Build {
                name: b.v,
                source_version: a
                    .source_version
                    .map(|s| s.v)
                    .or_else(|| bl.source_version.clone()),
                environment: merged(&bl.environment, a.environment.as_ref().map(|o| &o.v)),
            }),
            None => ok = false,
        }
    }
    ok.then_some(start)
}

fn catch_up(d: &mut Diags, t: &mut Table<'_, '_>, on_schedule: bool, ok: &mut bool) -> CatchUp {
    let Some(c) = t.string(d, "catch_up") else {
        return CatchUp::None;
    };
    match c.v.as_str() {
        "none" => CatchUp::None,
        "once" => {
            if !on_schedule {
                d.push(
                    c.span,
                    "`catch_up` only applies to a rule with `on_schedule`",
                );
                *ok = false;
            }
            CatchUp::Once
        }
        other => {
            d.push(
                c.span,
                format!("`catch_up` must be \"none\" or \"once\", found \"{other}\""),
            );
            *ok = false;
            CatchUp::None
        }
    }
}

/// `pipeline:NAME`, `build:NAME` or `endpoint:NAME` (`on_success`, `on_failure`).
fn parse_target(d: &mut Diags, v: &Sp<String>, key: &str, refs: &mut Refs) -> Option<Upstream> {
    let Some((kind, name)) = v.v.split_once(':') else {
        d.push(
            v.span.clone(),
            format!(
                "`{key}` must be \"pipeline:NAME\", \"build:NAME\" or \"endpoint:NAME\", found {}",
                d.show(v)
            ),
        );
        return None;
    };
    let r = Sp {
        v: name.to_string(),
        span: v.span.clone(),
    };
    let kind = match kind {
        "pipeline" => {
            refs.pipelines.push(r);
            RunKind::Pipeline
        }
        "build" => {
            refs.builds.push(r);
            RunKind::Build
        }
        "endpoint" => {
            refs.endpoints.push(r);
            return Some(Upstream::Endpoint(name.to_string()));
        }
        other => {
            d.push(
                v.span.clone(),
                format!(
                    "`{key}`: unknown kind \"{other}\"; use \"pipeline:NAME\", \"build:NAME\" or \"endpoint:NAME\""
                ),
            );
            return None;
        }
    };
    Some(Upstream::Run(Target {
        kind,
        name: name.to_string(),
    }))
}
