//! Readers every section shares: durations, time zones, schedules, counts, templates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;

use crate::config::reader::{Diags, Sp, Table};
use crate::config::{Params, Timed};
use crate::duration::parse_duration;
use crate::schedule::Schedule;

pub(super) fn duration(
    d: &mut Diags,
    v: Option<Sp<String>>,
    key: &str,
    nonzero: bool,
) -> Option<Duration> {
    let v = v?;
    match parse_duration(&v.v) {
        Ok(x) if nonzero && x.is_zero() => {
            d.push(v.span, format!("`{key}` must be greater than zero"));
            None
        }
        Ok(x) => Some(x),
        Err(m) => {
            d.push(v.span, format!("`{key}`: {m}"));
            None
        }
    }
}

pub(super) fn zone(d: &mut Diags, v: &Sp<String>) -> Option<Tz> {
    match v.v.parse::<Tz>() {
        Ok(z) => Some(z),
        Err(_) => {
            d.push(v.span.clone(), format!("unknown time zone \"{}\" (use an IANA name such as \"Europe/Berlin\" or \"UTC\")", v.v));
            None
        }
    }
}

pub(super) fn schedule(d: &mut Diags, v: &Sp<String>, key: &str) -> Option<Schedule> {
    match Schedule::parse(&v.v) {
        Ok(s) => Some(s),
        Err(m) => {
            d.push(v.span.clone(), format!("bad schedule in `{key}`: {m}"));
            None
        }
    }
}

pub(super) fn timed(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    key: &'static str,
    default_tz: Option<Tz>,
) -> Option<Timed> {
    let expr = t.req_string(d, key);
    let tzv = t.string(d, "timezone");
    let tz = match &tzv {
        Some(z) => zone(d, z),
        None => default_tz,
    };
    let expr = expr?;
    let sched = schedule(d, &expr, key)?;
    Some(Timed {
        expression: expr.v,
        schedule: sched,
        timezone: tz?,
    })
}

pub(super) fn positive_u32(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    key: &'static str,
    default: u32,
) -> Option<u32> {
    match t.int_in(d, key, 1, u32::MAX as i64) {
        Some(v) => Some(v.v as u32),
        None if t.has(key) => None,
        None => Some(default),
    }
}

/// A pipeline's parameters (a build's environment) with a rule's overrides; the shared map
/// itself when the rule overrides nothing.
pub(super) fn merged(base: &Params, over: Option<&BTreeMap<String, String>>) -> Params {
    match over {
        Some(o) if !o.is_empty() => {
            let mut m = (**base).clone();
            m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            Arc::new(m)
        }
        _ => base.clone(),
    }
}

/// Compiles a subject template, so a bad template is a validate-time error.
/// What a rule's parameter templates may name.
pub(super) struct Names {
    /// `event`: an `on_event` rule.
    pub event: bool,
    /// `check` (`features`, `violations`, `report_uri`, `value`, `name`): a rule on a
    /// `monitor` or `report` check; `None` when its check is unknown or failed to build
    /// (reported there, not again here).
    pub check: Option<bool>,
}

/// The fields `{{ check.* }}` has.
pub(crate) const CHECK_FIELDS: &[&str] = &["features", "violations", "report_uri", "value", "name"];

/// A parameter value that may be a template (`{{ event.detail.object.key }}`): it must parse,
/// and it may name `event` only in an `on_event` rule, `check` only in a rule on a `monitor`
/// or `report` check.
pub(super) fn check_value_template(v: &str, allowed: &Names) -> Result<(), String> {
    if !v.contains("{{") && !v.contains("{%") {
        return Ok(());
    }
    let env = minijinja::Environment::new();
    let t = env
        .template_from_str(v)
        .map_err(|e| format!("template does not parse: {e}"))?;
    let names = t.undeclared_variables(true);
    for n in &names {
        let (root, field) = n.split_once('.').unwrap_or((n.as_str(), ""));
        match root {
            "event" if allowed.event => {}
            "event" => return Err("names `event`, which only an `on_event` rule has".into()),
            "check" if allowed.check == Some(false) => {
                return Err("names `check`, which only a rule on a `monitor` or `report` check has".into())
            }
            "check" if field.is_empty() || CHECK_FIELDS.contains(&field.split('.').next().unwrap_or("")) => {}
            "check" => {
                return Err(format!(
                    "names `{n}`; a check has {}",
                    CHECK_FIELDS
                        .iter()
                        .map(|f| format!("`check.{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            other => {
                return Err(format!(
                    "names `{other}`; a parameter template can name only `event` (in an `on_event` rule) or `check` (in a rule on a `monitor` or `report` check)"
                ))
            }
        }
    }
    Ok(())
}

pub(super) fn check_template(src: &str) -> Result<(), String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.add_template("subject", src)
        .map_err(|e| e.to_string())
        .map(|_| ())
}

/// A `notify = [ … ]` list: its names, each also a reference to check.
pub(super) fn notify_list(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    refs: &mut super::Refs,
) -> Option<Vec<String>> {
    let n = t.string_list(d, "notify")?;
    refs.notifiers.extend(n.v.iter().cloned());
    Some(n.v.into_iter().map(|x| x.v).collect())
}
