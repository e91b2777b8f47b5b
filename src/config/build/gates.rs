//! `[gates.NAME]`: a model package group, read on a schedule, approved or rejected by a
//! metric (metadata or an evaluation report) against `min`/`max`.

use chrono_tz::Tz;

use super::common::*;
use super::Refs;
use crate::config::reader::{Diags, Table};
use crate::config::*;

pub(in crate::config) const GATE_KEYS: &[&str] = &[
    "model_package_group",
    "schedule",
    "timezone",
    "metric",
    "report_path",
    "min",
    "max",
    "notify",
];

pub(super) fn read_gate(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    refs: &mut Refs,
) -> Option<Gate> {
    let group = t.req_string(d, "model_package_group");
    let timed = timed(d, t, "schedule", default_tz);
    let metric = t.string(d, "metric");
    let report = t.string(d, "report_path");
    let metric = match (metric, report) {
        (Some(m), None) => Some(GateMetric::Metadata(m.v)),
        (None, Some(r)) => Some(GateMetric::Report(r.v)),
        (Some(_), Some(r)) => {
            d.push(
                r.span,
                "set either `metric` (a CustomerMetadataProperties key) or `report_path`, not both",
            );
            None
        }
        (None, None) => {
            if !t.has("metric") && !t.has("report_path") {
                d.push(
                    t.span.clone(),
                    format!(
                        "[{}] needs `metric` (a CustomerMetadataProperties key) or `report_path`",
                        t.path
                    ),
                );
            }
            None
        }
    };
    let min = t.float(d, "min");
    let max = t.float(d, "max");
    let mut ok = !(t.has("min") && min.is_none() || t.has("max") && max.is_none());
    match (&min, &max) {
        (None, None) if ok => {
            d.push(
                t.span.clone(),
                format!("[{}] needs `min`, `max` or both", t.path),
            );
            ok = false;
        }
        (Some(a), Some(b)) if a.v > b.v => {
            d.push(
                b.span.clone(),
                format!("`max` ({}) is below `min` ({})", b.v, a.v),
            );
            ok = false;
        }
        _ => {}
    }
    let notify = t.string_list(d, "notify");
    if let Some(n) = &notify {
        for x in &n.v {
            refs.notifiers.push(x.clone());
        }
    }
    if !ok {
        return None;
    }
    Some(Gate {
        model_package_group: group?.v,
        timed: timed?,
        metric: metric?,
        min: min.map(|x| x.v),
        max: max.map(|x| x.v),
        notify: notify
            .map(|n| n.v.into_iter().map(|x| x.v).collect())
            .unwrap_or_default(),
    })
}
