//! `[events]`: EventBridge events on an SQS queue, against moto server. moto emits no
//! SageMaker or CodeBuild events itself, so the tests send the EventBridge envelope to the
//! queue, as EventBridge would; AWS-side effects are checked with the SDK.

use crate::support as common;

use std::time::Duration;

use common::aws::TestAws;
use common::proxy::{Fault, Proxy};
use common::{Opts, Running};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn env() -> Opts<'static> {
    common::aws_env()
}

struct World {
    aws: TestAws,
    queue: String,
    pipeline: String,
}

fn world(prefix: &str) -> World {
    let aws = TestAws::new(prefix);
    let pipeline = aws.create_pipeline("train");
    let name = aws.name("events");
    let queue = aws
        .rt
        .block_on(aws.sqs.create_queue().queue_name(&name).send())
        .expect("create queue")
        .queue_url()
        .unwrap()
        .to_string();
    World {
        aws,
        queue,
        pipeline,
    }
}

impl World {
    fn send(&self, body: &str) {
        self.aws
            .rt
            .block_on(
                self.aws
                    .sqs
                    .send_message()
                    .queue_url(&self.queue)
                    .message_body(body)
                    .send(),
            )
            .expect("send to the queue");
    }
    /// Messages still on the queue, visible or in flight.
    fn left(&self) -> i64 {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let r = self
            .aws
            .rt
            .block_on(
                self.aws
                    .sqs
                    .get_queue_attributes()
                    .queue_url(&self.queue)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .unwrap();
        let a = r.attributes().cloned().unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|k| a.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0))
        .sum()
    }
    /// The daemon's config: `[events]` on this world's queue, the pipeline, a rule `kick` that
    /// starts one run a second after start (cooldown 1h), and `extra`.
    fn config(&self, dir: &std::path::Path, endpoint: &str, extra: &str) -> String {
        self.events_only(dir, endpoint, &format!("[rules.kick]\non_schedule = \"every 1s\"\nstart_pipeline = \"train\"\ncooldown = \"1h\"\n\n{extra}"))
    }
    /// As `config` without `kick`: only events start runs.
    fn events_only(&self, dir: &std::path::Path, endpoint: &str, extra: &str) -> String {
        // Polling is slowed to an hour: what happens within the test happens because of events.
        common::daemon_head(&dir.join("state"), endpoint).replace("poll_interval = \"1s\"", "poll_interval = \"1h\"")
            + &format!("[events]\nqueue_url = \"{}\"\n\n[pipelines.train]\npipeline_name = \"{}\"\n\n{extra}", self.queue, self.pipeline)
    }
}

fn envelope(id: &str, source: &str, detail_type: &str, detail: Value) -> String {
    json!({"version": "0", "id": id, "source": source, "detail-type": detail_type, "account": "123456789012",
           "time": "2026-12-01T00:00:00Z", "region": "us-east-1", "resources": [], "detail": detail})
    .to_string()
}

fn pipeline_event(id: &str, arn: &str, status: &str) -> String {
    envelope(
        id,
        "aws.sagemaker",
        "SageMaker Model Building Pipeline Execution Status Change",
        json!({"pipelineExecutionArn": arn, "currentPipelineExecutionStatus": status}),
    )
}

#[test]
fn a_pipeline_event_ends_a_followed_run_at_once_and_a_redelivery_does_nothing() {
    let w = world("ev-run");
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(
        dir.path(),
        &w.config(dir.path(), &w.aws.endpoint, ""),
        env(),
    );
    let started = r.wait_event("run_started", 1, T);
    let arn = started["arn"].as_str().unwrap().to_string();
    // Nothing else ends it: the next poll is an hour away.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        r.events("run_succeeded").is_empty(),
        "polled before the event?"
    );
    w.send(&pipeline_event("ev-1", &arn, "Succeeded"));
    let done = r.wait_event("run_succeeded", 1, T);
    assert_eq!(done["arn"], arn.as_str());
    let h = r.wait_event("event_handled", 1, T);
    assert_eq!(h["event_id"], "ev-1");
    // The same event again (SQS delivers at least once): nothing new.
    w.send(&pipeline_event("ev-1", &arn, "Succeeded"));
    let ig = r.wait_for_event_where("event_ignored", T, |v| v["event_id"] == "ev-1");
    assert!(
        ig["reason"].as_str().unwrap().contains("already handled"),
        "{ig}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(r.events("run_succeeded").len(), 1);
    r.wait_for("the queue to be empty", T, |_| w.left() == 0);
    let m = mlopsd::cli::status::get(&r.http_addr(), "/metrics")
        .unwrap()
        .1;
    assert!(
        m.contains("mlopsd_events_total{result=\"handled\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mlopsd_events_total{result=\"ignored\"} 1"),
        "{m}"
    );
    assert!(m.contains("mlopsd_events_queue_up 1"), "{m}");
}

#[test]
fn a_forged_success_changes_nothing_aws_does_not_confirm() {
    let w = world("ev-forged");
    let proxy = Proxy::start(&w.aws.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(dir.path(), &w.config(dir.path(), &proxy.url, ""), env());
    let arn = r.wait_event("run_started", 1, T)["arn"]
        .as_str()
        .unwrap()
        .to_string();
    // AWS says the execution is still running; a message claims it succeeded.
    proxy.fault(
        "DescribePipelineExecution",
        Fault::Rewrite("\"Succeeded\"".into(), "\"Executing\"".into()),
        usize::MAX,
    );
    w.send(&pipeline_event("forged-1", &arn, "Succeeded"));
    r.wait_for_event_where("event_handled", T, |v| v["event_id"] == "forged-1");
    r.wait_for("AWS to be asked", T, |_| {
        proxy.count("DescribePipelineExecution") >= 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        r.events("run_succeeded").is_empty(),
        "a forged message ended a run"
    );
    // Positive control, same daemon: AWS confirms, the next event ends it.
    proxy.clear();
    w.send(&pipeline_event("real-1", &arn, "Succeeded"));
    r.wait_event("run_succeeded", 1, T);
    // An event about a run mlopsd does not follow is ignored.
    w.send(&pipeline_event(
        "other-1",
        "arn:aws:sagemaker:us-east-1:123456789012:pipeline/x/execution/y",
        "Succeeded",
    ));
    let ig = r.wait_for_event_where("event_ignored", T, |v| v["event_id"] == "other-1");
    assert!(
        ig["reason"].as_str().unwrap().contains("no followed run"),
        "{ig}"
    );
}

#[test]
fn a_malformed_body_is_rejected_deleted_and_the_next_one_handled() {
    let w = world("ev-bad");
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(
        dir.path(),
        &w.config(dir.path(), &w.aws.endpoint, ""),
        env(),
    );
    let arn = r.wait_event("run_started", 1, T)["arn"]
        .as_str()
        .unwrap()
        .to_string();
    w.send("{\"password\": \"hunter2\", not json");
    w.send(&json!({"id": "x", "hello": "world"}).to_string());
    w.send(&pipeline_event("good-1", &arn, "Succeeded"));
    r.wait_event("run_succeeded", 1, T);
    r.wait_event("event_rejected", 2, T);
    let rej = r.events("event_rejected");
    assert!(
        rej.iter()
            .all(|v| v["message_id"].as_str().is_some_and(|m| !m.is_empty())),
        "{rej:?}"
    );
    assert!(
        rej.iter()
            .any(|v| v["reason"].as_str().unwrap().contains("not JSON")),
        "{rej:?}"
    );
    assert!(
        rej.iter().any(|v| v["reason"]
            .as_str()
            .unwrap()
            .contains("`source` is missing")),
        "{rej:?}"
    );
    assert!(!r.raw_output().contains("hunter2"), "a body was logged");
    r.wait_for("the queue to be empty", T, |_| w.left() == 0);
    let m = mlopsd::cli::status::get(&r.http_addr(), "/metrics")
        .unwrap()
        .1;
    assert!(
        m.contains("mlopsd_events_total{result=\"rejected\"} 2"),
        "{m}"
    );
}

#[test]
fn an_unreachable_queue_is_shown_and_retried_and_stops_nothing() {
    let w = world("ev-down");
    let proxy = Proxy::start(&w.aws.endpoint);
    proxy.fault(
        "ReceiveMessage",
        Fault::Status(500, "internal error".into()),
        3,
    );
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(dir.path(), &w.config(dir.path(), &proxy.url, ""), env());
    // The schedule goes on while the queue fails.
    r.wait_event("run_started", 1, T);
    let down = r.wait_event("events_queue_unreachable", 1, T);
    assert!(
        down["error"].as_str().unwrap().contains("ReceiveMessage"),
        "{down}"
    );
    let st = common::http_get_json(&r.http_addr(), "/status");
    assert_eq!(st["events"]["queue_url"], w.queue.as_str());
    assert_eq!(st["events"]["state"], "unreachable", "{st}");
    r.wait_event("events_queue_reachable", 1, T);
    let start = std::time::Instant::now();
    while common::http_get_json(&r.http_addr(), "/status")["events"]["state"] != "receiving" {
        assert!(
            start.elapsed() < T,
            "the queue did not come back on /status"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        mlopsd::cli::status::get(&r.http_addr(), "/healthz")
            .unwrap()
            .0,
        200,
        "an unreachable queue is not a sick daemon"
    );
    assert!(!r.raw_output().contains("panicked"));
}

fn s3_event(id: &str, bucket: &str, key: &str) -> String {
    envelope(
        id,
        "aws.s3",
        "Object Created",
        json!({"bucket": {"name": bucket}, "object": {"key": key, "size": 10}}),
    )
}

#[test]
fn an_s3_event_fires_an_on_event_rule_once_with_its_templated_parameters() {
    let w = world("ev-s3");
    let proxy = Proxy::start(&w.aws.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain-on-new-data]\n\
        on_event = { source = \"aws.s3\", detail_type = \"Object Created\", match = { \"detail.bucket.name\" = \"ml-bucket\", \"detail.object.key\" = { prefix = \"input-data/\" } } }\n\
        start_pipeline = \"train\"\n\
        parameters = { InputData = \"s3://{{ event.detail.bucket.name }}/{{ event.detail.object.key }}\" }\n\n\
        [rules.strict]\n\
        on_event = { source = \"aws.s3\", match = { \"detail.object.key\" = { prefix = \"strict/\" } } }\n\
        start_pipeline = \"train\"\n\
        parameters = { InputData = \"{{ event.detail.object.missing }}\" }\n";
    // No scheduled start here: only events start runs.
    let text = w.events_only(dir.path(), &proxy.url, rules);
    let r = Running::start(dir.path(), &text, env());
    r.wait_event("events_queue_reachable", 1, T);
    w.send(&s3_event("s3-other", "other-bucket", "input-data/a.csv"));
    w.send(&s3_event("s3-1", "ml-bucket", "input-data/2026/12/01.csv"));
    let started = r.wait_event("run_started", 1, T);
    assert_eq!(started["rule"], "retrain-on-new-data");
    let fired = r.wait_event("rule_fired", 1, T);
    let corr = fired["correlation_id"].as_str().unwrap().to_string();
    assert_eq!(
        started["correlation_id"],
        corr.as_str(),
        "one correlation id, from the event"
    );
    let bodies = proxy.bodies("StartPipelineExecution");
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(
        bodies[0].contains("s3://ml-bucket/input-data/2026/12/01.csv"),
        "the rendered parameter went to AWS: {}",
        bodies[0]
    );
    let ig = r.wait_for_event_where("event_ignored", T, |v| v["event_id"] == "s3-other");
    assert!(
        ig["reason"].as_str().unwrap().contains("no rule or item"),
        "{ig}"
    );
    // Redelivered (at least once): not fired again.
    w.send(&s3_event("s3-1", "ml-bucket", "input-data/2026/12/01.csv"));
    r.wait_for_event_where("event_ignored", T, |v| v["event_id"] == "s3-1");
    // A template over a field the event does not have stops that firing, with the reason.
    w.send(&s3_event("s3-strict", "ml-bucket", "strict/x.csv"));
    let f = r.wait_event("rule_failed", 1, T);
    assert_eq!(f["rule"], "strict");
    assert!(f["reason"].as_str().unwrap().contains("InputData"), "{f}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(proxy.count("StartPipelineExecution"), 1, "one start in all");
    assert_eq!(w.aws.executions(&w.pipeline).len(), 1);
    r.wait_for("the queue to be empty", T, |_| w.left() == 0);
}

fn alarm_event(id: &str, alarm: &str, state: &str) -> String {
    envelope(
        id,
        "aws.cloudwatch",
        "CloudWatch Alarm State Change",
        json!({"alarmName": alarm, "state": {"value": state}}),
    )
}

#[test]
fn an_alarm_event_wakes_its_check_and_aws_decides() {
    let w = world("ev-alarm");
    let aws = &w.aws;
    let alarm = aws.name("endpoint-5xx");
    aws.create_alarm(&alarm, "AWS/SageMaker");
    let set = |state: aws_sdk_cloudwatch::types::StateValue| {
        aws.rt
            .block_on(
                aws.cw
                    .set_alarm_state()
                    .alarm_name(&alarm)
                    .state_value(state)
                    .state_reason("test")
                    .send(),
            )
            .expect("set alarm state");
    };
    set(aws_sdk_cloudwatch::types::StateValue::Ok);
    let topic_rules = format!("[checks.endpoint-errors]\nalarm = \"{alarm}\"\n\n[rules.retrain-on-errors]\non_check = \"endpoint-errors\"\nstart_pipeline = \"train\"\n");
    let dir = tempfile::tempdir().unwrap();
    let text = w.events_only(dir.path(), &aws.endpoint, &topic_rules);
    let r = Running::start(dir.path(), &text, env());
    r.wait_event("events_queue_reachable", 1, T);
    // A forged "ALARM": AWS says OK, so the check is ok and nothing starts.
    w.send(&alarm_event("al-forged", &alarm, "ALARM"));
    let ev = r.wait_event("check_evaluated", 1, T);
    assert_eq!(ev["check"], "endpoint-errors");
    assert_eq!(ev["decision"], "ok", "{ev}");
    // The alarm really goes off: the event wakes the check, which breaches and fires.
    set(aws_sdk_cloudwatch::types::StateValue::Alarm);
    w.send(&alarm_event("al-real", &alarm, "ALARM"));
    let b = r.wait_event("check_breached", 1, T);
    assert_eq!(b["check"], "endpoint-errors");
    let started = r.wait_event("run_started", 1, T);
    assert_eq!(started["correlation_id"], b["correlation_id"]);
    assert_eq!(w.aws.executions(&w.pipeline).len(), 1);
    // Back to OK: recovery, same incident.
    set(aws_sdk_cloudwatch::types::StateValue::Ok);
    w.send(&alarm_event("al-ok", &alarm, "OK"));
    let rec = r.wait_event("check_recovered", 1, T);
    assert_eq!(rec["correlation_id"], b["correlation_id"]);
    let st = common::http_get_json(&r.http_addr(), "/status");
    assert_eq!(st["checks"][0]["metric"], format!("alarm {alarm}"));
    // `mlopsd check` reads the alarm too.
    let out = std::process::Command::new(common::bin())
        .args(["check", "endpoint-errors", "--config"])
        .arg(&r.config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("alarm {alarm} is OK: ok")));
}

/// kill -9 after an event's firing and id are stored, before its message is deleted: the
/// message comes back (visibility timeout), is recognised, and the run is started exactly once.
#[test]
fn a_crash_between_store_and_delete_fires_nothing_twice() {
    let w = world("ev-crash");
    // A short visibility timeout, so the undeleted message comes back within the test.
    let queue = w
        .aws
        .rt
        .block_on(
            w.aws
                .sqs
                .create_queue()
                .queue_name(w.aws.name("crashq"))
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    "2",
                )
                .send(),
        )
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let w = World { queue, ..w };
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain-on-new-data]\non_event = { source = \"aws.s3\", match = { \"detail.object.key\" = { prefix = \"input-data/\" } } }\nstart_pipeline = \"train\"\nparameters = { InputData = \"s3://{{ event.detail.bucket.name }}/{{ event.detail.object.key }}\" }\n";
    let text = w.events_only(dir.path(), &w.aws.endpoint, rules);
    let mut opts = env();
    opts.env
        .push(("MLOPSD_FAILPOINT", "after_event_stored".into()));
    // A batch of five (one matches; the pipeline takes one run at a time): queued before the
    // start, so one receive takes them all.
    for (id, key) in [
        ("crash-1", "input-data/x.csv"),
        ("crash-2", "other/a.csv"),
        ("crash-3", "other/d.csv"),
        ("crash-4", "other/b.csv"),
        ("crash-5", "other/c.csv"),
    ] {
        w.send(&s3_event(id, "ml-bucket", key));
    }
    let mut r = Running::start(dir.path(), &text, opts);
    let st = r.wait_exit(T);
    assert_eq!(
        st.code(),
        None,
        "killed by the failpoint: {}",
        r.raw_output()
    );
    assert!(r
        .raw_output()
        .contains("failpoint after_event_stored reached"));
    drop(r);
    // Restart: the message is redelivered; the firing is not repeated, the decided start is
    // re-driven (after a lookup by its token) and the run exists once.
    let r = Running::start(dir.path(), &text, env());
    for id in ["crash-1", "crash-2", "crash-3", "crash-4", "crash-5"] {
        let ig = r.wait_for_event_where("event_ignored", T, |v| v["event_id"] == id);
        assert!(
            ig["reason"].as_str().unwrap().contains("already handled"),
            "{ig}"
        );
    }
    r.wait_for("the queue to be empty", T, |_| w.left() == 0);
    let start = std::time::Instant::now();
    while w.aws.executions(&w.pipeline).is_empty() {
        assert!(
            start.elapsed() < T,
            "the decided start was never sent: {:?}\n{}",
            w.aws.executions(&w.pipeline),
            r.raw_output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        w.aws.executions(&w.pipeline).len(),
        1,
        "started exactly once"
    );
    assert!(
        r.events("rule_fired").is_empty(),
        "the event did not fire the rule again"
    );
}

#[test]
fn a_model_package_event_runs_its_gate_at_once_and_a_build_event_reads_the_build() {
    use aws_sdk_sagemaker::types::ModelApprovalStatus;
    let w = world("ev-gate");
    let aws = &w.aws;
    let group = aws.name("models");
    aws.rt
        .block_on(
            aws.sm
                .create_model_package_group()
                .model_package_group_name(&group)
                .send(),
        )
        .unwrap();
    let project = w.aws.create_project("ci");
    let aws = &w.aws;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[builds.ci]\nproject_name = \"{project}\"\n\n[rules.build]\non_schedule = \"every 1s\"\nstart_build = \"ci\"\ncooldown = \"1h\"\n\n\
         [gates.approve]\nmodel_package_group = \"{group}\"\nschedule = \"rate(1 day)\"\nmetric = \"accuracy\"\nmin = 0.8\n"
    );
    let text = w.events_only(dir.path(), &aws.endpoint, &extra);
    let r = Running::start(dir.path(), &text, env());
    // The build: started, then ended by its state-change event (polling is an hour away).
    let b = r.wait_event("run_started", 1, T);
    let id = b["arn"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        r.events("run_succeeded").is_empty(),
        "polled before the event?"
    );
    let build_arn = format!("arn:aws:codebuild:us-east-1:123456789012:build/{id}");
    w.send(&envelope(
        "cb-1",
        "aws.codebuild",
        "CodeBuild Build State Change",
        json!({"build-id": build_arn, "build-status": "SUCCEEDED", "project-name": project}),
    ));
    let done = r.wait_event("run_succeeded", 1, T);
    assert_eq!(done["target"], "build:ci");
    // A package registered: its event runs the gate now (its own schedule is a day away).
    let arn = aws.create_pending_package(&group, "0.93");
    w.send(&envelope(
        "mp-1",
        "aws.sagemaker",
        "SageMaker Model Package State Change",
        json!({"ModelPackageGroupName": group, "ModelApprovalStatus": "PendingManualApproval"}),
    ));
    let g = r.wait_event("gate_applied", 1, T);
    assert_eq!(g["arn"], arn.as_str());
    assert_eq!(g["status"], "Approved");
    let st = aws
        .rt
        .block_on(
            aws.sm
                .describe_model_package()
                .model_package_name(&arn)
                .send(),
        )
        .unwrap();
    assert_eq!(
        st.model_approval_status(),
        Some(&ModelApprovalStatus::Approved)
    );
}

/// A reload that changes `[events]` takes effect at the next start (the reload says so); until
/// then the messages of the queue being read are still deleted from that queue.
#[test]
fn a_reload_that_changes_the_queue_needs_a_restart_and_loses_nothing() {
    let w = world("ev-reload");
    let dir = tempfile::tempdir().unwrap();
    let text = w.config(dir.path(), &w.aws.endpoint, "");
    let r = Running::start(dir.path(), &text, env());
    let arn = r.wait_event("run_started", 1, T)["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let other = w
        .aws
        .rt
        .block_on(
            w.aws
                .sqs
                .create_queue()
                .queue_name(w.aws.name("other"))
                .send(),
        )
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    common::replace_by_rename(&r.config, &text.replace(&w.queue, &other));
    let warn = r.wait_event("config_restart_needed", 1, T);
    assert!(
        warn["sections"].as_str().unwrap().contains("events"),
        "{warn}"
    );
    w.send(&pipeline_event("rl-1", &arn, "Succeeded"));
    r.wait_event("run_succeeded", 1, T);
    r.wait_for(
        "the message to be deleted from the queue it came from",
        T,
        |_| w.left() == 0,
    );
    assert!(
        r.events("events_delete_failed").is_empty(),
        "{:?}",
        r.events("events_delete_failed")
    );
}

#[test]
fn a_burst_is_drained_with_batch_deletes_each_event_once_poison_and_redeliveries_included() {
    let w = world("ev-burst");
    let proxy = Proxy::start(&w.aws.endpoint);
    // 120 events (two next to each other match the rule, whose cooldown lets one start: the
    // second is decided against the first within the same batch), 6 of them sent twice (a redelivery), and 4 poison
    // bodies, all on the queue before mlopsd starts: batches come back full.
    let mut bodies = Vec::new();
    for i in 0..120 {
        let key = if i == 57 || i == 58 {
            format!("input-data/burst-{i}.csv")
        } else {
            format!("other/{i}.csv")
        };
        bodies.push(s3_event(&format!("burst-{i}"), "ml-bucket", &key));
        if i % 20 == 0 {
            bodies.push(s3_event(&format!("burst-{i}"), "ml-bucket", &key));
        }
        if i % 30 == 0 {
            bodies.push(format!("{{not json {i}"));
        }
    }
    // SendMessageBatch, 10 at a time, to fill the queue quickly.
    for chunk in bodies.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .unwrap()
            })
            .collect();
        w.aws
            .rt
            .block_on(
                w.aws
                    .sqs
                    .send_message_batch()
                    .queue_url(&w.queue)
                    .set_entries(Some(entries))
                    .send(),
            )
            .expect("send batch");
    }
    let total = bodies.len();
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain-on-new-data]\non_event = { source = \"aws.s3\", match = { \"detail.object.key\" = { prefix = \"input-data/\" } } }\nstart_pipeline = \"train\"\nparameters = { InputData = \"{{ event.detail.object.key }}\" }\ncooldown = \"1h\"\n";
    let text = w.events_only(dir.path(), &proxy.url, rules);
    let r = Running::start(dir.path(), &text, env());
    r.wait_for("the queue to be empty", T, |_| w.left() == 0);
    r.wait_event("run_started", 1, T);
    let sup = r.wait_event("rule_suppressed", 1, T);
    assert_eq!(sup["reason"], "cooldown", "{sup}");
    // Each event handled once; its copy and the poison bodies told apart.
    let taken: Vec<Value> = r
        .logs()
        .into_iter()
        .filter(|v| v["event"] == "event_handled" || v["event"] == "event_ignored")
        .collect();
    let mut first = std::collections::HashMap::new();
    for v in &taken {
        let id = v["event_id"].as_str().unwrap().to_string();
        let again = v["reason"]
            .as_str()
            .or(v["decision"].as_str())
            .unwrap_or_default()
            .contains("already handled");
        if !again {
            *first.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(first.len(), 120, "every event taken");
    assert!(first.values().all(|n| *n == 1), "each once: {first:?}");
    // The 6 copies are recognised; SQS (and moto, under concurrent receives) may deliver a
    // message more than once besides, which is recognised the same way.
    assert!(
        taken.len() >= 126,
        "the 6 redeliveries recognised: {}",
        taken.len()
    );
    assert_eq!(r.events("event_rejected").len(), 4);
    // Deleted in batches, not one call per message; one start.
    let batches = proxy.count("DeleteMessageBatch");
    assert!(
        batches >= total.div_ceil(10) && batches < total / 3,
        "{batches} DeleteMessageBatch for {total} messages"
    );
    assert_eq!(proxy.count("DeleteMessage"), 0);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(proxy.count("StartPipelineExecution"), 1);
    assert_eq!(w.aws.executions(&w.pipeline).len(), 1);
}
