//! Schedules: parsing (5/6-field cron, EventBridge `cron()`, `rate()`, `every`) and the pure
//! next-fire function `Schedule::next_after(zone, instant)`, with SPEC's DST rule. `cron` is
//! the cron dialects and their search; `fields` parses one cron field.
//!
//! Nothing here reads the clock or sleeps; the daemon's timer calls `next_after` with `now`.

mod cron;
mod fields;

pub use cron::Cron;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::duration::parse_duration;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Cron(Box<Cron>),
    /// No schedule of its own (an alarm check with `[events]`: woken by alarm events only).
    Never,
    /// `rate(N unit)` or `every D`: fires at every multiple of `period_ms` since the Unix epoch.
    Every {
        period_ms: i64,
    },
}

impl Schedule {
    /// Parses any supported expression.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let e = expr.trim();
        if e.is_empty() {
            return Err("empty schedule".into());
        }
        if let Some(inner) = strip_call(e, "cron") {
            return Ok(Schedule::Cron(Box::new(Cron::parse_eventbridge(inner?)?)));
        }
        if let Some(inner) = strip_call(e, "rate") {
            return parse_rate(inner?);
        }
        if let Some(rest) = e
            .strip_prefix("every ")
            .or_else(|| e.strip_prefix("every\t"))
        {
            let d =
                parse_duration(rest.trim()).map_err(|m| format!("bad `every` schedule: {m}"))?;
            let ms = d.as_millis() as i64;
            if ms <= 0 {
                return Err("`every` needs a duration greater than zero".into());
            }
            return Ok(Schedule::Every { period_ms: ms });
        }
        if e == "every" {
            return Err("`every` needs a duration, e.g. \"every 30s\"".into());
        }
        if let Some(m) = e.strip_prefix('@') {
            let five = match m {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(format!("unknown schedule macro \"@{m}\" (known: @yearly, @monthly, @weekly, @daily, @hourly)")),
            };
            return Ok(Schedule::Cron(Box::new(Cron::parse_unix(five)?)));
        }
        Ok(Schedule::Cron(Box::new(Cron::parse_unix(e)?)))
    }

    /// The first fire instant strictly after `after`, in zone `tz`; `None` if it never fires again.
    pub fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every { period_ms } => {
                let t = after.timestamp_millis();
                let next = (t.div_euclid(*period_ms) + 1).checked_mul(*period_ms)?;
                DateTime::<Utc>::from_timestamp_millis(next)
            }
            Schedule::Cron(c) => c.next_after(tz, after),
            Schedule::Never => None,
        }
    }

    /// Up to `count` fire instants strictly after `after`.
    pub fn upcoming(&self, tz: Tz, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count.min(1024));
        let mut t = after;
        while out.len() < count {
            match self.next_after(tz, t) {
                Some(n) => {
                    out.push(n);
                    t = n;
                }
                None => break,
            }
        }
        out
    }
}

fn strip_call<'a>(e: &'a str, name: &str) -> Option<Result<&'a str, String>> {
    let rest = e.strip_prefix(name)?.trim_start();
    let inner = rest.strip_prefix('(')?;
    Some(
        inner
            .strip_suffix(')')
            .ok_or_else(|| format!("bad {name}(): missing closing parenthesis")),
    )
}

fn parse_rate(inner: &str) -> Result<Schedule, String> {
    let parts: Vec<&str> = inner.split_whitespace().collect();
    if parts.len() != 2 {
        return Err(format!(
            "bad rate(\"{inner}\"): expected rate(VALUE UNIT), e.g. rate(5 minutes)"
        ));
    }
    let n: i64 = parts[0].parse().map_err(|_| {
        format!(
            "bad rate(): \"{}\" is not a positive whole number",
            parts[0]
        )
    })?;
    if n <= 0 {
        return Err("bad rate(): the value must be greater than zero".into());
    }
    let unit_ms = match parts[1] {
        "minute" | "minutes" => 60_000,
        "hour" | "hours" => 3_600_000,
        "day" | "days" => 86_400_000,
        u => {
            return Err(format!(
                "bad rate(): unknown unit \"{u}\" (minute(s), hour(s), day(s))"
            ))
        }
    };
    let singular = matches!(parts[1], "minute" | "hour" | "day");
    if n == 1 && !singular {
        return Err(format!(
            "bad rate(): a value of 1 takes the singular unit, e.g. rate(1 {})",
            parts[1].trim_end_matches('s')
        ));
    }
    if n != 1 && singular {
        return Err(format!(
            "bad rate(): a value above 1 takes the plural unit, e.g. rate({n} {}s)",
            parts[1]
        ));
    }
    let period_ms = n
        .checked_mul(unit_ms)
        .filter(|ms| *ms as u128 <= crate::duration::MAX_DURATION.as_millis());
    Ok(Schedule::Every {
        period_ms: period_ms
            .ok_or("bad rate(): longer than 3650 days, the longest period mlopsd accepts")?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, Duration as ChronoDuration, NaiveDate};

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_n(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr).unwrap();
        let tz: Tz = tz.parse().unwrap();
        s.upcoming(tz, utc(from), n)
            .iter()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .collect()
    }

    #[test]
    fn the_ends_of_time_are_none_or_an_instant_never_a_panic() {
        let exprs = [
            "* * * * * *",
            "every 1ms",
            "every 3650d",
            "rate(1 minute)",
            "cron(0 0 31 12 ? 2199)",
            "30 2 * * *",
            "*/15 1 * * *",
            "0 0 29 2 *",
            "59 23 L * ?",
        ];
        let edges = [
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MAX_UTC - ChronoDuration::seconds(1),
            DateTime::<Utc>::MAX_UTC - ChronoDuration::days(400),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MIN_UTC + ChronoDuration::hours(1),
            "9999-12-31T23:59:59Z".parse().unwrap(),
            "2199-12-31T23:59:59Z".parse().unwrap(),
        ];
        for e in exprs {
            let Ok(sched) = Schedule::parse(e) else {
                continue;
            };
            for tz in [
                chrono_tz::UTC,
                chrono_tz::America::New_York,
                chrono_tz::Australia::Lord_Howe,
            ] {
                for t in edges {
                    if let Some(n) = sched.next_after(tz, t) {
                        assert!(n > t, "{e} in {tz} after {t}: {n}");
                    }
                    let _ = sched.upcoming(tz, t, 3);
                }
            }
        }
        assert_eq!(
            Schedule::parse("cron(0 0 31 12 ? 2199)")
                .unwrap()
                .next_after(chrono_tz::UTC, "2199-12-31T00:00:00Z".parse().unwrap()),
            None
        );
    }

    #[test]
    fn five_field_basics() {
        assert_eq!(
            next_n("*/15 * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:45:00Z"
            ]
        );
        assert_eq!(
            next_n("0 2 * * *", "Asia/Tokyo", "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T17:00:00Z", "2026-01-02T17:00:00Z"]
        );
        // 2026-01-01 is a Thursday; 7 and 0 are both Sunday.
        assert_eq!(
            next_n("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 0 * * 0", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 0 * * mon-wed", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 0 1 jan,jul *", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"]
        );
        assert_eq!(
            next_n("@daily", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-01-02T00:00:00Z"]
        );
    }

    #[test]
    fn strictly_after_from() {
        assert_eq!(
            next_n("0 * * * *", "UTC", "2026-01-01T01:00:00Z", 1),
            ["2026-01-01T02:00:00Z"]
        );
        assert_eq!(
            next_n("0 * * * *", "UTC", "2026-01-01T00:59:59.900Z", 1),
            ["2026-01-01T01:00:00Z"]
        );
    }

    #[test]
    fn vixie_dom_or_dow() {
        // Both restricted: the 13th OR any Friday. 2026-02-06 is a Friday, 2026-02-13 too.
        assert_eq!(
            next_n("0 0 13 * 5", "UTC", "2026-02-01T00:00:00Z", 4),
            [
                "2026-02-06T00:00:00Z",
                "2026-02-13T00:00:00Z",
                "2026-02-20T00:00:00Z",
                "2026-02-27T00:00:00Z"
            ]
        );
        // A field starting with `*` is unrestricted: */2 in dom AND Friday.
        assert_eq!(
            next_n("0 0 */2 * 5", "UTC", "2026-02-01T00:00:00Z", 2),
            ["2026-02-13T00:00:00Z", "2026-02-27T00:00:00Z"]
        );
    }

    #[test]
    fn six_field_seconds_first() {
        assert_eq!(
            next_n("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z"
            ]
        );
        assert_eq!(
            next_n("30 0 12 * * *", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T12:00:30Z"]
        );
    }

    #[test]
    fn eventbridge() {
        assert_eq!(
            next_n("cron(0 * * * ? *)", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]
        );
        // Day of week 1-7 = SUN-SAT: 2 = Monday.
        assert_eq!(
            next_n("cron(0 9 ? * 2 *)", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-01-05T09:00:00Z"]
        );
        assert_eq!(
            next_n("cron(0 9 ? * MON-FRI *)", "UTC", "2026-01-02T10:00:00Z", 1),
            ["2026-01-05T09:00:00Z"]
        );
        // Last day of month; last weekday; nearest weekday; 2nd Tuesday (3#2); last Friday (6L).
        assert_eq!(
            next_n("cron(0 0 L * ? *)", "UTC", "2026-02-01T00:00:00Z", 2),
            ["2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"]
        );
        // May 2026: the 31st is a Sunday, so LW = Friday 29th.
        assert_eq!(
            next_n("cron(0 0 LW * ? *)", "UTC", "2026-05-01T00:00:00Z", 1),
            ["2026-05-29T00:00:00Z"]
        );
        // 2026-02-01 is a Sunday: 1W → Monday 2nd. 2026-08-01 is a Saturday: 1W → Monday 3rd (stays in month).
        assert_eq!(
            next_n("cron(0 0 1W * ? *)", "UTC", "2026-01-15T00:00:00Z", 1),
            ["2026-02-02T00:00:00Z"]
        );
        assert_eq!(
            next_n("cron(0 0 1W 8 ? *)", "UTC", "2026-01-15T00:00:00Z", 1),
            ["2026-08-03T00:00:00Z"]
        );
        // 15W with the 15th on a Saturday (2026-08-15) → Friday 14th.
        assert_eq!(
            next_n("cron(0 0 15W 8 ? *)", "UTC", "2026-01-15T00:00:00Z", 1),
            ["2026-08-14T00:00:00Z"]
        );
        assert_eq!(
            next_n("cron(0 0 ? * 3#2 *)", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2026-01-13T00:00:00Z", "2026-02-10T00:00:00Z"]
        );
        assert_eq!(
            next_n("cron(0 0 ? * 6L *)", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z"]
        );
        // Year field: a past year never fires; a future one does.
        assert!(next_n("cron(0 0 1 1 ? 2020)", "UTC", "2026-01-01T00:00:00Z", 3).is_empty());
        assert_eq!(
            next_n(
                "cron(0 0 1 1 ? 2028-2029)",
                "UTC",
                "2026-01-01T00:00:00Z",
                3
            ),
            ["2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn rate_and_every_are_epoch_aligned() {
        assert_eq!(
            next_n("every 30s", "Asia/Tokyo", "2026-01-01T00:00:10Z", 3),
            [
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:01:00Z",
                "2026-01-01T00:01:30Z"
            ]
        );
        assert_eq!(
            next_n("rate(1 day)", "America/New_York", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z"]
        );
        assert_eq!(
            next_n("rate(5 minutes)", "UTC", "2026-01-01T00:05:00Z", 1),
            ["2026-01-01T00:10:00Z"]
        );
        assert_eq!(
            next_n("every 7m", "UTC", "1970-01-01T00:00:00Z", 2),
            ["1970-01-01T00:07:00Z", "1970-01-01T00:14:00Z"]
        );
    }

    /// The search has no horizon short of the calendar (issue 20: it gave up ~12 years ahead).
    #[test]
    fn a_fire_decades_ahead_is_found() {
        let from = "2026-01-01T00:00:00Z";
        assert_eq!(
            next_n("cron(0 0 1 1 ? 2038)", "UTC", from, 2),
            ["2038-01-01T00:00:00Z"]
        );
        assert_eq!(
            next_n("cron(0 0 2 1 ? 2038)", "UTC", from, 2),
            ["2038-01-02T00:00:00Z"]
        );
        assert_eq!(
            next_n("cron(0 0 ? 2 5#5 2026-2060)", "UTC", from, 2),
            ["2052-02-29T00:00:00Z"]
        );
        assert_eq!(
            next_n("cron(30 12 31 12 ? 2199)", "Asia/Tokyo", from, 2),
            ["2199-12-31T03:30:00Z"]
        );
        // Feb 29 on a Sunday, against chrono's own calendar as the oracle.
        let want: Vec<String> = (2026..2200)
            .filter_map(|y| NaiveDate::from_ymd_opt(y, 2, 29))
            .filter(|d| d.weekday() == chrono::Weekday::Sun)
            .map(|d| format!("{d}T00:00:00Z"))
            .collect();
        assert_eq!(
            want[..3],
            [
                "2032-02-29T00:00:00Z",
                "2060-02-29T00:00:00Z",
                "2088-02-29T00:00:00Z"
            ]
        );
        assert_eq!(next_n("0 0 29 2 */7", "UTC", from, want.len()), want);
        // Beyond 2199 for a cron without a year field: 2100 is no leap year, so after 2096
        // the next Feb 29 is 2104.
        assert_eq!(
            next_n("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", 1),
            ["2104-02-29T00:00:00Z"]
        );
        // A day of February on one weekday (`*/7` = Sunday, and a field starting with `*` is
        // unrestricted, so both day fields must match), in a zone with DST: 09:00 CET.
        for day in [1, 13, 28, 29] {
            let want: Vec<String> = (2026..2200)
                .filter_map(|y| NaiveDate::from_ymd_opt(y, 2, day))
                .filter(|d| d.weekday() == chrono::Weekday::Sun)
                .take(6)
                .map(|d| format!("{d}T08:00:00Z"))
                .collect();
            let expr = format!("0 9 {day} 2 */7");
            assert_eq!(next_n(&expr, "Europe/Berlin", from, 6), want, "{expr}");
        }
    }

    #[test]
    fn never_firing_cron_is_empty() {
        assert!(next_n("0 0 30 2 *", "UTC", "2026-01-01T00:00:00Z", 1).is_empty());
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let e = |s: &str| Schedule::parse(s).unwrap_err();
        assert!(e("61 * * * *").contains("minutes field: 61 is out of range 0-59"));
        assert!(e("* * * *").contains("has 4 fields"));
        assert!(e("cron(0 0 * * * *)").contains("exactly one of day-of-month and day-of-week"));
        assert!(e("cron(0 0 ? * 0 *)").contains("day-of-week field: 0 is out of range 1-7"));
        assert!(e("rate(0 minutes)").contains("greater than zero"));
        assert!(e("rate(5 minute)").contains("plural"));
        assert!(e("rate(1 minutes)").contains("singular"));
        assert!(e("rate(5 weeks)").contains("unknown unit"));
        assert!(e("every 10").contains("missing unit"));
        assert!(e("*/0 * * * *").contains("step must be greater than zero"));
        assert!(e("5-1 * * * *").contains("runs backwards"));
        assert!(e("0 ? * * *").contains("\"?\" is only allowed"));
        assert!(e("@fortnightly").contains("unknown schedule macro"));
        assert!(e("cron(0 0 * * ? *").contains("missing closing parenthesis"));
    }
}
