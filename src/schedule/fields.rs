//! One cron field: values, names, lists, ranges, steps, and the day fields' special forms
//! (`L`, `L-n`, `LW`, `nW`; `5L`, `3#2`).

use super::cron::Dialect;

pub(super) const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

#[derive(Clone, Copy)]
pub(super) struct FieldDef {
    pub(super) name: &'static str,
    pub(super) min: u32,
    pub(super) max: u32,
    pub(super) names: Option<(&'static [&'static str], u32)>,
}

/// The parsed items of one field: plain values, plus a flag for `*`/`?`.
pub(super) struct Parsed {
    pub(super) values: Vec<u32>,
    pub(super) star: bool,
}

pub(super) fn parse_num(tok: &str, f: &FieldDef) -> Result<u32, String> {
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
pub(super) fn parse_plain(
    text: &str,
    f: &FieldDef,
    allow_question: bool,
) -> Result<Parsed, String> {
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

#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct DomSpec {
    /// Bit d = day d (1..=31).
    pub(super) mask: u32,
    /// `L`, `L-n`: days before the last day of the month.
    pub(super) last_offsets: Vec<u8>,
    /// `LW`: the last weekday (Mon–Fri) of the month.
    pub(super) last_weekday: bool,
    /// `nW`: the weekday nearest to day n, within the month.
    pub(super) nearest_weekday: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct DowSpec {
    /// Bit w = weekday w, 0 = Sunday.
    pub(super) mask: u8,
    /// `5L`: the last such weekday of the month (bit per weekday).
    pub(super) last: u8,
    /// `3#2`: (weekday, n) = the nth such weekday of the month.
    pub(super) nth: Vec<(u8, u8)>,
}

pub(super) fn parse_dom(text: &str) -> Result<(DomSpec, bool), String> {
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

pub(super) fn parse_dow(text: &str, dialect: Dialect) -> Result<(DowSpec, bool), String> {
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

pub(super) fn mask64(values: &[u32]) -> u64 {
    values.iter().fold(0u64, |m, v| m | (1u64 << v))
}
