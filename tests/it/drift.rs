//! Drift reports as a check source (SPEC "Drift reports as a check source"), against moto
//! server. moto has no monitoring schedules; scripts/moto_server.py adds them to moto's
//! SageMaker backend (`CreateMonitoringSchedule`, `DescribeMonitoringSchedule` with its last
//! execution, `ListMonitoringExecutions`), and a test records an execution as AWS's scheduler
//! would with `POST /mlopsd/monitoring-execution`. The processing jobs and S3 are moto's own.

use crate::support as common;

use std::io::{Read, Write};
use std::time::Duration;

use common::aws::TestAws;
use common::{Opts, Running};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// Records an execution of `schedule` on the launcher (not an AWS call); its HTTP status.
pub fn record_execution(endpoint: &str, schedule: &str, status: &str, job_arn: &str) -> u16 {
    record_execution_with(endpoint, schedule, status, job_arn, None)
}

/// `record_execution` with a `FailureReason`.
pub fn record_execution_with(
    endpoint: &str,
    schedule: &str,
    status: &str,
    job_arn: &str,
    reason: Option<&str>,
) -> u16 {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut body = json!({
        "MonitoringScheduleName": schedule,
        "MonitoringExecutionStatus": status,
        "ProcessingJobArn": job_arn,
    });
    if let Some(r) = reason {
        body["FailureReason"] = json!(r);
    }
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(host).expect("connect to moto");
    write!(
        s,
        "POST /mlopsd/monitoring-execution HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A monitoring schedule named `name` (data quality, hourly).
pub fn create_schedule(aws: &TestAws, name: &str) {
    use aws_sdk_sagemaker::types::*;
    let config = MonitoringScheduleConfig::builder()
        .schedule_config(
            ScheduleConfig::builder()
                .schedule_expression("cron(0 * ? * * *)")
                .build(),
        )
        .monitoring_job_definition_name("job-definition")
        .monitoring_type(MonitoringType::DataQuality)
        .build();
    aws.rt
        .block_on(
            aws.sm
                .create_monitoring_schedule()
                .monitoring_schedule_name(name)
                .monitoring_schedule_config(config)
                .send(),
        )
        .expect("create schedule");
}

/// A processing job (moto's own) whose output is `s3://BUCKET/OUT`; its ARN.
pub fn create_job(aws: &TestAws, job: &str, bucket: &str, out: &str) -> String {
    use aws_sdk_sagemaker::types::*;
    let o = ProcessingOutput::builder()
        .output_name("result")
        .s3_output(
            ProcessingS3Output::builder()
                .s3_uri(format!("s3://{bucket}/{out}"))
                .local_path("/opt/ml/processing/output")
                .s3_upload_mode(ProcessingS3UploadMode::EndOfJob)
                .build(),
        )
        .build();
    aws.rt
        .block_on(
            aws.sm
                .create_processing_job()
                .processing_job_name(job)
                .role_arn(common::aws::ROLE)
                .app_specification(AppSpecification::builder().image_uri("monitor").build())
                .processing_resources(
                    ProcessingResources::builder()
                        .cluster_config(
                            ProcessingClusterConfig::builder()
                                .instance_count(1)
                                .instance_type(ProcessingInstanceType::MlM5Large)
                                .volume_size_in_gb(1)
                                .build(),
                        )
                        .build(),
                )
                .processing_output_config(ProcessingOutputConfig::builder().outputs(o).build())
                .send(),
        )
        .expect("create processing job")
        .processing_job_arn()
        .unwrap()
        .to_string()
}

pub fn create_bucket(aws: &TestAws, bucket: &str) {
    aws.rt
        .block_on(aws.s3.create_bucket().bucket(bucket).send())
        .expect("create bucket");
}

pub fn put(aws: &TestAws, bucket: &str, key: &str, body: &str) {
    aws.rt
        .block_on(
            aws.s3
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body.as_bytes().to_vec().into())
                .send(),
        )
        .expect("put object");
}

fn params(aws: &TestAws, arn: &str) -> Vec<(String, String)> {
    aws.execution_params(arn)
}

fn status(r: &Running) -> Value {
    let (code, body) = mlopsd::cli::status::get(&r.http_addr(), "/status").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn check_status(r: &Running, name: &str) -> Value {
    status(r)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `/status` shows check `name` so.
fn wait_check(r: &Running, what: &str, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let c = check_status(r, name);
        if pred(&c) {
            return c;
        }
        assert!(
            start.elapsed() < T,
            "timed out waiting for {what}: {c:#}\n{}",
            r.raw_output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Data-quality violations as Model Monitor writes them (AWS's "Schema for Violations").
pub const VIOLATIONS: &str = r#"{"violations": [
    {"feature_name": "fare_amount", "constraint_check_type": "baseline_drift_check",
     "description": "Baseline drift distance: 0.31 exceeds threshold: 0.1"},
    {"feature_name": "trip_distance", "constraint_check_type": "completeness_check",
     "description": "Data completeness 0.82 is below the threshold 1.0"},
    {"feature_name": "tip", "constraint_check_type": "baseline_drift_check",
     "description": "Baseline drift distance: 0.2 exceeds threshold: 0.1"}]}"#;

fn evaluations(r: &Running, check: &str) -> usize {
    r.events("check_evaluated")
        .iter()
        .filter(|e| e["check"] == check)
        .count()
}

#[test]
fn a_monitor_execution_is_evaluated_once_and_starts_retraining_with_its_drifted_features() {
    let mut aws = TestAws::new("drift-mon");
    let topic = aws.create_topic("ops");
    let pipeline = aws.create_pipeline("train");
    let bucket = aws.name("bucket");
    create_bucket(&aws, &bucket);
    let schedule = aws.name("monitor");
    create_schedule(&aws, &schedule);
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &aws.endpoint)
        + &format!(
            "[notifiers.ops]\ntopic_arn = \"{topic}\"\nrepeat_interval = \"0s\"\n\n\
             [pipelines.train]\npipeline_name = \"{pipeline}\"\n\n\
             [checks.dq]\nmonitor = \"{schedule}\"\ncheck_types = [\"baseline_drift_check\"]\nschedule = \"every 1s\"\n\n\
             [rules.retrain]\non_check = \"dq\"\nstart_pipeline = \"train\"\n\
             parameters = {{ DriftedFeatures = \"{{{{ check.features }}}}\", Report = \"{{{{ check.report_uri }}}}\", Count = \"{{{{ check.violations }}}}\" }}\n\
             notify = [\"ops\"]\n"
        );
    let mut r = Running::start(dir.path(), &text, common::aws_env());
    r.wait_event("http_listening", 1, T);
    // No execution yet: nothing to evaluate, and no error.
    std::thread::sleep(Duration::from_secs(2));
    let c = check_status(&r, "dq");
    assert_eq!(c["state"], "not evaluated", "{c}");
    assert!(c.get("error").is_none(), "{c}");
    assert_eq!(evaluations(&r, "dq"), 0);

    // An execution with violations: its report is read from the processing job's output.
    let job = create_job(&aws, &aws.name("job1"), &bucket, "monitor/2026/12/04/10");
    put(
        &aws,
        &bucket,
        "monitor/2026/12/04/10/constraint_violations.json",
        VIOLATIONS,
    );
    assert_eq!(
        record_execution(&aws.endpoint, &schedule, "CompletedWithViolations", &job),
        200
    );
    let started = r.wait_event("run_started", 1, T);
    let ex = aws.executions(&pipeline);
    assert_eq!(ex.len(), 1, "{ex:?}");
    let uri = format!("s3://{bucket}/monitor/2026/12/04/10/constraint_violations.json");
    assert_eq!(
        params(&aws, &ex[0].0),
        [
            ("Count".to_string(), "2".to_string()),
            ("DriftedFeatures".to_string(), "fare_amount,tip".to_string()),
            ("Report".to_string(), uri.clone()),
        ],
        "the filtered features (check_types) and the report went to the pipeline"
    );
    let notes = aws.notes_until(T, |n| n.iter().any(|x| x.event() == "check_breached"));
    let breach = notes
        .iter()
        .find(|n| n.event() == "check_breached")
        .unwrap();
    assert_eq!(
        breach.attrs["correlation_id"],
        started["correlation_id"].as_str().unwrap()
    );
    for want in [
        "fare_amount (baseline_drift_check): Baseline drift distance: 0.31 exceeds threshold: 0.1",
        "tip (baseline_drift_check)",
        uri.as_str(),
    ] {
        assert!(breach.body.contains(want), "{want} in {}", breach.body);
    }
    assert!(
        !breach.body.contains("trip_distance"),
        "filtered out: {}",
        breach.body
    );
    assert!(breach.subject.len() < 100, "{}", breach.subject);

    // Looked at every second, the execution is evaluated once; so after a restart.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(evaluations(&r, "dq"), 1, "one evaluation per execution");
    r.signal(libc::SIGTERM);
    r.wait_exit(T);
    let r = Running::start(dir.path(), &text, common::aws_env());
    r.wait_event("http_listening", 1, T);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(evaluations(&r, "dq"), 0, "not again after a restart");
    assert_eq!(aws.executions(&pipeline).len(), 1);

    // A clean execution: recovered. A failed one: check_failed with AWS's reason.
    let job2 = create_job(&aws, &aws.name("job2"), &bucket, "monitor/2026/12/04/11");
    assert_eq!(
        record_execution(&aws.endpoint, &schedule, "Completed", &job2),
        200
    );
    r.wait_for_event_where("check_recovered", T, |e| e["check"] == "dq");
    let job3 = create_job(&aws, &aws.name("job3"), &bucket, "monitor/2026/12/04/12");
    assert_eq!(
        record_execution_with(
            &aws.endpoint,
            &schedule,
            "Failed",
            &job3,
            Some("Job inputs had no data")
        ),
        200
    );
    let notes = aws.notes_until(T, |n| n.iter().any(|x| x.event() == "check_failed"));
    let failed = notes.iter().find(|n| n.event() == "check_failed").unwrap();
    assert!(
        failed.body.contains("Job inputs had no data"),
        "{}",
        failed.body
    );
    assert_eq!(failed.attrs["check"], "dq");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(evaluations(&r, "dq"), 2, "each execution once");
    assert_eq!(
        aws.executions(&pipeline).len(),
        1,
        "nothing started for them"
    );
}

#[test]
fn a_report_prefix_is_read_once_per_object_and_an_unreadable_report_is_an_error_not_ok() {
    let mut aws = TestAws::new("drift-rep");
    let topic = aws.create_topic("ops");
    let pipeline = aws.create_pipeline("train");
    let bucket = aws.name("bucket");
    create_bucket(&aws, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &aws.endpoint)
        + &format!(
            "[notifiers.ops]\ntopic_arn = \"{topic}\"\nrepeat_interval = \"0s\"\n\n\
             [pipelines.train]\npipeline_name = \"{pipeline}\"\n\n\
             [checks.evidently]\nreport = \"s3://{bucket}/monitoring/churn/\"\nfile = \"drift.json\"\n\
             value = \"metrics.0.result.share_of_drifted_columns\"\nabove = 0.3\nschedule = \"every 1s\"\n\n\
             [rules.retrain]\non_check = \"evidently\"\nstart_pipeline = \"train\"\n\
             parameters = {{ Report = \"{{{{ check.report_uri }}}}\" }}\nnotify = [\"ops\"]\n"
        );
    let r = Running::start(dir.path(), &text, common::aws_env());
    // Nothing under the prefix: an error of the check, never "ok"; logged once.
    let c = wait_check(&r, "the missing report shown", "evidently", |c| {
        c["error"]["count"].as_u64() >= Some(3)
    });
    assert!(
        c["error"]["error"]
            .as_str()
            .unwrap()
            .contains("no object under"),
        "{c}"
    );
    assert_eq!(c["state"], "not evaluated");
    let logged = |what: &str| {
        r.events("check_failed")
            .iter()
            .filter(|e| {
                e["check"] == "evidently" && e["error"].as_str().unwrap_or("").contains(what)
            })
            .count()
    };
    assert_eq!(logged("no object under"), 1, "logged once per cause");
    let metrics = common::http_get(&r.http_addr(), "/metrics");
    assert!(
        metrics.contains("mlopsd_check_errors_total{check=\"evidently\"}"),
        "{metrics}"
    );
    let (_, out, _) = common::mlopsd(&["status", "--addr", &r.http_addr()]);
    assert!(out.contains("check evidently cannot be read"), "{out}");

    // An Evidently report: evaluated once, the rule fires with the report's URI.
    put(&aws, &bucket, "monitoring/churn/notes.txt", "not a report");
    put(
        &aws,
        &bucket,
        "monitoring/churn/2026-12-04/drift.json",
        r#"{"metrics": [{"metric": "DatasetDriftMetric", "result": {"share_of_drifted_columns": 0.5, "number_of_drifted_columns": 5}}]}"#,
    );
    r.wait_event("run_started", 1, T);
    let ex = aws.executions(&pipeline);
    assert_eq!(
        params(&aws, &ex[0].0),
        [(
            "Report".to_string(),
            format!("s3://{bucket}/monitoring/churn/2026-12-04/drift.json")
        )]
    );
    let c = wait_check(&r, "breaching", "evidently", |c| c["state"] == "breaching");
    assert!(c.get("error").is_none(), "the error is over: {c}");
    assert_eq!(c["last_value"], 0.5);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(evaluations(&r, "evidently"), 1, "one evaluation per object");

    // A newer object that is not JSON, then one over 1 MiB: errors; the state stays.
    std::thread::sleep(Duration::from_millis(1100));
    put(
        &aws,
        &bucket,
        "monitoring/churn/2026-12-05/drift.json",
        "{not json",
    );
    let c = wait_check(&r, "not JSON shown", "evidently", |c| {
        c["error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not JSON"))
    });
    assert_eq!(c["state"], "breaching", "an error is not ok: {c}");
    std::thread::sleep(Duration::from_millis(1100));
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1 << 20));
    put(
        &aws,
        &bucket,
        "monitoring/churn/2026-12-06/drift.json",
        &big,
    );
    let c = wait_check(&r, "too large shown", "evidently", |c| {
        c["error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("limit"))
    });
    assert!(
        c["error"]["error"]
            .as_str()
            .unwrap()
            .contains("2026-12-06/drift.json"),
        "{c}"
    );
    // A path the report does not have.
    std::thread::sleep(Duration::from_millis(1100));
    put(
        &aws,
        &bucket,
        "monitoring/churn/2026-12-07/drift.json",
        r#"{"metrics": []}"#,
    );
    wait_check(&r, "path absent shown", "evidently", |c| {
        c["error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing at"))
    });
    assert_eq!(logged("not JSON"), 1);
    assert_eq!(evaluations(&r, "evidently"), 1, "no error was evaluated");
    // A good report again: recovered.
    std::thread::sleep(Duration::from_millis(1100));
    put(
        &aws,
        &bucket,
        "monitoring/churn/2026-12-08/drift.json",
        r#"{"metrics": [{"result": {"share_of_drifted_columns": 0.1}}]}"#,
    );
    r.wait_for_event_where("check_recovered", T, |e| e["check"] == "evidently");
    assert_eq!(aws.executions(&pipeline).len(), 1);
}

#[test]
fn an_s3_event_wakes_a_report_check_at_once_and_a_crash_before_its_rules_loses_nothing() {
    let aws = TestAws::new("drift-ev");
    let pipeline = aws.create_pipeline("train");
    let bucket = aws.name("bucket");
    create_bucket(&aws, &bucket);
    let queue = aws
        .rt
        .block_on(aws.sqs.create_queue().queue_name(aws.name("events")).send())
        .expect("create queue")
        .queue_url()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    // No schedule: only S3 events wake the check; polling is slowed to an hour.
    let text = common::daemon_head(&dir.path().join("state"), &aws.endpoint)
        .replace("poll_interval = \"1s\"", "poll_interval = \"1h\"")
        + &format!(
            "[events]\nqueue_url = \"{queue}\"\n\n\
             [pipelines.train]\npipeline_name = \"{pipeline}\"\n\n\
             [checks.drift]\nreport = \"s3://{bucket}/drift/\"\nviolations = \"violations\"\nfeatures = [\"fare_amount\", \"tip\"]\n\n\
             [rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\n\
             parameters = {{ DriftedFeatures = \"{{{{ check.features }}}}\" }}\n"
        );
    put(&aws, &bucket, "drift/a.json", VIOLATIONS);
    let send = |id: &str, key: &str| {
        let body = json!({"version": "0", "id": id, "source": "aws.s3", "detail-type": "Object Created",
            "account": "123456789012", "time": "2026-12-04T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}}})
        .to_string();
        aws.rt
            .block_on(
                aws.sqs
                    .send_message()
                    .queue_url(&queue)
                    .message_body(body)
                    .send(),
            )
            .expect("send");
    };
    // The object arrived while mlopsd was down: the look at start reads it. Killed after the
    // evaluation is stored, before its rules are considered.
    let mut opts: Opts<'static> = common::aws_env();
    opts.env
        .push(("MLOPSD_FAILPOINT", "after_report_evaluated:drift".into()));
    let mut r = Running::start(dir.path(), &text, opts);
    let st = r.wait_exit(T);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "{}",
        r.raw_output()
    );
    assert!(
        aws.executions(&pipeline).is_empty(),
        "killed before the rule"
    );
    // Restarted: the startup look finds the same object (not evaluated again) and considers
    // its rules from what was stored: one start, with the features.
    let r = Running::start(dir.path(), &text, common::aws_env());
    r.wait_event("run_started", 1, T);
    assert_eq!(
        evaluations(&r, "drift"),
        0,
        "the stored evaluation is not redone"
    );
    let ex = aws.executions(&pipeline);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        params(&aws, &ex[0].0),
        [("DriftedFeatures".to_string(), "fare_amount,tip".to_string())]
    );
    // A new object and its event: read at once (an event for another prefix wakes nothing).
    r.wait_event("events_queue_reachable", 1, T);
    send("s3-elsewhere", "other/a.json");
    let ig = r.wait_for_event_where("event_ignored", T, |e| e["event_id"] == "s3-elsewhere");
    assert!(ig.to_string().contains("no report check reads"), "{ig}");
    std::thread::sleep(Duration::from_millis(1100));
    put(&aws, &bucket, "drift/b.json", r#"{"violations": []}"#);
    send("s3-b", "drift/b.json");
    r.wait_for_event_where("check_recovered", T, |e| e["check"] == "drift");
    let woke = r.wait_for_event_where("event_handled", T, |e| e["event_id"] == "s3-b");
    assert!(
        woke.to_string().contains("reading report check(s) drift"),
        "{woke}"
    );
    assert_eq!(aws.executions(&pipeline).len(), 1);
}

#[test]
fn the_test_moto_serves_monitoring_schedules_and_their_executions() {
    use aws_sdk_sagemaker::types::*;
    let aws = TestAws::new("drift-moto");
    let name = aws.name("monitor");
    create_schedule(&aws, &name);
    let d = aws
        .rt
        .block_on(
            aws.sm
                .describe_monitoring_schedule()
                .monitoring_schedule_name(&name)
                .send(),
        )
        .expect("describe");
    assert_eq!(
        d.monitoring_schedule_status(),
        Some(&ScheduleStatus::Scheduled)
    );
    assert!(
        d.last_monitoring_execution_summary().is_none(),
        "no execution yet"
    );

    // A processing job (moto's own) writes the report under its output.
    let job = aws.name("job");
    let job_arn = create_job(&aws, &job, &aws.name("bucket"), "monitor/out");

    assert_eq!(
        record_execution(&aws.endpoint, &name, "CompletedWithViolations", &job_arn),
        200
    );
    let d = aws
        .rt
        .block_on(
            aws.sm
                .describe_monitoring_schedule()
                .monitoring_schedule_name(&name)
                .send(),
        )
        .expect("describe");
    let last = d
        .last_monitoring_execution_summary()
        .expect("the execution");
    assert_eq!(
        last.monitoring_execution_status(),
        Some(&ExecutionStatus::CompletedWithViolations)
    );
    assert_eq!(last.processing_job_arn(), Some(job_arn.as_str()));
    let runs = aws
        .rt
        .block_on(
            aws.sm
                .list_monitoring_executions()
                .monitoring_schedule_name(&name)
                .send(),
        )
        .expect("list");
    assert_eq!(runs.monitoring_execution_summaries().len(), 1);
    let pj = aws
        .rt
        .block_on(
            aws.sm
                .describe_processing_job()
                .processing_job_name(&job)
                .send(),
        )
        .expect("describe job");
    let uri = pj.processing_output_config().unwrap().outputs()[0]
        .s3_output()
        .unwrap()
        .s3_uri()
        .unwrap_or_default()
        .to_string();
    assert!(uri.ends_with("/monitor/out"), "{uri}");
    assert_eq!(
        record_execution(&aws.endpoint, "no-such-schedule", "Completed", &job_arn),
        404
    );
    let missing = aws.rt.block_on(
        aws.sm
            .describe_monitoring_schedule()
            .monitoring_schedule_name("no-such-schedule")
            .send(),
    );
    assert!(missing.is_err(), "a missing schedule is an error");
}

#[test]
fn doctor_check_and_plan_read_report_checks() {
    let aws = TestAws::new("drift-doc");
    let bucket = aws.name("bucket");
    create_bucket(&aws, &bucket);
    let schedule = aws.name("monitor");
    create_schedule(&aws, &schedule);
    let job = create_job(&aws, &aws.name("job"), &bucket, "monitor/out");
    put(
        &aws,
        &bucket,
        "monitor/out/constraint_violations.json",
        VIOLATIONS,
    );
    assert_eq!(
        record_execution(&aws.endpoint, &schedule, "CompletedWithViolations", &job),
        200
    );
    put(
        &aws,
        &bucket,
        "evidently/2026-12-04/drift.json",
        r#"{"metrics": [{"result": {"share_of_drifted_columns": 0.2}}]}"#,
    );
    let pipeline = aws.create_pipeline("train");
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &aws.endpoint)
        + &format!(
            "[pipelines.train]\npipeline_name = \"{pipeline}\"\n\n\
             [checks.dq]\nmonitor = \"{schedule}\"\nfeatures = [\"fare_amount\"]\nschedule = \"rate(15 minutes)\"\n\n\
             [checks.gone]\nmonitor = \"{}\"\nschedule = \"rate(15 minutes)\"\n\n\
             [checks.evidently]\nreport = \"s3://{bucket}/evidently/\"\nfile = \"drift.json\"\nvalue = \"metrics.0.result.share_of_drifted_columns\"\nabove = 0.3\nschedule = \"rate(15 minutes)\"\n\n\
             [checks.empty]\nreport = \"s3://{bucket}/nothing-yet/\"\nviolations = \"violations\"\nschedule = \"rate(15 minutes)\"\n\n\
             [rules.retrain]\non_check = \"dq\"\nstart_pipeline = \"train\"\nparameters = {{ F = \"{{{{ check.features }}}}\" }}\n",
            aws.name("absent")
        );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &text).unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .arg("--config")
            .arg(&path)
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["doctor", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let j: Value = serde_json::from_str(&out).unwrap();
    let find = |name: &str| {
        j["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "check" && r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {j:#}"))
    };
    let dq = find("dq");
    assert_eq!(dq["status"], "ok", "{dq}");
    assert!(
        dq["detail"]
            .as_str()
            .unwrap()
            .contains("Scheduled; last execution"),
        "{dq}"
    );
    assert!(
        dq["detail"]
            .as_str()
            .unwrap()
            .contains("CompletedWithViolations"),
        "{dq}"
    );
    assert_eq!(find("gone")["status"], "missing");
    let ev = find("evidently");
    assert_eq!(ev["status"], "ok", "{ev}");
    assert!(
        ev["detail"]
            .as_str()
            .unwrap()
            .contains("evidently/2026-12-04/drift.json"),
        "{ev}"
    );
    assert_eq!(find("empty")["status"], "no_data");

    // `mlopsd check`: the report read now and judged.
    let (code, out, err) = run(&["check", "dq"]);
    assert_eq!(code, 1, "breaching: {out}{err}");
    assert!(
        out.contains("BREACHING") && out.contains("fare_amount (baseline_drift_check)"),
        "{out}"
    );
    assert!(!out.contains("tip"), "the features filter holds: {out}");
    let (code, out, _) = run(&["check", "evidently"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0.2") && out.contains("ok"), "{out}");
    let (code, _, err) = run(&["check", "empty"]);
    assert_eq!(code, 2, "no report: no answer");
    assert!(err.contains("no object under"), "{err}");

    // `plan` says what each report check takes from a new report.
    let (code, out, err) = run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "monitor {schedule}: violations on fare_amount > 0 in a new report"
        )),
        "{out}"
    );
}

#[test]
fn a_report_firing_killed_before_its_start_is_sent_replays_the_stored_values() {
    let aws = TestAws::new("drift-replay");
    let pipeline = aws.create_pipeline("train");
    let bucket = aws.name("bucket");
    create_bucket(&aws, &bucket);
    put(&aws, &bucket, "drift/a.json", VIOLATIONS);
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &aws.endpoint)
        + &format!(
            "[pipelines.train]\npipeline_name = \"{pipeline}\"\n\n\
             [checks.drift]\nreport = \"s3://{bucket}/drift/\"\nviolations = \"violations\"\nschedule = \"every 1s\"\n\n\
             [rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\n\
             parameters = {{ DriftedFeatures = \"{{{{ check.features }}}}\", Report = \"{{{{ check.report_uri }}}}\" }}\n"
        );
    let mut opts: Opts<'static> = common::aws_env();
    opts.env
        .push(("MLOPSD_FAILPOINT", "after_decision:retrain".into()));
    let mut r = Running::start(dir.path(), &text, opts);
    let st = r.wait_exit(T);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "{}",
        r.raw_output()
    );
    assert!(aws.executions(&pipeline).is_empty());
    // Meanwhile a newer report lands: the decided start still carries what the first said.
    std::thread::sleep(Duration::from_millis(1100));
    put(
        &aws,
        &bucket,
        "drift/b.json",
        r#"{"violations": [{"feature_name": "zip", "description": "new"}]}"#,
    );
    let r = Running::start(dir.path(), &text, common::aws_env());
    r.wait_event("run_started", 1, T);
    let ex = aws.executions(&pipeline);
    assert_eq!(
        params(&aws, &ex[0].0),
        [
            (
                "DriftedFeatures".to_string(),
                "fare_amount,tip,trip_distance".to_string()
            ),
            ("Report".to_string(), format!("s3://{bucket}/drift/a.json")),
        ],
        "the values stored with the decision"
    );
    // The newer report is evaluated once; its firing meets the run still going
    // (max_concurrent = 1) and is suppressed, not kept for later: the next report decides.
    let sup = r.wait_for_event_where("rule_suppressed", T, |e| e["rule"] == "retrain");
    assert_eq!(sup["reason"], "max_concurrent", "{sup}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(evaluations(&r, "drift"), 1, "b.json once");
    assert_eq!(aws.executions(&pipeline).len(), 1, "one start in all");
}
