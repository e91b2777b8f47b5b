//! `mlopsd check NAME`: one evaluation of one check against AWS, printed; changes nothing.

use chrono::Utc;

use crate::aws::Aws;
use crate::cloud::{AlarmState, MetricQuery, Metrics as _};
use crate::config::{Check, Config, MissingData, Source};
use crate::duration::format_duration;
use crate::exit;

/// Prints the verdict and returns the exit code: 0 not breaching, 1 breaching, 2 could not evaluate.
pub(crate) async fn run(cfg: &Config, name: &str) -> u8 {
    let Some(c) = cfg.checks.get(name) else {
        let known: Vec<&str> = cfg.checks.keys().map(String::as_str).collect();
        eprintln!(
            "no check named \"{name}\" (defined: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
        return exit::NO_ANSWER;
    };
    let aws = Aws::new(&cfg.aws).await;
    let m = match &c.source {
        Source::Alarm(alarm) => return alarm_check(&aws, name, c, alarm).await,
        Source::Metric(m) => m,
        Source::Monitor(_) | Source::Report(_) => return report_check(&aws, name, c).await,
    };
    let q = MetricQuery::of(m);
    let what = format!(
        "{} of {}/{} over {}",
        m.statistic,
        m.namespace,
        m.metric,
        format_duration(m.period)
    );
    match aws
        .latest_values(std::slice::from_ref(&q), Utc::now())
        .await
        .0
        .pop()
    {
        Some(Ok(Some(v))) => {
            let breach = c.threshold.breached_by(v);
            println!(
                "check {name}: {v} ({what}) vs threshold {}: {}",
                c.threshold,
                if breach { "BREACHING" } else { "ok" }
            );
            if c.for_count > 1 && breach {
                println!(
                    "(the daemon fires after {} consecutive breaching evaluations)",
                    c.for_count
                );
            }
            if breach {
                exit::FOUND
            } else {
                exit::OK
            }
        }
        Some(Ok(None)) => {
            let (verdict, code) = missing(c);
            println!(
                "check {name}: no data ({what}) vs threshold {}: {verdict}",
                c.threshold
            );
            code
        }
        Some(Err(e)) => {
            eprintln!("check {name}: could not evaluate: {e}");
            exit::NO_ANSWER
        }
        None => exit::NO_ANSWER,
    }
}

/// An alarm check: the alarm's state (`DescribeAlarms`) as the value.
async fn alarm_check(aws: &Aws, name: &str, c: &Check, alarm: &str) -> u8 {
    match aws.alarm_states(&[alarm.to_string()]).await {
        Ok(states) => match states.get(alarm) {
            Some(AlarmState::Alarm) => {
                println!("check {name}: alarm {alarm} is ALARM: BREACHING");
                exit::FOUND
            }
            Some(AlarmState::Ok) => {
                println!("check {name}: alarm {alarm} is OK: ok");
                exit::OK
            }
            Some(st) => {
                let (verdict, code) = missing(c);
                println!("check {name}: alarm {alarm} is {}: {verdict}", st.as_str());
                code
            }
            None => {
                eprintln!("check {name}: could not evaluate: cloudwatch DescribeAlarms: no alarm named {alarm:?} in this account and region");
                exit::NO_ANSWER
            }
        },
        Err(e) => {
            eprintln!("check {name}: could not evaluate: {e}");
            exit::NO_ANSWER
        }
    }
}

/// What no data means for this check (`missing_data`), and its exit code.
fn missing(c: &Check) -> (&'static str, u8) {
    match c.missing_data {
        MissingData::Ignore => ("ignored (missing_data = \"ignore\")", exit::OK),
        MissingData::Ok => ("ok (missing_data = \"ok\")", exit::OK),
        MissingData::Breach => ("BREACHING (missing_data = \"breach\")", exit::FOUND),
    }
}

/// A report check: the newest report (or the schedule's last execution) read now, as if it
/// were new, and judged.
async fn report_check(aws: &Aws, name: &str, c: &Check) -> u8 {
    use crate::daemon::reports::{look, Look};
    let what = format!(
        "{} of {}",
        crate::cli::plan::report_reads(c),
        c.source_text()
    );
    match look(aws, c, None).await {
        Look::New {
            value: Some(v),
            facts,
        } => {
            let breach = c.threshold.breached_by(v);
            println!(
                "check {name}: {v} ({what}) vs threshold {}: {}",
                c.threshold,
                if breach { "BREACHING" } else { "ok" }
            );
            if !facts.uri.is_empty() {
                println!("report: {}", facts.uri);
            }
            if facts.count > 0 {
                println!("{}", facts.listing());
            }
            if breach {
                exit::FOUND
            } else {
                exit::OK
            }
        }
        Look::New { value: None, facts } => {
            let (verdict, code) = missing(c);
            println!(
                "check {name}: {} vs threshold {}: {verdict}",
                facts.failed.as_deref().unwrap_or("no data"),
                c.threshold
            );
            code
        }
        Look::Unchanged => {
            println!("check {name}: no finished execution yet ({what}): nothing to judge");
            exit::NO_ANSWER
        }
        Look::Failed(why) => {
            eprintln!("check {name}: could not evaluate: {why}");
            exit::NO_ANSWER
        }
    }
}
