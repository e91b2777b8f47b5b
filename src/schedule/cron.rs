//! Cron expressions in three dialects, matched day by day (a month that cannot match is
//! skipped whole) and placed in a time zone per SPEC's DST rule.

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, LocalResult, NaiveDate, NaiveDateTime,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use super::fields::{
    mask64, parse_dom, parse_dow, parse_plain, DomSpec, DowSpec, FieldDef, MONTHS,
};

/// Which cron dialect an expression was written in (only affects parsing and display).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `min hour dom month dow` (vixie cron).
    Five,
    /// `sec min hour dom month dow`.
    Six,
    /// `cron(min hour dom month dow year)` (Amazon EventBridge).
    EventBridge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    pub(crate) dialect: Dialect,
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

const YEAR_MIN: i32 = 1970;
const YEAR_MAX: i32 = 2199;
/// How far ahead a cron without a year field is searched before it is declared to never fire
/// again: the Gregorian calendar repeats every 400 years (146,097 days, a whole number of
/// weeks), so a day that can ever match matches within one cycle. A cron with a year field
/// stops at its last year (≤ 2199).
const SEARCH_YEARS: i32 = 400;
/// Larger than any UTC offset change a zone makes at one transition.
const DST_WINDOW: i64 = 3 * 3600;

impl Cron {
    pub(super) fn parse_unix(expr: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        match fields.len() {
            5 => Cron::build(Dialect::Five, "0", &fields[0..5], None),
            6 => Cron::build(Dialect::Six, fields[0], &fields[1..6], None),
            n => Err(format!(
                "cron expression \"{expr}\" has {n} fields; expected 5 (min hour dom month dow), 6 (sec min hour dom month dow), cron(...) with 6 EventBridge fields, rate(...) or \"every 30s\""
            )),
        }
    }

    pub(super) fn parse_eventbridge(inner: &str) -> Result<Cron, String> {
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

    pub(super) fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
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
