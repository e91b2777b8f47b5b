//! `[checks.NAME]` that read a report: `monitor = NAME` (a SageMaker Model Monitor schedule)
//! or `report = "s3://…/"` (the newest JSON object under a prefix), with the `check_types` /
//! `features` filters, `file`, and `value` or `violations`.

use chrono_tz::Tz;

use super::checks::{missing_data, not_here, schedule_or_events, threshold};
use super::common::*;
use crate::config::reader::{Diags, Sp, Table};
use crate::config::*;

const METRIC_ONLY: &[&str] = &["namespace", "dimensions", "statistic", "period"];

/// `monitor = NAME`.
pub(super) fn read_monitor_check(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
) -> Option<Check> {
    let monitor = t.req_string(d, "monitor");
    let mut ok = not_here(d, t, METRIC_ONLY, "is for a metric check");
    ok &= not_here(
        d,
        t,
        &["file", "value", "violations"],
        "is for a `report` check",
    );
    if let Some(span) = t.key_span("below") {
        d.push(
            span,
            format!("[{}] counts violations: it breaches above a count (`above`, 0 when not set), never below one", t.path),
        );
        let _ = t.raw("below");
        ok = false;
    }
    let timed = timed(d, t, "schedule", default_tz);
    let filters = filters(d, t, &mut ok);
    let threshold = count_threshold(d, t, &mut ok);
    let for_count = positive_u32(d, t, "for", 1);
    let missing = missing_data(d, t);
    let monitor = monitor?;
    if !valid_schedule_name(&monitor.v) {
        d.push(
            monitor.span.clone(),
            format!("`monitor` must be a SageMaker monitoring schedule name (1 to 63 letters, digits and inner hyphens), found \"{}\"", monitor.v),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Check {
        timed: timed?,
        source: Source::Monitor(MonitorSource {
            schedule: monitor.v,
            filters: filters?,
        }),
        threshold: threshold?,
        for_count: for_count?,
        missing_data: missing?,
    })
}

/// `report = "s3://bucket/prefix"`.
pub(super) fn read_report_check(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    has_events: bool,
) -> Option<Check> {
    let report = t.req_string(d, "report");
    let mut ok = not_here(d, t, METRIC_ONLY, "is for a metric check");
    let timed = schedule_or_events(d, t, default_tz, has_events, "S3 Object Created", &mut ok);
    let file = t.string(d, "file");
    if let Some(f) = &file {
        if f.v.is_empty() {
            d.push(
                f.span.clone(),
                "`file` must be the end of an object's name, such as \"drift.json\"",
            );
            ok = false;
        }
    }
    let value = t.string(d, "value");
    let violations = t.string(d, "violations");
    let read = match (value, violations) {
        (Some(v), None) => {
            ok &= not_here(
                d,
                t,
                &["check_types", "features"],
                "filters violations; it needs `violations`, not `value`, or a `monitor`",
            );
            let threshold = threshold(d, t, &mut ok, " for its `value`");
            path(d, &v, &mut ok).map(|p| (ReportRead::Value(p), threshold))
        }
        (None, Some(v)) => {
            if let Some(span) = t.key_span("below") {
                d.push(span, "`violations` counts a list: it breaches above a count (`above`, 0 when not set), never below one");
                let _ = t.raw("below");
                ok = false;
            }
            let filters = filters(d, t, &mut ok);
            let threshold = count_threshold(d, t, &mut ok);
            path(d, &v, &mut ok).and_then(|path| {
                Some((
                    ReportRead::Violations {
                        path,
                        filters: filters?,
                    },
                    threshold,
                ))
            })
        }
        (Some(_), Some(b)) => {
            d.push(b.span, format!("[{}] sets both `value` and `violations`; a report check reads one (a number, or a list's length)", t.path));
            None
        }
        (None, None) => {
            if !t.has("value") && !t.has("violations") {
                d.push(t.span.clone(), format!("[{}] needs what to read from the report: `value = \"dotted.path\"` (a number) or `violations = \"path\"` (a list, counted)", t.path));
            }
            None
        }
    };
    let for_count = positive_u32(d, t, "for", 1);
    let missing = missing_data(d, t);
    let (bucket, prefix) = match &report {
        Some(r) => match parse_s3_prefix(&r.v) {
            Ok(x) => Some(x),
            Err(m) => {
                d.push(r.span.clone(), m);
                None
            }
        },
        None => None,
    }?;
    let (read, threshold) = read?;
    if !ok {
        return None;
    }
    Some(Check {
        timed: timed?,
        source: Source::Report(ReportSource {
            bucket,
            prefix,
            file: file.map(|f| f.v),
            read,
        }),
        threshold: threshold?,
        for_count: for_count?,
        missing_data: missing?,
    })
}

/// `check_types` and `features`: lists of names, none empty.
fn filters(d: &mut Diags, t: &mut Table<'_, '_>, ok: &mut bool) -> Option<Filters> {
    let mut list = |key: &'static str| -> Vec<String> {
        match t.string_list(d, key) {
            Some(l) => {
                if l.v.is_empty() {
                    d.push(
                        l.span.clone(),
                        format!("`{key}` is empty: leave it out to count every violation"),
                    );
                    *ok = false;
                }
                l.v.into_iter()
                    .filter_map(|x| {
                        if x.v.trim().is_empty() {
                            d.push(x.span, format!("`{key}` holds an empty name"));
                            *ok = false;
                            None
                        } else {
                            Some(x.v)
                        }
                    })
                    .collect()
            }
            None => Vec::new(),
        }
    };
    let check_types = list("check_types");
    let features = list("features");
    Some(Filters {
        check_types,
        features,
    })
}

/// `above = N` (a count, ≥ 0), 0 when not set: breach when more than N violations remain.
fn count_threshold(d: &mut Diags, t: &mut Table<'_, '_>, ok: &mut bool) -> Option<Threshold> {
    match t.float(d, "above") {
        Some(a) if a.v < 0.0 => {
            d.push(a.span, "`above` counts violations: it must be 0 or more");
            *ok = false;
            None
        }
        Some(a) => Some(Threshold::Above(a.v)),
        None if t.has("above") => {
            *ok = false;
            None
        }
        None => Some(Threshold::Above(0.0)),
    }
}

/// A dotted path into the report (`metrics.0.result.share_of_drifted_columns`).
fn path(d: &mut Diags, v: &Sp<String>, ok: &mut bool) -> Option<String> {
    if v.v.is_empty() || v.v.split('.').any(|s| s.trim().is_empty()) {
        d.push(
            v.span.clone(),
            format!("must be a dotted path such as \"metrics.0.result.share_of_drifted_columns\" (no empty part), found \"{}\"", v.v),
        );
        *ok = false;
        return None;
    }
    Some(v.v.clone())
}

/// `s3://bucket/prefix` → (bucket, prefix); the prefix may be empty.
pub(crate) fn parse_s3_prefix(uri: &str) -> Result<(String, String), String> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| {
        format!("`report` must be an S3 prefix such as \"s3://ml-bucket/monitoring/churn/\", found \"{uri}\"")
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!("`report`: \"{bucket}\" is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"));
    }
    if prefix.len() > 1024 {
        return Err("`report`: the prefix is longer than an S3 key (1,024 bytes)".into());
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// A SageMaker monitoring schedule name: `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$`.
fn valid_schedule_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}
