//! What the control loop does when something is due or an AWS call comes back: evaluate
//! checks, fire rules (decision stored before AWS is called), start and follow runs, chain
//! on their end, run gates, and queue notifications. AWS calls run in spawned tasks that
//! report back to the loop as `Msg`s; all state changes happen here, on the loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::aws::{Aws, AwsError, MetricQuery, PendingPackage, RunStatus};
use crate::config::{Check, Config, GateMetric, RunKind, Start, Target, Trigger};
use crate::engine::{self, CheckOutcome, GateVerdict, Verdict};
use crate::metrics;
use crate::notify::{self, Message};
use crate::state::{CheckEval, NewRun, Outgoing, RunRow, Store};

/// A gate's pending packages, each with its metric (or why it has none).
pub type GateScan = Result<Vec<(PendingPackage, Result<f64, String>)>, AwsError>;

/// Results of AWS calls, sent back to the loop.
#[derive(Debug)]
pub enum Msg {
    /// `large`: the whole batch (of which `results` may be the rest) had 1,000 checks or more.
    CheckResults { at: DateTime<Utc>, results: Vec<(String, Result<Option<f64>, AwsError>)>, large: bool },
    StartDone { run_id: i64, result: Result<String, AwsError> },
    RunStatuses(Vec<(i64, Result<RunStatus, AwsError>)>),
    GatePackages { gate: String, result: GateScan },
    GateApplied { gate: String, arn: String, approve: bool, result: Result<(), AwsError> },
}

/// Give up on a start after this many attempts that failed transiently (each attempt is
/// already retried with backoff by the SDK).
pub const MAX_START_ATTEMPTS: i64 = 8;

/// Why a rule is considered now.
#[derive(Debug, Clone)]
pub enum Cause {
    Check { check: String, correlation_id: String, value: Option<f64> },
    Schedule,
    RunEnded { run: Box<RunRow>, succeeded: bool },
}

impl Cause {
    fn correlation_id(&self) -> String {
        match self {
            Cause::Check { correlation_id, .. } => correlation_id.clone(),
            Cause::RunEnded { run, .. } => run.correlation_id.clone(),
            Cause::Schedule => new_correlation_id(),
        }
    }
    fn check(&self) -> Option<&str> {
        match self {
            Cause::Check { check, .. } => Some(check),
            Cause::RunEnded { run, .. } => run.check.as_deref(),
            Cause::Schedule => None,
        }
    }
}

/// A fresh id for a new incident.
pub fn new_correlation_id() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!("{}-{}-{}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or(0), N.fetch_add(1, Ordering::Relaxed));
    let d = Sha256::digest(seed.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("c-{hex}")
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn fmt_value(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "no data".into())
}

/// The loop's working set for this module.
pub struct Work {
    pub cfg: Arc<Config>,
    pub store: Arc<Store>,
    pub aws: Aws,
    pub tx: UnboundedSender<Msg>,
    pub tracker: tokio_util::task::TaskTracker,
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Runs whose start call is in flight (not re-driven while so).
    pub starting: HashSet<i64>,
    pub following: bool,
    pub applying: HashSet<(String, String)>,
    /// Part of every idempotency token (see `Store::store_id`).
    pub store_id: String,
}

impl Work {
    // ---------- checks ----------

    /// Evaluates every due check in one batched task.
    pub fn evaluate_checks(&self, names: Vec<String>, at: DateTime<Utc>) {
        let due: Vec<(String, Arc<Check>)> = names
            .into_iter()
            .filter_map(|n| {
                let c = self.cfg.checks.get(&n)?.clone();
                Some((n, c))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let (aws, tx) = (self.aws.clone(), self.tx.clone());
        self.tracker.spawn(async move {
            let qs: Vec<MetricQuery<'_>> = due.iter().map(|(_, c)| MetricQuery::of(c)).collect();
            let (values, calls) = aws.latest_values(&qs, Utc::now()).await;
            tracing::debug!(event = "metrics_fetched", checks = qs.len(), calls, "GetMetricData for due checks");
            drop(qs);
            let results: Vec<_> = due.into_iter().map(|(n, _)| n).zip(values).collect();
            let large = results.len() >= 1000;
            let _ = tx.send(Msg::CheckResults { at, results, large });
        });
    }

    pub fn on_check_results(&mut self, at: DateTime<Utc>, results: Vec<(String, Result<Option<f64>, AwsError>)>) {
        let cfg = self.cfg.clone();
        let mut outcomes: Vec<(String, CheckOutcome)> = Vec::new();
        for (name, res) in results {
            let Some(check) = cfg.checks.get(&name) else { continue };
            match res {
                Err(e) => tracing::warn!(
                    event = "check_failed", check = %name, error = %e, code = %e.code, transient = e.transient,
                    "could not evaluate check; its state is unchanged"
                ),
                Ok(value) => {
                    let prev = match self.store.check_state(&name) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(event = "state_error", check = %name, error = %e, "cannot read check state; evaluation skipped");
                            continue;
                        }
                    };
                    let o = engine::evaluate_check(check, &prev, value, new_correlation_id);
                    let m = metrics::get();
                    let l = metrics::check(&name);
                    m.check_evaluations.get_or_create(&l).inc();
                    if let Some(v) = value {
                        m.check_value.get_or_create(&l).set(v);
                    }
                    if o.verdict == Verdict::Breach {
                        m.check_breaches.get_or_create(&l).inc();
                    }
                    m.check_breaching.get_or_create(&l).set(i64::from(o.state.breaching));
                    tracing::info!(
                        event = "check_evaluated", check = %name, value = %fmt_value(value), threshold = %check.threshold,
                        decision = o.verdict.as_str(), breach_count = o.state.breach_count, r#for = check.for_count,
                        correlation_id = %o.correlation_id.clone().unwrap_or_default(),
                        "check evaluated"
                    );
                    outcomes.push((name, o));
                }
            }
        }
        let evals: Vec<CheckEval<'_>> = outcomes
            .iter()
            .filter(|(_, o)| o.verdict != Verdict::Ignored)
            .map(|(n, o)| CheckEval { name: n, state: &o.state, value: o.value, breached: o.verdict == Verdict::Breach, at })
            .collect();
        if let Err(e) = self.store.save_check_evals(&evals) {
            // Not stored → not acted on: the next evaluation decides again from stored state.
            tracing::error!(event = "state_error", error = %e, "cannot store check evaluations; no rule fires on them");
            return;
        }
        let mut on_check: Option<HashMap<&str, Vec<String>>> = None;
        for (name, o) in outcomes {
            let Some(check) = cfg.checks.get(&name) else { continue };
            let corr = o.correlation_id.clone().unwrap_or_default();
            if !(o.entered_breach || o.recovered || o.firing) {
                continue;
            }
            // The rules on this check, from an index built once per batch: 10,000 checks
            // must not each scan 10,000 rules.
            let on_check = on_check.get_or_insert_with(|| {
                let mut m: HashMap<&str, Vec<String>> = HashMap::new();
                for (n, r) in &cfg.rules {
                    if let Trigger::Check(c) = &r.trigger {
                        m.entry(c.as_str()).or_default().push(n.clone());
                    }
                }
                m
            });
            let rules: Vec<String> = on_check.get(name.as_str()).cloned().unwrap_or_default();
            if o.entered_breach {
                tracing::warn!(event = "check_breached", check = %name, value = %fmt_value(o.value), threshold = %check.threshold, correlation_id = %corr, "check breached");
                for r in &rules {
                    let m = Message::new("check_breached", r, Some(&name), &corr)
                        .with("value", fmt_value(o.value))
                        .with("threshold", check.threshold.to_string())
                        .with("metric", format!("{}/{} {}", check.namespace, check.metric, check.statistic));
                    self.notify_rule(r, m);
                }
            }
            if o.recovered {
                tracing::info!(event = "check_recovered", check = %name, value = %fmt_value(o.value), threshold = %check.threshold, correlation_id = %corr, "check recovered");
                for r in &rules {
                    let m = Message::new("check_recovered", r, Some(&name), &corr).with("value", fmt_value(o.value)).with("threshold", check.threshold.to_string());
                    self.notify_rule(r, m);
                }
            }
            if o.firing {
                for r in rules {
                    self.fire_rule(&r, Cause::Check { check: name.clone(), correlation_id: corr.clone(), value: o.value });
                }
            }
        }
    }

    // ---------- rules ----------

    /// Considers a rule now: suppressed (logged with why), dry run (logged), or fired: the
    /// decision and its runs are stored, then the start calls go out.
    pub fn fire_rule(&mut self, name: &str, cause: Cause) {
        let cfg = self.cfg.clone();
        let Some(rule) = cfg.rules.get(name) else { return };
        let now = Utc::now();
        let corr = cause.correlation_id();
        let check = cause.check().map(str::to_string);
        let state = match self.store.rule_state(name) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(event = "state_error", rule = %name, error = %e, "cannot read rule state; the rule does not fire");
                return;
            }
        };
        let mut targets = Vec::new();
        for s in &rule.start {
            let t = s.target();
            let max = max_concurrent(&cfg, &t);
            let active = self.store.active_runs(t.kind.as_str(), &t.name).unwrap_or(u32::MAX);
            targets.push((t.to_string(), active, max));
        }
        if let Err(why) = engine::decide_rule(rule, &state, &targets, now) {
            metrics::get().rule_suppressions.get_or_create(&metrics::SuppressL { rule: name.to_string(), reason: why.reason().into() }).inc();
            tracing::info!(
                event = "rule_suppressed", rule = %name, check = %check.clone().unwrap_or_default(), reason = why.reason(),
                detail = %why.describe(), decision = "suppressed", correlation_id = %corr,
                "rule did not fire: {}", why.describe()
            );
            if !rule.dry_run {
                let m = Message::new("rule_suppressed", name, check.as_deref(), &corr).with("reason", why.describe());
                self.notify_rule(name, m);
            }
            return;
        }
        let new_state = engine::fired(rule, &state, now);
        if rule.dry_run {
            metrics::get().rule_suppressions.get_or_create(&metrics::SuppressL { rule: name.to_string(), reason: "dry_run".into() }).inc();
            for s in &rule.start {
                tracing::info!(
                    event = "rule_dry_run", rule = %name, check = %check.clone().unwrap_or_default(), decision = "dry_run",
                    correlation_id = %corr, target = %s.target(), request = %request_json(&cfg, s),
                    "dry run: would start {}", s.target()
                );
            }
            if !rule.notify.is_empty() {
                tracing::info!(event = "rule_dry_run", rule = %name, decision = "dry_run", notify = %rule.notify.join(","), "dry run: would notify");
            }
            if let Err(e) = self.store.record_rule_state(name, &new_state) {
                tracing::error!(event = "state_error", rule = %name, error = %e, "cannot store dry-run state");
            }
            return;
        }
        let runs: Vec<NewRun> = rule
            .start
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = s.target();
                NewRun {
                    kind: t.kind.as_str().into(),
                    target: t.name.clone(),
                    token: engine::idempotency_token(&self.store_id, name, new_state.firings, i),
                    request: request_json(&cfg, s).to_string(),
                    correlation_id: corr.clone(),
                    check: check.clone(),
                }
            })
            .collect();
        let ids = match self.store.record_firing(name, &new_state, &runs, now) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(event = "state_error", rule = %name, error = %e, "cannot store the firing; nothing is started");
                return;
            }
        };
        metrics::get().rule_firings.get_or_create(&metrics::rule(name)).inc();
        tracing::info!(
            event = "rule_fired", rule = %name, check = %check.clone().unwrap_or_default(), decision = "fire",
            firing = new_state.firings, correlation_id = %corr, starts = runs.len(),
            value = %match &cause { Cause::Check { value, .. } => fmt_value(*value), _ => String::new() },
            "rule fired"
        );
        crate::failpoint::hit("after_decision");
        if rule.start.is_empty() {
            // A notify-only rule tells what triggered it.
            let m = match &cause {
                Cause::Check { .. } => None, // check_breached was already sent to it
                Cause::Schedule => Some(Message::new("schedule_fired", name, None, &corr)),
                Cause::RunEnded { run, succeeded } => Some(run_message(if *succeeded { "run_succeeded" } else { "run_failed" }, name, run)),
            };
            if let Some(m) = m {
                self.notify_rule(name, m);
            }
        }
        for id in ids {
            if let Ok(Some(run)) = self.store.run(id) {
                self.start_run(run);
            }
        }
    }

    /// Sends (or re-sends, with the same token) a decided run's start call.
    pub fn start_run(&mut self, run: RunRow) {
        if !self.starting.insert(run.id) {
            return;
        }
        if let Err(e) = self.store.note_start_attempt(run.id) {
            tracing::warn!(event = "state_error", error = %e, "cannot count start attempt");
        }
        let cfg = self.cfg.clone();
        let (aws, tx) = (self.aws.clone(), self.tx.clone());
        // A retry (or a restart) first looks for a run this token already started.
        let retry = run.attempts > 0;
        let req: serde_json::Value = serde_json::from_str(&run.request).unwrap_or(json!({}));
        let kind = run.kind.clone();
        let real_name = match kind.as_str() {
            "pipeline" => cfg.pipelines.get(&run.target).map(|p| p.pipeline_name.clone()),
            _ => cfg.builds.get(&run.target).map(|b| b.project_name.clone()),
        }
        .or_else(|| req["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| run.target.clone());
        self.tracker.spawn(async move {
            let strmap = |v: &serde_json::Value| -> BTreeMap<String, String> {
                v.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default()
            };
            let result = async {
                if kind == "pipeline" {
                    if retry {
                        if let Some(arn) = aws.find_pipeline_execution(&real_name, &run.token).await? {
                            return Ok(arn);
                        }
                    }
                    aws.start_pipeline(&real_name, &strmap(&req["parameters"]), &run.token).await
                } else {
                    if retry {
                        if let Some(id) = aws.find_build(&real_name, &run.token).await? {
                            return Ok(id);
                        }
                    }
                    aws.start_build(&real_name, req["source_version"].as_str(), &strmap(&req["environment"]), &run.token).await
                }
            }
            .await;
            let _ = tx.send(Msg::StartDone { run_id: run.id, result });
        });
    }

    pub fn on_start_done(&mut self, run_id: i64, result: Result<String, AwsError>) {
        self.starting.remove(&run_id);
        let Ok(Some(run)) = self.store.run(run_id) else { return };
        if run.status != "decided" {
            return;
        }
        let now = Utc::now();
        match result {
            Ok(arn) => {
                crate::failpoint::hit("after_start_sent");
                if let Err(e) = self.store.mark_started(run_id, &arn, now) {
                    tracing::error!(event = "state_error", error = %e, arn = %arn, "cannot store the started run; it is found again by its token on the next try");
                    return;
                }
                metrics::get().runs_started.get_or_create(&metrics::run(&run.kind, &run.target)).inc();
                tracing::info!(
                    event = "run_started", rule = %run.rule, check = %run.check.clone().unwrap_or_default(), target = %format!("{}:{}", run.kind, run.target),
                    arn = %arn, correlation_id = %run.correlation_id, token = %run.token, decision = "started", "run started"
                );
                let mut r = run.clone();
                r.arn = Some(arn);
                self.notify_rule(&run.rule.clone(), run_message("run_started", &run.rule, &r));
            }
            Err(e) if e.transient && run.attempts < MAX_START_ATTEMPTS => {
                tracing::warn!(
                    event = "start_retry", rule = %run.rule, target = %format!("{}:{}", run.kind, run.target), error = %e, code = %e.code,
                    attempt = run.attempts, correlation_id = %run.correlation_id,
                    "start failed transiently; retrying with the same token on the next poll"
                );
            }
            Err(e) => {
                let item = match run.kind.as_str() {
                    "pipeline" => format!("[pipelines.{}]", run.target),
                    _ => format!("[builds.{}]", run.target),
                };
                let detail = format!("{}: {}", e.code, e.message);
                metrics::get().runs_failed.get_or_create(&metrics::run(&run.kind, &run.target)).inc();
                if let Err(se) = self.store.mark_start_failed(run_id, &detail, now) {
                    tracing::error!(event = "state_error", error = %se, "cannot store the failed start");
                }
                tracing::error!(
                    event = "run_failed", rule = %run.rule, check = %run.check.clone().unwrap_or_default(), target = %format!("{}:{}", run.kind, run.target),
                    config_item = %item, error = %e, error_code = %e.code, correlation_id = %run.correlation_id, decision = "start_failed",
                    "could not start {} for rule {}: {}", item, run.rule, e
                );
                if let Err(se) = self.store.clear_cooldown(&run.rule) {
                    tracing::warn!(event = "state_error", error = %se, "cannot clear cooldown");
                }
                let mut r = run.clone();
                r.detail = Some(detail);
                let m = run_message("run_failed", &run.rule, &r).with("error_code", &e.code);
                self.notify_rule(&run.rule.clone(), m);
                self.chain(&r, false);
            }
        }
    }

    // ---------- follow ----------

    /// Polls every started run; re-drives decided runs whose start is not in flight.
    pub fn follow_tick(&mut self) {
        if let Ok(decided) = self.store.runs_with_status("decided") {
            for run in decided {
                if !self.starting.contains(&run.id) {
                    self.start_run(run);
                }
            }
        }
        self.reapply_gates();
        if self.following {
            return;
        }
        let started = match self.store.runs_with_status("started") {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = "state_error", error = %e, "cannot read followed runs");
                return;
            }
        };
        if started.is_empty() {
            return;
        }
        self.following = true;
        let (aws, tx) = (self.aws.clone(), self.tx.clone());
        self.tracker.spawn(async move {
            let mut out = Vec::new();
            let builds: Vec<&RunRow> = started.iter().filter(|r| r.kind == "build").collect();
            let ids: Vec<String> = builds.iter().filter_map(|r| r.arn.clone()).collect();
            if !ids.is_empty() {
                match aws.build_statuses(&ids).await {
                    Ok(map) => {
                        for r in &builds {
                            if let Some(s) = r.arn.as_ref().and_then(|a| map.get(a)) {
                                out.push((r.id, Ok(s.clone())));
                            }
                        }
                    }
                    Err(e) => out.extend(builds.iter().map(|r| (r.id, Err(e.clone())))),
                }
            }
            for r in started.iter().filter(|r| r.kind == "pipeline") {
                if let Some(arn) = &r.arn {
                    out.push((r.id, aws.pipeline_status(arn).await));
                }
            }
            let _ = tx.send(Msg::RunStatuses(out));
        });
    }

    pub fn on_run_statuses(&mut self, statuses: Vec<(i64, Result<RunStatus, AwsError>)>) {
        self.following = false;
        let now = Utc::now();
        for (id, st) in statuses {
            let Ok(Some(run)) = self.store.run(id) else { continue };
            let (succeeded, detail) = match st {
                Err(e) => {
                    tracing::warn!(event = "follow_failed", rule = %run.rule, arn = %run.arn.clone().unwrap_or_default(), error = %e, "could not poll run; trying again next poll");
                    continue;
                }
                Ok(RunStatus::Running(s)) => {
                    tracing::debug!(event = "run_running", arn = %run.arn.clone().unwrap_or_default(), status = %s, "run still running");
                    continue;
                }
                Ok(RunStatus::Succeeded) => (true, "Succeeded".to_string()),
                Ok(RunStatus::Failed(reason)) => (false, reason),
            };
            crate::failpoint::hit("while_following");
            match self.store.mark_ended(id, succeeded, &detail, now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(event = "state_error", error = %e, "cannot store the run's end; it is polled again");
                    continue;
                }
            }
            let event = if succeeded { "run_succeeded" } else { "run_failed" };
            let fam = if succeeded { &metrics::get().runs_succeeded } else { &metrics::get().runs_failed };
            fam.get_or_create(&metrics::run(&run.kind, &run.target)).inc();
            let secs = run.started.map(|s| (now - s).num_seconds()).unwrap_or(0);
            if succeeded {
                tracing::info!(event, rule = %run.rule, check = %run.check.clone().unwrap_or_default(), target = %format!("{}:{}", run.kind, run.target), arn = %run.arn.clone().unwrap_or_default(), correlation_id = %run.correlation_id, duration_s = secs, decision = "ended", "run succeeded");
            } else {
                tracing::warn!(event, rule = %run.rule, check = %run.check.clone().unwrap_or_default(), target = %format!("{}:{}", run.kind, run.target), arn = %run.arn.clone().unwrap_or_default(), correlation_id = %run.correlation_id, reason = %detail, duration_s = secs, decision = "ended", "run failed");
            }
            let mut r = run.clone();
            r.detail = Some(detail);
            r.ended = Some(now);
            self.notify_rule(&run.rule.clone(), run_message(event, &run.rule, &r));
            self.chain(&r, succeeded);
        }
    }

    /// Fires the `on_success` / `on_failure` rules of a run's target.
    fn chain(&mut self, run: &RunRow, succeeded: bool) {
        let kind = if run.kind == "pipeline" { RunKind::Pipeline } else { RunKind::Build };
        let target = Target { kind, name: run.target.clone() };
        let rules: Vec<String> = self
            .cfg
            .rules
            .iter()
            .filter(|(_, r)| match &r.trigger {
                Trigger::Success(t) => succeeded && *t == target,
                Trigger::Failure(t) => !succeeded && *t == target,
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        for r in rules {
            self.fire_rule(&r, Cause::RunEnded { run: Box::new(run.clone()), succeeded });
        }
    }

    // ---------- gates ----------

    pub fn run_gate(&self, name: &str) {
        let Some(gate) = self.cfg.gates.get(name).cloned() else { return };
        let (aws, tx, gname) = (self.aws.clone(), self.tx.clone(), name.to_string());
        self.tracker.spawn(async move {
            let result = async {
                let pkgs = aws.pending_packages(&gate.model_package_group).await?;
                let mut out = Vec::new();
                for p in pkgs {
                    let v = match &gate.metric {
                        GateMetric::Metadata(k) => engine::metadata_value(&p.metadata, k),
                        GateMetric::Report(path) => match &p.report_uri {
                            None => Err("the package has no evaluation report (ModelMetrics.ModelQuality.Statistics)".to_string()),
                            Some(uri) => match aws.read_s3(uri).await {
                                Ok(text) => engine::report_value(&text, path),
                                Err(e) if e.transient => return Err(e),
                                Err(e) => Err(format!("cannot read evaluation report {uri}: {e}")),
                            },
                        },
                    };
                    out.push((p, v));
                }
                Ok(out)
            }
            .await;
            let _ = tx.send(Msg::GatePackages { gate: gname, result });
        });
    }

    pub fn on_gate_packages(&mut self, gate_name: String, result: GateScan) {
        let Some(gate) = self.cfg.gates.get(&gate_name).cloned() else { return };
        let pkgs = match result {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(event = "gate_failed", gate = %gate_name, group = %gate.model_package_group, error = %e, "could not read the model registry; trying again at the next fire");
                return;
            }
        };
        let metric_name = match &gate.metric {
            GateMetric::Metadata(k) => k.clone(),
            GateMetric::Report(p) => p.clone(),
        };
        let now = Utc::now();
        for (pkg, value) in pkgs {
            let prior = self.store.gate_decision(&gate_name, &pkg.arn).ok().flatten();
            if let Some((d, _)) = &prior {
                if d != "no_metric" {
                    continue; // decided already; applied by reapply_gates if needed
                }
            }
            match engine::decide_gate(&gate, &metric_name, value) {
                GateVerdict::NoMetric { reason } => {
                    if prior.is_none() {
                        tracing::warn!(event = "gate_no_metric", gate = %gate_name, arn = %pkg.arn, reason = %reason, "model package has no usable metric; left pending (reported once)");
                        let _ = self.store.record_gate_decision(&gate_name, &pkg.arn, "no_metric", None, &reason, now);
                        metrics::get().gate_decisions.get_or_create(&metrics::GateL { gate: gate_name.clone(), decision: "no_metric".into() }).inc();
                    }
                }
                v => {
                    let (approve, value, reason) = match v {
                        GateVerdict::Approve { value, reason } => (true, value, reason),
                        GateVerdict::Reject { value, reason } => (false, value, reason),
                        GateVerdict::NoMetric { .. } => continue,
                    };
                    let decision = if approve { "approved" } else { "rejected" };
                    if let Err(e) = self.store.record_gate_decision(&gate_name, &pkg.arn, decision, Some(value), &reason, now) {
                        tracing::error!(event = "state_error", error = %e, "cannot store gate decision; decided again at the next fire");
                        continue;
                    }
                    metrics::get().gate_decisions.get_or_create(&metrics::GateL { gate: gate_name.clone(), decision: decision.into() }).inc();
                    tracing::info!(event = "gate_decided", gate = %gate_name, arn = %pkg.arn, value, decision, reason = %reason, "gate decided");
                    let event = if approve { "gate_approved" } else { "gate_rejected" };
                    let corr = new_correlation_id();
                    let m = Message::new(event, &gate_name, None, &corr)
                        .with("arn", &pkg.arn)
                        .with("value", value)
                        .with("reason", &reason)
                        .with("model_package_group", &gate.model_package_group);
                    self.notify(&gate_name, &gate.notify, m);
                    self.apply_gate(&gate_name, &pkg.arn, approve, &reason);
                }
            }
        }
    }

    fn apply_gate(&mut self, gate: &str, arn: &str, approve: bool, reason: &str) {
        if !self.applying.insert((gate.to_string(), arn.to_string())) {
            return;
        }
        let (aws, tx) = (self.aws.clone(), self.tx.clone());
        let (g, a, r) = (gate.to_string(), arn.to_string(), reason.to_string());
        self.tracker.spawn(async move {
            let result = aws.set_approval(&a, approve, &r).await;
            let _ = tx.send(Msg::GateApplied { gate: g, arn: a, approve, result });
        });
    }

    fn reapply_gates(&mut self) {
        if let Ok(list) = self.store.unapplied_gate_decisions() {
            for (g, arn, decision, reason) in list {
                if !self.applying.contains(&(g.clone(), arn.clone())) {
                    self.apply_gate(&g, &arn, decision == "approved", &reason);
                }
            }
        }
    }

    pub fn on_gate_applied(&mut self, gate: String, arn: String, approve: bool, result: Result<(), AwsError>) {
        self.applying.remove(&(gate.clone(), arn.clone()));
        match result {
            Ok(()) => {
                let _ = self.store.mark_gate_applied(&gate, &arn);
                tracing::info!(event = "gate_applied", gate = %gate, arn = %arn, status = if approve { "Approved" } else { "Rejected" }, "model package status set");
            }
            Err(e) if e.transient => {
                tracing::warn!(event = "gate_apply_retry", gate = %gate, arn = %arn, error = %e, "could not set model package status; retrying on the next poll");
            }
            Err(e) => {
                let _ = self.store.mark_gate_applied(&gate, &arn);
                tracing::error!(event = "gate_apply_failed", gate = %gate, arn = %arn, error = %e, "could not set model package status; giving up on this package");
            }
        }
    }

    // ---------- notifications ----------

    fn notify_rule(&self, rule: &str, m: Message) {
        let Some(r) = self.cfg.rules.get(rule) else { return };
        if r.dry_run {
            tracing::info!(event = "rule_dry_run", rule = %rule, notification = %m.event, decision = "dry_run", "dry run: would notify");
            return;
        }
        let list = r.notify.clone();
        self.notify(rule, &list, m);
    }

    /// Renders and queues a notification for each notifier (deduplicated per
    /// `repeat_interval`); the outbox sender publishes it.
    fn notify(&self, rule: &str, notifiers: &[String], m: Message) {
        let now = Utc::now();
        let mut queued = false;
        for n in notifiers {
            let Some(nc) = self.cfg.notifiers.get(n) else { continue };
            let (subject, body) = notify::render(nc, &m);
            let out = Outgoing {
                notifier: n,
                topic_arn: &nc.topic_arn,
                event: &m.event,
                rule,
                check: m.check.as_deref(),
                correlation_id: &m.correlation_id,
                subject: &subject,
                body: &body,
                repeat_interval: nc.repeat_interval,
            };
            match self.store.enqueue(&out, now) {
                Ok(true) => queued = true,
                Ok(false) => {
                    metrics::get().notifications_deduplicated.get_or_create(&metrics::notify(n, &m.event)).inc();
                    tracing::info!(
                    event = "notification_deduplicated", notifier = %n, rule = %rule, notification = %m.event, correlation_id = %m.correlation_id,
                    "not sent: the same (rule, event) went out within repeat_interval"
                    )
                }
                Err(e) => tracing::error!(event = "state_error", error = %e, notifier = %n, "cannot queue notification"),
            }
        }
        if queued {
            self.outbox_wake.notify_one();
        }
    }
}

fn max_concurrent(cfg: &Config, t: &Target) -> u32 {
    match t.kind {
        RunKind::Pipeline => cfg.pipelines.get(&t.name).map(|p| p.max_concurrent).unwrap_or(1),
        RunKind::Build => cfg.builds.get(&t.name).map(|b| b.max_concurrent).unwrap_or(1),
    }
}

/// What a start sends, stored with the decision so a restart re-sends exactly it.
fn request_json(cfg: &Config, s: &Start) -> serde_json::Value {
    match s {
        Start::Pipeline { name, parameters } => json!({
            "name": cfg.pipelines.get(name).map(|p| p.pipeline_name.clone()).unwrap_or_default(),
            "parameters": parameters,
        }),
        Start::Build { name, source_version, environment } => json!({
            "name": cfg.builds.get(name).map(|b| b.project_name.clone()).unwrap_or_default(),
            "source_version": source_version,
            "environment": environment,
        }),
    }
}

fn run_message(event: &str, rule: &str, run: &RunRow) -> Message {
    let mut m = Message::new(event, rule, run.check.as_deref(), &run.correlation_id)
        .with("target", format!("{}:{}", run.kind, run.target))
        .with("token", &run.token);
    if let Some(a) = &run.arn {
        m = m.with("arn", a);
    }
    if let Some(d) = &run.detail {
        m = m.with("status", d);
    }
    if let Some(s) = &run.started {
        m = m.with("started", ts(s));
    }
    if let Some(e) = &run.ended {
        m = m.with("ended", ts(e));
    }
    m
}
