//! Time as an input. The daemon asks a `Clock` for "now" instead of reading `Utc::now()`, so a
//! test can run the real control loop on tokio's paused clock and drive a day of schedules in
//! milliseconds. Instant arithmetic is checked (`after`), and instants print one way (`ts`).

use chrono::{DateTime, SecondsFormat, Utc};

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock (`Utc::now()`): what `mlopsd run` uses.
    System,
    /// Wall time that follows tokio's clock from `base` on: paused and advanced in tests.
    Driven {
        base: DateTime<Utc>,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `base` now and then moves with `tokio::time` (which a test pauses).
    pub fn driven(base: DateTime<Utc>) -> Clock {
        Clock::Driven {
            base,
            at: tokio::time::Instant::now(),
        }
    }

    /// Now, to the millisecond: the precision the store keeps, so an instant the loop decides
    /// on reads back from the store equal.
    pub fn now(&self) -> DateTime<Utc> {
        let t = match self {
            Clock::System => Utc::now(),
            Clock::Driven { base, at } => {
                let elapsed =
                    chrono::Duration::from_std(at.elapsed()).unwrap_or(chrono::Duration::MAX);
                base.checked_add_signed(elapsed)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        };
        DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
    }
}

/// `t + d`, or `None` past the end of time (chrono's range) instead of a panic.
pub fn after(t: DateTime<Utc>, d: std::time::Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(chrono::Duration::from_std(d).ok()?)
}

/// `t - d`, or `None` before the start of chrono's range.
pub fn before(t: DateTime<Utc>, d: std::time::Duration) -> Option<DateTime<Utc>> {
    t.checked_sub_signed(chrono::Duration::from_std(d).ok()?)
}

/// An instant as RFC 3339 UTC: whole seconds as `…T00:00:01Z`, others with their fraction
/// (`…T00:00:01.500Z`). The one format of every instant mlopsd prints, logs or serves.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The same instant in another zone, formatted the same way.
pub fn ts_in(t: &DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_have_no_fraction_and_others_keep_theirs() {
        let t = DateTime::<Utc>::from_timestamp_millis(1_500).unwrap();
        assert_eq!(ts(&t), "1970-01-01T00:00:01.500Z");
        let t = DateTime::<Utc>::from_timestamp(1, 0).unwrap();
        assert_eq!(ts(&t), "1970-01-01T00:00:01Z");
        let t = DateTime::<Utc>::from_timestamp(1, 250_000).unwrap();
        assert_eq!(ts(&t), "1970-01-01T00:00:01.000250Z");
    }

    #[test]
    fn arithmetic_at_the_end_of_time_is_none_not_a_panic() {
        let max = DateTime::<Utc>::MAX_UTC;
        assert_eq!(after(max, std::time::Duration::from_secs(1)), None);
        assert_eq!(
            before(DateTime::<Utc>::MIN_UTC, std::time::Duration::from_secs(1)),
            None
        );
        let t = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        assert_eq!(
            after(t, std::time::Duration::from_secs(2)),
            DateTime::<Utc>::from_timestamp(2, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_driven_clock_moves_with_paused_tokio_time() {
        let base = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let c = Clock::driven(base);
        assert_eq!(c.now(), base);
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(
            c.now(),
            DateTime::<Utc>::from_timestamp(1_800_003_600, 0).unwrap()
        );
        tokio::time::advance(std::time::Duration::from_micros(1_500)).await;
        assert_eq!(
            ts(&c.now()),
            "2027-01-15T09:00:00.001Z",
            "to the millisecond"
        );
    }
}
