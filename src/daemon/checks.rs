//! Room: checks. Evaluates due checks in one batched `GetMetricData` task (report checks:
//! `reports`), stores each evaluation, tells of new incidents and recoveries, and hands firing
//! checks to their rules.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::reports::ReportFacts;
use super::work::{new_correlation_id, Cause, Msg, Work};
use crate::cloud::{AlarmState, AwsError, Cloud, ErrorKind, MetricQuery};
use crate::config::{Check, Config, Source, Trigger};
use crate::engine::{self, CheckOutcome, Verdict};
use crate::events;
use crate::notify::{Kind, Message};
use crate::state::CheckEval;

/// An alarm's state as a check value: `ALARM` 1, `OK` 0, `INSUFFICIENT_DATA` no data.
fn alarm_value(
    alarm: &str,
    states: &Result<HashMap<String, AlarmState>, AwsError>,
) -> Result<Option<f64>, AwsError> {
    let states = states.as_ref().map_err(Clone::clone)?;
    match states.get(alarm) {
        Some(AlarmState::Alarm) => Ok(Some(1.0)),
        Some(AlarmState::Ok) => Ok(Some(0.0)),
        Some(AlarmState::InsufficientData) => Ok(None),
        None => Err(AwsError::new(
            "cloudwatch",
            "DescribeAlarms",
            ErrorKind::NotFound,
            "AlarmNotFound",
            format!("no alarm named {alarm:?} in this account and region"),
        )),
    }
}

fn value_text(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "no data".into())
}

impl<C: Cloud> Work<C> {
    /// Evaluates every due check in one batched task.
    pub(super) fn evaluate_checks(&mut self, names: Vec<String>, at: DateTime<Utc>) {
        let (reports, due): (Vec<(String, Arc<Check>)>, Vec<_>) = names
            .into_iter()
            .filter_map(|n| {
                let c = self.cfg.checks.get(&n)?.clone();
                Some((n, c))
            })
            .partition(|(_, c)| c.reads_report());
        if !reports.is_empty() {
            self.look_at_reports(reports, at);
        }
        if due.is_empty() {
            return;
        }
        let (cloud, tx, clock) = (self.cloud.clone(), self.tx.clone(), self.clock);
        self.tracker.spawn(async move {
            let (alarms, metrics): (Vec<_>, Vec<_>) =
                due.into_iter().partition(|(_, c)| c.alarm().is_some());
            let mut results: Vec<(String, Result<Option<f64>, AwsError>)> =
                Vec::with_capacity(alarms.len() + metrics.len());
            if !metrics.is_empty() {
                let qs: Vec<MetricQuery<'_>> = metrics
                    .iter()
                    .filter_map(|(_, c)| c.metric().map(MetricQuery::of))
                    .collect();
                let (values, calls) = cloud.latest_values(&qs, clock.now()).await;
                tracing::debug!(
                    event = "metrics_fetched",
                    checks = qs.len(),
                    calls,
                    "GetMetricData for due checks"
                );
                drop(qs);
                results.extend(metrics.into_iter().map(|(n, _)| n).zip(values));
            }
            if !alarms.is_empty() {
                let names: Vec<String> = alarms
                    .iter()
                    .filter_map(|(_, c)| c.alarm().map(str::to_string))
                    .collect();
                let states = cloud.alarm_states(&names).await;
                for (n, c) in alarms {
                    let alarm = c.alarm().unwrap_or_default();
                    results.push((n, alarm_value(alarm, &states)));
                }
            }
            let large = results.len() >= 1000;
            // The loop is gone only when shutting down; the answer is then not needed.
            let _ = tx.send(Msg::CheckResults { at, results, large });
        });
    }

    /// Evaluates now every check that reads this alarm (an alarm state change event woke
    /// them; `DescribeAlarms` decides). Returns their names.
    pub(super) fn wake_alarm(&mut self, alarm: &str) -> Vec<String> {
        let names: Vec<String> = self
            .cfg
            .checks
            .iter()
            .filter(|(_, c)| c.alarm() == Some(alarm))
            .map(|(n, _)| n.clone())
            .collect();
        if !names.is_empty() {
            self.evaluate_checks(names.clone(), self.now());
        }
        names
    }

    /// Takes a batch of check results: each evaluated against its stored state, the
    /// evaluations stored with the breach and recovery notices they cause (one transaction),
    /// then the firing checks handed to their rules.
    pub(super) fn on_check_results(
        &mut self,
        at: DateTime<Utc>,
        results: Vec<(String, Result<Option<f64>, AwsError>)>,
    ) {
        self.apply_check_results(at, results, &HashMap::new());
    }

    /// The evaluation of a batch; `reports` holds what each new report of a report check
    /// found (its key is stored with the evaluation, even one `missing_data` ignores).
    pub(super) fn apply_check_results(
        &mut self,
        at: DateTime<Utc>,
        results: Vec<(String, Result<Option<f64>, AwsError>)>,
        reports: &HashMap<String, Arc<ReportFacts>>,
    ) {
        let cfg = self.cfg.clone();
        let now = self.now();
        let outcomes = self.evaluate(&cfg, results, now);
        let stored: HashMap<&str, String> = reports
            .iter()
            .map(|(n, f)| (n.as_str(), serde_json::to_string(&**f).unwrap_or_default()))
            .collect();
        let evals: Vec<CheckEval<'_>> = outcomes
            .iter()
            .filter(|(n, o)| o.verdict != Verdict::Ignored || reports.contains_key(n))
            .map(|(n, o)| CheckEval {
                name: n,
                // Ignored (a failed execution, `missing_data = "ignore"`): the state stays.
                state: &o.state,
                value: o.value,
                breached: o.verdict == Verdict::Breach,
                at,
                report: reports.get(n).map(|f| {
                    (
                        f.seen.as_str(),
                        stored.get(n.as_str()).map_or("", |s| s.as_str()),
                    )
                }),
            })
            .collect();
        // The rules on each check, from an index built once per batch: 10,000 checks must not
        // each scan 10,000 rules.
        let on_check = if outcomes
            .iter()
            .any(|(_, o)| o.entered_breach || o.recovered || o.firing)
            || reports.values().any(|f| f.failed.is_some())
        {
            rules_by_check(&cfg)
        } else {
            HashMap::new()
        };
        // Breach and recovery notices are queued with the evaluations that cause them, and
        // so is a failed monitor execution's `check_failed`.
        let mut notices = self.incident_notices(&cfg, &outcomes, &on_check, reports);
        notices.extend(self.failed_notices(&outcomes, &on_check, reports));
        // Not stored → not acted on: the next evaluation decides again from stored state.
        let r = self.store.save_check_evals(&evals, &notices, now);
        drop(evals);
        let Some(queued) = self.db("store check evaluations", "", "no rule fires on them", r)
        else {
            return;
        };
        self.queued(&notices, &queued);
        for n in reports.keys() {
            crate::failpoint::hit_for("after_report_evaluated", n);
        }
        let mut acted = Vec::new();
        for (name, o) in outcomes {
            let report = reports.get(&name).cloned();
            if let Some(f) = &report {
                acted.push((name.clone(), f.seen.clone()));
            }
            self.act_on(&cfg, name, o, &on_check, report);
        }
        self.mark_acted(&acted);
    }

    /// The rules of these reports were considered.
    fn mark_acted(&self, acted: &[(String, String)]) {
        let marks: Vec<(&str, &str)> = acted
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str()))
            .collect();
        let r = self.store.mark_reports_acted(&marks);
        self.db(
            "mark reports acted on",
            "",
            "their rules are considered again at the next look (each fires at most once per report)",
            r,
        );
    }

    /// A stored evaluation whose rules were not considered (a crash between the two): they
    /// are now, if the check is firing.
    pub(super) fn resume_report(
        &mut self,
        name: &str,
        state: crate::engine::CheckState,
        facts: Arc<ReportFacts>,
    ) {
        let cfg = self.cfg.clone();
        let Some(check) = cfg.checks.get(name) else {
            return;
        };
        if state.breaching && state.breach_count >= check.for_count {
            tracing::info!(event = "report_resumed", check = %name, seen = %facts.seen, "considering the rules of a report evaluated before a restart");
            let on_check = rules_by_check(&cfg);
            let corr = state.correlation_id.clone().unwrap_or_default();
            for r in on_check.get(name).cloned().unwrap_or_default() {
                self.fire_rule(
                    &r,
                    Cause::Check {
                        check: name.to_string(),
                        correlation_id: corr.clone(),
                        value: state.last_value,
                        report: Some(facts.clone()),
                    },
                );
            }
        }
        self.mark_acted(&[(name.to_string(), facts.seen.clone())]);
    }

    /// `check_failed` for each rule on a check whose new monitor execution failed.
    fn failed_notices(
        &self,
        outcomes: &[(String, CheckOutcome)],
        on_check: &HashMap<&str, Vec<String>>,
        reports: &HashMap<String, Arc<ReportFacts>>,
    ) -> Vec<crate::state::Queued> {
        let mut notices = Vec::new();
        for (name, o) in outcomes {
            let Some(why) = reports.get(name).and_then(|f| f.failed.as_deref()) else {
                continue;
            };
            let corr = o
                .correlation_id
                .clone()
                .unwrap_or_else(|| new_correlation_id(self.now()));
            for r in on_check
                .get(name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let m = Message::new(Kind::CheckFailed, r, Some(name), &corr).with("reason", why);
                notices.extend(self.render_rule(r, &m));
            }
        }
        notices
    }

    /// Each result against its check's stored state (a failed read is logged, not evaluated).
    fn evaluate(
        &self,
        cfg: &Config,
        results: Vec<(String, Result<Option<f64>, AwsError>)>,
        now: DateTime<Utc>,
    ) -> Vec<(String, CheckOutcome)> {
        let mut outcomes = Vec::new();
        for (name, res) in results {
            let Some(check) = cfg.checks.get(&name) else {
                continue;
            };
            let value = match res {
                Err(e) => {
                    events::CheckFailed {
                        check: &name,
                        error: &e,
                    }
                    .emit();
                    events::read_failed(&self.health, &name, &e.to_string(), now);
                    continue;
                }
                Ok(value) => {
                    self.health.check_read(&name);
                    value
                }
            };
            let r = self.store.check_state(&name);
            let Some(prev) = self.db("read check state", &name, "evaluation skipped", r) else {
                continue;
            };
            let o = engine::evaluate_check(check, &prev, value, || new_correlation_id(now));
            events::CheckEvaluated {
                check: &name,
                value,
                threshold: &check.threshold,
                decision: o.verdict.as_str(),
                breached: o.verdict == Verdict::Breach,
                breaching: o.state.breaching,
                breach_count: o.state.breach_count,
                for_count: check.for_count,
                correlation_id: o.correlation_id.as_deref(),
            }
            .emit();
            outcomes.push((name, o));
        }
        outcomes
    }

    /// `check_breached` / `check_recovered` for each rule on a check that entered or left
    /// breach, rendered for the rule's notifiers.
    fn incident_notices(
        &self,
        cfg: &Config,
        outcomes: &[(String, CheckOutcome)],
        on_check: &HashMap<&str, Vec<String>>,
        reports: &HashMap<String, Arc<ReportFacts>>,
    ) -> Vec<crate::state::Queued> {
        let mut notices = Vec::new();
        for (name, o) in outcomes {
            if !(o.entered_breach || o.recovered) {
                continue;
            }
            let Some(check) = cfg.checks.get(name) else {
                continue;
            };
            let corr = o.correlation_id.clone().unwrap_or_default();
            for r in on_check
                .get(name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let m = if o.entered_breach {
                    let mut m = Message::new(Kind::CheckBreached, r, Some(name), &corr)
                        .with("value", value_text(o.value))
                        .with("threshold", check.threshold.to_string())
                        .with(
                            "metric",
                            match &check.source {
                                Source::Metric(m) => {
                                    format!("{}/{} {}", m.namespace, m.metric, m.statistic)
                                }
                                _ => check.source_text(),
                            },
                        );
                    if let Some(f) = reports.get(name) {
                        if !f.uri.is_empty() {
                            m = m.with("report_uri", &f.uri);
                        }
                        if f.count > 0 {
                            m = m
                                .with("features", f.features())
                                .with("violations", f.listing());
                        }
                    }
                    m
                } else {
                    Message::new(Kind::CheckRecovered, r, Some(name), &corr)
                        .with("value", value_text(o.value))
                        .with("threshold", check.threshold.to_string())
                };
                notices.extend(self.render_rule(r, &m));
            }
        }
        notices
    }

    /// After the evaluation is stored: an incident is logged, and a firing check's rules
    /// are considered.
    fn act_on(
        &mut self,
        cfg: &Config,
        name: String,
        o: CheckOutcome,
        on_check: &HashMap<&str, Vec<String>>,
        report: Option<Arc<ReportFacts>>,
    ) {
        let Some(check) = cfg.checks.get(&name) else {
            return;
        };
        let corr = o.correlation_id.clone().unwrap_or_default();
        if o.entered_breach || o.recovered {
            events::CheckIncident {
                recovered: o.recovered,
                check: &name,
                value: o.value,
                threshold: &check.threshold,
                correlation_id: &corr,
            }
            .emit();
        }
        if !o.firing {
            return;
        }
        for r in on_check.get(name.as_str()).cloned().unwrap_or_default() {
            self.fire_rule(
                &r,
                Cause::Check {
                    check: name.clone(),
                    correlation_id: corr.clone(),
                    value: o.value,
                    report: report.clone(),
                },
            );
        }
    }
}

/// The rules on each check (`on_check`).
fn rules_by_check(cfg: &Config) -> HashMap<&str, Vec<String>> {
    let mut on_check: HashMap<&str, Vec<String>> = HashMap::new();
    for (n, r) in &cfg.rules {
        if let Trigger::Check(c) = &r.trigger {
            on_check.entry(c.as_str()).or_default().push(n.clone());
        }
    }
    on_check
}
