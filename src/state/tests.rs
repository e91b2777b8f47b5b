//! Unit tests of the store across its tables.
use chrono::{DateTime, Utc};

use super::*;
use crate::config::{RunKind, Target};
use crate::engine::{CheckState, RuleState};

fn out<'a>(event: &'a str, interval_s: u64) -> Outgoing<'a> {
    Outgoing {
        notifier: "ops",
        topic_arn: "arn:aws:sns:us-east-1:1:t",
        event,
        rule: "r",
        check: None,
        correlation_id: "c-1",
        subject: "s",
        body: "b",
        repeat_interval: std::time::Duration::from_secs(interval_s),
    }
}

#[test]
fn repeat_interval_dedupes_per_notifier_rule_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    assert!(s.enqueue(&out("run_started", 3600), t0).unwrap());
    assert!(!s
        .enqueue(
            &out("run_started", 3600),
            t0 + chrono::Duration::minutes(59)
        )
        .unwrap());
    assert!(
        s.enqueue(&out("run_failed", 3600), t0 + chrono::Duration::minutes(59))
            .unwrap(),
        "another event"
    );
    assert!(s
        .enqueue(
            &out("run_started", 3600),
            t0 + chrono::Duration::minutes(60)
        )
        .unwrap());
    assert_eq!(s.outbox_unsent().unwrap(), 3);
    let rows = s
        .pending_outbox(t0 + chrono::Duration::hours(2), 10)
        .unwrap();
    s.mark_sent(rows[0].id, t0).unwrap();
    s.mark_send_failed(rows[1].id, "boom", t0 + chrono::Duration::days(1))
        .unwrap();
    assert_eq!(
        s.pending_outbox(t0 + chrono::Duration::hours(2), 10)
            .unwrap()
            .len(),
        1,
        "sent and backed-off rows are not pending"
    );
}

#[test]
fn recent_values_are_bounded_per_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let st = CheckState::default();
    let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    for i in 0..(KEEP_VALUES + 50) {
        let e = CheckEval {
            name: "c",
            state: &st,
            value: Some(i as f64),
            breached: false,
            at: t0 + chrono::Duration::seconds(i),
            report: None,
        };
        s.save_check_evals(&[e], &[], t0).unwrap();
    }
    let all = s.all_check_values(KEEP_VALUES as usize + 10).unwrap();
    let v = &all["c"];
    assert_eq!(v.len() as i64, KEEP_VALUES);
    assert_eq!(s.all_check_values(3).unwrap()["c"].len(), 3, "the newest 3");
    assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
    assert_eq!(
        v.last().unwrap().1,
        Some((KEEP_VALUES + 49) as f64),
        "the newest are kept"
    );
}

#[test]
fn event_ids_are_remembered_seven_days() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    assert_eq!(
        s.mark_events_seen(&["a", "b", "a"], t0).unwrap(),
        [true, true, false]
    );
    assert_eq!(
        s.mark_events_seen(&["a"], t0 + chrono::Duration::days(6))
            .unwrap(),
        [false],
        "redelivered within 7 days"
    );
    assert_eq!(
        s.mark_events_seen(&["b"], t0 + chrono::Duration::days(8))
            .unwrap(),
        [true],
        "forgotten after 7 days"
    );
}

#[test]
fn a_decision_is_stored_whole_and_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    let st = RuleState {
        firings: 1,
        last_fired: Some(now),
        cooldown_until: None,
    };
    let run = NewRun {
        kind: RunKind::Pipeline,
        target: "p".into(),
        token: "mlopsd-x".into(),
        request: "{}".into(),
        correlation_id: "c".into(),
        check: None,
    };
    let ids = s
        .record_firing("r", &st, &[run], now, None, &[])
        .unwrap()
        .unwrap()
        .0;
    let t = Target {
        kind: RunKind::Pipeline,
        name: "p".into(),
    };
    assert_eq!(s.active_runs(&t).unwrap(), 1);
    assert_eq!(s.rule_state("r").unwrap(), st);
    let notice = |event: &str| Queued {
        notifier: "ops".into(),
        topic_arn: "arn:t".into(),
        event: event.into(),
        rule: "r".into(),
        check: None,
        correlation_id: "c".into(),
        subject: "s".into(),
        body: "b".into(),
        repeat_interval: std::time::Duration::ZERO,
    };
    assert_eq!(
        s.mark_started(ids[0], "arn:1", now, &[notice("run_started")])
            .unwrap(),
        Some(vec![true])
    );
    assert_eq!(
        s.mark_started(ids[0], "arn:1", now, &[notice("run_started")])
            .unwrap(),
        None,
        "started once: no second notice"
    );
    assert!(s
        .mark_ended(ids[0], true, "Succeeded", now, &[notice("run_succeeded")])
        .unwrap()
        .is_some());
    assert!(
        s.mark_ended(ids[0], true, "Succeeded", now, &[notice("run_succeeded")])
            .unwrap()
            .is_none(),
        "the end is handled once"
    );
    assert_eq!(
        s.outbox_unsent().unwrap(),
        2,
        "each notice queued with its change, once"
    );
    assert_eq!(s.active_runs(&t).unwrap(), 0);
    assert_eq!(s.run(ids[0]).unwrap().unwrap().status, RunState::Succeeded);
}
