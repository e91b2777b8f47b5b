//! `mlopsd check NAME`: one evaluation of one check against AWS, printed; changes nothing.

use chrono::Utc;

use crate::aws::{Aws, MetricQuery};
use crate::config::{Config, MissingData};
use crate::duration::format_duration;

/// Prints the verdict and returns the exit code: 0 not breaching, 1 breaching, 2 could not evaluate.
pub async fn run(cfg: &Config, name: &str) -> u8 {
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
        return 2;
    };
    let aws = Aws::new(&cfg.aws).await;
    if let Some(alarm) = &c.alarm {
        return match aws.alarm_states(std::slice::from_ref(alarm)).await {
            Ok(states) => match states.get(alarm).map(String::as_str) {
                Some("ALARM") => {
                    println!("check {name}: alarm {alarm} is ALARM: BREACHING");
                    1
                }
                Some(st @ "OK") => {
                    println!("check {name}: alarm {alarm} is {st}: ok");
                    0
                }
                Some(st) => {
                    let (verdict, code) = match c.missing_data {
                        MissingData::Ignore => ("ignored (missing_data = \"ignore\")", 0),
                        MissingData::Ok => ("ok (missing_data = \"ok\")", 0),
                        MissingData::Breach => ("BREACHING (missing_data = \"breach\")", 1),
                    };
                    println!("check {name}: alarm {alarm} is {st}: {verdict}");
                    code
                }
                None => {
                    eprintln!("check {name}: could not evaluate: cloudwatch DescribeAlarms: no alarm named {alarm:?} in this account and region");
                    2
                }
            },
            Err(e) => {
                eprintln!("check {name}: could not evaluate: {e}");
                2
            }
        };
    }
    let q = MetricQuery::of(c);
    let what = format!(
        "{} of {}/{} over {}",
        c.statistic,
        c.namespace,
        c.metric,
        format_duration(c.period)
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
            u8::from(breach)
        }
        Some(Ok(None)) => {
            let (verdict, code) = match c.missing_data {
                MissingData::Ignore => ("ignored (missing_data = \"ignore\")", 0),
                MissingData::Ok => ("ok (missing_data = \"ok\")", 0),
                MissingData::Breach => ("BREACHING (missing_data = \"breach\")", 1),
            };
            println!(
                "check {name}: no data ({what}) vs threshold {}: {verdict}",
                c.threshold
            );
            code
        }
        Some(Err(e)) => {
            eprintln!("check {name}: could not evaluate: {e}");
            2
        }
        None => 2,
    }
}
