//! Schedules: parsing (5/6-field cron, EventBridge `cron()`, `rate()`, `every`) and the pure
//! next-fire function `Schedule::next_after(zone, instant)`, with SPEC's DST rule.
//!
//! Nothing here reads the clock or sleeps; the daemon's timer calls `next_after` with `now`.

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, LocalResult, NaiveDate, NaiveDateTime,
    TimeZone, Timelike, Utc,
};
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

/// Which cron dialect an expression was written in (only affects parsing and display).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `min hour dom month dow` (vixie cron).
    Five,
    /// `sec min hour dom month dow`.
    Six,
    /// `cron(min hour dom month dow year)` (Amazon EventBridge).
    EventBridge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    pub dialect: Dialect,
    seconds: u64,
    minutes: u64,
    hours: u32,
    months: u16,
    dom: DomSpec,
    dow: DowSpec,
    /// Bit i = year 1970 + i; `None` = any year.
    years: Option<Vec<bool>>,
    /// Vixie rule: both day fields restricted → a day matches if either does.
    dom_or_dow: bool,
    /// The hour field contains `*` or `/`: the cron runs on real time across DST.
    real_time: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct DomSpec {
    /// Bit d = day d (1..=31).
    mask: u32,
    /// `L`, `L-n`: days before the last day of the month.
    last_offsets: Vec<u8>,
    /// `LW`: the last weekday (Mon–Fri) of the month.
    last_weekday: bool,
    /// `nW`: the weekday nearest to day n, within the month.
    nearest_weekday: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct DowSpec {
    /// Bit w = weekday w, 0 = Sunday.
    mask: u8,
    /// `5L`: the last such weekday of the month (bit per weekday).
    last: u8,
    /// `3#2`: (weekday, n) = the nth such weekday of the month.
    nth: Vec<(u8, u8)>,
}

const YEAR_MIN: i32 = 1970;
const YEAR_MAX: i32 = 2199;
/// How far ahead a cron without a year field is searched before it is declared to never fire
/// again: the Gregorian calendar repeats every 400 years (146,097 days, a whole number of
/// weeks), so a day that can ever match matches within one cycle. A cron with a year field
/// stops at its last year (≤ 2199).
const SEARCH_YEARS: i32 = 400;
/// Larger than any UTC offset change a zone makes at one transition.
const DST_WINDOW: i64 = 3 * 3600;

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

    /// Whether the schedule depends on a time zone (cron does; `rate`/`every` are absolute).
    pub fn uses_zone(&self) -> bool {
        matches!(self, Schedule::Cron(_))
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

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

#[derive(Clone, Copy)]
struct FieldDef {
    name: &'static str,
    min: u32,
    max: u32,
    names: Option<(&'static [&'static str], u32)>,
}

/// The parsed items of one field: plain values, plus a flag for `*`/`?`.
struct Parsed {
    values: Vec<u32>,
    star: bool,
}

fn parse_num(tok: &str, f: &FieldDef) -> Result<u32, String> {
    if let Some((names, base)) = f.names {
        let up = tok.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == up) {
            return Ok(i as u32 + base);
        }
    }
    let v: u32 = tok.parse().map_err(|_| {
        format!(
            "{} field: \"{tok}\" is not a number{}",
            f.name,
            name_hint(f)
        )
    })?;
    if v < f.min || v > f.max {
        return Err(format!(
            "{} field: {v} is out of range {}-{}",
            f.name, f.min, f.max
        ));
    }
    Ok(v)
}

fn name_hint(f: &FieldDef) -> String {
    match f.names {
        Some((n, _)) if n.len() == 12 => " or a month name (JAN-DEC)".into(),
        Some(_) => " or a day name (SUN-SAT)".into(),
        None => String::new(),
    }
}

/// Parses the plain part of a field: `*`, `?`, lists, ranges and steps.
fn parse_plain(text: &str, f: &FieldDef, allow_question: bool) -> Result<Parsed, String> {
    let mut values = Vec::new();
    let mut star = false;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{} field: empty list item in \"{text}\"", f.name));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let st: u32 = s
                    .parse()
                    .map_err(|_| format!("{} field: step \"{s}\" is not a number", f.name))?;
                if st == 0 {
                    return Err(format!("{} field: step must be greater than zero", f.name));
                }
                (r, Some(st))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" || (range == "?" && allow_question) {
            if step.is_none() {
                star = true;
            }
            (f.min, f.max)
        } else if range == "?" {
            return Err(format!(
                "{} field: \"?\" is only allowed in the day-of-month and day-of-week fields",
                f.name
            ));
        } else if let Some((a, b)) = range.split_once('-') {
            let a = parse_num(a, f)?;
            let b = parse_num(b, f)?;
            if a > b {
                return Err(format!("{} field: range {range} runs backwards", f.name));
            }
            (a, b)
        } else {
            let a = parse_num(range, f)?;
            (a, if step.is_some() { f.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            values.push(v);
            v += step;
        }
    }
    Ok(Parsed { values, star })
}

impl Cron {
    fn parse_unix(expr: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        match fields.len() {
            5 => Cron::build(Dialect::Five, "0", &fields[0..5], None),
            6 => Cron::build(Dialect::Six, fields[0], &fields[1..6], None),
            n => Err(format!(
                "cron expression \"{expr}\" has {n} fields; expected 5 (min hour dom month dow), 6 (sec min hour dom month dow), cron(...) with 6 EventBridge fields, rate(...) or \"every 30s\""
            )),
        }
    }

    fn parse_eventbridge(inner: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = inner.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(format!(
                "cron({inner}) has {} fields; EventBridge cron takes 6: minutes hours day-of-month month day-of-week year",
                fields.len()
            ));
        }
        let (dom_q, dow_q) = (fields[2] == "?", fields[4] == "?");
        if dom_q == dow_q {
            return Err(format!(
                "cron({inner}): exactly one of day-of-month and day-of-week must be \"?\" (EventBridge rule)"
            ));
        }
        Cron::build(Dialect::EventBridge, "0", &fields[0..5], Some(fields[5]))
    }

    fn build(dialect: Dialect, sec: &str, f: &[&str], year: Option<&str>) -> Result<Cron, String> {
        let fsec = FieldDef {
            name: "seconds",
            min: 0,
            max: 59,
            names: None,
        };
        let fmin = FieldDef {
            name: "minutes",
            min: 0,
            max: 59,
            names: None,
        };
        let fhour = FieldDef {
            name: "hours",
            min: 0,
            max: 23,
            names: None,
        };
        let fmon = FieldDef {
            name: "month",
            min: 1,
            max: 12,
            names: Some((&MONTHS, 1)),
        };
        let seconds = mask64(&parse_plain(sec, &fsec, false)?.values);
        let minutes = mask64(&parse_plain(f[0], &fmin, false)?.values);
        let hours = mask64(&parse_plain(f[1], &fhour, false)?.values) as u32;
        let months = mask64(&parse_plain(f[3], &fmon, false)?.values) as u16;
        let real_time = f[1].contains('*') || f[1].contains('/');
        let (dom, dom_star) = parse_dom(f[2])?;
        let (dow, dow_star) = parse_dow(f[4], dialect)?;
        let years = match year {
            None => None,
            Some(y) => {
                let fy = FieldDef {
                    name: "year",
                    min: YEAR_MIN as u32,
                    max: YEAR_MAX as u32,
                    names: None,
                };
                let p = parse_plain(y, &fy, false)?;
                if p.star {
                    None
                } else {
                    let mut bits = vec![false; (YEAR_MAX - YEAR_MIN + 1) as usize];
                    for v in p.values {
                        bits[(v as i32 - YEAR_MIN) as usize] = true;
                    }
                    Some(bits)
                }
            }
        };
        // Vixie: a field that starts with `*` (or is `?`) is unrestricted.
        let dom_restricted = !(f[2].starts_with('*') || f[2] == "?");
        let dow_restricted = !(f[4].starts_with('*') || f[4] == "?");
        let _ = (dom_star, dow_star);
        let cron = Cron {
            dialect,
            seconds,
            minutes,
            hours,
            months,
            dom,
            dow,
            years,
            dom_or_dow: dialect != Dialect::EventBridge && dom_restricted && dow_restricted,
            real_time,
        };
        Ok(cron)
    }

    /// Whether the cron runs on real time across DST (its hour field has `*` or `/`).
    pub fn real_time(&self) -> bool {
        self.real_time
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let dm = self.dom_matches(d);
        let wm = self.dow_matches(d);
        if self.dom_or_dow {
            dm || wm
        } else {
            dm && wm
        }
    }

    fn dom_matches(&self, d: NaiveDate) -> bool {
        let day = d.day();
        if self.dom.mask & (1 << day) != 0 {
            return true;
        }
        let last = days_in_month(d.year(), d.month());
        if self
            .dom
            .last_offsets
            .iter()
            .any(|&o| last > o as u32 && day == last - o as u32)
        {
            return true;
        }
        if self.dom.last_weekday && day == last_weekday_of_month(d.year(), d.month()) {
            return true;
        }
        self.dom
            .nearest_weekday
            .iter()
            .any(|&n| nearest_weekday(d.year(), d.month(), n as u32) == Some(day))
    }

    fn dow_matches(&self, d: NaiveDate) -> bool {
        let wd = d.weekday().num_days_from_sunday() as u8;
        if self.dow.mask & (1 << wd) != 0 {
            return true;
        }
        let day = d.day();
        if self.dow.last & (1 << wd) != 0 && day + 7 > days_in_month(d.year(), d.month()) {
            return true;
        }
        self.dow
            .nth
            .iter()
            .any(|&(w, n)| w == wd && (day - 1) / 7 + 1 == n as u32)
    }

    fn year_ok(&self, y: i32) -> bool {
        match &self.years {
            None => true,
            Some(bits) => (YEAR_MIN..=YEAR_MAX).contains(&y) && bits[(y - YEAR_MIN) as usize],
        }
    }

    /// The last local date a search from `from` looks at: the cron's last year, else one
    /// whole calendar cycle ahead.
    fn search_limit(&self, from: NaiveDate) -> Option<NaiveDate> {
        let last_year = match &self.years {
            Some(bits) => YEAR_MIN + bits.iter().rposition(|b| *b)? as i32,
            None => from.year() + SEARCH_YEARS,
        };
        if last_year < from.year() {
            return None;
        }
        NaiveDate::from_ymd_opt(last_year, 12, 31)
    }

    /// Whether any day of month `m` of year `y` can match; false lets the search jump a whole
    /// month. Exact for a day-of-month field of plain days (`30` in February, `29` in a common
    /// year's); anything else is left to the day-by-day test.
    fn month_may_match(&self, y: i32, m: u32) -> bool {
        let plain_dom = self.dom.last_offsets.is_empty()
            && !self.dom.last_weekday
            && self.dom.nearest_weekday.is_empty();
        if self.dom_or_dow || !plain_dom {
            return true;
        }
        let days = (1u64 << (days_in_month(y, m) + 1)) - 2;
        u64::from(self.dom.mask) & days != 0
    }

    /// The first wall-clock time `>= from` that matches, searching no later than `limit`.
    fn next_wall(&self, from: NaiveDateTime, limit: NaiveDate) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let (mut h, mut m, mut s) = (from.hour(), from.minute(), from.second());
        loop {
            if date > limit {
                return None;
            }
            if !self.year_ok(date.year()) {
                let y =
                    (date.year() + 1..=limit.year().min(YEAR_MAX)).find(|y| self.year_ok(*y))?;
                date = NaiveDate::from_ymd_opt(y, 1, 1)?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            if self.months & (1 << date.month()) == 0
                || !self.month_may_match(date.year(), date.month())
            {
                date = match (date.month() + 1..=12).find(|mo| self.months & (1 << mo) != 0) {
                    Some(mo) => NaiveDate::from_ymd_opt(date.year(), mo, 1)?,
                    None => NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)?,
                };
                (h, m, s) = (0, 0, 0);
                continue;
            }
            if !self.day_matches(date) {
                date = date.succ_opt()?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            let Some(nh) = next_bit(self.hours as u64, h, 23) else {
                date = date.succ_opt()?;
                (h, m, s) = (0, 0, 0);
                continue;
            };
            if nh != h {
                (h, m, s) = (nh, 0, 0);
            }
            let Some(nm) = next_bit(self.minutes, m, 59) else {
                (h, m, s) = (h + 1, 0, 0);
                if h == 24 {
                    date = date.succ_opt()?;
                    h = 0;
                }
                continue;
            };
            if nm != m {
                (m, s) = (nm, 0);
            }
            let Some(ns) = next_bit(self.seconds, s, 59) else {
                (m, s) = (m + 1, 0);
                if m == 60 {
                    (h, m) = (h + 1, 0);
                    if h == 24 {
                        date = date.succ_opt()?;
                        h = 0;
                    }
                }
                continue;
            };
            return date.and_hms_opt(h, m, ns);
        }
    }

    /// The instants at which a matching wall time `w` fires, per SPEC's DST rule.
    fn instants(&self, tz: Tz, w: NaiveDateTime) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&w) {
            LocalResult::Single(x) => vec![x.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                if self.real_time {
                    vec![a.min(b), a.max(b)]
                } else {
                    vec![a.min(b)]
                }
            }
            LocalResult::None => {
                if self.real_time {
                    vec![]
                } else {
                    gap_end(tz, w).into_iter().collect()
                }
            }
        }
    }

    fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Within a year of chrono's ends, local times may not exist: no cron fires there.
        if !(-(CHRONO_SAFE_YEAR)..=CHRONO_SAFE_YEAR).contains(&after.year()) {
            return None;
        }
        // Fires are on whole seconds: the first candidate is the next whole second.
        let start = DateTime::<Utc>::from_timestamp(after.timestamp() + 1, 0)?;
        let limit = self.search_limit(start.with_timezone(&tz).date_naive())?;
        let offset_at = |u: DateTime<Utc>| u.with_timezone(&tz).naive_local() - u.naive_utc();

        // Fast path: no UTC offset change near `start` nor before the candidate.
        // (All instant arithmetic is checked: near the ends of chrono's range there is no
        // next fire rather than an overflow.)
        let o = offset_at(start);
        let window = ChronoDuration::seconds(DST_WINDOW);
        if start.checked_sub_signed(window).map(offset_at) == Some(o) {
            let w = start.naive_utc().checked_add_signed(o)?;
            let m = self.next_wall(w, limit)?;
            let u = DateTime::<Utc>::from_naive_utc_and_offset(m.checked_sub_signed(o)?, Utc);
            if u - start <= ChronoDuration::seconds(2 * DST_WINDOW) && offset_at(u) == o {
                return Some(u);
            }
        }

        // General path: walk matching wall times from a window before `start`, and keep the
        // earliest instant after `start`. Wall order and instant order differ by at most the
        // size of one offset change, so a window of DST_WINDOW on each side is enough.
        let mut w = start
            .naive_utc()
            .checked_add_signed(o)?
            .checked_sub_signed(window)?;
        let mut best: Option<DateTime<Utc>> = None;
        loop {
            let Some(m) = self.next_wall(w, limit) else {
                return best;
            };
            if let Some(b) = best {
                match b
                    .with_timezone(&tz)
                    .naive_local()
                    .checked_add_signed(window)
                {
                    Some(end) if m <= end => {}
                    _ => return best,
                }
            }
            for inst in self.instants(tz, m) {
                if inst >= start && best.is_none_or(|b| inst < b) {
                    best = Some(inst);
                }
            }
            let Some(next) = m.checked_add_signed(ChronoDuration::seconds(1)) else {
                return best;
            };
            w = next;
        }
    }
}

/// The first instant after the DST gap that swallows wall time `w`.
fn gap_end(tz: Tz, w: NaiveDateTime) -> Option<DateTime<Utc>> {
    let exists = |x: NaiveDateTime| !matches!(tz.from_local_datetime(&x), LocalResult::None);
    // Coarse: minutes forward until the wall time exists again (gaps are at most a few hours).
    let mut lo = w;
    let mut hi = None;
    for k in 1..=(24 * 60) {
        let x = w.checked_add_signed(ChronoDuration::minutes(k))?;
        if exists(x) {
            hi = Some(x);
            break;
        }
        lo = x;
    }
    let mut hi = hi?;
    // Fine: seconds, by bisection between a missing (lo) and an existing (hi) wall time.
    while (hi - lo).num_seconds() > 1 {
        let mid = lo + ChronoDuration::seconds((hi - lo).num_seconds() / 2);
        if exists(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    tz.from_local_datetime(&hi)
        .earliest()
        .map(|x| x.with_timezone(&Utc))
}

/// Cron fire times are computed for instants within these years (chrono reaches ±262,143).
const CHRONO_SAFE_YEAR: i32 = 262_000;

fn next_bit(mask: u64, from: u32, max: u32) -> Option<u32> {
    (from..=max).find(|b| mask & (1u64 << b) != 0)
}

fn mask64(values: &[u32]) -> u64 {
    values.iter().fold(0u64, |m, v| m | (1u64 << v))
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(28)
}

fn weekday(y: i32, m: u32, d: u32) -> Option<u32> {
    NaiveDate::from_ymd_opt(y, m, d).map(|x| x.weekday().num_days_from_sunday())
}

fn last_weekday_of_month(y: i32, m: u32) -> u32 {
    let mut d = days_in_month(y, m);
    while matches!(weekday(y, m, d), Some(0) | Some(6)) {
        d -= 1;
    }
    d
}

/// Quartz/EventBridge `nW`: the weekday nearest to day n, never leaving the month.
fn nearest_weekday(y: i32, m: u32, n: u32) -> Option<u32> {
    let last = days_in_month(y, m);
    if n > last {
        return None;
    }
    match weekday(y, m, n)? {
        6 => Some(if n == 1 { 3 } else { n - 1 }),
        0 => Some(if n == last { n - 2 } else { n + 1 }),
        _ => Some(n),
    }
}

fn parse_dom(text: &str) -> Result<(DomSpec, bool), String> {
    let f = FieldDef {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: None,
    };
    let mut spec = DomSpec::default();
    let mut plain = Vec::new();
    for item in text.split(',') {
        let up = item.to_ascii_uppercase();
        if up == "L" {
            spec.last_offsets.push(0);
        } else if up == "LW" || up == "WL" {
            spec.last_weekday = true;
        } else if let Some(n) = up.strip_prefix("L-") {
            let n: u8 = n
                .parse()
                .map_err(|_| format!("day-of-month field: bad \"{item}\" (expected L-N)"))?;
            if n > 30 {
                return Err(format!(
                    "day-of-month field: \"{item}\" is out of range (L-0 to L-30)"
                ));
            }
            spec.last_offsets.push(n);
        } else if let Some(n) = up.strip_suffix('W') {
            let v = parse_num(n, &f)?;
            spec.nearest_weekday.push(v as u8);
        } else {
            plain.push(item);
        }
    }
    let mut star = false;
    if !plain.is_empty() {
        let p = parse_plain(&plain.join(","), &f, true)?;
        star = p.star;
        spec.mask = mask64(&p.values) as u32;
    }
    Ok((spec, star))
}

fn parse_dow(text: &str, dialect: Dialect) -> Result<(DowSpec, bool), String> {
    // Vixie numbering 0-7 (0 and 7 = Sunday); EventBridge 1-7 = SUN-SAT.
    let f = match dialect {
        Dialect::EventBridge => FieldDef {
            name: "day-of-week",
            min: 1,
            max: 7,
            names: Some((&DAYS, 1)),
        },
        _ => FieldDef {
            name: "day-of-week",
            min: 0,
            max: 7,
            names: Some((&DAYS, 0)),
        },
    };
    let to_wd = |v: u32| -> u8 {
        match dialect {
            Dialect::EventBridge => (v - 1) as u8,
            _ => (v % 7) as u8,
        }
    };
    let mut spec = DowSpec::default();
    let mut plain = Vec::new();
    for item in text.split(',') {
        let up = item.to_ascii_uppercase();
        if let Some((w, n)) = up.split_once('#') {
            let wd = to_wd(parse_num(w, &f)?);
            let n: u8 = n.parse().map_err(|_| {
                format!("day-of-week field: bad \"{item}\" (expected DAY#N, N = 1-5)")
            })?;
            if !(1..=5).contains(&n) {
                return Err(format!(
                    "day-of-week field: \"{item}\": N in DAY#N must be 1-5"
                ));
            }
            spec.nth.push((wd, n));
        } else if up == "L" {
            return Err("day-of-week field: \"L\" needs a day, e.g. 6L (the last Friday in EventBridge numbering) or FRIL".into());
        } else if let Some(w) = up
            .strip_suffix('L')
            .filter(|w| !w.is_empty() && !w.contains('-') && !w.contains('/'))
        {
            let wd = to_wd(parse_num(w, &f)?);
            spec.last |= 1 << wd;
        } else {
            plain.push(item);
        }
    }
    let mut star = false;
    if !plain.is_empty() {
        let p = parse_plain(&plain.join(","), &f, true)?;
        star = p.star;
        for v in p.values {
            spec.mask |= 1 << to_wd(v);
        }
    }
    Ok((spec, star))
}

#[cfg(test)]
mod tests {
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
