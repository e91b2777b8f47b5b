//! The fuzz pass over decisions: random valid configs with extreme values — durations at the
//! 1ms and 3650d bounds, `for` up to u32::MAX, huge and tiny thresholds, NaN / ±inf / huge
//! metric answers, cron years at the end of EventBridge's range, clocks near those years,
//! `[events]` with alarm checks and `on_event` templates fed good, bad and extreme bodies —
//! run through the real control loop on paused time for simulated hours or days. The daemon
//! must neither panic nor stop; figures are printed (RELIABILITY.md collects them).

use crate::support as common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::fake::{Fake, ValueFn};
use mlopsd::clock::Clock;
use tokio_util::sync::CancellationToken;

/// A small deterministic generator (xorshift64*), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

const DURATIONS: &[&str] = &[
    "1ms",
    "1s",
    "59s",
    "1h",
    "1d",
    "3650d",
    "3649d23h59m59s999ms",
];
const PERIODS: &[&str] = &["1s", "60s", "1h", "3650d"];
const FORS: &[&str] = &["1", "2", "3", "65535", "4294967295"];
const THRESHOLDS: &[&str] = &[
    "0",
    "0.5",
    "-1e308",
    "1e308",
    "1.7976931348623157e308",
    "5e-324",
    "-0.0",
];
const SCHEDULES: &[&str] = &[
    "every 1ms",
    "every 1s",
    "every 3650d",
    "rate(1 minute)",
    "rate(3650 days)",
    "*/5 * * * *",
    "0 0 29 2 *",
    "59 23 31 12 *",
    "cron(0 0 31 12 ? 2199)",
    "cron(59 23 L * ? 2198-2199)",
    "cron(0/1 * * * ? *)",
    "* * * * * *",
];
const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
];
const STARTS: &[&str] = &[
    "2026-03-08T06:59:00Z",
    "2026-11-01T05:30:00Z",
    "2199-12-31T23:00:00Z",
    "2198-12-31T22:00:00Z",
    "1970-01-01T00:00:00Z",
];
const VALUES: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    0.0,
    -0.0,
    1.0,
    0.7,
];

/// How finely a config's schedules and polls tick: it decides how long the case is driven
/// (a `every 1ms` schedule fires a thousand times a simulated second).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Grain {
    Coarse,
    Seconds,
    Millis,
}

fn grain_of(s: &str) -> Grain {
    match s {
        "every 1ms" => Grain::Millis,
        "every 1s" | "* * * * * *" | "1s" => Grain::Seconds,
        _ => Grain::Coarse,
    }
}

/// One random valid config, and how finely it ticks.
fn config(rng: &mut Rng, dir: &Path, port: u16) -> (String, Grain) {
    let poll = *rng.pick(&["1s", "15s", "1h", "3650d"]);
    let mut grain = grain_of(poll);
    // Half the configs also declare a pipeline from a definition file, reconciled at a random
    // interval (a start of it waits for its create or update).
    let declared = rng.next().is_multiple_of(2);
    let reconcile_interval = *rng.pick(&["1s", "10m", "3650d"]);
    if declared {
        grain = grain.max(grain_of(reconcile_interval));
    }
    let mut s = format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\npoll_interval = \"{}\"\nshutdown_grace = \"{}\"\n{}\n[aws]\nregion = \"us-east-1\"\n\n\
         [notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\nrepeat_interval = \"{}\"\n\n\
         [pipelines.p]\npipeline_name = \"p\"\nmax_concurrent = {}\n\n",
        dir.join("state").display(),
        poll,
        rng.pick(&["1ms", "30s", "3650d"]),
        if declared {
            format!("reconcile_interval = \"{reconcile_interval}\"\n")
        } else {
            String::new()
        },
        rng.pick(&["0s", "1ms", "4h", "3650d"]),
        rng.pick(&["1", "2", "4294967295"]),
    );
    if declared {
        std::fs::write(dir.join("d.json"), DEFINITION).unwrap();
        let sched = *rng.pick(SCHEDULES);
        grain = grain.max(grain_of(sched));
        s.push_str(&format!(
            "[pipelines.d]\npipeline_name = \"d\"\ndefinition = \"d.json\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"\nreconcile = \"{}\"\nmax_concurrent = {}\nparameters = {{ Threshold = \"{}\" }}\n\n\
             [rules.declared]\non_schedule = \"{sched}\"\nstart_pipeline = \"d\"\ncooldown = \"{}\"\nnotify = [\"ops\"]\n\n",
            rng.pick(&["apply", "report"]),
            rng.pick(&["1", "4294967295"]),
            rng.pick(&["0", "1e308", "-0.0", "5e-324"]),
            rng.pick(DURATIONS),
        ));
    }
    for i in 0..(1 + rng.next() % 3) {
        let sched = *rng.pick(SCHEDULES);
        grain = grain.max(grain_of(sched));
        let op = if rng.next().is_multiple_of(2) {
            "above"
        } else {
            "below"
        };
        s.push_str(&format!(
            "[checks.c{i}]\nschedule = \"{sched}\"\ntimezone = \"{}\"\nnamespace = \"ns\"\nmetric = \"m{i}\"\nperiod = \"{}\"\n{op} = {}\nfor = {}\nmissing_data = \"{}\"\n\n",
            rng.pick(ZONES),
            rng.pick(PERIODS),
            rng.pick(THRESHOLDS),
            rng.pick(FORS),
            rng.pick(&["ignore", "breach", "ok"]),
        ));
        s.push_str(&format!(
            "[rules.r{i}]\non_check = \"c{i}\"\nstart_pipeline = \"p\"\ncooldown = \"{}\"\nnotify = [\"ops\"]\ndry_run = {}\n\n",
            rng.pick(DURATIONS),
            rng.next().is_multiple_of(4)
        ));
    }
    let sched = *rng.pick(SCHEDULES);
    grain = grain.max(grain_of(sched));
    s.push_str(&format!(
        "[rules.timed]\non_schedule = \"{sched}\"\ntimezone = \"{}\"\nstart_pipeline = \"p\"\ncooldown = \"{}\"\ncatch_up = \"{}\"\nnotify = [\"ops\"]\n\n\
         [rules.chained]\non_success = \"pipeline:p\"\nnotify = [\"ops\"]\ncooldown = \"{}\"\n",
        rng.pick(ZONES),
        rng.pick(DURATIONS),
        rng.pick(&["none", "once"]),
        rng.pick(DURATIONS),
    ));
    // Half the configs read events: an alarm check (no schedule) and an `on_event` rule whose
    // parameter is a template over the event.
    if rng.next().is_multiple_of(2) {
        s.push_str(&format!(
            "\n[events]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/q\"\n\n\
             [checks.alarmed]\nalarm = \"a1\"\nfor = {}\nmissing_data = \"{}\"\n\n\
             [rules.on-alarm]\non_check = \"alarmed\"\nstart_pipeline = \"p\"\ncooldown = \"{}\"\n\n\
             [rules.on-data]\non_event = {{ source = \"aws.s3\", match = {{ \"detail.object.key\" = {{ prefix = \"in/\" }} }} }}\n\
             start_pipeline = \"p\"\nparameters = {{ Key = \"{{{{ event.detail.object.key }}}}\" }}\ncooldown = \"{}\"\ndry_run = {}\n",
            rng.pick(FORS),
            rng.pick(&["ignore", "breach", "ok"]),
            rng.pick(DURATIONS),
            rng.pick(DURATIONS),
            rng.next().is_multiple_of(4),
        ));
        if declared {
            s.push_str(&format!(
                "\n[rules.on-data-declared]\non_event = {{ source = \"aws.s3\" }}\nstart_pipeline = \"d\"\n\
                 parameters = {{ Key = \"{{{{ event.detail.object.key }}}}\", Threshold = \"{{{{ event.detail.object.size }}}}\" }}\ncooldown = \"{}\"\n",
                rng.pick(DURATIONS),
            ));
        }
    }
    (s, grain)
}

/// The declared pipeline's definition: a string and a float parameter, one step.
const DEFINITION: &str = r#"{"Version": "2020-12-01", "Metadata": {},
  "Parameters": [{"Name": "Key", "Type": "String", "DefaultValue": "in/"},
                 {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}],
  "Steps": [{"Name": "Train", "Type": "Training", "Arguments": {"Threshold": {"Get": "Parameters.Threshold"}}}]}"#;

/// Message bodies for the fake events queue: good events of each kind, bad bodies, extremes.
fn bodies(rng: &mut Rng, n: usize) -> Vec<String> {
    let long = "k".repeat(10_000);
    let kinds: Vec<String> = vec![
        r#"{"id":"ID","source":"aws.s3","detail-type":"Object Created","detail":{"object":{"key":"in/x.csv","size":1.5e308}}}"#.into(),
        r#"{"id":"ID","source":"aws.s3","detail-type":"Object Created","detail":{"object":{"key":"in/y.csv","size":"big"}}}"#.into(),
        r#"{"id":"ID","source":"aws.s3","detail-type":"Object Created","detail":{"object":{"key":"in/"}}}"#.into(),
        r#"{"id":"ID","source":"aws.s3","detail-type":"Object Created","detail":{"object":{}}}"#.into(),
        r#"{"id":"ID","source":"aws.s3","detail-type":"Object Created","detail":{"object":{"key":7}}}"#.into(),
        r#"{"id":"ID","source":"aws.cloudwatch","detail-type":"CloudWatch Alarm State Change","detail":{"alarmName":"a1"}}"#.into(),
        r#"{"id":"ID","source":"aws.sagemaker","detail-type":"SageMaker Model Building Pipeline Execution Status Change","detail":{"pipelineExecutionArn":"arn:fake:execution/1"}}"#.into(),
        r#"{"id":"ID","source":"aws.codebuild","detail-type":"CodeBuild Build State Change","detail":{"build-id":"x"}}"#.into(),
        r#"{"id":"ID","source":"aws.sagemaker","detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageGroupName":"g"}}"#.into(),
        format!(r#"{{"id":"ID","source":"aws.s3","detail-type":"Object Created","detail":{{"object":{{"key":"in/{long}"}}}}}}"#),
        "not json".into(),
        "".into(),
        "[]".into(),
        r#"{"id":"","source":"s","detail-type":"d","detail":{}}"#.into(),
        "{\"id\":\"\u{0}\",\"source\":\"\u{feff}\",\"detail-type\":\"d\",\"detail\":{}}".into(),
    ];
    (0..n)
        .map(|i| {
            rng.pick(&kinds)
                .replace("\"ID\"", &format!("\"ev-{}\"", i % 7))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn random_extreme_configs_never_panic_the_loop() {
    let seed: u64 = std::env::var("MLOPSD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026);
    let n: u64 = std::env::var("MLOPSD_FUZZ_DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut rng = Rng(seed);
    let mut taken = 0usize;
    let (mut simulated_h, mut evaluations, mut starts, mut published, mut applies) =
        (0f64, 0usize, 0usize, 0usize, 0usize);
    for case in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (text, grain) = config(&mut rng, dir.path(), port);
        let path = dir.path().join("mlops.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = mlopsd::config::load(&path) {
            panic!("case {case} (seed {seed}): the generator made an invalid config: {e}\n{text}");
        }
        let start: DateTime<Utc> = DateTime::parse_from_rfc3339(rng.pick::<&str>(STARTS))
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::driven(start);
        let pick = rng.next();
        // Each metric answers from VALUES (NaN, ±inf, extremes) or with no data, by instant.
        let values = ["m0", "m1", "m2"]
            .into_iter()
            .map(|name| {
                let f: Box<ValueFn> = Box::new(move |t: DateTime<Utc>| {
                    let k = ((t.timestamp_millis() as u64) ^ pick)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        >> 60;
                    (k != 15).then(|| VALUES[k as usize % VALUES.len()])
                });
                (name, f)
            })
            .collect();
        let fake = Fake::new(clock, values);
        {
            let mut seen = fake.seen.lock().unwrap();
            let states = ["ALARM", "OK", "INSUFFICIENT_DATA", "weird"];
            seen.alarms
                .insert("a1".into(), rng.pick(&states).to_string());
            for (i, body) in bodies(&mut rng, 12).into_iter().enumerate() {
                seen.queue.push_back(mlopsd::cloud::QueueMessage {
                    message_id: format!("m{i}"),
                    receipt: format!("r{i}"),
                    body,
                });
            }
        }
        let span = match grain {
            Grain::Millis => Duration::from_secs(5),
            Grain::Seconds => Duration::from_secs(1800),
            Grain::Coarse => Duration::from_secs(2 * 86_400),
        };
        let stop = CancellationToken::new();
        let (f, s) = (fake.clone(), stop.clone());
        let daemon = tokio::spawn(async move {
            mlopsd::daemon::run_with(path, clock, move |_| async move { f }, s).await
        });
        tokio::time::sleep(span).await;
        if daemon.is_finished() {
            let why = match daemon.await {
                Ok(r) => format!("{r:?}"),
                Err(e) => format!("panicked: {e}"),
            };
            panic!("case {case} (seed {seed}): the daemon stopped on its own: {why}\n{text}");
        }
        stop.cancel();
        match daemon.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("case {case} (seed {seed}): the daemon failed: {e}\n{text}"),
            Err(e) => panic!("case {case} (seed {seed}): the daemon panicked: {e}\n{text}"),
        }
        let seen = fake.seen.lock().unwrap();
        simulated_h += span.as_secs_f64() / 3600.0;
        evaluations += seen.metric_reads;
        starts += seen.starts.len();
        published += seen.published.len();
        taken += seen.deleted.len();
        applies += seen.pipeline_writes.len();
    }
    println!(
        "decision fuzz (seed {seed}): {n} configs, {simulated_h:.0} simulated hours, {evaluations} metric reads, {starts} starts, {published} notifications, {taken} queue messages taken, {applies} pipeline creates/updates, 0 panics"
    );
    assert!(
        evaluations > 0 && starts > 0 && published > 0 && taken > 0 && applies > 0,
        "the pass must exercise the loop"
    );
}
