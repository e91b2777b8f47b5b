//! Room: report checks (`monitor`, `report`; SPEC "Drift reports as a check source"). A
//! look reads the schedule's last execution or the newest object under the prefix; each
//! execution or object (key and ETag) is evaluated once: its key is stored with the
//! evaluation, and the same key at the next look is no evaluation at all. What a report
//! found (its violations, its URI) goes with the evaluation to the rules
//! (`{{ check.features }}`) and to `check_breached`. A read that fails is an error of the
//! check (on `/status`, counted, logged once per new cause), never "ok".

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::work::{Msg, Work};
use crate::cloud::{AwsError, Cloud, ErrorKind, Monitoring, Objects};
use crate::config::{Check, Filters, ReportRead, Source};
use crate::drift::{self, Violation, MAX_REPORT};
use crate::events;

/// How many report checks are read at once.
const READ_AT_ONCE: usize = 16;
/// The most violations kept with an evaluation (the count is whole).
const KEEP_VIOLATIONS: usize = 200;
/// The name of Model Monitor's violations report in an execution's output.
const VIOLATIONS_FILE: &str = "constraint_violations.json";

/// What one new report (or monitor execution) found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReportFacts {
    /// The execution or object key this is (once per key).
    pub seen: String,
    /// `s3://…` of the report read ("" for an execution without violations).
    pub uri: String,
    /// The violations that passed the filters (at most `KEEP_VIOLATIONS`).
    pub violations: Vec<Violation>,
    /// How many passed the filters.
    pub count: usize,
    /// A `Failed` / `Stopped` monitor execution: its status and reason.
    pub failed: Option<String>,
}

impl ReportFacts {
    /// `{{ check.features }}`: sorted, comma-joined, at most a parameter's 1,024 characters.
    pub(crate) fn features(&self) -> String {
        drift::features_text(&self.violations, drift::MAX_PARAMETER)
    }
    /// The violations for a notification body, one per line (at most 20, then "… and N more").
    pub(crate) fn listing(&self) -> String {
        let mut out: Vec<String> = self
            .violations
            .iter()
            .take(20)
            .map(|v| {
                let mut s = v.name.clone().unwrap_or_else(|| "-".into());
                if let Some(f) = &v.facet {
                    s.push_str(&format!(" [{f}]"));
                }
                if let Some(t) = &v.check_type {
                    s.push_str(&format!(" ({t})"));
                }
                if !v.description.is_empty() {
                    s.push_str(": ");
                    s.push_str(&v.description);
                }
                s
            })
            .collect();
        if self.count > 20 {
            out.push(format!("… and {} more", self.count - 20));
        }
        out.join("\n")
    }
}

/// What a look at one report check found.
#[derive(Debug)]
pub(crate) enum Look {
    /// Nothing new since the stored key (or an execution still running): no evaluation.
    Unchanged,
    /// A new report: its value (`None`: a failed execution, as `missing_data` says).
    New {
        value: Option<f64>,
        facts: Arc<ReportFacts>,
    },
    /// It could not be read.
    Failed(String),
}

fn aws_text(e: &AwsError) -> String {
    match e.kind {
        ErrorKind::Denied => format!("denied ({} is needed): {e}", e.iam_action()),
        _ => e.to_string(),
    }
}

/// Reads one report check, given the key it last evaluated.
pub(crate) async fn look<C: Objects + Monitoring>(
    cloud: &C,
    check: &Check,
    seen: Option<&str>,
) -> Look {
    match &check.source {
        Source::Monitor(m) => look_monitor(cloud, &m.schedule, &m.filters, seen).await,
        Source::Report(r) => {
            let newest = match cloud
                .newest_object(&r.bucket, &r.prefix, r.file.as_deref())
                .await
            {
                Ok(Some(o)) => o,
                Ok(None) => {
                    return Look::Failed(format!(
                        "no object under {}{}",
                        r.uri(),
                        r.file
                            .as_deref()
                            .map(|f| format!(" ending in {f}"))
                            .unwrap_or_default()
                    ))
                }
                Err(e) => return Look::Failed(aws_text(&e)),
            };
            let key = format!("{}#{}", newest.key, newest.etag);
            if seen == Some(key.as_str()) {
                return Look::Unchanged;
            }
            let uri = format!("s3://{}/{}", r.bucket, newest.key);
            if usize::try_from(newest.size).unwrap_or(usize::MAX) > MAX_REPORT {
                return Look::Failed(format!(
                    "{uri}: {}",
                    drift::ReportError::TooLarge(newest.size as usize)
                ));
            }
            let text = match cloud.read_object(&r.bucket, &newest.key, MAX_REPORT).await {
                Ok(t) => t,
                Err(e) => return Look::Failed(aws_text(&e)),
            };
            let (value, violations, count) = match &r.read {
                ReportRead::Value(path) => match drift::value_at(&text, path) {
                    Ok(v) => (v, Vec::new(), 0),
                    Err(e) => return Look::Failed(format!("{uri}: {e}")),
                },
                ReportRead::Violations { path, filters } => match drift::violations(&text, path) {
                    Ok(all) => {
                        let mut vs = drift::filtered(all, &filters.check_types, &filters.features);
                        let n = vs.len();
                        vs.truncate(KEEP_VIOLATIONS);
                        (n as f64, vs, n)
                    }
                    Err(e) => return Look::Failed(format!("{uri}: {e}")),
                },
            };
            Look::New {
                value: Some(value),
                facts: Arc::new(ReportFacts {
                    seen: key,
                    uri,
                    violations,
                    count,
                    failed: None,
                }),
            }
        }
        Source::Metric(_) | Source::Alarm(_) => Look::Unchanged,
    }
}

async fn look_monitor<C: Objects + Monitoring>(
    cloud: &C,
    schedule: &str,
    filters: &Filters,
    seen: Option<&str>,
) -> Look {
    let view = match cloud.monitoring_schedule(schedule).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Look::Failed(format!(
                "no monitoring schedule named {schedule:?} in this account and region"
            ))
        }
        Err(e) => return Look::Failed(aws_text(&e)),
    };
    let Some(last) = view.last else {
        return Look::Unchanged;
    };
    let key = format!(
        "{}#{}",
        last.scheduled.to_rfc3339(),
        last.processing_job_arn.as_deref().unwrap_or_default()
    );
    let done = matches!(
        last.status.as_str(),
        "Completed" | "CompletedWithViolations" | "Failed" | "Stopped"
    );
    if !done || seen == Some(key.as_str()) {
        return Look::Unchanged;
    }
    let facts = |uri: String, violations: Vec<Violation>, count: usize, failed| ReportFacts {
        seen: key.clone(),
        uri,
        violations,
        count,
        failed,
    };
    match last.status.as_str() {
        "Completed" => Look::New {
            value: Some(0.0),
            facts: Arc::new(facts(String::new(), Vec::new(), 0, None)),
        },
        "Failed" | "Stopped" => Look::New {
            value: None,
            facts: Arc::new(facts(
                String::new(),
                Vec::new(),
                0,
                Some(format!(
                    "the execution of {} is {}: {}",
                    last.scheduled.to_rfc3339(),
                    last.status,
                    last.failure_reason.as_deref().unwrap_or("no reason given")
                )),
            )),
        },
        _ => {
            let Some(job) = last.processing_job_arn.as_deref() else {
                return Look::Failed(format!(
                    "the execution of {} has violations but names no processing job",
                    last.scheduled.to_rfc3339()
                ));
            };
            let out = match cloud.processing_output(job).await {
                Ok(Some(o)) => o,
                Ok(None) => {
                    return Look::Failed(format!(
                        "processing job {job} is gone or has no S3 output"
                    ))
                }
                Err(e) => return Look::Failed(aws_text(&e)),
            };
            let uri = format!("{}/{VIOLATIONS_FILE}", out.trim_end_matches('/'));
            let Some((bucket, obj)) = uri.strip_prefix("s3://").and_then(|r| r.split_once('/'))
            else {
                return Look::Failed(format!("the processing job's output {out} is not in S3"));
            };
            let text = match cloud.read_object(bucket, obj, MAX_REPORT).await {
                Ok(t) => t,
                Err(e) => return Look::Failed(format!("{uri}: {}", aws_text(&e))),
            };
            match drift::violations(&text, "violations") {
                Ok(all) => {
                    let mut vs = drift::filtered(all, &filters.check_types, &filters.features);
                    let n = vs.len();
                    vs.truncate(KEEP_VIOLATIONS);
                    Look::New {
                        value: Some(n as f64),
                        facts: Arc::new(facts(uri, vs, n, None)),
                    }
                }
                Err(e) => Look::Failed(format!("{uri}: {e}")),
            }
        }
    }
}

impl<C: Cloud> Work<C> {
    /// Looks at due report checks (a few at once), each against the key it last evaluated.
    pub(super) fn look_at_reports(&mut self, due: Vec<(String, Arc<Check>)>, at: DateTime<Utc>) {
        // A check with a look out is looked at again when it is back (an S3 event may say of
        // an object newer than that look saw).
        let (busy, due): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|(n, _)| self.reading.contains(n));
        self.look_again.extend(busy.into_iter().map(|(n, _)| n));
        if due.is_empty() {
            return;
        }
        let r = self.store.report_marks();
        let Some(marks) = self.db(
            "read report marks",
            "",
            "the report checks are looked at next time",
            r,
        ) else {
            return;
        };
        for (n, _) in &due {
            self.reading.insert(n.clone());
        }
        let (cloud, tx) = (self.cloud.clone(), self.tx.clone());
        self.tracker.spawn(async move {
            use futures_util::StreamExt;
            let looks: Vec<(String, Look)> = futures_util::stream::iter(due)
                .map(|(n, c)| {
                    let seen = marks.get(&n).and_then(|m| m.seen.clone());
                    let cloud = &cloud;
                    async move {
                        let l = look(&**cloud, &c, seen.as_deref()).await;
                        (n, l)
                    }
                })
                .buffer_unordered(READ_AT_ONCE)
                .collect()
                .await;
            let _ = tx.send(Msg::ReportLooks { at, looks });
        });
    }

    /// Looks at every report check (`unscheduled`: only those that events alone wake).
    pub(super) fn sweep_reports(&mut self, unscheduled: bool) {
        let names: Vec<String> = self
            .cfg
            .checks
            .iter()
            .filter(|(_, c)| {
                c.reads_report()
                    && (!unscheduled || c.timed.schedule == crate::schedule::Schedule::Never)
            })
            .map(|(n, _)| n.clone())
            .collect();
        if !names.is_empty() {
            let now = self.now();
            self.evaluate_checks(names, now);
        }
    }

    /// The looks' answers: errors shown and logged, unchanged reports left alone (unless
    /// their rules were not considered before a crash), new ones evaluated.
    pub(super) fn on_report_looks(&mut self, at: DateTime<Utc>, looks: Vec<(String, Look)>) {
        let now = self.now();
        let mut results = Vec::new();
        let mut facts = HashMap::new();
        let mut unchanged = Vec::new();
        for (name, l) in looks {
            self.reading.remove(&name);
            if !self.cfg.checks.contains_key(&name) {
                continue;
            }
            match l {
                Look::Failed(why) => events::report_failed(&self.health, &name, &why, now),
                Look::Unchanged => {
                    events::report_read(&self.health, &name);
                    unchanged.push(name);
                }
                Look::New { value, facts: f } => {
                    events::report_read(&self.health, &name);
                    events::report_new(&name, &f.seen, &f.uri, f.count, f.failed.as_deref());
                    results.push((name.clone(), Ok(value)));
                    facts.insert(name, f);
                }
            }
        }
        self.act_unacted(unchanged);
        if !results.is_empty() {
            self.apply_check_results(at, results, &facts);
        }
        let again: Vec<String> = self
            .look_again
            .iter()
            .filter(|n| !self.reading.contains(*n))
            .cloned()
            .collect();
        if !again.is_empty() {
            for n in &again {
                self.look_again.remove(n);
            }
            self.evaluate_checks(again, now);
        }
    }

    /// A report whose evaluation was stored but whose rules were not considered (a crash
    /// between the two): considered now, from what was stored. A rule fires at most once per
    /// report (its once-key), so considering again starts nothing twice.
    fn act_unacted(&mut self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let r = self.store.report_marks();
        let Some(marks) = self.db("read report marks", "", "considered at the next look", r) else {
            return;
        };
        for name in names {
            let Some(m) = marks.get(&name) else { continue };
            if m.seen.is_none() || m.seen == m.acted {
                continue;
            }
            let r = self.store.report_facts(&name);
            let Some(Some((_, text))) = self.db(
                "read a report's facts",
                &name,
                "considered at the next look",
                r,
            ) else {
                continue;
            };
            let Ok(f) = serde_json::from_str::<ReportFacts>(&text) else {
                continue;
            };
            let r = self.store.check_state(&name);
            let Some(state) = self.db("read check state", &name, "considered at the next look", r)
            else {
                continue;
            };
            self.resume_report(&name, state, Arc::new(f));
        }
    }
}
