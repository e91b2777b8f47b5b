//! Deploy decisions (pure): the names a deployment's model and config get, which version an
//! endpoint block wants, and the verdict on a `DescribeEndpoint` answer. The daemon's
//! `deploys` room stores, calls and tells; nothing here reads the clock or does I/O.
//!
//! A verdict rests on the config name the endpoint serves, never on its status alone: an
//! update SageMaker rolled back ends `InService` too, on the old config.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cloud::{EndpointView, PackageVersion};
use crate::config::Endpoint;

/// How long after the strategy's own waits a deployment may take before it is `failed`.
pub(crate) const GRACE: Duration = Duration::from_secs(3600);

/// The name of the model and of the endpoint config of `version` on `endpoint_name` with the
/// spec hash `spec` (`NAME-vN-HASH`, at most 63 characters: SageMaker's limit). The same
/// decision always gives the same name, so a describe finds what an earlier attempt made.
pub(crate) fn resource_name(endpoint_name: &str, version: u32, spec: &str) -> String {
    let tail = format!("-v{version}-{spec}");
    let room = 63usize.saturating_sub(tail.len());
    let head: String = endpoint_name.chars().take(room).collect();
    format!("{}{tail}", head.trim_end_matches('-'))
}

/// The version a model or config mlopsd named serves (`NAME-vN-HASH`), if it is one.
pub(crate) fn version_of(resource: &str) -> Option<u32> {
    let (head, _hash) = resource.rsplit_once('-')?;
    let (_, v) = head.rsplit_once("-v")?;
    v.parse().ok()
}

/// The versions an endpoint block may deploy, newest first: its pinned `version`, or the
/// group's Approved versions; with `promote_from`, only those `baked` there (`baked`). The
/// caller then takes the first that carries `require_tag`, if the block has one.
pub(crate) fn candidates(
    ep: &Endpoint,
    approved: &[PackageVersion],
    baked: Option<&HashSet<u32>>,
) -> Result<Vec<PackageVersion>, String> {
    let mut v: Vec<PackageVersion> = approved
        .iter()
        .filter(|p| ep.version.is_none_or(|want| p.version == want))
        .filter(|p| baked.is_none_or(|b| b.contains(&p.version)))
        .cloned()
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.version));
    v.dedup_by_key(|p| p.version);
    if v.is_empty() {
        return Err(match (ep.version, &ep.promote_from) {
            (Some(n), _) => format!(
                "version {n} of \"{}\" is not Approved",
                ep.model_package_group
            ),
            (None, Some(from)) => format!(
                "no Approved version of \"{}\" has baked on [endpoints.{from}] yet",
                ep.model_package_group
            ),
            (None, None) => format!("\"{}\" has no Approved version", ep.model_package_group),
        });
    }
    Ok(v)
}

/// What an operation of a deployment is: putting a new config on the endpoint (create or
/// update), or mlopsd's rollback to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Update,
    Rollback,
}

impl Op {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Rollback => "rollback",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Op> {
        [Op::Create, Op::Update, Op::Rollback]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// A call in flight, as the verdict needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sent<'a> {
    pub op: Op,
    /// The config the call puts on the endpoint.
    pub target: &'a str,
    /// When the call was stored as about to be sent.
    pub at: DateTime<Utc>,
    /// Whether AWS took it (its answer came back, or a describe showed it).
    pub confirmed: bool,
    /// After this, a call still going is `failed`.
    pub deadline: DateTime<Utc>,
}

/// What a `DescribeEndpoint` answer says of a call in flight.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Still going (the status), and whether this answer shows the call landed.
    Going {
        status: String,
        landed: bool,
    },
    /// `InService` on the target config.
    Done,
    /// `InService` on another config after the call landed: SageMaker rolled it back.
    Reverted(String),
    Failed(String),
    /// The call never reached AWS (the endpoint is as it was before it): send it again.
    NotLanded,
    /// The endpoint is busy with a change mlopsd did not make: wait.
    Busy(String),
}

pub(crate) fn judge(s: &Sent<'_>, view: Option<&EndpointView>, now: DateTime<Utc>) -> Verdict {
    let Some(v) = view else {
        return if s.op == Op::Create && !s.confirmed {
            Verdict::NotLanded
        } else {
            Verdict::Failed("the endpoint does not exist any more".into())
        };
    };
    let ours = v.config_name == s.target || v.pending_config.as_deref() == Some(s.target);
    let after = v.last_modified.is_some_and(|t| t >= s.at);
    let landed = s.confirmed || ours || after;
    let verdict = match v.status.as_str() {
        "InService" if v.config_name == s.target => return Verdict::Done,
        "InService" if landed => Verdict::Reverted(
            v.failure_reason
                .clone()
                .unwrap_or_else(|| "rolled back by SageMaker".into()),
        ),
        "InService" => Verdict::NotLanded,
        "Failed" | "UpdateRollbackFailed" => {
            let why = v.failure_reason.clone().unwrap_or_else(|| v.status.clone());
            if landed {
                Verdict::Failed(format!("{}: {why}", v.status))
            } else {
                Verdict::Busy(format!("the endpoint is {}: {why}", v.status))
            }
        }
        other if landed => Verdict::Going {
            status: other.to_string(),
            landed: ours && !s.confirmed,
        },
        other => Verdict::Busy(format!(
            "the endpoint is {other} with a change mlopsd did not make"
        )),
    };
    match verdict {
        Verdict::Going { status, .. } if now > s.deadline => Verdict::Failed(format!(
            "no end within the strategy's waits + 1h (still {status})"
        )),
        v => v,
    }
}

/// When a call of `op` with `ep`'s strategy, sent at `at`, is given up.
pub(crate) fn deadline(ep: &Endpoint, op: Op, at: DateTime<Utc>) -> DateTime<Utc> {
    let waits = match op {
        Op::Rollback => Duration::ZERO,
        _ => ep.strategy.waits(),
    };
    crate::clock::after(at, waits + GRACE).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The deadline of a call whose endpoint block was removed from the config.
pub(crate) fn deadline_default(at: DateTime<Utc>) -> DateTime<Utc> {
    crate::clock::after(at, GRACE).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn view(status: &str, config: &str, pending: Option<&str>, modified: i64) -> EndpointView {
        EndpointView {
            status: status.into(),
            config_name: config.into(),
            pending_config: pending.map(str::to_string),
            failure_reason: None,
            last_modified: Some(t(modified)),
        }
    }

    fn sent(op: Op, confirmed: bool) -> Sent<'static> {
        Sent {
            op,
            target: "new",
            at: t(100),
            confirmed,
            deadline: t(10_000),
        }
    }

    #[test]
    fn names_are_stable_and_fit_sagemaker() {
        assert_eq!(
            resource_name("churn-prod", 12, "ab12cd34"),
            "churn-prod-v12-ab12cd34"
        );
        let long = "a".repeat(63);
        let n = resource_name(&long, 4_000_000_000, "ab12cd34");
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("-v4000000000-ab12cd34"));
        let hy = format!("{}-b", "a".repeat(43));
        assert!(!resource_name(&hy, 1, "ab12cd34").contains("--"));
    }

    #[test]
    fn a_name_tells_its_version() {
        assert_eq!(
            version_of(&resource_name("churn-v2", 12, "ab12cd34")),
            Some(12)
        );
        assert_eq!(version_of("someone-elses-config"), None);
    }

    #[test]
    fn a_rollback_is_judged_by_config_not_status() {
        // Back InService on the old config after the update landed: rolled back, even with
        // an empty FailureReason (what a status-only poller calls success).
        let v = view("InService", "old", None, 200);
        assert_eq!(
            judge(&sent(Op::Update, true), Some(&v), t(300)),
            Verdict::Reverted("rolled back by SageMaker".into())
        );
        let mut v2 = v.clone();
        v2.failure_reason = Some("alarm churn-5xx in ALARM".into());
        assert_eq!(
            judge(&sent(Op::Update, false), Some(&v2), t(300)),
            Verdict::Reverted("alarm churn-5xx in ALARM".into()),
            "modified after the send: it landed"
        );
        assert_eq!(
            judge(
                &sent(Op::Update, true),
                Some(&view("InService", "new", None, 200)),
                t(300)
            ),
            Verdict::Done
        );
    }

    #[test]
    fn an_update_whose_answer_was_lost_is_found_or_sent_again() {
        // Unconfirmed, the endpoint untouched since before the send: it never landed.
        assert_eq!(
            judge(
                &sent(Op::Update, false),
                Some(&view("InService", "old", None, 50)),
                t(300)
            ),
            Verdict::NotLanded
        );
        // Unconfirmed, but the endpoint is deploying our config: it landed.
        assert_eq!(
            judge(
                &sent(Op::Update, false),
                Some(&view("Updating", "old", Some("new"), 50)),
                t(300)
            ),
            Verdict::Going {
                status: "Updating".into(),
                landed: true
            }
        );
        // Someone else's update: wait, never fight it.
        assert!(matches!(
            judge(
                &sent(Op::Update, false),
                Some(&view("Updating", "old", Some("theirs"), 50)),
                t(300)
            ),
            Verdict::Busy(_)
        ));
        // A create that never landed: no endpoint.
        assert_eq!(
            judge(&sent(Op::Create, false), None, t(300)),
            Verdict::NotLanded
        );
        assert!(matches!(
            judge(&sent(Op::Update, true), None, t(300)),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn failures_and_the_deadline() {
        let mut v = view("Failed", "new", None, 200);
        v.failure_reason = Some("capacity".into());
        assert_eq!(
            judge(&sent(Op::Create, true), Some(&v), t(300)),
            Verdict::Failed("Failed: capacity".into())
        );
        let going = view("Updating", "old", Some("new"), 200);
        assert!(matches!(
            judge(&sent(Op::Update, true), Some(&going), t(20_000)),
            Verdict::Failed(m) if m.contains("no end within")
        ));
    }

    #[test]
    fn candidates_newest_first_with_pins_and_promotions() {
        let cfg = crate::config::parse(
            r#"
[endpoints.s]
endpoint_name = "s"
model_package_group = "g"
execution_role_arn = "arn:aws:iam::123456789012:role/r"
instance_type = "ml.m5.large"
[endpoints.p]
endpoint_name = "p"
promote_from = "s"
model_package_group = "g"
execution_role_arn = "arn:aws:iam::123456789012:role/r"
instance_type = "ml.m5.large"
"#,
            std::path::Path::new("x"),
        )
        .unwrap();
        let pv = |v: u32| PackageVersion {
            arn: format!("arn:{v}"),
            version: v,
        };
        let approved = [pv(1), pv(3), pv(2)];
        let s = &cfg.endpoints["s"];
        let got: Vec<u32> = candidates(s, &approved, None)
            .unwrap()
            .iter()
            .map(|p| p.version)
            .collect();
        assert_eq!(got, [3, 2, 1]);
        let baked: HashSet<u32> = [1, 2].into();
        let p = &cfg.endpoints["p"];
        assert_eq!(
            candidates(p, &approved, Some(&baked)).unwrap()[0].version,
            2
        );
        let none = candidates(p, &approved, Some(&HashSet::new())).unwrap_err();
        assert!(none.contains("baked on [endpoints.s]"), "{none}");
        let mut pinned = (**s).clone();
        pinned.version = Some(7);
        assert!(candidates(&pinned, &approved, None)
            .unwrap_err()
            .contains("version 7"));
    }
}
