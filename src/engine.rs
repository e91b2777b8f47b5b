//! Pure decisions: check evaluation (`for`, `missing_data`, recovery), rule firing
//! (cooldown, concurrency), gate verdicts, idempotency tokens. No clock, no I/O: callers pass
//! `now` and what they read from the store or AWS.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::{Check, Gate, MissingData, Rule};

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CheckState {
    pub breach_count: u32,
    pub breaching: bool,
    pub correlation_id: Option<String>,
    pub last_value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Breach,
    Ok,
    /// No data and `missing_data = "ignore"`: nothing changes.
    Ignored,
}

impl Verdict {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Verdict::Breach => "breach",
            Verdict::Ok => "ok",
            Verdict::Ignored => "no_data_ignored",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckOutcome {
    pub verdict: Verdict,
    pub value: Option<f64>,
    pub state: CheckState,
    /// The breach count just reached `for`: a new incident (`check_breached`).
    pub entered_breach: bool,
    /// It was breaching and is ok now (`check_recovered`).
    pub recovered: bool,
    /// `for` consecutive breaches: rules on this check are considered.
    pub firing: bool,
    /// The incident this evaluation belongs to (also on recovery).
    pub correlation_id: Option<String>,
}

/// One evaluation of a check, from its previous state and the value read (None: no data).
pub(crate) fn evaluate_check(
    check: &Check,
    prev: &CheckState,
    value: Option<f64>,
    new_id: impl FnOnce() -> String,
) -> CheckOutcome {
    let verdict = match value {
        Some(v) if check.threshold.breached_by(v) => Verdict::Breach,
        Some(_) => Verdict::Ok,
        None => match check.missing_data {
            MissingData::Ignore => Verdict::Ignored,
            MissingData::Breach => Verdict::Breach,
            MissingData::Ok => Verdict::Ok,
        },
    };
    let mut state = prev.clone();
    if value.is_some() {
        state.last_value = value;
    }
    let (mut entered_breach, mut recovered, mut firing) = (false, false, false);
    let mut correlation_id = prev.correlation_id.clone();
    match verdict {
        Verdict::Ignored => {
            firing = false;
        }
        Verdict::Breach => {
            state.breach_count = state.breach_count.saturating_add(1);
            if state.breach_count >= check.for_count {
                firing = true;
                if !prev.breaching {
                    entered_breach = true;
                    state.breaching = true;
                    let id = new_id();
                    state.correlation_id = Some(id.clone());
                    correlation_id = Some(id);
                }
            }
        }
        Verdict::Ok => {
            state.breach_count = 0;
            if prev.breaching {
                recovered = true;
            }
            state.breaching = false;
            state.correlation_id = None;
        }
    }
    CheckOutcome {
        verdict,
        value,
        state,
        entered_breach,
        recovered,
        firing,
        correlation_id,
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RuleState {
    pub firings: u64,
    pub last_fired: Option<DateTime<Utc>>,
    pub cooldown_until: Option<DateTime<Utc>>,
}

/// Why a rule did not fire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Suppressed {
    Cooldown {
        until: DateTime<Utc>,
    },
    Concurrency {
        target: String,
        active: u32,
        max: u32,
    },
}

impl Suppressed {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Suppressed::Cooldown { .. } => "cooldown",
            Suppressed::Concurrency { .. } => "max_concurrent",
        }
    }
    pub(crate) fn describe(&self) -> String {
        match self {
            Suppressed::Cooldown { until } => {
                format!("in cooldown until {}", crate::clock::ts(until))
            }
            Suppressed::Concurrency {
                target,
                active,
                max,
            } => format!("{target} has {active} active run(s), max_concurrent = {max}"),
        }
    }
}

/// Whether a rule may fire now. `targets` gives (target, active runs, max_concurrent) for
/// each start action of the rule.
pub(crate) fn decide_rule(
    _rule: &Rule,
    state: &RuleState,
    targets: &[(String, u32, u32)],
    now: DateTime<Utc>,
) -> Result<(), Suppressed> {
    if let Some(until) = state.cooldown_until {
        if now < until {
            return Err(Suppressed::Cooldown { until });
        }
    }
    for (t, active, max) in targets {
        if active >= max {
            return Err(Suppressed::Concurrency {
                target: t.clone(),
                active: *active,
                max: *max,
            });
        }
    }
    Ok(())
}

/// The state after a rule fires at `now`.
pub(crate) fn fired(rule: &Rule, state: &RuleState, now: DateTime<Utc>) -> RuleState {
    RuleState {
        firings: state.firings.saturating_add(1),
        last_fired: Some(now),
        // Saturates at the end of time rather than overflow (durations are bounded, the clock is not).
        cooldown_until: rule
            .cooldown
            .map(|c| crate::clock::after(now, c).unwrap_or(DateTime::<Utc>::MAX_UTC)),
    }
}

/// The idempotency token of a rule's nth firing (and its nth start action) in the store
/// `store_id`, stable across restarts: SageMaker `ClientRequestToken` (32–128 of [A-Za-z0-9-])
/// and CodeBuild `idempotencyToken` accept it, and it doubles as the execution's display name.
pub(crate) fn idempotency_token(store_id: &str, rule: &str, firing: u64, action: usize) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("mlopsd\0{store_id}\0{rule}\0{firing}\0{action}").as_bytes());
    let hex: String = d.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("mlopsd-{hex}")
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GateVerdict {
    Approve {
        value: f64,
        reason: String,
    },
    Reject {
        value: f64,
        reason: String,
    },
    /// No usable metric: the package stays pending.
    NoMetric {
        reason: String,
    },
}

/// Compares a package's metric with the gate's bounds.
pub(crate) fn decide_gate(
    gate: &Gate,
    metric_name: &str,
    value: Result<f64, String>,
) -> GateVerdict {
    let v = match value {
        Ok(v) if v.is_finite() => v,
        Ok(v) => {
            return GateVerdict::NoMetric {
                reason: format!("{metric_name} is {v}"),
            }
        }
        Err(reason) => return GateVerdict::NoMetric { reason },
    };
    if let Some(min) = gate.min {
        if v < min {
            return GateVerdict::Reject {
                value: v,
                reason: format!("mlopsd: {metric_name} {v} is below min {min}"),
            };
        }
    }
    if let Some(max) = gate.max {
        if v > max {
            return GateVerdict::Reject {
                value: v,
                reason: format!("mlopsd: {metric_name} {v} is above max {max}"),
            };
        }
    }
    let bounds = match (gate.min, gate.max) {
        (Some(a), Some(b)) => format!("within [{a}, {b}]"),
        (Some(a), None) => format!(">= min {a}"),
        (None, Some(b)) => format!("<= max {b}"),
        (None, None) => "unbounded".into(),
    };
    GateVerdict::Approve {
        value: v,
        reason: format!("mlopsd: {metric_name} {v} {bounds}"),
    }
}

/// A number from a metadata string.
pub(crate) fn metadata_value(
    meta: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<f64, String> {
    let s = meta
        .get(key)
        .ok_or_else(|| format!("CustomerMetadataProperties has no key \"{key}\""))?;
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("CustomerMetadataProperties[\"{key}\"] = \"{s}\" is not a number"))
}

/// A number at a dotted path (`a.b.0.c`) in a JSON report; numeric strings are accepted.
pub(crate) fn report_value(report: &str, path: &str) -> Result<f64, String> {
    let doc: Value =
        serde_json::from_str(report).map_err(|e| format!("evaluation report is not JSON: {e}"))?;
    let mut cur = &doc;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| {
            format!("evaluation report has nothing at \"{path}\" (stopped at \"{seg}\")")
        })?;
    }
    match cur {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("value at \"{path}\" is not a number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("value at \"{path}\" is \"{s}\", not a number")),
        other => Err(format!("value at \"{path}\" is {other}, not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GateMetric, MetricSource, MissingData, Source, Threshold, Timed};
    use crate::schedule::Schedule;
    use std::time::Duration;

    fn check(for_count: u32, missing: MissingData) -> Check {
        Check {
            timed: Timed {
                expression: "every 1m".into(),
                schedule: Schedule::parse("every 1m").unwrap(),
                timezone: chrono_tz::UTC,
            },
            source: Source::Metric(MetricSource {
                namespace: "n".into(),
                metric: "m".into(),
                dimensions: Vec::new(),
                statistic: "Average".into(),
                period: Duration::from_secs(60),
            }),
            threshold: Threshold::Above(0.1),
            for_count,
            missing_data: missing,
        }
    }

    #[test]
    fn for_counts_consecutive_breaches_and_recovery_closes_the_incident() {
        let c = check(2, MissingData::Ignore);
        let s0 = CheckState::default();
        let o1 = evaluate_check(&c, &s0, Some(0.2), || "id1".into());
        assert!(!o1.firing && !o1.entered_breach);
        let o2 = evaluate_check(&c, &o1.state, Some(0.3), || "id1".into());
        assert!(o2.firing && o2.entered_breach);
        assert_eq!(o2.correlation_id.as_deref(), Some("id1"));
        let o3 = evaluate_check(&c, &o2.state, Some(0.3), || "other".into());
        assert!(o3.firing && !o3.entered_breach, "still the same incident");
        assert_eq!(o3.correlation_id.as_deref(), Some("id1"));
        let o4 = evaluate_check(&c, &o3.state, Some(0.05), || "x".into());
        assert!(o4.recovered && !o4.firing);
        assert_eq!(o4.correlation_id.as_deref(), Some("id1"));
        assert_eq!(
            o4.state,
            CheckState {
                breach_count: 0,
                breaching: false,
                correlation_id: None,
                last_value: Some(0.05)
            }
        );
    }

    #[test]
    fn an_ok_between_breaches_resets_for() {
        let c = check(2, MissingData::Ignore);
        let o1 = evaluate_check(&c, &CheckState::default(), Some(0.2), || "a".into());
        let o2 = evaluate_check(&c, &o1.state, Some(0.0), || "a".into());
        let o3 = evaluate_check(&c, &o2.state, Some(0.2), || "a".into());
        assert!(!o3.firing);
        assert!(!o2.recovered, "never entered breach");
    }

    #[test]
    fn missing_data_modes() {
        let prev = CheckState {
            breach_count: 1,
            ..Default::default()
        };
        let o = evaluate_check(&check(2, MissingData::Ignore), &prev, None, || "a".into());
        assert_eq!(o.verdict, Verdict::Ignored);
        assert_eq!(o.state, prev);
        let o = evaluate_check(&check(2, MissingData::Breach), &prev, None, || "a".into());
        assert!(o.firing);
        let o = evaluate_check(&check(2, MissingData::Ok), &prev, None, || "a".into());
        assert_eq!(o.state.breach_count, 0);
    }

    #[test]
    fn below_threshold() {
        let mut c = check(1, MissingData::Ignore);
        c.threshold = Threshold::Below(0.8);
        assert!(evaluate_check(&c, &CheckState::default(), Some(0.7), || "a".into()).firing);
        assert!(!evaluate_check(&c, &CheckState::default(), Some(0.8), || "a".into()).firing);
    }

    fn rule(cooldown: Option<Duration>) -> Rule {
        Rule {
            trigger: crate::config::Trigger::Check("c".into()),
            start: vec![],
            notify: vec![],
            cooldown,
            dry_run: false,
            catch_up: crate::config::CatchUp::None,
        }
    }

    #[test]
    fn a_cooldown_past_the_end_of_time_saturates_instead_of_panicking() {
        let r = rule(Some(crate::duration::MAX_DURATION));
        let late = DateTime::<Utc>::MAX_UTC - chrono::Duration::days(1);
        let s = fired(
            &r,
            &RuleState {
                firings: u64::MAX,
                ..Default::default()
            },
            late,
        );
        assert_eq!(s.cooldown_until, Some(DateTime::<Utc>::MAX_UTC));
        assert_eq!(s.firings, u64::MAX, "saturates");
        assert!(decide_rule(&r, &s, &[], late).is_err(), "still in cooldown");
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(
            fired(&r, &RuleState::default(), t).cooldown_until,
            t.checked_add_signed(chrono::Duration::days(3650))
        );
    }

    #[test]
    fn cooldown_and_concurrency_suppress_with_reasons() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let r = rule(Some(Duration::from_secs(3600)));
        let s = fired(&r, &RuleState::default(), now);
        assert_eq!(s.firings, 1);
        let e = decide_rule(&r, &s, &[], now + chrono::Duration::minutes(59)).unwrap_err();
        assert_eq!(e.reason(), "cooldown");
        assert!(
            e.describe().contains("until 2027-01-15T09:00:00Z"),
            "{}",
            e.describe()
        );
        assert!(decide_rule(&r, &s, &[], now + chrono::Duration::minutes(60)).is_ok());
        let e = decide_rule(
            &r,
            &RuleState::default(),
            &[("pipeline:p".into(), 1, 1)],
            now,
        )
        .unwrap_err();
        assert_eq!(
            e.describe(),
            "pipeline:p has 1 active run(s), max_concurrent = 1"
        );
    }

    #[test]
    fn tokens_are_stable_distinct_and_valid() {
        let a = idempotency_token("s1", "retrain", 1, 0);
        assert_eq!(a, idempotency_token("s1", "retrain", 1, 0));
        assert_ne!(a, idempotency_token("s1", "retrain", 2, 0));
        assert_ne!(a, idempotency_token("s1", "retrain", 1, 1));
        assert_ne!(
            a,
            idempotency_token("s2", "retrain", 1, 0),
            "a new store never reuses tokens"
        );
        assert!(a.len() >= 32 && a.len() <= 128);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn gate_verdicts() {
        let g = Gate {
            model_package_group: "g".into(),
            timed: Timed {
                expression: "every 1m".into(),
                schedule: Schedule::parse("every 1m").unwrap(),
                timezone: chrono_tz::UTC,
            },
            metric: GateMetric::Metadata("accuracy".into()),
            min: Some(0.8),
            max: None,
            notify: vec![],
        };
        assert!(matches!(
            decide_gate(&g, "accuracy", Ok(0.9)),
            GateVerdict::Approve { .. }
        ));
        match decide_gate(&g, "accuracy", Ok(0.7)) {
            GateVerdict::Reject { reason, .. } => {
                assert_eq!(reason, "mlopsd: accuracy 0.7 is below min 0.8")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide_gate(&g, "accuracy", Err("none".into())),
            GateVerdict::NoMetric { .. }
        ));
    }

    #[test]
    fn report_paths() {
        let r = r#"{"classification_metrics": {"accuracy": {"value": 0.93}, "list": [1, "2.5"]}}"#;
        assert_eq!(
            report_value(r, "classification_metrics.accuracy.value"),
            Ok(0.93)
        );
        assert_eq!(report_value(r, "classification_metrics.list.1"), Ok(2.5));
        assert!(report_value(r, "classification_metrics.f1.value")
            .unwrap_err()
            .contains("stopped at \"f1\""));
        assert!(report_value("nope", "a").unwrap_err().contains("not JSON"));
    }
}
