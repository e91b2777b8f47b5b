//! Room: rules. Considers a rule now: suppressed (logged with why), dry run (logged), or
//! fired: the decision and its runs are stored in one transaction, then the starts go out.

use super::work::{Cause, Work};
use crate::cloud::Cloud;
use crate::config::{Config, RunKind, Start, Target};
use crate::engine::{self, RuleState};
use crate::events;
use crate::notify::{Kind, Message};
use crate::state::NewRun;

/// A decided firing: stored on its own, or with its events batch.
pub(super) struct PendingFiring {
    pub rule: String,
    pub state: RuleState,
    pub runs: Vec<NewRun>,
    pub once: Option<String>,
    pub notices: Vec<crate::state::Queued>,
    pub correlation_id: String,
    pub check: Option<String>,
}

/// A firing about to be stored: the rule's new state and what it starts.
struct Firing {
    at: chrono::DateTime<chrono::Utc>,
    state: RuleState,
    starts: Vec<Start>,
    correlation_id: String,
    check: Option<String>,
}

impl<C: Cloud> Work<C> {
    /// Considers rule `name` now, for `cause`: it fires (decision stored, then its starts
    /// sent), is suppressed (logged and told with why), or — a dry run — is logged only.
    pub(super) fn fire_rule(&mut self, name: &str, cause: Cause) {
        let cfg = self.cfg.clone();
        let Some(rule) = cfg.rules.get(name) else {
            return;
        };
        let now = self.now();
        let corr = cause.correlation_id(now);
        if !self.not_chained_before(name, &cause, &corr) {
            return;
        }
        // In an events batch, a rule's state is what its last firing in the batch left.
        let pending = self
            .events_batch
            .as_ref()
            .and_then(|b| b.iter().rev().find(|p| p.rule == name))
            .map(|p| p.state.clone());
        let state = match pending {
            Some(s) => s,
            None => {
                let r = self.store.rule_state(name);
                let Some(state) = self.db("read rule state", name, "the rule does not fire", r)
                else {
                    return;
                };
                state
            }
        };
        // An `on_event` rule's values are templates over the event: rendered first, and a
        // template that fails stops this firing.
        let starts: Vec<Start> = match &cause {
            Cause::Event(e) => {
                match render_starts(&cfg, &rule.start, &|v| crate::inbox::render(v, e)) {
                    Ok(s) => s,
                    Err(why) => {
                        events::rule_failed(name, &corr, &why);
                        return;
                    }
                }
            }
            Cause::Check {
                check,
                value,
                report: Some(f),
                ..
            } => match render_starts(&cfg, &rule.start, &|v| check_render(v, check, *value, f)) {
                Ok(s) => s,
                Err(why) => {
                    events::rule_failed(name, &corr, &why);
                    return;
                }
            },
            _ => rule.start.clone(),
        };
        let Some(targets) = self.targets(&cfg, rule, name) else {
            return;
        };
        let check = cause.check().map(str::to_string);
        if let Err(why) = engine::decide_rule(rule, &state, &targets, now) {
            self.suppressed(name, rule.dry_run, check.as_deref(), &corr, &why);
            return;
        }
        let firing = Firing {
            at: now,
            state: engine::fired(rule, &state, now),
            starts,
            correlation_id: corr,
            check,
        };
        if rule.dry_run {
            self.dry_run(&cfg, name, &firing);
        } else {
            self.fire(&cfg, name, &cause, firing);
        }
    }

    /// A chain considered again after a crash: a rule this run's end already fired is done.
    fn not_chained_before(&self, name: &str, cause: &Cause, corr: &str) -> bool {
        let Some(key) = chain_key(name, cause) else {
            return true;
        };
        let r = self.store.events_seen(&[key.as_str()]);
        match self.db(
            "read the chain's key",
            name,
            "the rule does not fire now",
            r,
        ) {
            Some(seen) if seen.first() == Some(&false) => true,
            Some(_) => {
                tracing::info!(event = "rule_not_refired", rule = %name, correlation_id = %corr, "this run's end fired the rule before; nothing is started again");
                false
            }
            None => false,
        }
    }

    /// Each target's (name, active runs, max_concurrent). An unknown count is not "no room"
    /// and not "room": `None`, and the rule does not fire now.
    fn targets(
        &self,
        cfg: &Config,
        rule: &crate::config::Rule,
        name: &str,
    ) -> Option<Vec<(String, u32, u32)>> {
        let mut targets = Vec::new();
        for s in &rule.start {
            let t = s.target();
            let max = max_concurrent(cfg, &t);
            let r = self.store.active_runs(&t);
            let mut active = self.db("count active runs", name, "the rule does not fire", r)?;
            // Runs decided earlier in this events batch count too.
            for p in self.events_batch.iter().flatten() {
                active += p
                    .runs
                    .iter()
                    .filter(|r| r.kind == t.kind && r.target == t.name)
                    .count() as u32;
            }
            targets.push((t.to_string(), active, max));
        }
        Some(targets)
    }

    fn suppressed(
        &self,
        name: &str,
        dry_run: bool,
        check: Option<&str>,
        corr: &str,
        why: &engine::Suppressed,
    ) {
        let detail = why.describe();
        events::RuleSuppressed {
            rule: name,
            check,
            reason: why.reason(),
            detail: &detail,
            correlation_id: corr,
        }
        .emit();
        if !dry_run {
            let m = Message::new(Kind::RuleSuppressed, name, check, corr).with("reason", detail);
            self.notify_rule(name, m);
        }
    }

    /// A dry run: what would start is logged, and the cooldown recorded; nothing is started.
    fn dry_run(&self, cfg: &Config, name: &str, f: &Firing) {
        let starts = f
            .starts
            .iter()
            .map(|s| (s.target().to_string(), request_json(cfg, s)))
            .collect();
        let notify = cfg
            .rules
            .get(name)
            .map(|r| r.notify.clone())
            .unwrap_or_default();
        events::RuleDryRun {
            rule: name,
            check: f.check.as_deref(),
            correlation_id: &f.correlation_id,
            starts,
            notify: &notify,
        }
        .emit();
        let r = self.store.record_rule_state(name, &f.state);
        self.db(
            "store dry-run state",
            name,
            "its cooldown is not recorded",
            r,
        );
    }

    /// The firing stored whole (its state, its decided runs with their tokens and requests,
    /// its once-key and notice) in one transaction; then its starts are sent.
    fn fire(&mut self, cfg: &Config, name: &str, cause: &Cause, f: Firing) {
        let runs: Vec<NewRun> = f
            .starts
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = s.target();
                NewRun {
                    kind: t.kind,
                    target: t.name.clone(),
                    token: engine::idempotency_token(&self.store_id, name, f.state.firings, i),
                    request: request_json(cfg, s).to_string(),
                    correlation_id: f.correlation_id.clone(),
                    check: f.check.clone(),
                }
            })
            .collect();
        // Each event fires a rule at most once, and each run's end chains a rule at most once
        // (also when the chain is considered again after a crash): the key is stored with the
        // firing.
        let once = match cause {
            Cause::Event(e) => Some(format!("fired\0{name}\0{}", e.id)),
            // A report fires each rule once, also when considered again after a crash.
            Cause::Check {
                check,
                report: Some(f),
                ..
            } => Some(format!("fired\0{name}\0report\0{check}\0{}", f.seen)),
            Cause::RunEnded { .. } | Cause::Deployed { .. } => chain_key(name, cause),
            _ => None,
        };
        let told = cfg
            .rules
            .get(name)
            .filter(|r| r.start.is_empty())
            .and_then(|_| told(name, cause, &f.correlation_id));
        let notices = told.map(|m| self.render_rule(name, &m)).unwrap_or_default();
        let p = PendingFiring {
            rule: name.to_string(),
            state: f.state,
            runs,
            once,
            notices,
            correlation_id: f.correlation_id,
            check: f.check,
        };
        // In an events batch the firing is stored with the batch (one transaction), and
        // what follows happens after that.
        if let (Some(batch), Cause::Event(_)) = (self.events_batch.as_mut(), cause) {
            batch.push(p);
            return;
        }
        let r =
            self.store
                .record_firing(name, &p.state, &p.runs, f.at, p.once.as_deref(), &p.notices);
        let Some(stored) = self.db("store the firing", name, "nothing is started", r) else {
            return;
        };
        let value = match cause {
            Cause::Check { value, .. } => Some(*value),
            _ => None,
        };
        self.fired(&p, value, stored);
    }

    /// A stored firing (`stored` is `None` when its once-key was there already): logged,
    /// its notices queued, its starts sent.
    pub(super) fn fired(
        &mut self,
        p: &PendingFiring,
        value: Option<Option<f64>>,
        stored: crate::state::Stored,
    ) {
        let name = p.rule.as_str();
        let Some((ids, queued)) = stored else {
            tracing::info!(event = "rule_not_refired", rule = %name, correlation_id = %p.correlation_id, "this event (or run end) fired the rule before; nothing is started again");
            return;
        };
        events::RuleFired {
            rule: name,
            check: p.check.as_deref(),
            firing: p.state.firings,
            correlation_id: &p.correlation_id,
            starts: p.runs.len(),
            value,
        }
        .emit();
        self.queued(&p.notices, &queued);
        crate::failpoint::hit_for("after_decision", name);
        for id in ids {
            // Unreadable now: the run is decided and stored, so the next poll re-drives it.
            let r = self.store.run(id);
            if let Some(Some(run)) = self.db(
                "read a decided run",
                name,
                "it is started at the next poll",
                r,
            ) {
                self.start_run(run);
            }
        }
    }
}

/// The key that makes a chained firing happen once per rule and upstream end: a run's end,
/// or a deployment's success or failure.
fn chain_key(name: &str, cause: &Cause) -> Option<String> {
    match cause {
        Cause::RunEnded { run, .. } => Some(format!("chained\0{name}\0{}", run.id)),
        Cause::Deployed { row, succeeded } => Some(format!(
            "chained\0{name}\0deploy-{}-{}",
            row.id,
            if *succeeded { "ok" } else { "failed" }
        )),
        _ => None,
    }
}

/// What a notify-only rule tells of what triggered it (queued with the firing itself).
fn told(name: &str, cause: &Cause, corr: &str) -> Option<Message> {
    match cause {
        Cause::Check { .. } => None, // check_breached was already sent to it
        Cause::Schedule => Some(Message::new(Kind::ScheduleFired, name, None, corr)),
        Cause::Event(e) => Some(
            Message::new(Kind::EventReceived, name, None, corr)
                .with("source", &e.source)
                .with("detail_type", &e.detail_type)
                .with("event_id", &e.id),
        ),
        Cause::RunEnded { run, succeeded } => Some(super::runs::run_message(
            if *succeeded {
                Kind::RunSucceeded
            } else {
                Kind::RunFailed
            },
            name,
            run,
        )),
        Cause::Deployed { row, succeeded } => Some(
            Message::new(
                if *succeeded {
                    Kind::DeploySucceeded
                } else if row.state == crate::state::DeployState::RolledBack {
                    Kind::DeployRolledBack
                } else {
                    Kind::DeployFailed
                },
                name,
                None,
                corr,
            )
            .with("endpoint", &row.endpoint_name)
            .with("version", row.version)
            .with("package_arn", &row.package_arn),
        ),
    }
}

/// `{{ check.* }}` in a rule on a report check: `features` (sorted, comma-joined, at most
/// 1,024 characters), `violations` (the count), `report_uri`, `value`, `name`. An empty
/// feature list renders empty; a start is never refused for it.
fn check_render(
    v: &str,
    check: &str,
    value: Option<f64>,
    f: &super::reports::ReportFacts,
) -> Result<String, String> {
    let ctx = minijinja::context! {
        check => minijinja::context! {
            name => check,
            value => value,
            features => f.features(),
            violations => f.count,
            report_uri => f.uri.as_str(),
        }
    };
    crate::inbox::render_in(v, ctx, &format!("check {check}"))
}

/// A rule's starts with every templated parameter and environment value rendered (over the
/// event of an `on_event` rule: strict, a missing field or an empty result is an error; over
/// a report check's findings). A pipeline with a `definition` also gets each rendered value
/// checked against its declared type (a literal one was checked at validation).
fn render_starts(
    cfg: &Config,
    starts: &[Start],
    render_one: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Vec<Start>, String> {
    let render = |m: &crate::config::Params,
                  types: Option<&crate::config::definition::Definition>|
     -> Result<crate::config::Params, String> {
        if !m.values().any(|v| v.contains("{{") || v.contains("{%")) {
            return Ok(m.clone());
        }
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in m.iter() {
            let r = render_one(v).map_err(|why| format!("`{k}`: {why}"))?;
            if let Some(ty) = types.and_then(|d| d.parameter(k)) {
                if !ty.fits(&r) {
                    return Err(format!(
                        "`{k}` rendered as \"{r}\", which is not of its declared type {ty}"
                    ));
                }
            }
            out.insert(k.clone(), r);
        }
        Ok(std::sync::Arc::new(out))
    };
    starts
        .iter()
        .map(|s| {
            Ok(match s {
                Start::Pipeline { name, parameters } => Start::Pipeline {
                    name: name.clone(),
                    parameters: render(
                        parameters,
                        cfg.pipelines
                            .get(name)
                            .and_then(|p| p.declared.as_ref())
                            .map(|d| &d.definition),
                    )?,
                },
                Start::Build {
                    name,
                    source_version,
                    environment,
                } => Start::Build {
                    name: name.clone(),
                    source_version: source_version.clone(),
                    environment: render(environment, None)?,
                },
            })
        })
        .collect()
}

pub(super) fn max_concurrent(cfg: &Config, t: &Target) -> u32 {
    match t.kind {
        RunKind::Pipeline => cfg
            .pipelines
            .get(&t.name)
            .map(|p| p.max_concurrent)
            .unwrap_or(1),
        RunKind::Build => cfg
            .builds
            .get(&t.name)
            .map(|b| b.max_concurrent)
            .unwrap_or(1),
    }
}

/// What a start sends, stored with the decision so a restart re-sends exactly it.
fn request_json(cfg: &Config, s: &Start) -> serde_json::Value {
    let req = match s {
        Start::Pipeline { name, parameters } => super::runs::StartRequest {
            name: cfg
                .pipelines
                .get(name)
                .map(|p| p.pipeline_name.clone())
                .unwrap_or_default(),
            parameters: Some(
                parameters
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            source_version: None,
            environment: None,
        },
        Start::Build {
            name,
            source_version,
            environment,
        } => super::runs::StartRequest {
            name: cfg
                .builds
                .get(name)
                .map(|b| b.project_name.clone())
                .unwrap_or_default(),
            parameters: None,
            source_version: source_version.clone(),
            environment: Some(
                environment
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        },
    };
    serde_json::to_value(&req).unwrap_or_default()
}
