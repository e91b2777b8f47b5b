//! The AWS loop end to end: the real daemon and SDK against moto server (started by
//! scripts/test), with AWS-side effects checked through the SDK: executions and builds
//! started, package status, SNS messages read from a subscribed SQS queue. Failure paths moto
//! cannot produce go through the fault-injecting proxy in tests/it/support/proxy.rs.

use crate::support as common;

use std::path::Path;
use std::time::Duration;

use common::aws::{Note, TestAws};
use common::proxy::{Fault, Proxy};
use common::{mlopsd, Opts, Running};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

struct Setup {
    aws: TestAws,
    pipeline: String,
    project: String,
    topic: String,
    ns: String,
}

fn setup(prefix: &str) -> Setup {
    let mut aws = TestAws::new(prefix);
    let pipeline = aws.create_pipeline("train");
    let project = aws.create_project("ci");
    let topic = aws.create_topic("alerts");
    let ns = format!("{}/drift", aws.prefix);
    Setup {
        aws,
        pipeline,
        project,
        topic,
        ns,
    }
}

/// A config for this test's resources; `extra` holds checks, rules and gates.
fn config(dir: &Path, s: &Setup, endpoint: &str, extra: &str) -> String {
    common::daemon_head(&dir.join("state"), endpoint)
        + &format!(
            r#"[notifiers.ops]
topic_arn = "{topic}"
repeat_interval = "0s"

[pipelines.train]
pipeline_name = "{pipeline}"
parameters = {{ InputData = "s3://bucket/input/", Threshold = "0.85" }}
max_concurrent = 1

[builds.ci]
project_name = "{project}"
source_version = "main"
environment = {{ STAGE = "test" }}

{extra}"#,
            topic = s.topic,
            pipeline = s.pipeline,
            project = s.project,
        )
}

/// The drift check; its dimension value is the test's own namespace, since moto matches a
/// query with dimensions by metric name and dimensions only (not by namespace): tests running
/// side by side, or a re-run within the period, would otherwise read each other's values.
fn drift_check(ns: &str, for_count: u32, statistic: &str) -> String {
    format!(
        "[checks.drift]\nschedule = \"every 1s\"\nnamespace = \"{ns}\"\nmetric = \"distance\"\ndimensions = {{ Endpoint = \"{ns}\" }}\nstatistic = \"{statistic}\"\nperiod = \"1m\"\nabove = 0.1\nfor = {for_count}\n\n"
    )
}

const SECRET: &str = "mlopsdTestSecretKey7f3a9c";
const SESSION: &str = "mlopsdTestSessionToken51b2e8";

fn env() -> Opts<'static> {
    Opts {
        env: vec![
            ("AWS_ACCESS_KEY_ID", "AKIAMLOPSDTEST000001".into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_SESSION_TOKEN", SESSION.into()),
        ],
        notify: true,
    }
}

/// No credential in anything the daemon printed.
fn assert_no_credentials(r: &Running) {
    let out = r.raw_output();
    for c in [SECRET, SESSION, "AKIAMLOPSDTEST000001"] {
        assert!(!out.contains(c), "credential {c} leaked into the output");
    }
}

fn events_named<'a>(notes: &'a [Note], e: &str) -> Vec<&'a Note> {
    notes.iter().filter(|n| n.event() == e).collect()
}

#[test]
fn drift_starts_retrain_followed_to_success_with_one_correlation_id() {
    let s = setup("loop");
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"[rules.retrain]
on_check = "drift"
start_pipeline = "train"
parameters = { InputData = "s3://bucket/retrain/" }
cooldown = "1h"
notify = ["ops"]
"#;
    let text = config(
        dir.path(),
        &s,
        &s.aws.endpoint,
        &(drift_check(&s.ns, 2, "Minimum") + rules),
    );
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.3);
    let r = Running::start(dir.path(), &text, env());
    let started = r.wait_event("run_started", 1, T);
    let ok = r.wait_event("run_succeeded", 1, T);
    assert_eq!(started["arn"], ok["arn"]);
    // `for = 2`: the first evaluation breached without firing.
    let evals = r.events("check_evaluated");
    assert_eq!(
        evals[0]["breach_count"],
        1,
        "{:?}",
        &evals[..evals.len().min(3)]
    );
    assert_eq!(evals[0]["decision"], "breach");
    assert_eq!(evals[0]["value"], "0.3");
    assert_eq!(evals[0]["threshold"], "> 0.1");
    let fired = r.events("rule_fired");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["check"], "drift");

    // AWS side: exactly one execution, named by the idempotency token, merged parameters.
    let ex = s.aws.executions(&s.pipeline);
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(Value::String(ex[0].0.clone()), started["arn"]);
    assert_eq!(Value::String(ex[0].1.clone()), started["token"]);
    let p = s.aws.execution_params(&ex[0].0);
    assert_eq!(
        p,
        [
            ("InputData".to_string(), "s3://bucket/retrain/".to_string()),
            ("Threshold".to_string(), "0.85".to_string())
        ]
    );

    // The breach keeps going: suppressed by cooldown, with the reason in the log.
    let sup = r.wait_event("rule_suppressed", 1, T);
    assert_eq!(sup["reason"], "cooldown");
    assert!(
        sup["detail"]
            .as_str()
            .unwrap()
            .starts_with("in cooldown until "),
        "{sup}"
    );

    // Recovery: Minimum drops below the threshold.
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.01);
    let rec = r.wait_event("check_recovered", 1, T);

    let notes = s.aws.notes_until(T, |n| {
        [
            "check_breached",
            "run_started",
            "run_succeeded",
            "check_recovered",
        ]
        .iter()
        .all(|e| n.iter().any(|x| x.event() == *e))
    });
    let corr = &events_named(&notes, "check_breached")[0].attrs["correlation_id"];
    assert!(corr.starts_with("c-"));
    assert_eq!(rec["correlation_id"], Value::String(corr.clone()));
    for e in ["run_started", "run_succeeded", "check_recovered"] {
        let n = events_named(&notes, e)[0];
        assert_eq!(&n.attrs["correlation_id"], corr, "{e}");
        assert_eq!(n.attrs["rule"], "retrain");
        assert_eq!(n.attrs["check"], "drift");
        assert!(n.subject.len() <= 100);
    }
    assert_eq!(
        events_named(&notes, "run_started")[0].subject,
        "[mlops] retrain: run_started"
    );
    assert!(
        events_named(&notes, "run_succeeded")[0]
            .body
            .contains(&ex[0].0),
        "body carries the arn"
    );
    assert_eq!(
        s.aws.executions(&s.pipeline).len(),
        1,
        "cooldown: still one execution"
    );
    assert_no_credentials(&r);
    for n in &notes {
        assert!(!n.body.contains(SECRET) && !n.body.contains(SESSION));
    }
}

#[test]
fn schedule_build_chains_pipeline_on_success_and_pages_on_failure() {
    let s = setup("chain");
    let proxy = Proxy::start(&s.aws.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"[rules.nightly]
on_schedule = "every 2s"
start_build = "ci"
environment = { EXTRA = "1" }
cooldown = "1h"
notify = ["ops"]

[rules.train-after-build]
on_success = "build:ci"
start_pipeline = "train"
notify = ["ops"]

[rules.page]
on_failure = "pipeline:train"
notify = ["ops"]
"#;
    // The pipeline run fails (moto cannot do that; the proxy rewrites the status).
    proxy.fault_every(
        "DescribePipelineExecution",
        Fault::Rewrite("\"Succeeded\"".into(), "\"Failed\"".into()),
        1,
    );
    let text = config(dir.path(), &s, &proxy.url, rules);
    let r = Running::start(dir.path(), &text, env());
    let b = r.wait_event("run_started", 1, T);
    assert_eq!(b["target"], "build:ci");
    r.wait_for("the build to succeed", T, |l| {
        l.iter()
            .any(|v| v["event"] == "run_succeeded" && v["target"] == "build:ci")
    });
    r.wait_for("the chained pipeline to start", T, |l| {
        l.iter()
            .any(|v| v["event"] == "run_started" && v["target"] == "pipeline:train")
    });
    r.wait_for("the pipeline to fail", T, |l| {
        l.iter()
            .any(|v| v["event"] == "run_failed" && v["target"] == "pipeline:train")
    });
    let notes = s.aws.notes_until(T, |n| {
        n.iter()
            .any(|x| x.event() == "run_failed" && x.attrs["rule"] == "page")
    });
    let builds = s.aws.builds(&s.project);
    assert_eq!(builds.len(), 1, "cooldown 1h: one build");
    assert_eq!(s.aws.executions(&s.pipeline).len(), 1);
    // One correlation id from the scheduled build through the chained pipeline's failure.
    let corr = &notes
        .iter()
        .find(|n| n.event() == "run_started" && n.attrs["rule"] == "nightly")
        .unwrap()
        .attrs["correlation_id"];
    let page = notes
        .iter()
        .find(|n| n.event() == "run_failed" && n.attrs["rule"] == "page")
        .unwrap();
    assert_eq!(&page.attrs["correlation_id"], corr);
    assert!(page.body.contains("status: Failed"), "{}", page.body);
    // The build was started with the merged environment and the token (moto does not echo
    // overrides back, so the request on the wire is checked).
    let sent = proxy.bodies("StartBuild");
    assert_eq!(sent.len(), 1);
    let req: Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(req["sourceVersion"], "main");
    let token = req["idempotencyToken"].as_str().unwrap().to_string();
    assert!(token.starts_with("mlopsd-"));
    let envs: Vec<String> = req["environmentVariablesOverride"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}={}",
                v["name"].as_str().unwrap(),
                v["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        envs,
        [
            "EXTRA=1".to_string(),
            "STAGE=test".to_string(),
            format!("MLOPSD_IDEMPOTENCY_TOKEN={token}")
        ]
    );
    assert!(proxy.count("BatchGetBuilds") >= 1);
}

#[test]
fn dry_run_changes_nothing_on_aws_or_sns() {
    let s = setup("dry");
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\nnotify = [\"ops\"]\ndry_run = true\n";
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
    let text = config(
        dir.path(),
        &s,
        &s.aws.endpoint,
        &(drift_check(&s.ns, 1, "Average") + rules),
    );
    let r = Running::start(dir.path(), &text, env());
    r.wait_for("a dry-run decision", T, |l| {
        l.iter()
            .any(|v| v["event"] == "rule_dry_run" && v["target"] == "pipeline:train")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.aws.executions(&s.pipeline).is_empty());
    assert!(
        s.aws.drain(Duration::from_secs(2)).is_empty(),
        "dry run sends no SNS"
    );
    assert!(r.events("run_started").is_empty());
}

#[test]
fn max_concurrent_suppresses_a_second_run_while_one_is_active() {
    let s = setup("conc");
    let proxy = Proxy::start(&s.aws.endpoint);
    // Keep the execution "Executing" so it stays active.
    proxy.fault_every(
        "DescribePipelineExecution",
        Fault::Rewrite("\"Succeeded\"".into(), "\"Executing\"".into()),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let rules =
        "[rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\nnotify = [\"ops\"]\n";
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
    let text = config(
        dir.path(),
        &s,
        &proxy.url,
        &(drift_check(&s.ns, 1, "Average") + rules),
    );
    let r = Running::start(dir.path(), &text, env());
    r.wait_event("run_started", 1, T);
    let sup = r.wait_event("rule_suppressed", 1, T);
    assert_eq!(sup["reason"], "max_concurrent");
    assert_eq!(
        sup["detail"],
        "pipeline:train has 1 active run(s), max_concurrent = 1"
    );
    assert_eq!(s.aws.executions(&s.pipeline).len(), 1);
    let notes = s
        .aws
        .notes_until(T, |n| n.iter().any(|x| x.event() == "rule_suppressed"));
    assert!(events_named(&notes, "rule_suppressed")[0]
        .body
        .contains("max_concurrent = 1"));
}

#[test]
fn gates_approve_reject_read_reports_and_leave_unknown_pending() {
    let s = setup("gate");
    let group = s.aws.name("models");
    let bucket = s.aws.name("reports");
    let aws = &s.aws;
    aws.rt
        .block_on(
            aws.sm
                .create_model_package_group()
                .model_package_group_name(&group)
                .send(),
        )
        .unwrap();
    aws.rt
        .block_on(aws.s3.create_bucket().bucket(&bucket).send())
        .unwrap();
    let put = |key: &str, acc: f64| {
        let body = format!(r#"{{"classification_metrics": {{"accuracy": {{"value": {acc}}}}}}}"#);
        aws.rt
            .block_on(
                aws.s3
                    .put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(body.into_bytes().into())
                    .send(),
            )
            .unwrap();
    };
    put("good.json", 0.93);
    put("bad.json", 0.55);
    let mk = |acc: Option<&str>, report: Option<&str>| -> String {
        use aws_sdk_sagemaker::types::*;
        let mut req = aws
            .sm
            .create_model_package()
            .model_package_group_name(&group)
            .model_approval_status(ModelApprovalStatus::PendingManualApproval)
            .inference_specification(
                InferenceSpecification::builder()
                    .containers(
                        ModelPackageContainerDefinition::builder()
                            .image("img")
                            .build(),
                    )
                    .supported_content_types("text/csv")
                    .supported_response_mime_types("text/csv")
                    .build(),
            );
        if let Some(a) = acc {
            req = req.customer_metadata_properties("accuracy", a);
        }
        if let Some(k) = report {
            req = req.model_metrics(
                ModelMetrics::builder()
                    .model_quality(
                        ModelQuality::builder()
                            .statistics(
                                MetricsSource::builder()
                                    .content_type("application/json")
                                    .s3_uri(format!("s3://{bucket}/{k}"))
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            );
        }
        aws.rt
            .block_on(req.send())
            .unwrap()
            .model_package_arn()
            .unwrap()
            .to_string()
    };
    let good = mk(Some("0.91"), Some("good.json"));
    let bad = mk(Some("0.42"), Some("bad.json"));
    let none = mk(None, None);
    let status = |arn: &str| {
        let d = aws
            .rt
            .block_on(
                aws.sm
                    .describe_model_package()
                    .model_package_name(arn)
                    .send(),
            )
            .unwrap();
        (
            d.model_approval_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            d.approval_description().unwrap_or_default().to_string(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let gates = format!(
        "[gates.by-metadata]\nmodel_package_group = \"{group}\"\nschedule = \"every 1s\"\nmetric = \"accuracy\"\nmin = 0.8\nnotify = [\"ops\"]\n"
    );
    let r = Running::start(
        dir.path(),
        &config(dir.path(), &s, &aws.endpoint, &gates),
        env(),
    );
    r.wait_for("two gate decisions", T, |l| {
        l.iter().filter(|v| v["event"] == "gate_applied").count() >= 2
    });
    assert_eq!(
        status(&good),
        (
            "Approved".to_string(),
            "mlopsd: accuracy 0.91 >= min 0.8".to_string()
        )
    );
    assert_eq!(
        status(&bad),
        (
            "Rejected".to_string(),
            "mlopsd: accuracy 0.42 is below min 0.8".to_string()
        )
    );
    assert_eq!(status(&none).0, "PendingManualApproval");
    std::thread::sleep(Duration::from_secs(3));
    let reported = r.events("gate_no_metric");
    assert_eq!(reported.len(), 1, "reported once: {reported:?}");
    assert_eq!(reported[0]["arn"], Value::String(none.clone()));
    let notes = s.aws.notes_until(T, |n| {
        n.iter().any(|x| x.event() == "gate_approved")
            && n.iter().any(|x| x.event() == "gate_rejected")
    });
    assert!(events_named(&notes, "gate_approved")[0]
        .body
        .contains(&good));
    drop(r);

    // The same packages, judged from the evaluation report in S3 instead (two new ones).
    let good2 = mk(None, Some("good.json"));
    let bad2 = mk(None, Some("bad.json"));
    let dir2 = tempfile::tempdir().unwrap();
    let gates = format!(
        "[gates.by-report]\nmodel_package_group = \"{group}\"\nschedule = \"every 1s\"\nreport_path = \"classification_metrics.accuracy.value\"\nmin = 0.9\nnotify = [\"ops\"]\n"
    );
    let r = Running::start(
        dir2.path(),
        &config(dir2.path(), &s, &s.aws.endpoint, &gates),
        env(),
    );
    r.wait_for("report-based decisions", T, |l| {
        l.iter().filter(|v| v["event"] == "gate_applied").count() >= 2
    });
    assert_eq!(status(&good2).0, "Approved");
    assert_eq!(
        status(&bad2),
        (
            "Rejected".to_string(),
            "mlopsd: classification_metrics.accuracy.value 0.55 is below min 0.9".to_string()
        )
    );
}

#[test]
fn sigkill_after_decision_then_restart_starts_exactly_once() {
    for point in ["after_decision", "after_start_sent", "while_following"] {
        let s = setup(&format!("kill-{}", point.replace('_', "-")));
        let dir = tempfile::tempdir().unwrap();
        let rules = "[rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n";
        s.aws
            .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
        let text = config(
            dir.path(),
            &s,
            &s.aws.endpoint,
            &(drift_check(&s.ns, 1, "Average") + rules),
        );
        let mut opts = env();
        opts.env.push(("MLOPSD_FAILPOINT", point.into()));
        let mut r = Running::start(dir.path(), &text, opts);
        let st = r.wait_exit(T);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "{point}: {}",
            r.raw_output()
        );
        let before = s.aws.executions(&s.pipeline).len();
        assert_eq!(
            before,
            if point == "after_decision" { 0 } else { 1 },
            "{point}"
        );
        drop(r);
        let r = Running::start(dir.path(), &text, env());
        let ended = r.wait_event("run_succeeded", 1, T);
        std::thread::sleep(Duration::from_secs(2));
        let ex = s.aws.executions(&s.pipeline);
        assert_eq!(ex.len(), 1, "{point}: started exactly once: {ex:?}");
        assert_eq!(Value::String(ex[0].0.clone()), ended["arn"]);
        assert_eq!(
            r.events("run_succeeded").len(),
            1,
            "{point}: its end handled once"
        );
        assert!(
            r.events("rule_fired").is_empty(),
            "{point}: the restart resumed the stored decision, it did not decide again"
        );
        // Nothing lost on the SNS side: the incident's start and end were both told.
        let notes = s
            .aws
            .notes_until(T, |n| n.iter().any(|x| x.event() == "run_succeeded"));
        let corr = &events_named(&notes, "check_breached")[0].attrs["correlation_id"];
        assert!(
            notes.iter().all(|n| &n.attrs["correlation_id"] == corr),
            "{point}: {notes:?}"
        );
        assert!(!events_named(&notes, "run_started").is_empty(), "{point}");
    }
}

/// Two checks breach in one evaluation; the process dies after the first rule's decision.
/// The breach notices of both checks were queued with the evaluations that found them, so
/// none is lost (before, the second check's breach was stored and its notice was not).
#[test]
fn sigkill_after_the_first_of_two_decisions_loses_no_breach_notice() {
    let s = setup("kill-two");
    let dir = tempfile::tempdir().unwrap();
    let mut extra = String::new();
    for c in ["a", "b"] {
        s.aws.put_metric(&s.ns, &format!("m{c}"), &[], 1.0);
        extra.push_str(&format!(
            "[checks.{c}]\nschedule = \"every 1s\"\nnamespace = \"{}\"\nmetric = \"m{c}\"\nabove = 0.5\n\n[rules.r{c}]\non_check = \"{c}\"\nstart_pipeline = \"train\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n\n",
            s.ns
        ));
    }
    let text = config(dir.path(), &s, &s.aws.endpoint, &extra);
    let mut opts = env();
    opts.env.push(("MLOPSD_FAILPOINT", "after_decision".into()));
    let mut r = Running::start(dir.path(), &text, opts);
    r.wait_exit(T);
    drop(r);
    let _r = Running::start(dir.path(), &text, env());
    let notes = s.aws.notes_until(T, |n| {
        ["ra", "rb"].iter().all(|rule| {
            n.iter()
                .any(|x| x.event() == "check_breached" && x.attrs["rule"] == *rule)
        })
    });
    // Each check's breach told; a copy only of a message SNS took just before the kill (at
    // least once), with the same correlation id.
    for rule in ["ra", "rb"] {
        let ids: Vec<&String> = events_named(&notes, "check_breached")
            .into_iter()
            .filter(|n| n.attrs["rule"] == rule)
            .map(|n| &n.attrs["correlation_id"])
            .collect();
        assert!(
            (1..=2).contains(&ids.len()) && ids.windows(2).all(|w| w[0] == w[1]),
            "{rule}: {notes:?}"
        );
    }
}

/// A kill around a run's chain, at three points: after storing the run's end (nothing of the
/// chain yet), after deciding the chained rule (its start not sent), and after the chained
/// start got out to AWS (answered, the run not yet marked chained). After the restart the
/// chained build exists exactly once, and where the start got out the restart found it by its
/// token and sent no second `StartBuild`. (Before: a kill after the end was stored lost the
/// chained start; and on moto, which kept no environment overrides, the lookup could never
/// find a build, so a start that got out was sent again — the test failed about 1 time in 3.)
#[test]
fn sigkill_around_a_runs_chain_chains_exactly_once() {
    for (point, got_out) in [
        ("after_run_end", false),
        ("after_decision:after", false),
        ("after_chain", true),
    ] {
        let s = setup(&format!("chain-{}", point.replace(['_', ':'], "-")));
        let proxy = Proxy::start(&s.aws.endpoint);
        let dir = tempfile::tempdir().unwrap();
        let rules = "[rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\ncooldown = \"1h\"\n\n[rules.after]\non_success = \"pipeline:train\"\nstart_build = \"ci\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n";
        s.aws
            .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
        let text = config(
            dir.path(),
            &s,
            &proxy.url,
            &(drift_check(&s.ns, 1, "Average") + rules),
        );
        let mut opts = env();
        opts.env.push(("MLOPSD_FAILPOINT", point.into()));
        let mut r = Running::start(dir.path(), &text, opts);
        let st = r.wait_exit(T);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "{point}: {}",
            r.raw_output()
        );
        assert_eq!(s.aws.executions(&s.pipeline).len(), 1, "{point}");
        assert_eq!(
            s.aws.builds(&s.project).len(),
            usize::from(got_out),
            "{point}: whether the chained start got out before the kill"
        );
        let sent = proxy.count("StartBuild");
        drop(r);
        let r = Running::start(dir.path(), &text, env());
        r.wait_for("the chained build", T, |l| {
            l.iter()
                .any(|v| v["event"] == "run_started" && v["target"] == "build:ci")
        });
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(s.aws.builds(&s.project).len(), 1, "{point}: chained once");
        assert_eq!(s.aws.executions(&s.pipeline).len(), 1, "{point}");
        assert_eq!(
            proxy.count("StartBuild"),
            sent + usize::from(!got_out),
            "{point}: a start that got out is found by its token, not sent again"
        );
        assert!(
            r.events("rule_suppressed")
                .iter()
                .all(|e| e["rule"] != "after"),
            "{point}: the chain considered again is no second firing: {:?}",
            r.events("rule_suppressed")
        );
    }
}

/// The moto the tests run on (scripts/moto_server.py) behaves as AWS does where never-twice
/// depends on it: a build keeps its environment overrides (a lookup by the token variable can
/// find it), and a start's idempotency token returns the same build or execution, or a
/// mismatch error when a parameter differs.
#[test]
fn the_test_moto_keeps_build_overrides_and_honours_start_tokens() {
    use aws_sdk_codebuild::types::{EnvironmentVariable, EnvironmentVariableType};
    let s = setup("launcher");
    let var = |v: &str| {
        EnvironmentVariable::builder()
            .name("MLOPSD_IDEMPOTENCY_TOKEN")
            .value(v)
            .r#type(EnvironmentVariableType::Plaintext)
            .build()
            .unwrap()
    };
    // The build, or the AWS error code.
    let start = |token: &str, value: &str| {
        s.aws
            .rt
            .block_on(
                s.aws
                    .cb
                    .start_build()
                    .project_name(&s.project)
                    .environment_variables_override(var(value))
                    .idempotency_token(token)
                    .send(),
            )
            .map_err(|e| {
                aws_sdk_codebuild::error::ProvideErrorMetadata::code(&e).map(str::to_string)
            })
    };
    // Tokens are the account's: this test's own (tests share one moto server).
    let token = format!("{}-token", s.project);
    let a = start(&token, "one").unwrap().build_value.unwrap();
    let b = start(&token, "one").unwrap().build_value.unwrap();
    assert_eq!(a.id, b.id, "the same token is the same build");
    assert_eq!(s.aws.builds(&s.project).len(), 1);
    assert_eq!(
        start(&token, "two").unwrap_err().as_deref(),
        Some("InvalidInputException"),
        "another parameter under the same token"
    );
    let got = s
        .aws
        .rt
        .block_on(
            s.aws
                .cb
                .batch_get_builds()
                .ids(a.id.clone().unwrap())
                .send(),
        )
        .unwrap();
    let vars = got.builds()[0]
        .environment()
        .unwrap()
        .environment_variables();
    assert_eq!(
        vars.iter()
            .map(|v| (v.name(), v.value()))
            .collect::<Vec<_>>(),
        [("MLOPSD_IDEMPOTENCY_TOKEN", "one")],
        "the build shows its overrides"
    );
    let exec = |token: &str| {
        s.aws
            .rt
            .block_on(
                s.aws
                    .sm
                    .start_pipeline_execution()
                    .pipeline_name(&s.pipeline)
                    .client_request_token(token)
                    .send(),
            )
            .unwrap()
            .pipeline_execution_arn
    };
    let token = format!("{}-0123456789abcdef0123456789abcdef", s.pipeline);
    assert_eq!(exec(&token), exec(&token));
    assert_eq!(s.aws.executions(&s.pipeline).len(), 1);
}

#[test]
fn sigkill_after_publish_resends_with_the_same_correlation_id() {
    let s = setup("kill-publish");
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain]\non_check = \"drift\"\nnotify = [\"ops\"]\n";
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
    let text = config(
        dir.path(),
        &s,
        &s.aws.endpoint,
        &(drift_check(&s.ns, 1, "Average") + rules),
    );
    let mut opts = env();
    opts.env.push(("MLOPSD_FAILPOINT", "after_publish".into()));
    let mut r = Running::start(dir.path(), &text, opts);
    r.wait_exit(T);
    drop(r);
    let first = s.aws.notes_until(T, |n| !n.is_empty());
    assert_eq!(first.len(), 1);
    let _r = Running::start(dir.path(), &text, env());
    // At least once: the unmarked message goes out again, with the same correlation id.
    let again = s.aws.notes_until(T, |n| !n.is_empty());
    assert_eq!(again[0].event(), "check_breached");
    assert_eq!(
        again[0].attrs["correlation_id"],
        first[0].attrs["correlation_id"]
    );
}

#[test]
fn throttling_and_5xx_on_start_are_retried_with_the_same_token_and_start_once() {
    let s = setup("throttle");
    let proxy = Proxy::start(&s.aws.endpoint);
    let throttle = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    // More failures than one round of SDK attempts (max_attempts = 2): the daemon retries later.
    proxy.fault(
        "StartPipelineExecution",
        Fault::Status(400, throttle.into()),
        3,
    );
    proxy.fault(
        "StartPipelineExecution",
        Fault::Status(503, "unavailable".into()),
        1,
    );
    proxy.fault("StartPipelineExecution", Fault::Reset, 1);
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n";
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
    let text = config(
        dir.path(),
        &s,
        &proxy.url,
        &(drift_check(&s.ns, 1, "Average") + rules),
    );
    let r = Running::start(dir.path(), &text, env());
    r.wait_event("run_succeeded", 1, Duration::from_secs(60));
    assert!(!r.events("start_retry").is_empty(), "a retry was logged");
    assert_eq!(s.aws.executions(&s.pipeline).len(), 1);
    assert_eq!(proxy.faults("StartPipelineExecution"), 5);
    assert!(proxy.count("StartPipelineExecution") >= 6);
}

#[test]
fn start_timeouts_are_retried_and_start_once() {
    let s = setup("timeout");
    let proxy = Proxy::start(&s.aws.endpoint);
    // Both SDK attempts of the first round hang beyond `attempt_timeout`.
    proxy.fault(
        "StartPipelineExecution",
        Fault::Hang(Duration::from_secs(3)),
        2,
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n";
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
    let text = config(
        dir.path(),
        &s,
        &proxy.url,
        &(drift_check(&s.ns, 1, "Average") + rules),
    )
    .replace(
        "max_attempts = 2",
        "max_attempts = 2\nattempt_timeout = \"1s\"",
    );
    let r = Running::start(dir.path(), &text, env());
    let retry = r.wait_event("start_retry", 1, T);
    assert_eq!(retry["code"], "Timeout", "{retry}");
    r.wait_event("run_succeeded", 1, Duration::from_secs(60));
    assert_eq!(s.aws.executions(&s.pipeline).len(), 1);
    assert_eq!(proxy.faults("StartPipelineExecution"), 2);
}

#[test]
fn unknown_pipeline_is_a_clear_run_failed_and_the_rule_can_fire_again() {
    let s = setup("unknown");
    let dir = tempfile::tempdir().unwrap();
    let rules = "[rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"missing\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n";
    let extra = format!(
        "[pipelines.missing]\npipeline_name = \"{}\"\n\n{}{}",
        s.aws.name("no-such-pipeline"),
        drift_check(&s.ns, 1, "Average"),
        rules
    );
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
    let r = Running::start(
        dir.path(),
        &config(dir.path(), &s, &s.aws.endpoint, &extra),
        env(),
    );
    let f = r.wait_event("run_failed", 1, T);
    assert_eq!(f["config_item"], "[pipelines.missing]");
    assert_eq!(f["error_code"], "ValidationException");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("StartPipelineExecution"),
        "{f}"
    );
    // Cooldown was cleared: the next breaching evaluation decides again.
    r.wait_event("run_failed", 2, T);
    let notes = s
        .aws
        .notes_until(T, |n| n.iter().any(|x| x.event() == "run_failed"));
    assert!(events_named(&notes, "run_failed")[0]
        .body
        .contains("error_code: ValidationException"));
}

#[test]
fn unknown_topic_is_a_clear_error_naming_the_notifier() {
    let s = setup("notopic");
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        &s,
        &s.aws.endpoint,
        "[rules.tick]\non_schedule = \"every 1s\"\nnotify = [\"ops\"]\n",
    )
    .replace(
        &s.topic,
        "arn:aws:sns:us-east-1:123456789012:notopic-does-not-exist",
    );
    let r = Running::start(dir.path(), &text, env());
    let e = r.wait_event("notification_failed", 1, T);
    assert_eq!(e["config_item"], "[notifiers.ops]");
    assert_eq!(e["error_code"], "NotFound");
    assert_no_credentials(&r);
}

#[test]
fn all_checks_due_together_are_batched_500_per_call_and_evaluated_in_slices() {
    let s = setup("batch");
    let proxy = Proxy::start(&s.aws.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let mut checks = String::new();
    for i in 0..1200 {
        checks.push_str(&format!(
            "[checks.c{i}]\nschedule = \"every 1h\"\nnamespace = \"{}\"\nmetric = \"m{i}\"\nperiod = \"5m\"\nabove = 1\n\n",
            s.ns
        ));
    }
    // All on the same epoch-aligned schedule: due at the same instant.
    let text = config(
        dir.path(),
        &s,
        &proxy.url,
        &checks.replace("every 1h", "every 5s"),
    );
    let r = Running::start(dir.path(), &text, env());
    let fetched = r.wait_event("metrics_fetched", 1, T);
    assert_eq!(fetched["checks"], 1200);
    assert_eq!(fetched["calls"], 3, "ceil(1200 / 500) GetMetricData calls");
    r.wait_for("1200 evaluations", T, |l| {
        l.iter().filter(|v| v["event"] == "check_evaluated").count() >= 1200
    });
    // The loop took the batch in two turns (1,000 then 200), and no check was lost or doubled
    // between them.
    let slices: Vec<(u64, u64)> = r
        .events("check_results_taken")
        .iter()
        .take(2)
        .map(|e| {
            (
                e["checks"].as_u64().unwrap(),
                e["remaining"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(slices, [(1000, 200), (200, 0)]);
    let first: std::collections::BTreeSet<String> = r
        .events("check_evaluated")
        .iter()
        .take(1200)
        .map(|e| e["check"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        first.len(),
        1200,
        "every check evaluated once in the first batch"
    );
    assert!(proxy.count("GetMetricData") >= 3);
}

#[test]
fn check_command_exit_codes() {
    let s = setup("cmd");
    let dir = tempfile::tempdir().unwrap();
    s.aws
        .put_metric(&s.ns, "distance", &[("Endpoint", s.ns.as_str())], 0.5);
    let mut text = config(
        dir.path(),
        &s,
        &s.aws.endpoint,
        &drift_check(&s.ns, 1, "Average"),
    );
    text.push_str(&format!(
        "[checks.quiet]\nschedule = \"every 1m\"\nnamespace = \"{}\"\nmetric = \"nothing\"\nabove = 1\nmissing_data = \"breach\"\n",
        s.ns
    ));
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &text).unwrap();
    let p = path.to_str().unwrap();
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let (code, out, err) = mlopsd(&["check", "drift", "--config", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("check drift: 0.5 (Average of"), "{out}");
    assert!(out.contains("vs threshold > 0.1: BREACHING"), "{out}");
    let (code, out, _) = mlopsd(&["check", "quiet", "--config", p]);
    assert_eq!(code, 1);
    assert!(
        out.contains("no data") && out.contains("missing_data = \"breach\""),
        "{out}"
    );
    let (code, _, err) = mlopsd(&["check", "nope", "--config", p]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no check named \"nope\" (defined: drift, quiet)"),
        "{err}"
    );
    // An endpoint that refuses connections: could not evaluate.
    let dead = text.replace(&s.aws.endpoint, "http://127.0.0.1:9");
    std::fs::write(&path, dead).unwrap();
    let (code, _, err) = mlopsd(&["check", "drift", "--config", p]);
    assert_eq!(code, 2);
    assert!(
        err.contains("could not evaluate") && err.contains("ConnectionError"),
        "{err}"
    );
    // Nothing changed on AWS.
    assert!(s.aws.executions(&s.pipeline).is_empty());
}
