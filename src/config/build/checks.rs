//! `[checks.NAME]`: one source — a metric (namespace, metric, dimensions, statistic, period,
//! above or below), an alarm, a Model Monitor schedule (`monitor`) or a JSON report under an
//! S3 prefix (`report`) — on a schedule, with `for` and `missing_data`.

use std::time::Duration;

use chrono_tz::Tz;

use super::common::*;
use crate::config::reader::{Diags, Table};
use crate::config::*;
use crate::schedule::Schedule;

pub(in crate::config) const CHECK_KEYS: &[&str] = &[
    "alarm",
    "schedule",
    "timezone",
    "namespace",
    "metric",
    "dimensions",
    "statistic",
    "period",
    "above",
    "below",
    "for",
    "missing_data",
    "monitor",
    "report",
    "file",
    "value",
    "violations",
    "check_types",
    "features",
];

/// The keys only a metric check reads.
const METRIC_KEYS: &[&str] = &["namespace", "metric", "dimensions", "statistic", "period"];

/// The source keys, in the order a check's source is named in messages.
const SOURCES: [&str; 4] = ["metric", "alarm", "monitor", "report"];

pub(super) fn read_check(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    has_events: bool,
) -> Option<Check> {
    let given: Vec<&str> = SOURCES
        .into_iter()
        .filter(|k| t.has(k) || (*k == "metric" && t.has("namespace")))
        .collect();
    if given.len() > 1 {
        let second = t.key_span(given[1]).unwrap_or(t.span.clone());
        d.push(
            second,
            format!(
                "[{}] has more than one source ({}); a check reads one: a metric, `alarm`, `monitor` or `report`",
                t.path,
                given.join(", ")
            ),
        );
        for k in CHECK_KEYS {
            let _ = t.raw(k);
        }
        return None;
    }
    match given.first().copied() {
        Some("alarm") => return read_alarm_check(d, t, default_tz, has_events),
        Some("monitor") => return super::reports::read_monitor_check(d, t, default_tz),
        Some("report") => return super::reports::read_report_check(d, t, default_tz, has_events),
        _ => {}
    }
    let mut ok = not_report(d, t);
    let timed = timed(d, t, "schedule", default_tz);
    let namespace = t.req_string(d, "namespace");
    let metric = t.req_string(d, "metric");
    let dimensions: Dimensions = t
        .string_map(d, "dimensions")
        .map(|x| x.v.into_iter().collect())
        .unwrap_or_default();
    if dimensions.len() > 30 {
        d.push(
            t.span.clone(),
            "CloudWatch allows at most 30 dimensions per metric",
        );
    }
    let statistic = match t.string(d, "statistic") {
        Some(s) => match valid_statistic(&s.v) {
            Ok(()) => Some(s.v),
            Err(m) => {
                d.push(s.span, m);
                None
            }
        },
        None => Some("Average".to_string()),
    };
    let period = if t.has("period") {
        let span = t.raw("period").map(|v| v.span());
        let p = {
            let v = t.duration_text(d, "period");
            duration(d, v, "period", true)
        };
        match p {
            Some(p) if !valid_period(p) => {
                d.push(
                    span.unwrap_or(0..0),
                    "`period` must be 1s, 5s, 10s, 30s or a multiple of 60s (CloudWatch periods)",
                );
                None
            }
            other => other,
        }
    } else {
        Some(Duration::from_secs(300))
    };
    let threshold = threshold(d, t, &mut ok, "");
    let for_count = positive_u32(d, t, "for", 1);
    let missing = missing_data(d, t);
    if !ok {
        return None;
    }
    Some(Check {
        timed: timed?,
        source: Source::Metric(MetricSource {
            namespace: namespace?.v,
            metric: metric?.v,
            dimensions,
            statistic: statistic?,
            period: period?,
        }),
        threshold: threshold?,
        for_count: for_count?,
        missing_data: missing?,
    })
}

/// `alarm = NAME` instead of a metric: the check's one other source.
fn read_alarm_check(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    has_events: bool,
) -> Option<Check> {
    let alarm = t.req_string(d, "alarm");
    let mut ok = not_here(d, t, METRIC_KEYS, "is for a metric check");
    ok &= not_here(d, t, &["above", "below"], "is for a metric check");
    ok &= not_report(d, t);
    let timed = schedule_or_events(d, t, default_tz, has_events, "alarm", &mut ok);
    let for_count = positive_u32(d, t, "for", 1);
    let missing = missing_data(d, t);
    let alarm = alarm?;
    if alarm.v.is_empty() || alarm.v.len() > 255 {
        d.push(
            alarm.span.clone(),
            "`alarm` must be a CloudWatch alarm name (1 to 255 characters)",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Check {
        timed: timed?,
        source: Source::Alarm(alarm.v),
        threshold: Threshold::Above(0.5),
        for_count: for_count?,
        missing_data: missing?,
    })
}

/// Each of `keys` present is an error ("`file` is for a `report` check; [checks.x] reads
/// `alarm`"); `false` when any was.
pub(super) fn not_here(d: &mut Diags, t: &mut Table<'_, '_>, keys: &[&str], why: &str) -> bool {
    let source = SOURCES
        .into_iter()
        .find(|k| t.has(k))
        .map(|k| format!("`{k}`"))
        .unwrap_or_else(|| "a metric".into());
    let mut ok = true;
    for k in keys {
        if let Some(span) = t.key_span(k) {
            d.push(
                span,
                format!(
                    "`{k}` {why}; [{}] reads {source} (a check has one source)",
                    t.path
                ),
            );
            ok = false;
        }
        // Read, so it is not also an unknown key.
        if let Some(key) = CHECK_KEYS.iter().find(|c| *c == k) {
            let _ = t.raw(key);
        }
    }
    ok
}

/// `above` or `below` (exactly one); `what` names what it is compared with in the message.
pub(super) fn threshold(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    ok: &mut bool,
    what: &str,
) -> Option<Threshold> {
    let above = t.float(d, "above");
    let below = t.float(d, "below");
    let th = match (above, below) {
        (Some(a), None) => Some(Threshold::Above(a.v)),
        (None, Some(b)) => Some(Threshold::Below(b.v)),
        (Some(_), Some(b)) => {
            d.push(
                b.span,
                "set either `above` or `below`, not both (use two checks for a band)",
            );
            None
        }
        (None, None) => {
            if !t.has("above") && !t.has("below") {
                d.push(
                    t.span.clone(),
                    format!(
                        "[{}] needs a threshold{what}: `above = N` or `below = N`",
                        t.path
                    ),
                );
            }
            None
        }
    };
    *ok &= th.is_some();
    th
}

/// The keys of report checks, each an error in a metric or alarm check.
fn not_report(d: &mut Diags, t: &mut Table<'_, '_>) -> bool {
    let a = not_here(
        d,
        t,
        &["file", "value", "violations"],
        "is for a `report` check",
    );
    let b = not_here(
        d,
        t,
        &["check_types", "features"],
        "is for a `monitor` or `report` check",
    );
    a && b
}

/// `schedule`, or — with an [events] section, whose `what` events wake the check — none.
pub(super) fn schedule_or_events(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    has_events: bool,
    what: &str,
    ok: &mut bool,
) -> Option<Timed> {
    if t.has("schedule") {
        return timed(d, t, "schedule", default_tz);
    }
    if !has_events {
        d.push(
            t.span.clone(),
            format!(
                "[{}] needs a `schedule` (or an [events] section, whose {what} events wake it)",
                t.path
            ),
        );
        *ok = false;
        return None;
    }
    let tzv = t.string(d, "timezone");
    let tz = match &tzv {
        Some(z) => zone(d, z),
        None => default_tz,
    };
    tz.map(|timezone| Timed {
        expression: format!("({what} events)"),
        schedule: Schedule::Never,
        timezone,
    })
}

pub(super) fn missing_data(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<MissingData> {
    match t.string(d, "missing_data") {
        Some(m) => match m.v.as_str() {
            "ignore" => Some(MissingData::Ignore),
            "breach" => Some(MissingData::Breach),
            "ok" => Some(MissingData::Ok),
            other => {
                d.push(m.span, format!("`missing_data` must be \"ignore\", \"breach\" or \"ok\", found \"{other}\""));
                None
            }
        },
        None => Some(MissingData::Ignore),
    }
}

fn valid_statistic(s: &str) -> Result<(), String> {
    if matches!(s, "Average" | "Sum" | "Minimum" | "Maximum" | "SampleCount") {
        return Ok(());
    }
    if let Some(p) = s.strip_prefix('p') {
        if let Ok(x) = p.parse::<f64>() {
            if (0.0..=100.0).contains(&x) && !p.starts_with('+') {
                return Ok(());
            }
        }
    }
    Err(format!("`statistic` must be Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99 or p99.9, found \"{s}\""))
}

fn valid_period(p: Duration) -> bool {
    let ms = p.as_millis();
    matches!(ms, 1_000 | 5_000 | 10_000 | 30_000) || (ms > 0 && ms.is_multiple_of(60_000))
}
