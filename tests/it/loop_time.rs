//! The real control loop on tokio's paused clock: hours and days of schedules, `for`,
//! cooldowns and DST transitions run in milliseconds. The daemon is `mlopsd::daemon::run_with`
//! with a driven clock and an in-memory `Cloud` that records every call at the simulated
//! instant it was made; the state store is the real SQLite store in a temp dir.

use crate::support as common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::fake::{secs, Fake};
use mlopsd::clock::{ts, Clock};
use mlopsd::cloud::{AwsError, ErrorKind};
use tokio_util::sync::CancellationToken;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn head(dir: &Path, port: u16) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\npoll_interval = \"15s\"\n\n[aws]\nregion = \"us-east-1\"\n\n\
         [notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\nrepeat_interval = \"0s\"\n\n\
         [pipelines.train]\npipeline_name = \"training\"\nparameters = {{ Data = \"s3://b/in/\" }}\nmax_concurrent = 1\n\n",
        dir.join("state").display()
    )
}

/// Starts the daemon at `base` (simulated), lets `span` of simulated time pass, stops it.
async fn drive(
    dir: &Path,
    config: &str,
    fake: &Fake,
    span: Duration,
) -> Result<(), mlopsd::daemon::RunError> {
    let path = dir.join("mlops.toml");
    std::fs::write(&path, config).unwrap();
    let stop = CancellationToken::new();
    let (f, c, s) = (fake.clone(), fake.clock, stop.clone());
    let daemon = tokio::spawn(async move {
        mlopsd::daemon::run_with(path, c, move |_| async move { f }, s).await
    });
    tokio::time::sleep(span).await;
    stop.cancel();
    daemon.await.expect("the daemon task panicked")
}

#[tokio::test(start_paused = true)]
async fn six_hours_of_for_and_cooldown_in_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::driven(at("2026-06-01T00:00:00Z"));
    let fake = Fake::new(clock, vec![("drift", Box::new(|_| Some(0.9)))]);
    let cfg = format!(
        "{}[checks.drift]\nschedule = \"every 5m\"\nnamespace = \"ns\"\nmetric = \"drift\"\nperiod = \"5m\"\nabove = 0.5\nfor = 3\n\n\
         [rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n",
        head(dir.path(), free_port())
    );
    // A minute past the six hours: the 06:00 read must not race the stop at the same instant.
    drive(dir.path(), &cfg, &fake, Duration::from_secs(6 * 3600 + 60))
        .await
        .unwrap();
    // `for = 3` at the third evaluation (00:15), then each time the 1 h cooldown is over.
    let want: Vec<String> = (0..6).map(|h| format!("2026-06-01T0{h}:15:00Z")).collect();
    assert_eq!(fake.starts(), want);
    assert_eq!(
        fake.seen.lock().unwrap().metric_reads,
        73,
        "one read every 5 minutes for 6 hours, and the preflight's at the start"
    );
    assert_eq!(
        fake.published("check_breached"),
        ["2026-06-01T00:15:00Z"],
        "one incident"
    );
    assert_eq!(fake.published("run_started").len(), 6);
    assert_eq!(
        fake.published("run_succeeded").len(),
        6,
        "every run followed to its end"
    );
    let seen = fake.seen.lock().unwrap();
    assert!(
        seen.starts
            .iter()
            .all(|s| s.1 == "training" && s.2["Data"] == "s3://b/in/"),
        "the stored request was sent"
    );
    let tokens: std::collections::HashSet<_> = seen.starts.iter().map(|s| s.3.clone()).collect();
    assert_eq!(tokens.len(), 6, "one token per firing");
}

#[tokio::test(start_paused = true)]
async fn dst_days_fire_as_spec_says_through_the_real_loop() {
    let dir = tempfile::tempdir().unwrap();
    // New York springs forward on 2026-03-08 (02:00 EST → 03:00 EDT).
    let clock = Clock::driven(at("2026-03-07T12:00:00Z"));
    let fake = Fake::new(clock, vec![]);
    let cfg = format!(
        "{}[rules.nightly]\non_schedule = \"30 2 * * *\"\ntimezone = \"America/New_York\"\nstart_pipeline = \"train\"\nnotify = [\"ops\"]\n",
        head(dir.path(), free_port())
    );
    drive(dir.path(), &cfg, &fake, Duration::from_secs(3 * 86_400))
        .await
        .unwrap();
    // 02:30 does not exist on the 8th: it fires once, at the first instant after the gap.
    assert_eq!(
        fake.starts(),
        [
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z"
        ]
    );

    // Falling back on 2026-11-01 (01:00–02:00 happens twice): a fixed hour fires on its first
    // pass only; an hour field with `/` runs on real time and fires on both passes.
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::driven(at("2026-11-01T03:00:00Z"));
    let fake = Fake::new(clock, vec![]);
    let cfg = format!(
        "{}[pipelines.other]\npipeline_name = \"other\"\n\n\
         [rules.fixed]\non_schedule = \"30 1 * * *\"\ntimezone = \"America/New_York\"\nstart_pipeline = \"train\"\n\n\
         [rules.real]\non_schedule = \"15 */1 * * *\"\ntimezone = \"America/New_York\"\nstart_pipeline = \"other\"\n",
        head(dir.path(), free_port())
    );
    drive(dir.path(), &cfg, &fake, Duration::from_secs(5 * 3600))
        .await
        .unwrap();
    let seen = fake.seen.lock().unwrap();
    let of = |p: &str| {
        seen.starts
            .iter()
            .filter(|s| s.1 == p)
            .map(|s| ts(&secs(s.0)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("training"),
        ["2026-11-01T05:30:00Z"],
        "01:30 EDT, not again at 01:30 EST"
    );
    assert_eq!(
        of("other"),
        [
            "2026-11-01T03:15:00Z",
            "2026-11-01T04:15:00Z",
            "2026-11-01T05:15:00Z",
            "2026-11-01T06:15:00Z",
            "2026-11-01T07:15:00Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_refused_for_good_fails_chains_and_notifies_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::driven(at("2026-05-31T23:00:00Z"));
    let mut fake = Fake::new(clock, vec![]);
    fake.start_error = Some(AwsError::new(
        "sagemaker",
        "StartPipelineExecution",
        ErrorKind::Refused,
        "ValidationException",
        "Pipeline does not exist",
    ));
    let cfg = format!(
        "{}[rules.kick]\non_schedule = \"rate(1 day)\"\nstart_pipeline = \"train\"\nnotify = [\"ops\"]\n\n\
         [rules.page]\non_failure = \"pipeline:train\"\nnotify = [\"ops\"]\n",
        head(dir.path(), free_port())
    );
    // rate(1 day) fires at 00:00 UTC: once in these 2 hours of polls every 15 s.
    drive(dir.path(), &cfg, &fake, Duration::from_secs(2 * 3600))
        .await
        .unwrap();
    assert_eq!(fake.starts(), Vec::<String>::new());
    let failed = fake.published("run_failed");
    // `kick` and `page` (the chain) each tell of the one failed start: two messages, once.
    assert_eq!(failed.len(), 2, "{failed:?}");
    let c = rusqlite::Connection::open(dir.path().join("state/mlopsd.db")).unwrap();
    let rows: Vec<(String, String)> = c
        .prepare("SELECT status, detail FROM runs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [(
            "start_failed".to_string(),
            "ValidationException: Pipeline does not exist".to_string()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_stored_request_is_never_sent_without_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let base = at("2026-06-01T00:00:00Z");
    let clock = Clock::driven(base);
    let fake = Fake::new(clock, vec![]);
    let cfg = format!(
        "{}[rules.page]\non_failure = \"pipeline:train\"\nnotify = [\"ops\"]\n",
        head(dir.path(), free_port())
    );
    // A decided run left by an earlier daemon, its stored request damaged.
    {
        let s = mlopsd::state::Store::open(&dir.path().join("state")).unwrap();
        drop(s);
        let c = rusqlite::Connection::open(dir.path().join("state/mlopsd.db")).unwrap();
        c.execute(
            "INSERT INTO runs (rule, firing, kind, target, token, request, correlation_id, status, decided_ms) \
             VALUES ('gone', 1, 'pipeline', 'train', 'mlopsd-0123456789abcdef0123456789abcdef', '{\"parameters\": 7}', 'c-1', 'decided', ?1)",
            [base.timestamp_millis()],
        )
        .unwrap();
    }
    drive(dir.path(), &cfg, &fake, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        fake.starts(),
        Vec::<String>::new(),
        "nothing started with made-up parameters"
    );
    assert_eq!(
        fake.published("run_failed").len(),
        1,
        "the chain tells of it once"
    );
    let c = rusqlite::Connection::open(dir.path().join("state/mlopsd.db")).unwrap();
    let (status, detail): (String, String) = c
        .query_row("SELECT status, detail FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(status, "start_failed");
    assert!(
        detail.starts_with("CorruptStoredRequest: the stored start request is unreadable"),
        "{detail}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_read_error_is_not_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::driven(at("2026-06-01T00:00:00Z"));
    let fake = Fake::new(clock, vec![("drift", Box::new(|_| Some(0.9)))]);
    let port = free_port();
    let cfg = format!(
        "{}[checks.drift]\nschedule = \"every 5m\"\nnamespace = \"ns\"\nmetric = \"drift\"\nperiod = \"5m\"\nabove = 0.5\n\n\
         [rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\nnotify = [\"ops\"]\n",
        head(dir.path(), port)
    );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &cfg).unwrap();
    let stop = CancellationToken::new();
    let (f, s) = (fake.clone(), stop.clone());
    let daemon = tokio::spawn(async move {
        mlopsd::daemon::run_with(path, clock, move |_| async move { f }, s).await
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    // The runs table goes away under the running daemon: counting active runs now fails.
    let db = dir.path().join("state/mlopsd.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE runs;")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let addr = format!("127.0.0.1:{port}");
    let (code, body) =
        tokio::task::spawn_blocking(move || mlopsd::cli::status::get(&addr, "/healthz").unwrap())
            .await
            .unwrap();
    stop.cancel();
    daemon.await.unwrap().unwrap();
    assert_eq!(fake.starts(), Vec::<String>::new());
    assert_eq!(
        fake.published("rule_suppressed"),
        Vec::<String>::new(),
        "an unknown count is not \"4294967295 active runs\""
    );
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("count active runs: no such table: runs"),
        "{body}"
    );
}

/// `on_event` rules on paused time: cooldown and dry run apply to them as to any rule, each
/// matching event is considered, and a start carries the event's rendered parameter.
#[tokio::test(start_paused = true)]
async fn on_event_rules_keep_cooldown_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::driven(at("2026-06-01T00:00:00Z"));
    let fake = Fake::new(clock, vec![]);
    // Events on the fake queue at 00:10, 00:20, 00:40 and 01:20: a new object each time.
    let times = [
        "2026-06-01T00:10:00Z",
        "2026-06-01T00:20:00Z",
        "2026-06-01T00:40:00Z",
        "2026-06-01T01:20:00Z",
    ];
    let cfg = format!(
        "{}[events]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/q\"\n\n\
         [rules.new-data]\non_event = {{ source = \"aws.s3\", match = {{ \"detail.object.key\" = {{ prefix = \"in/\" }} }} }}\n\
         start_pipeline = \"train\"\nparameters = {{ Data = \"s3://b/{{{{ event.detail.object.key }}}}\" }}\ncooldown = \"1h\"\n\n\
         [rules.shadow]\non_event = {{ source = \"aws.s3\" }}\nstart_pipeline = \"train\"\ndry_run = true\n",
        head(dir.path(), free_port())
    );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &cfg).unwrap();
    let stop = CancellationToken::new();
    let (f, s) = (fake.clone(), stop.clone());
    let daemon = tokio::spawn(async move {
        mlopsd::daemon::run_with(path, clock, move |_| async move { f }, s).await
    });
    for (i, t) in times.iter().enumerate() {
        let wait = (at(t) - clock.now()).to_std().unwrap();
        tokio::time::sleep(wait).await;
        let body = serde_json::json!({"id": format!("e{i}"), "source": "aws.s3", "detail-type": "Object Created", "detail": {"object": {"key": format!("in/{i}.csv")}}});
        fake.seen
            .lock()
            .unwrap()
            .queue
            .push_back(mlopsd::cloud::QueueMessage {
                message_id: format!("m{i}"),
                receipt: format!("r{i}"),
                body: body.to_string(),
            });
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    stop.cancel();
    daemon.await.unwrap().unwrap();
    // 00:10 fires; 00:20 and 00:40 are inside the 1 h cooldown; 01:20 fires again. The
    // dry-run rule never starts anything. (The fake's long poll looks every simulated second,
    // on the second, so each event is taken the instant it is queued.)
    assert_eq!(
        fake.starts(),
        ["2026-06-01T00:10:00Z", "2026-06-01T01:20:00Z"]
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.starts[0].2["Data"], "s3://b/in/0.csv");
    assert_eq!(seen.starts[1].2["Data"], "s3://b/in/3.csv");
    assert_eq!(seen.deleted.len(), 4, "every message deleted");
}

/// Declared pipelines on paused time: created once, then one DescribePipeline each per
/// `reconcile_interval` and no write while in sync; an `on_event` parameter rendered to a
/// value that is not of its declared type stops the firing, a fitting one starts.
#[tokio::test(start_paused = true)]
async fn declared_pipelines_reconcile_on_their_interval_and_type_check_rendered_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let def = r#"{"Version": "2020-12-01", "Parameters": [{"Name": "Epochs", "Type": "Integer", "DefaultValue": 10}], "Steps": [{"Name": "Train", "Type": "Training", "Arguments": {}}]}"#;
    let mut cfg = format!(
        "{}[events]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/q\"\n\n",
        head(dir.path(), free_port())
    )
    .replace(
        "poll_interval = \"15s\"",
        "poll_interval = \"15s\"\nreconcile_interval = \"10m\"",
    );
    for i in 0..3 {
        std::fs::write(dir.path().join(format!("p{i}.json")), def).unwrap();
        cfg.push_str(&format!("[pipelines.d{i}]\npipeline_name = \"declared-{i}\"\ndefinition = \"p{i}.json\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"\n\n"));
    }
    cfg.push_str("[rules.tune]\non_event = { source = \"tuner\" }\nstart_pipeline = \"d0\"\nparameters = { Epochs = \"{{ event.detail.epochs }}\" }\n");
    let clock = Clock::driven(at("2026-06-01T00:00:00Z"));
    let fake = Fake::new(clock, vec![]);
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &cfg).unwrap();
    let stop = CancellationToken::new();
    let (f, s) = (fake.clone(), stop.clone());
    let daemon = tokio::spawn(async move {
        mlopsd::daemon::run_with(path, clock, move |_| async move { f }, s).await
    });
    for (i, (t, epochs)) in [
        ("2026-06-01T00:30:00Z", "ten"),
        ("2026-06-01T00:40:00Z", "12"),
    ]
    .iter()
    .enumerate()
    {
        tokio::time::sleep((at(t) - clock.now()).to_std().unwrap()).await;
        let body = serde_json::json!({"id": format!("t{i}"), "source": "tuner", "detail-type": "Tune", "detail": {"epochs": epochs}});
        fake.seen
            .lock()
            .unwrap()
            .queue
            .push_back(mlopsd::cloud::QueueMessage {
                message_id: format!("m{i}"),
                receipt: format!("r{i}"),
                body: body.to_string(),
            });
    }
    tokio::time::sleep((at("2026-06-01T01:00:30Z") - clock.now()).to_std().unwrap()).await;
    stop.cancel();
    daemon.await.unwrap().unwrap();
    let seen = fake.seen.lock().unwrap();
    let writes: Vec<(&str, &str)> = seen
        .pipeline_writes
        .iter()
        .map(|(_, op, p)| (*op, p.as_str()))
        .collect();
    assert_eq!(
        writes,
        [
            ("CreatePipeline", "declared-0"),
            ("CreatePipeline", "declared-1"),
            ("CreatePipeline", "declared-2")
        ],
        "created once each, nothing written while in sync"
    );
    // At start, then at 00:10, 00:20, …, 01:00: 7 reconciles of 3 pipelines; and the
    // preflight's read of the one pipeline that is not declared.
    assert_eq!(seen.pipeline_reads, 22);
    // "ten" is not an Integer: no start; "12" starts, carrying it.
    assert_eq!(seen.starts.len(), 1, "{:?}", seen.starts);
    assert_eq!(seen.starts[0].1, "declared-0");
    assert_eq!(seen.starts[0].2["Epochs"], "12");
    assert_eq!(ts(&seen.starts[0].0), "2026-06-01T00:40:00Z");
}

/// HA on a single-threaded runtime would wait for itself (a leader's store write blocks for a
/// task on the runtime): it is a clear error at start, not a hang.
#[tokio::test(start_paused = true)]
async fn ha_on_a_single_threaded_runtime_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Clock::driven(at("2026-06-01T00:00:00Z")), vec![]);
    let cfg = head(dir.path(), free_port()).replacen(
        "[daemon]\n",
        "[daemon]\nha_table = \"mlopsd-ha\"\n",
        1,
    );
    let e = drive(dir.path(), &cfg, &fake, Duration::from_secs(1))
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("needs the multi-threaded runtime"),
        "{e}"
    );
    assert!(fake.starts().is_empty());
}

/// SPEC: a deployment with no end within the strategy's waits + 1 h is `failed`, and the
/// version is not deployed there again. The fake endpoint stays `Updating` for good.
#[tokio::test(start_paused = true)]
async fn a_deployment_without_an_end_fails_after_its_waits_and_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::driven(at("2026-06-01T00:00:00Z"));
    let fake = Fake::new(clock, vec![]);
    {
        let mut s = fake.seen.lock().unwrap();
        s.approved = vec![mlopsd::cloud::PackageVersion {
            arn: "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1".into(),
            version: 1,
        }];
        s.endpoint = Some(mlopsd::cloud::EndpointView {
            status: "InService".into(),
            config_name: "someone-elses-config".into(),
            pending_config: None,
            failure_reason: None,
            last_modified: Some(at("2026-05-01T00:00:00Z")),
        });
    }
    let cfg = format!(
        "{}[endpoints.churn]\nendpoint_name = \"churn\"\nmodel_package_group = \"g\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/r\"\ninstance_type = \"ml.m5.large\"\nstrategy = {{ canary = \"10%\", wait = \"10m\" }}\nnotify = [\"ops\"]\n",
        head(dir.path(), free_port()).replace("[daemon]\n", "[daemon]\nreconcile_interval = \"10m\"\n")
    );
    drive(dir.path(), &cfg, &fake, Duration::from_secs(4 * 3600))
        .await
        .unwrap();
    assert_eq!(fake.published("deploy_started"), ["2026-06-01T00:00:00Z"]);
    // The canary's wait (10 m) + 1 h after the update was sent, at the next 15 s poll.
    let failed = fake.published("deploy_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].as_str() >= "2026-06-01T01:10:00Z"
            && failed[0].as_str() <= "2026-06-01T01:10:15Z",
        "{failed:?}"
    );
    let writes = fake.seen.lock().unwrap().hosting_writes.clone();
    let updates: Vec<_> = writes.iter().filter(|w| w.1 == "UpdateEndpoint").collect();
    assert_eq!(updates.len(), 1, "never again for that version: {writes:?}");
    assert_eq!(
        fake.published("deploy_skipped").len(),
        0,
        "the endpoint stays Updating: nothing to decide, nothing to skip"
    );
}
