//! Schedules across the 2026 DST transitions, against expectations derived by hand from
//! SPEC's rule: the hour field decides. `*` or `/` in it → real time (gap skipped, both passes
//! of a repeated hour fire); fixed hours → a repeated wall time fires once (first pass), a wall
//! time inside a gap fires once at the first instant after the gap; never twice at one instant.
//!
//! 2026 transitions used (UTC instants):
//! - America/New_York: 2026-03-08 07:00Z (02:00 EST → 03:00 EDT); 2026-11-01 06:00Z (02:00 EDT → 01:00 EST).
//! - Europe/Berlin: 2026-03-29 01:00Z (02:00 CET → 03:00 CEST); 2026-10-25 01:00Z (03:00 CEST → 02:00 CET).
//! - Australia/Lord_Howe (30-minute shift): 2026-04-04 15:00Z (02:00 +11 → 01:30 +10:30);
//!   2026-10-03 15:30Z (02:00 +10:30 → 02:30 +11).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mlopsd::schedule::Schedule;

fn next(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
    let s = Schedule::parse(expr).expect("schedule parses");
    let tz: Tz = tz.parse().expect("zone");
    let from = DateTime::parse_from_rfc3339(from)
        .expect("from")
        .with_timezone(&Utc);
    s.upcoming(tz, from, n)
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect()
}

// ---- America/New_York, spring forward (gap 02:00–03:00 local on 2026-03-08) ----

#[test]
fn ny_spring_fixed_hour_in_gap_fires_at_gap_end() {
    // 02:30 does not exist on Mar 8: fires at 03:00 EDT = 07:00Z; Mar 9 02:30 EDT = 06:30Z.
    assert_eq!(
        next("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
    );
}

#[test]
fn ny_spring_gap_fire_landing_on_ordinary_fire_is_one_fire() {
    // 02:00 (gap) → 07:00Z, and 03:00 EDT is also 07:00Z: one fire.
    assert_eq!(
        next("0 2,3 * * *", "America/New_York", "2026-03-08T00:00:00Z", 3),
        [
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:00:00Z",
            "2026-03-09T07:00:00Z"
        ]
    );
}

#[test]
fn ny_spring_real_time_skips_the_gap() {
    // Even hours: 00:00 EST (05:00Z), 02:00 skipped, 04:00 EDT (08:00Z), 06:00 EDT (10:00Z).
    assert_eq!(
        next("0 */2 * * *", "America/New_York", "2026-03-08T04:00:00Z", 3),
        [
            "2026-03-08T05:00:00Z",
            "2026-03-08T08:00:00Z",
            "2026-03-08T10:00:00Z"
        ]
    );
    assert_eq!(
        next("30 * * * *", "America/New_York", "2026-03-08T05:00:00Z", 4),
        [
            "2026-03-08T05:30:00Z",
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-08T08:30:00Z"
        ]
    );
}

// ---- America/New_York, fall back (01:00–02:00 local twice on 2026-11-01) ----

#[test]
fn ny_fall_fixed_hour_fires_first_pass_only() {
    assert_eq!(
        next("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
    // Starting inside the second pass: 01:30 EST (06:30Z) is a repeat, not fired.
    assert_eq!(
        next("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z", 1),
        ["2026-11-02T06:30:00Z"]
    );
}

#[test]
fn ny_fall_real_time_fires_both_passes() {
    assert_eq!(
        next("30 * * * *", "America/New_York", "2026-11-01T04:00:00Z", 4),
        [
            "2026-11-01T04:30:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:30:00Z"
        ]
    );
}

#[test]
fn ny_fall_decided_by_hour_field_not_minutes() {
    // `*/20` in minutes but a fixed hour: first pass only (05:00, 05:20, 05:40Z), then next day 01:00 EST.
    assert_eq!(
        next(
            "*/20 1 * * *",
            "America/New_York",
            "2026-11-01T04:30:00Z",
            4
        ),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:20:00Z",
            "2026-11-01T05:40:00Z",
            "2026-11-02T06:00:00Z"
        ]
    );
}

// ---- Europe/Berlin ----

#[test]
fn berlin_spring_fixed_and_six_field_and_eventbridge() {
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    assert_eq!(
        next("0 15 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:15:00Z"]
    );
    assert_eq!(
        next(
            "cron(0 2 * * ? *)",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            2
        ),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
    );
    assert_eq!(
        next("0 2,3 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:00:00Z",
            "2026-03-30T01:00:00Z"
        ]
    );
}

#[test]
fn berlin_spring_real_time_skips_gap() {
    // 01:30 CET (00:30Z), 02:30 skipped, 03:30 CEST (01:30Z).
    assert_eq!(
        next("30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 2),
        ["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"]
    );
}

#[test]
fn berlin_fall() {
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    assert_eq!(
        next("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 4),
        [
            "2026-10-24T23:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:30:00Z"
        ]
    );
    // EventBridge with a range of fixed hours is fixed: 02:15 first pass only.
    assert_eq!(
        next(
            "cron(15 2-3 ? * SUN *)",
            "Europe/Berlin",
            "2026-10-24T23:00:00Z",
            3
        ),
        [
            "2026-10-25T00:15:00Z",
            "2026-10-25T02:15:00Z",
            "2026-11-01T01:15:00Z"
        ]
    );
}

// ---- Australia/Lord_Howe: 30-minute shifts ----

#[test]
fn lord_howe_april_repeat_of_half_hour() {
    // 01:45 repeats: fixed fires at the first pass (+11: 14:45Z); next day 01:45 +10:30 = 15:15Z.
    assert_eq!(
        next(
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T00:00:00Z",
            2
        ),
        ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
    // Real time: both passes of 01:30 and 01:45.
    assert_eq!(
        next(
            "*/15 * * * *",
            "Australia/Lord_Howe",
            "2026-04-04T14:20:00Z",
            5
        ),
        [
            "2026-04-04T14:30:00Z",
            "2026-04-04T14:45:00Z",
            "2026-04-04T15:00:00Z",
            "2026-04-04T15:15:00Z",
            "2026-04-04T15:30:00Z"
        ]
    );
}

#[test]
fn lord_howe_october_half_hour_gap() {
    // 02:15 is in the gap 02:00–02:30: fires at 02:30 +11 = 15:30Z; next day 02:15 +11 = 15:15Z.
    assert_eq!(
        next(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T00:00:00Z",
            2
        ),
        ["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]
    );
    // Real time: 02:00 and 02:15 skipped.
    assert_eq!(
        next(
            "*/15 * * * *",
            "Australia/Lord_Howe",
            "2026-10-03T15:00:00Z",
            3
        ),
        [
            "2026-10-03T15:15:00Z",
            "2026-10-03T15:30:00Z",
            "2026-10-03T15:45:00Z"
        ]
    );
    // 02:00 (gap) and 02:30 land on the same instant: one fire.
    assert_eq!(
        next(
            "0,30 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T00:00:00Z",
            3
        ),
        [
            "2026-10-03T15:30:00Z",
            "2026-10-04T15:00:00Z",
            "2026-10-04T15:30:00Z"
        ]
    );
}

#[test]
fn rate_and_every_ignore_dst() {
    // Absolute time: every 30 minutes on the epoch grid, straight through the NY gap.
    assert_eq!(
        next(
            "rate(30 minutes)",
            "America/New_York",
            "2026-03-08T06:15:00Z",
            3
        ),
        [
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:30:00Z"
        ]
    );
    assert_eq!(
        next("every 1h", "Australia/Lord_Howe", "2026-10-03T15:10:00Z", 1),
        ["2026-10-03T16:00:00Z"]
    );
}

#[test]
fn never_twice_at_one_instant_over_a_year() {
    for (expr, tz) in [
        ("0 2,3 * * *", "America/New_York"),
        ("*/30 * * * *", "Australia/Lord_Howe"),
        ("0,30 1-3 * * *", "Europe/Berlin"),
        ("0 */1 * * *", "America/New_York"),
    ] {
        let times = next(expr, tz, "2026-01-01T00:00:00Z", 20_000);
        for w in times.windows(2) {
            assert!(w[0] < w[1], "{expr} in {tz}: {} then {}", w[0], w[1]);
        }
    }
}
