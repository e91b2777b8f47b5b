//! `[checks.NAME]`: a metric (namespace, metric, dimensions, statistic, period, above or
//! below) or an alarm, on a schedule, with `for` and `missing_data`.

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
];

pub(super) fn read_check(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    has_events: bool,
) -> Option<Check> {
    if t.has("alarm") {
        return read_alarm_check(d, t, default_tz, has_events);
    }
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
    let above = t.float(d, "above");
    let below = t.float(d, "below");
    let threshold = match (above, below) {
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
                    format!("[{}] needs a threshold: `above = N` or `below = N`", t.path),
                );
            }
            None
        }
    };
    let for_count = positive_u32(d, t, "for", 1);
    let missing = missing_data(d, t);
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
    let mut ok = true;
    for k in [
        "namespace",
        "metric",
        "dimensions",
        "statistic",
        "period",
        "above",
        "below",
    ] {
        if let Some(span) = t.key_span(k) {
            d.push(span, format!("`{k}` is for a metric check; [{}] reads `alarm` (a check has one source: a metric or an alarm)", t.path));
            let _ = t.raw(k);
            ok = false;
        }
    }
    let timed = if t.has("schedule") {
        timed(d, t, "schedule", default_tz)
    } else if !has_events {
        d.push(
            t.span.clone(),
            format!(
                "[{}] needs a `schedule` (or an [events] section, whose alarm events wake it)",
                t.path
            ),
        );
        ok = false;
        None
    } else {
        let tzv = t.string(d, "timezone");
        let tz = match &tzv {
            Some(z) => zone(d, z),
            None => default_tz,
        };
        tz.map(|timezone| Timed {
            expression: "(alarm events)".into(),
            schedule: Schedule::Never,
            timezone,
        })
    };
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

fn missing_data(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<MissingData> {
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
