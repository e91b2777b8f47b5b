//! Declared pipelines, pure: what an apply does given what the file says, what AWS holds and
//! what the store remembers. The daemon (`daemon/declared.rs`) and `mlopsd diff` act on it.
//!
//! States are hashes of (canonical definition, role): `file` is the config's, `aws` the
//! pipeline's as `DescribePipeline` returned it (`None`: no such pipeline), and the stored
//! row remembers what mlopsd last saw applied and what it decided to send. That is how an
//! edit of the file (an update) is told from an edit made outside mlopsd (a drift), and how
//! a restart after a crash between deciding and confirming an apply finishes it as the same
//! create or update, not as a drift.

use serde_json::Value;

use crate::cloud::{AwsError, RemotePipeline};
use crate::config::definition::{self, Change};
use crate::config::{Declared, Reconcile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyOp {
    Create,
    Update,
}

impl ApplyOp {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            ApplyOp::Create => "create",
            ApplyOp::Update => "update",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<ApplyOp> {
        match s {
            "create" => Some(ApplyOp::Create),
            "update" => Some(ApplyOp::Update),
            _ => None,
        }
    }
    /// The notification of a landed op.
    pub(crate) fn kind(&self) -> crate::notify::Kind {
        match self {
            ApplyOp::Create => crate::notify::Kind::PipelineCreated,
            ApplyOp::Update => crate::notify::Kind::PipelineUpdated,
        }
    }
    /// The AWS operation that carries it.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            ApplyOp::Create => "CreatePipeline",
            ApplyOp::Update => "UpdatePipeline",
        }
    }
}

/// Where a declared pipeline stands, as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncState {
    /// Not compared with AWS yet.
    Unknown,
    InSync,
    /// A create or update is decided and being sent.
    Applying,
    /// AWS differs from the file by a change made outside mlopsd (`reconcile = "report"`).
    Drifted,
    /// The last apply failed; retried at the next reconcile.
    Failed,
}

impl SyncState {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            SyncState::Unknown => "unknown",
            SyncState::InSync => "in_sync",
            SyncState::Applying => "applying",
            SyncState::Drifted => "drifted",
            SyncState::Failed => "failed",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<SyncState> {
        match s {
            "unknown" => Some(SyncState::Unknown),
            "in_sync" => Some(SyncState::InSync),
            "applying" => Some(SyncState::Applying),
            "drifted" => Some(SyncState::Drifted),
            "failed" => Some(SyncState::Failed),
            _ => None,
        }
    }
}

/// What the store remembers of a declared pipeline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApplyRow {
    /// The state mlopsd last saw in AWS equal to its file (after its own apply or a check).
    pub applied: Option<String>,
    /// A create or update decided and not yet confirmed, with the state it sends.
    pub pending: Option<(ApplyOp, String)>,
    /// The AWS state last reported as drift (so it is reported once); `ABSENT` for a deleted
    /// pipeline.
    pub drift: Option<String>,
    pub state: SyncState,
    /// Why it is in that state (the changes, the AWS error).
    pub detail: Option<String>,
}

impl Default for ApplyRow {
    fn default() -> Self {
        ApplyRow {
            applied: None,
            pending: None,
            drift: None,
            state: SyncState::Unknown,
            detail: None,
        }
    }
}

/// The drift marker of a pipeline deleted outside mlopsd.
pub(crate) const ABSENT: &str = "absent";

/// What to do after a `DescribePipeline`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// AWS holds the file's state. `landed`: a pending op of ours that this confirms (its
    /// event is told now: the daemon stopped before it could).
    InSync { landed: Option<ApplyOp> },
    /// Send this op. `drifted`: AWS was changed outside mlopsd (told once per AWS state,
    /// `new_drift`), and this puts it back.
    Send {
        op: ApplyOp,
        drifted: bool,
        new_drift: bool,
    },
    /// `reconcile = "report"` and AWS was changed outside mlopsd: nothing is sent.
    ReportDrift { new_drift: bool },
}

pub(crate) fn decide(row: &ApplyRow, file: &str, aws: Option<&str>, mode: Reconcile) -> Outcome {
    let ours = row.pending.as_ref().filter(|(_, h)| h == file).map(|p| p.0);
    let drift_key = aws.unwrap_or(ABSENT);
    let new_drift = row.drift.as_deref() != Some(drift_key);
    match aws {
        Some(a) if a == file => Outcome::InSync { landed: ours },
        // Never seen applied, or our own op not yet through: a plain create or update.
        _ if ours.is_some() || row.applied.is_none() => Outcome::Send {
            op: if aws.is_none() {
                ApplyOp::Create
            } else {
                ApplyOp::Update
            },
            drifted: false,
            new_drift: false,
        },
        // The file is what was applied, and AWS no longer holds it: changed outside mlopsd.
        _ if row.applied.as_deref() == Some(file) => match mode {
            Reconcile::Apply => Outcome::Send {
                op: if aws.is_none() {
                    ApplyOp::Create
                } else {
                    ApplyOp::Update
                },
                drifted: true,
                new_drift,
            },
            Reconcile::Report => Outcome::ReportDrift { new_drift },
        },
        // The file changed since the last apply.
        None => Outcome::Send {
            op: ApplyOp::Create,
            drifted: false,
            new_drift: false,
        },
        Some(_) => Outcome::Send {
            op: ApplyOp::Update,
            drifted: false,
            new_drift: false,
        },
    }
}

/// The `ClientRequestToken` of a create: the same for the same (pipeline, state), so a
/// retried or re-driven create is the same create.
pub(crate) fn create_token(store_id: &str, pipeline: &str, state: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("mlopsd-create\0{store_id}\0{pipeline}\0{state}").as_bytes());
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("mlopsd-{hex}")
}

/// What an apply would do to one pipeline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Create,
    Update(Vec<Change>),
    InSync,
    Unreadable(AwsError),
}

/// Compares one declared pipeline with what AWS holds: every changed JSON path, and
/// `RoleArn` when the role differs.
pub(crate) fn compare(remote: Option<&RemotePipeline>, decl: &Declared) -> Verdict {
    let Some(r) = remote else {
        return Verdict::Create;
    };
    let file: Value = serde_json::from_str(&decl.definition.json).unwrap_or_default();
    let mut changes = Vec::new();
    if r.role_arn != decl.role_arn {
        changes.push(Change {
            path: "RoleArn".into(),
            aws: Some(Value::String(r.role_arn.clone())),
            file: Some(Value::String(decl.role_arn.clone())),
        });
    }
    match serde_json::from_str::<Value>(&r.definition) {
        Ok(aws) => changes.extend(definition::changes(&aws, &file)),
        Err(_) => changes.push(Change {
            path: "(whole)".into(),
            aws: Some(Value::String(r.definition.clone())),
            file: Some(file),
        }),
    }
    if changes.is_empty() {
        Verdict::InSync
    } else {
        Verdict::Update(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reconcile::{Apply, Report};

    fn row(applied: Option<&str>, pending: Option<(ApplyOp, &str)>) -> ApplyRow {
        ApplyRow {
            applied: applied.map(str::to_string),
            pending: pending.map(|(o, h)| (o, h.to_string())),
            ..ApplyRow::default()
        }
    }

    fn send(op: ApplyOp, drifted: bool, new_drift: bool) -> Outcome {
        Outcome::Send {
            op,
            drifted,
            new_drift,
        }
    }

    #[test]
    fn first_sight_creates_or_updates() {
        let r = ApplyRow::default();
        assert_eq!(
            decide(&r, "F", None, Apply),
            send(ApplyOp::Create, false, false)
        );
        assert_eq!(
            decide(&r, "F", Some("A"), Report),
            send(ApplyOp::Update, false, false)
        );
        assert_eq!(
            decide(&r, "F", Some("F"), Apply),
            Outcome::InSync { landed: None }
        );
    }

    #[test]
    fn a_file_edit_is_an_update_in_either_mode() {
        let r = row(Some("F1"), None);
        for mode in [Apply, Report] {
            assert_eq!(
                decide(&r, "F2", Some("F1"), mode),
                send(ApplyOp::Update, false, false)
            );
        }
    }

    #[test]
    fn an_outside_edit_is_drift_put_back_or_reported_once() {
        let r = row(Some("F"), None);
        assert_eq!(
            decide(&r, "F", Some("X"), Apply),
            send(ApplyOp::Update, true, true)
        );
        assert_eq!(
            decide(&r, "F", Some("X"), Report),
            Outcome::ReportDrift { new_drift: true }
        );
        let reported = ApplyRow {
            drift: Some("X".into()),
            ..r.clone()
        };
        assert_eq!(
            decide(&reported, "F", Some("X"), Report),
            Outcome::ReportDrift { new_drift: false }
        );
        assert_eq!(
            decide(&reported, "F", Some("Y"), Report),
            Outcome::ReportDrift { new_drift: true }
        );
        // Deleted outside mlopsd.
        assert_eq!(
            decide(&r, "F", None, Apply),
            send(ApplyOp::Create, true, true)
        );
        assert_eq!(
            decide(&r, "F", None, Report),
            Outcome::ReportDrift { new_drift: true }
        );
    }

    #[test]
    fn a_crash_between_deciding_and_confirming_is_not_drift() {
        // Decided an update to F2, crashed before sending: AWS still holds F1.
        let r = row(Some("F1"), Some((ApplyOp::Update, "F2")));
        assert_eq!(
            decide(&r, "F2", Some("F1"), Apply),
            send(ApplyOp::Update, false, false)
        );
        // Crashed after sending, before storing the result: AWS holds F2; told now.
        assert_eq!(
            decide(&r, "F2", Some("F2"), Apply),
            Outcome::InSync {
                landed: Some(ApplyOp::Update)
            }
        );
        // The file changed again meanwhile: the pending op is not ours any more.
        assert_eq!(
            decide(&r, "F3", Some("F2"), Apply),
            send(ApplyOp::Update, false, false)
        );
        // A decided create that never went out.
        let c = row(None, Some((ApplyOp::Create, "F")));
        assert_eq!(
            decide(&c, "F", None, Report),
            send(ApplyOp::Create, false, false)
        );
    }

    #[test]
    fn tokens_are_stable_and_valid() {
        let t = create_token("s", "p", "F");
        assert_eq!(t, create_token("s", "p", "F"));
        assert_ne!(t, create_token("s", "p", "G"));
        assert!((32..=128).contains(&t.len()));
    }
}
