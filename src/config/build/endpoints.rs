//! `[endpoints.NAME]`: the endpoint, the model package group (and version or promotion), the
//! model's role, instances or serverless, the traffic strategy, rollback alarms, the bake.
//! Each part is read by a short function; promotions are checked once every block is read.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::common::*;
use super::Refs;
use crate::config::reader::{Diags, Sp, Table};
use crate::config::*;

pub(in crate::config) const ENDPOINT_KEYS: &[&str] = &[
    "endpoint_name",
    "model_package_group",
    "version",
    "execution_role_arn",
    "instance_type",
    "instance_count",
    "serverless",
    "strategy",
    "rollback_alarms",
    "bake",
    "on_rollback",
    "promote_from",
    "require_tag",
    "notify",
    "dry_run",
];

/// SageMaker's traffic-shifting waits are at most an hour (`WaitIntervalInSeconds`).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The wait between steps when `strategy` gives none.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// An endpoint block as read, with the spans the cross-block checks point at.
pub(super) struct ReadEndpoint {
    pub(super) endpoint: Endpoint,
    pub(super) name_span: Range<usize>,
    pub(super) promote_span: Option<Range<usize>>,
}

pub(super) fn read_endpoint(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    refs: &mut Refs,
) -> Option<ReadEndpoint> {
    let name = t.req_string(d, "endpoint_name");
    let mut ok = name.as_ref().is_none_or(|n| sagemaker_name(d, n));
    let group = t.req_string(d, "model_package_group");
    let role = t.req_string(d, "execution_role_arn");
    if let Some(r) = &role {
        if !r.v.starts_with("arn:") || !r.v.contains(":role/") {
            d.push(r.span.clone(), format!("`execution_role_arn` must be an IAM role ARN such as \"arn:aws:iam::123456789012:role/SageMakerModelRole\", found {}", d.show(r)));
            ok = false;
        }
    }
    let version = match t.int_in(d, "version", 1, u32::MAX as i64) {
        Some(v) => Some(v.v as u32),
        None => {
            ok &= !t.has("version");
            None
        }
    };
    let capacity = capacity(d, t);
    let strategy = strategy(d, t, matches!(capacity, Some(Capacity::Serverless { .. })));
    let alarms = alarms(d, t, &mut ok);
    let bake = match super::daemon::bounded(d, t, "bake", Duration::ZERO, Duration::MAX, "") {
        Ok(b) => b,
        Err(()) => {
            ok = false;
            None
        }
    };
    if bake.is_some() && alarms.is_empty() && !t.has("rollback_alarms") {
        let span = t.key_span("bake").unwrap_or(t.span.clone());
        d.push(
            span,
            "`bake` watches `rollback_alarms`: set the alarms to watch, or leave `bake` out",
        );
        ok = false;
    }
    let on_rollback = on_rollback(d, t, &mut ok);
    let promote = t.string(d, "promote_from");
    ok &= promote.is_some() || !t.has("promote_from");
    if let (Some(p), true) = (&promote, version.is_some()) {
        d.push(
            p.span.clone(),
            "set either `version` (a pinned version) or `promote_from`, not both",
        );
        ok = false;
    }
    if let Some(p) = &promote {
        refs.endpoints.push(p.clone());
    }
    let require_tag = require_tag(d, t, &mut ok);
    let notify = notify_list(d, t, refs);
    let dry_run = match t.boolean(d, "dry_run") {
        Some(b) => b.v,
        None => {
            ok &= !t.has("dry_run");
            false
        }
    };
    let name = name?;
    if !ok {
        return None;
    }
    Some(ReadEndpoint {
        name_span: name.span.clone(),
        promote_span: promote.as_ref().map(|p| p.span.clone()),
        endpoint: Endpoint {
            endpoint_name: name.v,
            model_package_group: group?.v,
            version,
            execution_role_arn: role?.v,
            capacity: capacity?,
            strategy: strategy?,
            rollback_alarms: alarms,
            bake,
            on_rollback,
            promote_from: promote.map(|p| p.v),
            require_tag,
            notify: notify.unwrap_or_default(),
            dry_run,
        },
    })
}

/// A SageMaker resource name: 1–63 letters, digits and hyphens, no leading or trailing hyphen.
/// mlopsd derives model and config names from it, so it is checked here.
fn sagemaker_name(d: &mut Diags, n: &Sp<String>) -> bool {
    let s = &n.v;
    let good = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !good {
        d.push(n.span.clone(), format!("`endpoint_name` must be 1–63 letters, digits and hyphens, starting and ending with a letter or digit (SageMaker's rule), found {}", d.show(n)));
    }
    good
}

/// `instance_type` + `instance_count`, or `serverless = { memory_mb, max_concurrency }`.
fn capacity(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<Capacity> {
    let itype = t.string(d, "instance_type");
    let count = t.int_in(d, "instance_count", 1, 1000);
    let bad_count = t.has("instance_count") && count.is_none();
    if t.has("serverless") {
        if t.has("instance_type") || t.has("instance_count") {
            let span = t.key_span("serverless").unwrap_or(t.span.clone());
            d.push(
                span,
                "set either `instance_type`/`instance_count` or `serverless`, not both",
            );
            let _ = t.raw("serverless");
            return None;
        }
        let mut s = t.table(d, "serverless")?;
        let mem = s.int_in(d, "memory_mb", 1024, 6144);
        if let Some(m) = &mem {
            if m.v % 1024 != 0 {
                d.push(m.span.clone(), format!("`memory_mb` must be one of 1024, 2048, 3072, 4096, 5120, 6144 (SageMaker Serverless), found {}", m.v));
                s.finish(d, &["memory_mb", "max_concurrency"]);
                return None;
            }
        } else if !s.has("memory_mb") {
            d.push(
                s.span.clone(),
                "`serverless` needs `memory_mb` (1024–6144, a multiple of 1024)",
            );
        }
        let conc = s.int_in(d, "max_concurrency", 1, 200);
        if conc.is_none() && !s.has("max_concurrency") {
            d.push(
                s.span.clone(),
                "`serverless` needs `max_concurrency` (1–200)",
            );
        }
        s.finish(d, &["memory_mb", "max_concurrency"]);
        return Some(Capacity::Serverless {
            memory_mb: mem?.v as u32,
            max_concurrency: conc?.v as u32,
        });
    }
    match itype {
        Some(i) if !bad_count => Some(Capacity::Instances {
            instance_type: i.v,
            count: count.map_or(1, |c| c.v as u32),
        }),
        Some(_) => None,
        None => {
            if !t.has("instance_type") {
                d.push(t.span.clone(), format!("[{}] needs `instance_type` (and `instance_count`) or `serverless = {{ memory_mb, max_concurrency }}`", t.path));
            }
            None
        }
    }
}

/// `strategy`: "all_at_once" (the default) or `{ canary | linear | rolling = "N%", wait }`.
fn strategy(d: &mut Diags, t: &mut Table<'_, '_>, serverless: bool) -> Option<Strategy> {
    if !t.has("strategy") {
        return Some(Strategy::AllAtOnce);
    }
    if let Some(v) = t
        .raw("strategy")
        .filter(|v| matches!(v.get_ref(), toml::de::DeValue::String(_)))
    {
        let toml::de::DeValue::String(s) = v.get_ref() else {
            return None;
        };
        if s.as_ref() == "all_at_once" {
            return Some(Strategy::AllAtOnce);
        }
        d.push(v.span(), format!("`strategy` must be \"all_at_once\" or a table such as {{ canary = \"10%\", wait = \"10m\" }}, found \"{s}\""));
        return None;
    }
    let mut s = t.table(d, "strategy")?;
    let kinds: Vec<&str> = ["canary", "linear", "rolling"]
        .into_iter()
        .filter(|k| s.has(k))
        .collect();
    let wait = super::daemon::bounded(
        d,
        &mut s,
        "wait",
        Duration::ZERO,
        MAX_WAIT,
        "`wait` must be at most 1h (SageMaker waits at most an hour between traffic shifts)",
    );
    let out = match kinds.as_slice() {
        [k] => {
            let (lo, hi, what) = match *k {
                "canary" => (1, 50, "the canary is at most 50% of capacity"),
                "linear" => (10, 50, "a linear step is 10–50% of capacity"),
                _ => (5, 50, "a rolling batch is 5–50% of capacity"),
            };
            let p = percent(d, &mut s, k, lo, hi, what);
            let wait = wait.ok().map(|w| w.unwrap_or(DEFAULT_WAIT));
            if serverless && p.is_some() {
                let span = s.key_span(k).unwrap_or(s.span.clone());
                d.push(span, format!("`{k}` needs instances: SageMaker shifts a serverless endpoint's traffic all at once"));
                None
            } else {
                p.zip(wait).map(|(percent, wait)| match *k {
                    "canary" => Strategy::Canary { percent, wait },
                    "linear" => Strategy::Linear { percent, wait },
                    _ => Strategy::Rolling { percent, wait },
                })
            }
        }
        [] => {
            d.push(s.span.clone(), "`strategy` needs one of `canary`, `linear`, `rolling` (or write strategy = \"all_at_once\")");
            None
        }
        _ => {
            d.push(
                s.span.clone(),
                format!("`strategy` has {}; set exactly one", kinds.join(" and ")),
            );
            for k in &kinds {
                let _ = s.raw(k);
            }
            None
        }
    };
    s.finish(d, &["canary", "linear", "rolling", "wait"]);
    out
}

/// A share of capacity: `"10%"` or `10`, within `lo..=hi`.
fn percent(
    d: &mut Diags,
    s: &mut Table<'_, '_>,
    key: &'static str,
    lo: u32,
    hi: u32,
    what: &str,
) -> Option<u32> {
    let v = s.raw(key)?;
    let n = match v.get_ref() {
        toml::de::DeValue::String(x) => x
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u32>().ok()),
        toml::de::DeValue::Integer(i) => i.as_str().parse::<u32>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (lo..=hi).contains(&n) => Some(n),
        Some(n) => {
            d.push(
                v.span(),
                format!("`{key}` must be {lo}–{hi}% ({what}), found {n}%"),
            );
            None
        }
        None => {
            d.push(
                v.span(),
                format!(
                    "`{key}` must be a share of capacity such as \"10%\", found {}",
                    crate::config::reader::type_name(v.get_ref())
                ),
            );
            None
        }
    }
}

/// `rollback_alarms`: 1–10 CloudWatch alarm names (AWS's limit for AutoRollbackConfiguration).
fn alarms(d: &mut Diags, t: &mut Table<'_, '_>, ok: &mut bool) -> Vec<String> {
    let Some(list) = t.string_list(d, "rollback_alarms") else {
        *ok &= !t.has("rollback_alarms");
        return Vec::new();
    };
    if list.v.is_empty() || list.v.len() > 10 {
        d.push(
            list.span.clone(),
            format!(
                "`rollback_alarms` must name 1–10 CloudWatch alarms, found {}",
                list.v.len()
            ),
        );
        *ok = false;
    }
    let mut out: Vec<String> = Vec::new();
    for a in list.v {
        if a.v.trim().is_empty() {
            d.push(a.span, "`rollback_alarms` items must not be empty");
            *ok = false;
        } else if out.contains(&a.v) {
            d.push(a.span, format!("alarm \"{}\" is listed twice", a.v));
            *ok = false;
        } else {
            out.push(a.v);
        }
    }
    out
}

fn on_rollback(d: &mut Diags, t: &mut Table<'_, '_>, ok: &mut bool) -> OnRollback {
    match t.string(d, "on_rollback") {
        None => {
            *ok &= !t.has("on_rollback");
            OnRollback::Notify
        }
        Some(v) => match v.v.as_str() {
            "notify" => OnRollback::Notify,
            "reject" => OnRollback::Reject,
            other => {
                d.push(
                    v.span,
                    format!("`on_rollback` must be \"notify\" or \"reject\", found \"{other}\""),
                );
                *ok = false;
                OnRollback::Notify
            }
        },
    }
}

/// `require_tag = { KEY = "VALUE" }`: exactly one tag.
fn require_tag(d: &mut Diags, t: &mut Table<'_, '_>, ok: &mut bool) -> Option<(String, String)> {
    let m = t.string_map(d, "require_tag");
    let Some(m) = m else {
        *ok &= !t.has("require_tag");
        return None;
    };
    if m.v.len() != 1 {
        d.push(m.span, format!("`require_tag` must hold exactly one tag, such as {{ \"mlopsd-promote\" = \"prod\" }}, found {}", m.v.len()));
        *ok = false;
        return None;
    }
    m.v.into_iter().next()
}

/// Across blocks: each SageMaker endpoint is declared once; `promote_from` names another
/// block of the same model package group and no chain of promotions comes back to itself.
pub(super) fn check_endpoints(
    d: &mut Diags,
    read: &BTreeMap<String, ReadEndpoint>,
) -> BTreeMap<String, Arc<Endpoint>> {
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    let mut bad = std::collections::HashSet::new();
    for (n, r) in read {
        if let Some(first) = owners.insert(&r.endpoint.endpoint_name, n) {
            d.push(r.name_span.clone(), format!("[endpoints.{n}] declares the endpoint \"{}\" that [endpoints.{first}] declares already; one block per endpoint", r.endpoint.endpoint_name));
            bad.insert(n.clone());
        }
    }
    for (n, r) in read {
        let (Some(from), Some(span)) = (&r.endpoint.promote_from, &r.promote_span) else {
            continue;
        };
        if let Some(src) = read.get(from) {
            if src.endpoint.model_package_group != r.endpoint.model_package_group {
                d.push(span.clone(), format!("`promote_from` names [endpoints.{from}], which deploys the group \"{}\", not \"{}\"", src.endpoint.model_package_group, r.endpoint.model_package_group));
                bad.insert(n.clone());
            }
        }
        // Follow the chain; coming back to `n` is a cycle.
        let mut at = from.as_str();
        for _ in 0..=read.len() {
            if at == n {
                d.push(span.clone(), format!("`promote_from` forms a cycle: [endpoints.{n}] is promoted from itself through {from}"));
                bad.insert(n.clone());
                break;
            }
            match read
                .get(at)
                .and_then(|x| x.endpoint.promote_from.as_deref())
            {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    read.iter()
        .filter(|(n, _)| !bad.contains(*n))
        .map(|(n, r)| (n.clone(), Arc::new(r.endpoint.clone())))
        .collect()
}
