//! Room: runs. Sends (and re-sends, with the same token) decided starts, follows started runs
//! to their end, and chains `on_success` / `on_failure` rules. Each end, and each start that
//! failed for good, is handled once: the store's `decided`/`started` guard gates it.

use std::collections::BTreeMap;

use super::work::{Cause, Msg, Work, MAX_START_ATTEMPTS};
use crate::clock::ts;
use crate::cloud::{AwsError, Cloud, RunStatus};
use crate::config::{RunKind, Trigger};
use crate::events;
use crate::notify::{Kind, Message};
use crate::state::{RunRow, RunState};

/// A start call as stored with its decision (`runs.request`), read back before it is sent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct StartRequest {
    /// The AWS name: the SageMaker pipeline or the CodeBuild project.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
}

impl StartRequest {
    /// The stored request, or why it cannot be sent (a damaged row is never sent with its
    /// parameters missing).
    pub(super) fn parse(text: &str) -> Result<StartRequest, String> {
        let r: StartRequest = serde_json::from_str(text)
            .map_err(|e| format!("the stored start request is unreadable ({e})"))?;
        if r.name.is_empty() {
            return Err("the stored start request names no pipeline or project".into());
        }
        Ok(r)
    }
}

impl<C: Cloud> Work<C> {
    /// Sends (or re-sends, with the same token) a decided run's start call.
    pub(super) fn start_run(&mut self, run: RunRow) {
        if self.starting.contains(&run.id) {
            return;
        }
        // A start decided while its pipeline's apply is in flight goes out after the apply.
        if run.kind == RunKind::Pipeline && self.pipeline_busy(&run.target) {
            self.hold_start(run);
            return;
        }
        let req = match StartRequest::parse(&run.request) {
            Ok(r) => r,
            Err(why) => {
                self.start_failed(&run, "CorruptStoredRequest", &why, &why);
                return;
            }
        };
        self.starting.insert(run.id);
        let r = self.store.note_start_attempt(run.id);
        self.db(
            "count a start attempt",
            &run.rule,
            "the attempt limit may allow one more try",
            r,
        );
        let (cloud, tx) = (self.cloud.clone(), self.tx.clone());
        // A retry (or a restart) first looks for a run this token already started.
        let retry = run.attempts > 0;
        let (kind, id, token) = (run.kind, run.id, run.token);
        self.tracker.spawn(async move {
            let empty = BTreeMap::new();
            let result = async {
                match kind {
                    RunKind::Pipeline => {
                        if retry {
                            if let Some(arn) =
                                cloud.find_pipeline_execution(&req.name, &token).await?
                            {
                                return Ok(arn);
                            }
                        }
                        let act = cloud.acting()?;
                        cloud
                            .start_pipeline(
                                &act,
                                &req.name,
                                req.parameters.as_ref().unwrap_or(&empty),
                                &token,
                            )
                            .await
                    }
                    RunKind::Build => {
                        if retry {
                            if let Some(id) = cloud.find_build(&req.name, &token).await? {
                                return Ok(id);
                            }
                        }
                        let act = cloud.acting()?;
                        cloud
                            .start_build(
                                &act,
                                &req.name,
                                req.source_version.as_deref(),
                                req.environment.as_ref().unwrap_or(&empty),
                                &token,
                            )
                            .await
                    }
                }
            }
            .await;
            crate::failpoint::start_answered();
            let _ = tx.send(Msg::StartDone { run_id: id, result });
        });
    }

    pub(super) fn on_start_done(&mut self, run_id: i64, result: Result<String, AwsError>) {
        self.starting.remove(&run_id);
        let r = self.store.run(run_id);
        // Unreadable: the run stays decided; the next try finds a started run by its token.
        let Some(Some(run)) = self.db(
            "read a run",
            "",
            "its start is looked up by token on the next poll",
            r,
        ) else {
            return;
        };
        if run.status != RunState::Decided {
            return;
        }
        let now = self.now();
        let target = run.target();
        match result {
            Ok(arn) => {
                crate::failpoint::hit("after_start_sent");
                let mut r = run.clone();
                r.arn = Some(arn.clone());
                let notices =
                    self.render_rule(&run.rule, &run_message(Kind::RunStarted, &run.rule, &r));
                let stored = self.store.mark_started(run_id, &arn, now, &notices);
                let Some(queued) = self
                    .db(
                        "store the started run",
                        &run.rule,
                        "it is found again by its token on the next try",
                        stored,
                    )
                    .flatten()
                else {
                    return;
                };
                events::RunStarted {
                    rule: &run.rule,
                    check: run.check.as_deref(),
                    target: &target,
                    arn: &arn,
                    correlation_id: &run.correlation_id,
                    token: &run.token,
                }
                .emit();
                self.queued(&notices, &queued);
            }
            Err(e) if e.transient() && run.attempts < MAX_START_ATTEMPTS => {
                events::StartRetry {
                    rule: &run.rule,
                    target: &target,
                    error: &e,
                    attempt: run.attempts,
                    correlation_id: &run.correlation_id,
                }
                .emit();
            }
            Err(e) => self.start_failed(&run, &e.code, &e.message, &e.to_string()),
        }
    }

    /// A decided run that cannot be started, for good: stored as `start_failed`, then — once,
    /// however often this is reached for the run — logged, notified and chained, and the
    /// rule's cooldown cleared so it may fire again.
    /// `message` is stored as the run's detail (`CODE: message`); `error` is what the log shows.
    fn start_failed(&mut self, run: &RunRow, code: &str, message: &str, error: &str) {
        let now = self.now();
        let detail = format!("{code}: {message}");
        let mut r = run.clone();
        r.detail = Some(detail.clone());
        r.status = RunState::StartFailed;
        let m = run_message(Kind::RunFailed, &run.rule, &r).with("error_code", code);
        let notices = self.render_rule(&run.rule, &m);
        let stored = self.store.mark_start_failed(run.id, &detail, now, &notices);
        let Some(queued) = self
            .db(
                "store the failed start",
                &run.rule,
                "it is tried again at the next poll",
                stored,
            )
            .flatten()
        else {
            return;
        };
        events::StartFailed {
            rule: &run.rule,
            check: run.check.as_deref(),
            target: &run.target(),
            code,
            error,
            correlation_id: &run.correlation_id,
        }
        .emit();
        self.queued(&notices, &queued);
        let cleared = self.store.clear_cooldown(&run.rule);
        self.db(
            "clear the rule's cooldown",
            &run.rule,
            "the rule waits out its cooldown",
            cleared,
        );
        self.chain(&r, false);
    }

    /// Polls every started run; re-drives decided runs whose start is not in flight.
    pub(super) fn follow_tick(&mut self) {
        self.drive_deployments();
        // Ends stored but not chained yet (a crash came between): chained now, once per rule
        // and run (the firing's key says whether it happened).
        let r = self.store.unchained_runs();
        if let Some(unchained) = self.db(
            "read unchained runs",
            "",
            "their chain is considered at the next poll",
            r,
        ) {
            for run in unchained {
                let succeeded = run.status == RunState::Succeeded;
                self.chain(&run, succeeded);
            }
        }
        let r = self.store.runs_with_status(RunState::Decided);
        if let Some(decided) = self.db(
            "read decided runs",
            "",
            "they are re-driven at the next poll",
            r,
        ) {
            for run in decided {
                self.start_run(run);
            }
        }
        self.reapply_gates();
        if self.following {
            return;
        }
        let r = self.store.runs_with_status(RunState::Started);
        let Some(started) = self.db(
            "read followed runs",
            "",
            "they are polled at the next poll",
            r,
        ) else {
            return;
        };
        if started.is_empty() {
            return;
        }
        self.following = true;
        let (cloud, tx) = (self.cloud.clone(), self.tx.clone());
        self.tracker.spawn(async move {
            let mut out = Vec::new();
            let builds: Vec<&RunRow> = started
                .iter()
                .filter(|r| r.kind == RunKind::Build)
                .collect();
            let ids: Vec<String> = builds.iter().filter_map(|r| r.arn.clone()).collect();
            if !ids.is_empty() {
                match cloud.build_statuses(&ids).await {
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
            for r in started.iter().filter(|r| r.kind == RunKind::Pipeline) {
                if let Some(arn) = &r.arn {
                    out.push((r.id, cloud.pipeline_status(arn).await));
                }
            }
            let _ = tx.send(Msg::RunStatuses {
                statuses: out,
                poll: true,
            });
        });
    }

    pub(super) fn on_run_statuses(
        &mut self,
        statuses: Vec<(i64, Result<RunStatus, AwsError>)>,
        poll: bool,
    ) {
        if poll {
            self.following = false;
        }
        let now = self.now();
        for (id, st) in statuses {
            let r = self.store.run(id);
            let Some(Some(run)) = self.db("read a followed run", "", "it is polled again", r)
            else {
                continue;
            };
            let (succeeded, detail) = match st {
                Err(e) => {
                    events::follow_failed(&run.rule, run.arn.as_deref().unwrap_or_default(), &e);
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
            let mut r = run.clone();
            r.detail = Some(detail.clone());
            r.ended = Some(now);
            r.status = if succeeded {
                RunState::Succeeded
            } else {
                RunState::Failed
            };
            let kind = if succeeded {
                Kind::RunSucceeded
            } else {
                Kind::RunFailed
            };
            let notices = self.render_rule(&run.rule, &run_message(kind, &run.rule, &r));
            let stored = self.store.mark_ended(id, succeeded, &detail, now, &notices);
            let Some(queued) = self
                .db(
                    "store the run's end",
                    &run.rule,
                    "it is polled again",
                    stored,
                )
                .flatten()
            else {
                continue;
            };
            let secs = run.started.map(|s| (now - s).num_seconds()).unwrap_or(0);
            events::RunEnded {
                succeeded,
                rule: &run.rule,
                check: run.check.as_deref(),
                target: &run.target(),
                arn: run.arn.as_deref().unwrap_or_default(),
                correlation_id: &run.correlation_id,
                detail: &detail,
                duration_s: secs,
            }
            .emit();
            self.queued(&notices, &queued);
            crate::failpoint::hit("after_run_end");
            self.chain(&r, succeeded);
        }
    }

    /// Fires the `on_success` / `on_failure` rules of a run's target (each at most once for
    /// this run), then marks the run chained.
    fn chain(&mut self, run: &RunRow, succeeded: bool) {
        let target = crate::config::Upstream::Run(run.target());
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
        let (answered, in_flight) = (crate::failpoint::starts_answered(), self.starting.len());
        for r in rules {
            self.fire_rule(
                &r,
                Cause::RunEnded {
                    run: Box::new(run.clone()),
                    succeeded,
                },
            );
        }
        // The chained starts sent above are answered before this point kills (crash tests).
        let sent = self.starting.len().saturating_sub(in_flight);
        crate::failpoint::hit_once_answered("after_chain", answered + sent);
        let r = self.store.mark_chained(run.id);
        self.db(
            "mark the run chained",
            &run.rule,
            "its chain is considered again (each rule fires at most once for it)",
            r,
        );
    }
}

pub(super) fn run_message(kind: Kind, rule: &str, run: &RunRow) -> Message {
    let mut m = Message::new(kind, rule, run.check.as_deref(), &run.correlation_id)
        .with("target", run.target().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_request_reads_back_or_says_why_not() {
        let ok = StartRequest::parse(r#"{"name":"p","parameters":{"A":"1"}}"#).unwrap();
        assert_eq!(ok.parameters.unwrap()["A"], "1");
        let b =
            StartRequest::parse(r#"{"name":"proj","source_version":null,"environment":{"S":"x"}}"#)
                .unwrap();
        assert_eq!(b.source_version, None);
        assert!(
            StartRequest::parse("{}")
                .unwrap_err()
                .contains("unreadable"),
            "no name"
        );
        assert!(
            StartRequest::parse(r#"{"name":"p","parameters":{"A":1}}"#)
                .unwrap_err()
                .contains("unreadable"),
            "a non-string parameter"
        );
        assert!(StartRequest::parse("not json")
            .unwrap_err()
            .contains("unreadable"));
        assert!(StartRequest::parse(r#"{"name":""}"#)
            .unwrap_err()
            .contains("names no pipeline"));
    }
}
