//! Room: declared pipelines. At start, on a reload that changes a definition or its role,
//! and every `reconcile_interval`: `DescribePipeline`, then (the decision stored first)
//! `CreatePipeline` or `UpdatePipeline`, or nothing. What to do is `reconcile::decide`; this
//! room stores, sends, tells (log, metrics, notifications) and holds the pipeline's starts
//! while its apply is in flight.

use super::work::{Msg, Work};
use crate::cloud::{AwsError, Cloud, RemotePipeline};
use crate::config::definition::{self, canonical_text};
use crate::config::Declared;
use crate::events;
use crate::notify::{Kind, Message};
use crate::reconcile::{self, ApplyOp, ApplyRow, Outcome, SyncState, ABSENT};
use crate::state::RunRow;

/// Most changed paths carried in a log line or notification.
const MAX_SHOWN_CHANGES: usize = 20;
/// Most `DescribePipeline` calls in flight at once.
const MAX_DESCRIBING: usize = 8;

/// An apply in flight for one pipeline.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// Another reconcile was asked for meanwhile: run it when this one ends.
    pub again: bool,
}

/// A create or update being sent: what the loop needs when the answer comes back.
#[derive(Debug, Clone)]
pub(super) struct Sending {
    pub op: ApplyOp,
    /// The state (definition + role hash) it sends.
    pub state: String,
    pub reason: &'static str,
    pub changes: Vec<String>,
}

/// A declared pipeline compared with what SageMaker holds.
struct Compared<'a> {
    pipeline: &'a str,
    aws_name: &'a str,
    decl: &'a Declared,
    /// What the store remembers of it.
    row: ApplyRow,
    /// The file's state (hash of canonical definition and role); AWS's, `None`: absent.
    file: String,
    aws: Option<String>,
    arn: Option<String>,
    /// The changed paths, for messages.
    changes: Vec<String>,
}

impl<C: Cloud> Work<C> {
    /// Compares the named declared pipelines (all of them with `None`) with AWS.
    pub(super) fn reconcile(&mut self, names: Option<Vec<String>>, why: &'static str) {
        let cfg = self.cfg.clone();
        let names: Vec<String> = match names {
            Some(n) => n,
            None => cfg
                .pipelines
                .iter()
                .filter(|(_, p)| p.declared.is_some())
                .map(|(n, _)| n.clone())
                .collect(),
        };
        if names.is_empty() {
            return;
        }
        tracing::debug!(
            event = "reconcile",
            pipelines = names.len(),
            why,
            "comparing declared pipelines with AWS"
        );
        for name in names {
            let Some(p) = cfg.pipelines.get(&name) else {
                continue;
            };
            if p.declared.is_none() {
                continue;
            }
            if let Some(f) = self.reconciling.get_mut(&name) {
                f.again = true;
                continue;
            }
            self.reconciling.insert(name.clone(), InFlight::default());
            self.to_describe.push_back(name);
        }
        self.describe_more();
    }

    /// Sends queued `DescribePipeline` calls, at most `MAX_DESCRIBING` at a time (100
    /// pipelines must not meet SageMaker's request rate all at once).
    fn describe_more(&mut self) {
        while self.describing < MAX_DESCRIBING {
            let Some(name) = self.to_describe.pop_front() else {
                return;
            };
            let Some(p) = self.cfg.pipelines.get(&name) else {
                self.finish(&name);
                continue;
            };
            self.describing += 1;
            let (cloud, tx, aws_name) =
                (self.cloud.clone(), self.tx.clone(), p.pipeline_name.clone());
            self.tracker.spawn(async move {
                let result = cloud.describe_pipeline(&aws_name).await;
                let _ = tx.send(Msg::PipelineDescribed {
                    pipeline: name,
                    result,
                });
            });
        }
    }

    /// Whether an apply of this pipeline is in flight (its starts wait for it).
    pub(super) fn pipeline_busy(&self, pipeline: &str) -> bool {
        self.reconciling.contains_key(pipeline)
    }

    /// Holds a decided start until its pipeline's apply is done.
    pub(super) fn hold_start(&mut self, run: RunRow) {
        events::start_held(&run.rule, &run.target, run.id);
        if !self.held.iter().any(|r| r.id == run.id) {
            self.held.push(run);
        }
    }

    pub(super) fn on_pipeline_described(
        &mut self,
        pipeline: String,
        result: Result<Option<RemotePipeline>, AwsError>,
    ) {
        self.describing = self.describing.saturating_sub(1);
        self.describe_more();
        let cfg = self.cfg.clone();
        let Some((p, decl)) = cfg
            .pipelines
            .get(&pipeline)
            .and_then(|p| p.declared.as_ref().map(|d| (p, d.clone())))
        else {
            // No longer declared (a reload removed it): nothing to apply.
            self.finish(&pipeline);
            return;
        };
        let remote = match result {
            Ok(r) => r,
            Err(e) => {
                self.apply_failed(&pipeline, &p.pipeline_name, &decl, &e);
                self.finish(&pipeline);
                return;
            }
        };
        let r = self.store.pipeline_apply(&pipeline);
        let Some(stored) = self.db(
            "read a declared pipeline's state",
            &pipeline,
            "it is compared again at the next reconcile",
            r,
        ) else {
            self.finish(&pipeline);
            return;
        };
        let remote_state = remote
            .as_ref()
            .map(|r| definition::state_hash(&canonical_text(&r.definition), &r.role_arn));
        let c = Compared {
            pipeline: &pipeline,
            aws_name: &p.pipeline_name,
            decl: &decl,
            row: stored.map(|s| s.row).unwrap_or_default(),
            file: decl.state_hash(),
            arn: remote.as_ref().map(|r| r.arn.clone()),
            changes: describe_changes(remote.as_ref(), &decl),
            aws: remote_state,
        };
        match reconcile::decide(&c.row, &c.file, c.aws.as_deref(), decl.reconcile) {
            Outcome::InSync { landed } => self.in_sync(c, landed),
            Outcome::ReportDrift { new_drift } => {
                let mut row = c.row.clone();
                if new_drift {
                    self.tell_drift(c.pipeline, c.aws_name, c.decl, "reported", &c.changes);
                }
                row.drift = Some(c.aws.clone().unwrap_or_else(|| ABSENT.into()));
                row.state = SyncState::Drifted;
                row.detail = Some(summary(&c.changes));
                self.save_apply(c.pipeline, &row, c.arn.as_deref());
                self.finish(c.pipeline);
            }
            Outcome::Send {
                op,
                drifted,
                new_drift,
            } => self.decide_send(c, op, drifted, new_drift),
        }
    }

    /// SageMaker holds the file's state: stored as in sync (an op of ours that landed before
    /// it could be recorded is told now).
    fn in_sync(&mut self, c: Compared<'_>, landed: Option<ApplyOp>) {
        if let Some(op) = landed {
            // Our own op went through before the daemon could record it.
            self.tell_applied(
                c.pipeline,
                c.aws_name,
                c.decl,
                op,
                c.arn.as_deref().unwrap_or(""),
                "confirmed: an earlier call had landed",
                &[],
            );
        }
        let row = ApplyRow {
            applied: Some(c.file),
            pending: None,
            drift: None,
            state: SyncState::InSync,
            detail: None,
        };
        self.save_apply(c.pipeline, &row, c.arn.as_deref());
        events::pipeline_in_sync(c.pipeline, c.aws_name, c.row.state.as_str());
        self.finish(c.pipeline);
    }

    /// A create or update to send: stored as pending first (a restart finishes it as the same
    /// op, never as a drift), then sent.
    fn decide_send(&mut self, c: Compared<'_>, op: ApplyOp, drifted: bool, new_drift: bool) {
        let mut row = c.row.clone();
        if drifted && new_drift {
            self.tell_drift(c.pipeline, c.aws_name, c.decl, "put back", &c.changes);
        }
        let reason = match (op, drifted) {
            (_, true) => "put back after drift",
            (ApplyOp::Create, false) => "declared, absent in SageMaker",
            (ApplyOp::Update, false) if row.applied.is_none() => {
                "adopted: SageMaker differed from the file"
            }
            (ApplyOp::Update, false) => "definition changed",
        };
        if drifted {
            row.drift = Some(c.aws.clone().unwrap_or_else(|| ABSENT.into()));
        }
        row.pending = Some((op, c.file.clone()));
        row.state = SyncState::Applying;
        row.detail = Some(format!("{} ({reason})", op.operation()));
        if !self.save_apply(c.pipeline, &row, c.arn.as_deref()) {
            self.finish(c.pipeline);
            return;
        }
        crate::failpoint::hit("after_apply_decided");
        self.send_apply(
            c.pipeline,
            c.aws_name,
            c.decl,
            Sending {
                op,
                state: c.file,
                reason,
                changes: c.changes,
            },
        );
    }

    fn send_apply(&mut self, pipeline: &str, aws_name: &str, decl: &Declared, s: Sending) {
        let (cloud, tx) = (self.cloud.clone(), self.tx.clone());
        let token = reconcile::create_token(&self.store_id, pipeline, &s.state);
        let (name, aws_name, body, role) = (
            pipeline.to_string(),
            aws_name.to_string(),
            decl.definition.json.clone(),
            decl.role_arn.clone(),
        );
        tracing::info!(event = "pipeline_apply", pipeline = %pipeline, pipeline_name = %aws_name, operation = s.op.operation(), reason = s.reason, "applying the declared pipeline");
        self.tracker.spawn(async move {
            let result = match s.op {
                ApplyOp::Create => match cloud.acting() {
                    Ok(act) => {
                        cloud
                            .create_pipeline(&act, &aws_name, &body, &role, &token)
                            .await
                    }
                    Err(e) => Err(e),
                },
                ApplyOp::Update => match cloud.acting() {
                    Ok(act) => cloud.update_pipeline(&act, &aws_name, &body, &role).await,
                    Err(e) => Err(e),
                },
            };
            let _ = tx.send(Msg::PipelineApplied {
                pipeline: name,
                sending: s,
                result,
            });
        });
    }

    pub(super) fn on_pipeline_applied(
        &mut self,
        pipeline: String,
        sending: Sending,
        result: Result<String, AwsError>,
    ) {
        let cfg = self.cfg.clone();
        let Some((aws_name, decl)) = cfg.pipelines.get(&pipeline).and_then(|p| {
            p.declared
                .as_ref()
                .map(|d| (p.pipeline_name.clone(), d.clone()))
        }) else {
            self.finish(&pipeline);
            return;
        };
        match result {
            Ok(arn) => {
                crate::failpoint::hit("after_apply_sent");
                // Told (queued) before it is recorded: a crash between the two tells it again
                // at the restart's compare, it never loses it.
                self.tell_applied(
                    &pipeline,
                    &aws_name,
                    &decl,
                    sending.op,
                    &arn,
                    sending.reason,
                    &sending.changes,
                );
                let row = ApplyRow {
                    applied: Some(sending.state),
                    pending: None,
                    drift: None,
                    state: SyncState::InSync,
                    detail: None,
                };
                self.save_apply(&pipeline, &row, Some(&arn));
            }
            Err(e) => {
                self.apply_failed(&pipeline, &aws_name, &decl, &e);
            }
        }
        self.finish(&pipeline);
    }

    /// Stores a pipeline's apply state; whether it was stored.
    fn save_apply(&self, pipeline: &str, row: &ApplyRow, arn: Option<&str>) -> bool {
        let r = self
            .store
            .save_pipeline_apply(pipeline, row, arn, self.now());
        self.db(
            "store a declared pipeline's state",
            pipeline,
            "it is compared again at the next reconcile",
            r,
        )
        .is_some()
    }

    /// An apply is over: run the one asked for meanwhile, or release the held starts.
    fn finish(&mut self, pipeline: &str) {
        if let Some(f) = self.reconciling.remove(pipeline) {
            if f.again {
                self.reconcile(
                    Some(vec![pipeline.to_string()]),
                    "asked again during an apply",
                );
                return;
            }
        }
        let (go, keep): (Vec<RunRow>, Vec<RunRow>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|r| r.target == pipeline);
        self.held = keep;
        for run in go {
            self.start_run(run);
        }
    }

    fn apply_failed(&mut self, pipeline: &str, aws_name: &str, decl: &Declared, e: &AwsError) {
        let retry_in = self.cfg.daemon.reconcile_interval;
        events::PipelineApplyFailed {
            pipeline,
            pipeline_name: aws_name,
            error: e,
            retry_in,
        }
        .emit();
        let r = self.store.pipeline_apply(pipeline);
        if let Some(prev) = self.db(
            "read a declared pipeline's state",
            pipeline,
            "it is compared again at the next reconcile",
            r,
        ) {
            let mut row = prev.map(|s| s.row).unwrap_or_default();
            row.state = SyncState::Failed;
            row.detail = Some(format!(
                "{} {}: {}: {}",
                e.service, e.operation, e.code, e.message
            ));
            self.save_apply(pipeline, &row, None);
        }
        let m = Message::new(
            Kind::PipelineApplyFailed,
            pipeline,
            None,
            &correlation_id(pipeline, &decl.state_hash()),
        )
        .with("pipeline", aws_name)
        .with("definition", &decl.file)
        .with("operation", e.operation)
        .with("code", &e.code)
        .with("error", &e.message)
        .with(
            "next_try",
            format!("in {}s (reconcile_interval)", retry_in.as_secs()),
        );
        self.notify(pipeline, &decl.notify, m);
    }

    #[allow(clippy::too_many_arguments)]
    fn tell_applied(
        &self,
        pipeline: &str,
        aws_name: &str,
        decl: &Declared,
        op: ApplyOp,
        arn: &str,
        reason: &str,
        changes: &[String],
    ) {
        events::PipelineApplied {
            pipeline,
            pipeline_name: aws_name,
            op,
            arn,
            reason,
            changes,
        }
        .emit();
        let mut m = Message::new(
            op.kind(),
            pipeline,
            None,
            &correlation_id(pipeline, &decl.state_hash()),
        )
        .with("pipeline", aws_name)
        .with("definition", &decl.file)
        .with("reason", reason);
        if !arn.is_empty() {
            m = m.with("arn", arn);
        }
        if !changes.is_empty() {
            m = m.with("changes", changes.join("\n"));
        }
        self.notify(pipeline, &decl.notify, m);
    }

    fn tell_drift(
        &self,
        pipeline: &str,
        aws_name: &str,
        decl: &Declared,
        action: &str,
        changes: &[String],
    ) {
        let deleted = ["(the pipeline was deleted outside mlopsd)".to_string()];
        let changes = if changes.is_empty() {
            &deleted[..]
        } else {
            changes
        };
        events::PipelineDrifted {
            pipeline,
            pipeline_name: aws_name,
            action,
            changes,
        }
        .emit();
        let m = Message::new(
            Kind::PipelineDrifted,
            pipeline,
            None,
            &correlation_id(pipeline, &decl.state_hash()),
        )
        .with("pipeline", aws_name)
        .with("definition", &decl.file)
        .with("action", action)
        .with("changes", changes.join("\n"));
        self.notify(pipeline, &decl.notify, m);
    }
}

/// What differs between AWS's pipeline and the file's, for people: one line per JSON path
/// (AWS's value → the file's), at most `MAX_SHOWN_CHANGES`.
pub(super) fn describe_changes(remote: Option<&RemotePipeline>, decl: &Declared) -> Vec<String> {
    let Some(r) = remote else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if r.role_arn != decl.role_arn {
        out.push(format!("RoleArn: {:?} → {:?}", r.role_arn, decl.role_arn));
    }
    let file: serde_json::Value = serde_json::from_str(&decl.definition.json).unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&r.definition) {
        Ok(aws) => {
            let all = definition::changes(&aws, &file);
            let n = all.len();
            out.extend(
                all.into_iter()
                    .take(MAX_SHOWN_CHANGES)
                    .map(|c| c.to_string()),
            );
            if n > MAX_SHOWN_CHANGES {
                out.push(format!("… and {} more", n - MAX_SHOWN_CHANGES));
            }
        }
        Err(_) => out.push("(SageMaker's definition is not JSON)".into()),
    }
    out
}

fn summary(changes: &[String]) -> String {
    match changes.len() {
        0 => "no difference".into(),
        1 => changes[0].clone(),
        n => format!("{} (and {} more)", changes[0], n - 1),
    }
}

/// One correlation id per (pipeline, state applied).
fn correlation_id(pipeline: &str, state: &str) -> String {
    format!(
        "c-{}",
        &definition::short_hash(&format!("mlopsd-pipeline\0{pipeline}\0{state}"))
    )
}
