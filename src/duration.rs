//! Durations as operators write them: `30s`, `5m`, `1h30m`, `250ms`, `2d`.

use std::time::Duration;

/// The longest duration any key (or `every`, or `rate()`) accepts: ten years. Every instant
/// the daemon computes from a duration stays far inside chrono's range.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses a duration: one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`, `d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(
            "empty duration; expected a number and a unit such as \"30s\" or \"1h30m\"".into(),
        );
    }
    if s.contains(char::is_whitespace) {
        return Err(format!("bad duration \"{text}\": write it without spaces, e.g. \"5m\" or \"1h30m\" (units: ms, s, m, h, d)"));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "bad duration \"{text}\": expected a number at \"{}\" (units: ms, s, m, h, d; e.g. \"1h30m\")",
                &s[start..]
            ));
        }
        let n: u128 = s[start..i]
            .parse()
            .map_err(|_| format!("bad duration \"{text}\": number too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u128 = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "bad duration \"{text}\": missing unit after {n} (units: ms, s, m, h, d)"
                ))
            }
            u => {
                return Err(format!(
                    "bad duration \"{text}\": unknown unit \"{u}\" (units: ms, s, m, h, d)"
                ))
            }
        };
        total = total
            .checked_add(
                n.checked_mul(unit_ms)
                    .ok_or_else(|| format!("bad duration \"{text}\": too large"))?,
            )
            .ok_or_else(|| format!("bad duration \"{text}\": too large"))?;
    }
    if total > MAX_DURATION.as_millis() {
        return Err(format!("bad duration \"{text}\": too large (longer than 3650d, the longest duration mlopsd accepts)"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Formats a duration the way it is written in the config (`1h30m`, `250ms`).
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{}", ms / size, unit));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(
            parse_duration("1m1s1ms").unwrap(),
            Duration::from_millis(61_001)
        );
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5 minutes")
            .unwrap_err()
            .contains("without spaces"));
        assert!(parse_duration("5w")
            .unwrap_err()
            .contains("unknown unit \"w\""));
        assert!(parse_duration("h")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("99999999999999999999999d")
            .unwrap_err()
            .contains("too large"));
        assert!(
            parse_duration("100000000d")
                .unwrap_err()
                .contains("too large (longer than 3650d"),
            "beyond the bound"
        );
        assert!(parse_duration("3650d1ms")
            .unwrap_err()
            .contains("too large (longer than 3650d"));
        assert_eq!(
            parse_duration("3650d").unwrap(),
            MAX_DURATION,
            "the bound itself is accepted"
        );
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "250ms", "2d", "45s", "1d1h1m1s1ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
