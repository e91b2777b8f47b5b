//! The generated IAM policy is enforced, not just printed: a moto server with IAM enforcement
//! (`INITIAL_NO_AUTH_ACTION_COUNT`) runs the daemon's whole scenario (check breach → pipeline
//! start → follow → SNS; a scheduled build; a gate) with an IAM user holding exactly the
//! generated actions. moto checks actions but not resource ARNs for SageMaker, SNS and
//! CodeBuild, so this test widens the resources to "*" (the scoping is checked by parliament,
//! below, and by unit tests). moto names CloudWatch's actions `monitoring:` (its signing name),
//! so those are added beside `cloudwatch:`; and moto's SigV4 check rejects the Rust SDK's SNS
//! `Publish` bodies (SignatureDoesNotMatch) before any permission check, so for SNS the test
//! asserts that no denial occurs rather than that the publish succeeds. Then one action is removed and the daemon must report the
//! denial clearly. The policy also passes the `parliament` IAM linter with no finding.

use crate::support as common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::aws::TestAws;
use common::{mlopsd, venv_bin, Opts, Running};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

struct Moto(Child, String);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A moto server of our own that authenticates every request after the first `free` ones.
fn moto_with_auth(free: usize) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The project's launcher: moto with the AWS behaviour the tests rely on (SPEC, "Testing
    // against AWS without AWS").
    let launcher = format!("{}/scripts/moto_server.py", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new(venv_bin("python"))
        .args([
            launcher.as_str(),
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", free.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start scripts/moto_server.py");
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "scripts/moto_server.py did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto(child, url)
}

fn keys(aws: &TestAws, user: &str, policy: &Value) -> (String, String) {
    let iam = aws_sdk_iam_client(&aws.conf);
    let _ = aws
        .rt
        .block_on(iam.create_user().user_name(user).send())
        .expect("create user");
    set_policy(aws, user, policy);
    let k = aws
        .rt
        .block_on(iam.create_access_key().user_name(user).send())
        .expect("access key");
    let k = k.access_key().unwrap();
    (
        k.access_key_id().to_string(),
        k.secret_access_key().to_string(),
    )
}

fn aws_sdk_iam_client(conf: &aws_types::SdkConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(conf)
}

/// Sets `user`'s policy, as `aws`'s credentials (before enforcement: anyone's; after it: the
/// observer's, which may do anything).
fn set_policy(aws: &TestAws, user: &str, policy: &Value) {
    let iam = aws_sdk_iam_client(&aws.conf);
    aws.rt
        .block_on(
            iam.put_user_policy()
                .user_name(user)
                .policy_name("mlopsd")
                .policy_document(policy.to_string())
                .send(),
        )
        .expect("put user policy");
}

/// The generated policy with every resource widened to "*" (moto checks actions only), and
/// moto's name for CloudWatch actions (`monitoring:`, its signing name) added beside AWS's
/// (`cloudwatch:`).
fn widened(policy: &Value, drop_action: Option<&str>) -> Value {
    let mut p = policy.clone();
    for s in p["Statement"].as_array_mut().unwrap() {
        s["Resource"] = json!("*");
        let mut acts: Vec<Value> = s["Action"].as_array().unwrap().clone();
        for a in s["Action"].as_array().unwrap() {
            if let Some(x) = a.as_str().and_then(|a| a.strip_prefix("cloudwatch:")) {
                acts.push(json!(format!("monitoring:{x}")));
            }
            // AWS authorizes DeleteMessageBatch as sqs:DeleteMessage (the action iam-policy
            // names); moto checks it as an action of its own, so its form of the policy holds
            // both. A policy without sqs:DeleteMessage still lacks both.
            if a.as_str() == Some("sqs:DeleteMessage") {
                acts.push(json!("sqs:DeleteMessageBatch"));
            }
        }
        s["Action"] = json!(acts);
        if let Some(d) = drop_action {
            let acts: Vec<Value> = s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| {
                    a.as_str() != Some(d)
                        && !(d == "sqs:DeleteMessage"
                            && a.as_str() == Some("sqs:DeleteMessageBatch"))
                })
                .cloned()
                .collect();
            s["Action"] = json!(acts);
        }
    }
    p["Statement"] = json!(p["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["Action"].as_array().unwrap().is_empty())
        .cloned()
        .collect::<Vec<_>>());
    p
}

/// `mlopsd iam-policy` for the config at `path` (account 123456789012), parsed.
fn generated_policy(path: &std::path::Path) -> Value {
    let (code, out, err) = mlopsd(&[
        "iam-policy",
        "--config",
        path.to_str().unwrap(),
        "--account-id",
        "123456789012",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The IAM user `user` holding `policy` (moto's form) and an observer allowed everything, then
/// a probe that enforcement is on from here (moto counts 6 requests for the two users, and two
/// spare that the probe uses). The process's credentials become the observer's, whose client
/// is returned with the user's keys.
fn enforced_users(
    aws: &TestAws,
    moto: &str,
    user: &str,
    policy: &Value,
) -> ((String, String), TestAws) {
    let user_keys = keys(aws, user, policy);
    let (obs_key, obs_secret) = keys(
        aws,
        "observer",
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    );
    let probe = TestAws::with_endpoint("iam-probe", moto);
    let _ = probe.rt.block_on(probe.sm.list_pipelines().send());
    let _ = probe.rt.block_on(probe.sm.list_pipelines().send());
    assert!(
        probe.rt.block_on(probe.sm.list_pipelines().send()).is_err(),
        "IAM enforcement is not on: the setup count is off"
    );
    (
        user_keys,
        TestAws::with_credentials("iam-obs", moto, &obs_key, &obs_secret),
    )
}

#[test]
fn generated_policy_is_enforced_and_a_missing_action_is_reported() {
    // Setup requests made before enforcement starts (counted exactly; see below).
    const SETUP_REQUESTS: usize = 20;
    let moto = moto_with_auth(SETUP_REQUESTS);
    let mut aws = TestAws::with_endpoint("iam", &moto.1);
    let pipeline = aws.create_pipeline("train"); // 1
    let project = aws.create_project("ci"); // 2
    let topic = aws.create_topic("alerts"); // 3-6: topic, queue, queue attributes, subscribe
    let group = aws.name("models");
    aws.rt
        .block_on(
            aws.sm
                .create_model_package_group()
                .model_package_group_name(&group)
                .send(),
        )
        .unwrap(); // 7
    aws.create_pending_package(&group, "0.93"); // 8
    let ns = format!("{}/iam", aws.prefix);
    aws.put_metric(&ns, "drift", &[], 0.4); // 9
    let events_queue = aws
        .rt
        .block_on(aws.sqs.create_queue().queue_name(aws.name("events")).send())
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string(); // 10
    let alarm = aws.name("errors");
    aws.create_alarm(&alarm, &ns); // 11
    aws.rt
        .block_on(
            aws.cw
                .set_alarm_state()
                .alarm_name(&alarm)
                .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
                .state_reason("test")
                .send(),
        )
        .unwrap(); // 12

    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &moto.1)
        + &format!(
            r#"[notifiers.ops]
topic_arn = "{topic}"
repeat_interval = "0s"

[pipelines.train]
pipeline_name = "{pipeline}"

[builds.ci]
project_name = "{project}"

[checks.drift]
schedule = "every 1s"
namespace = "{ns}"
metric = "drift"
above = 0.1

[rules.retrain]
on_check = "drift"
start_pipeline = "train"
cooldown = "1h"
notify = ["ops"]

[rules.nightly]
on_schedule = "every 2s"
start_build = "ci"
cooldown = "1h"

[gates.approve]
model_package_group = "{group}"
schedule = "every 2s"
metric = "accuracy"
min = 0.8
notify = ["ops"]

[events]
queue_url = "{events_queue}"

[checks.errors]
alarm = "{alarm}"
schedule = "every 2s"

[rules.page-errors]
on_check = "errors"
notify = ["ops"]
"#,
        );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &text).unwrap();
    let policy = generated_policy(&path);
    let actions = mlopsd::iam::actions(&policy);
    for a in [
        "cloudwatch:GetMetricData",
        "sagemaker:StartPipelineExecution",
        "sagemaker:DescribePipelineExecution",
        "codebuild:StartBuild",
        "codebuild:BatchGetBuilds",
        "sns:Publish",
        "sagemaker:ListModelPackages",
        "sagemaker:UpdateModelPackage",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "cloudwatch:DescribeAlarms",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }

    // The daemon's user (exact actions) and an observer for the test's own reads.
    let (daemon_key, daemon_secret) = keys(&aws, "mlopsd", &widened(&policy, None)); // 13-15
    let (obs_key, obs_secret) = keys(
        &aws,
        "observer",
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    ); // 16-18
       // 19-20: spare requests moto counts for the IAM client setup; enforcement is on from here.
    let probe = TestAws::with_endpoint("iam-probe", &moto.1);
    let _ = probe.rt.block_on(probe.sm.list_pipelines().send());
    let _ = probe.rt.block_on(probe.sm.list_pipelines().send());
    let denied = probe.rt.block_on(probe.sm.list_pipelines().send());
    assert!(
        denied.is_err(),
        "IAM enforcement is not on: the setup count is off"
    );

    let obs = TestAws::with_credentials("iam-obs", &moto.1, &obs_key, &obs_secret);
    let mut obs = obs;
    obs.queue_url = aws.queue_url.clone();

    let opts = Opts {
        env: vec![
            ("AWS_ACCESS_KEY_ID", daemon_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", daemon_secret.clone()),
        ],
        notify: true,
    };
    let r = Running::start(dir.path(), &text, opts);
    r.wait_for("pipeline and build runs to succeed", T, |l| {
        l.iter()
            .any(|v| v["event"] == "run_succeeded" && v["target"] == "pipeline:train")
            && l.iter()
                .any(|v| v["event"] == "run_succeeded" && v["target"] == "build:ci")
    });
    r.wait_event("gate_applied", 1, T);
    // The alarm check reads its alarm (DescribeAlarms); an event on the queue is received
    // and deleted (ReceiveMessage, DeleteMessage): all under the generated policy.
    let e = r.wait_for_event_where("check_evaluated", T, |v| v["check"] == "errors");
    assert_eq!(e["decision"], "breach", "{e}");
    let body = json!({"version": "0", "id": "iam-ev-1", "source": "aws.s3", "detail-type": "Object Created", "account": "123456789012",
                      "time": "2026-12-01T00:00:00Z", "region": "us-east-1", "resources": [], "detail": {}})
    .to_string();
    obs.rt
        .block_on(
            obs.sqs
                .send_message()
                .queue_url(&events_queue)
                .message_body(body)
                .send(),
        )
        .unwrap();
    r.wait_for_event_where("event_ignored", T, |v| v["event_id"] == "iam-ev-1");
    r.wait_for("the message to be deleted", T, |_| {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let a = obs
            .rt
            .block_on(
                obs.sqs
                    .get_queue_attributes()
                    .queue_url(&events_queue)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .unwrap();
        let a = a.attributes().cloned().unwrap_or_default();
        a.values().all(|v| v == "0")
    });
    assert!(
        r.events("events_delete_failed").is_empty(),
        "{:?}",
        r.events("events_delete_failed")
    );
    let out = r.raw_output();
    assert!(
        !out.contains("AccessDenied") && !out.contains("not authorized"),
        "a call was denied with the generated policy:\n{out}"
    );
    // SNS: moto checks SigV4 on query-protocol bodies by re-encoding the form its own way,
    // which differs from the Rust SDK's encoding of a message body, so moto answers
    // SignatureDoesNotMatch before it looks at permissions. Any other failure (AccessDenied
    // above all) fails the test; sns:Publish's presence is checked above and by parliament.
    r.wait_for("a publish attempt", T, |l| {
        l.iter()
            .any(|v| v["event"] == "notification_failed" || v["event"] == "notification_sent")
    });
    for f in r.events("notification_failed") {
        assert_eq!(f["error_code"], "SignatureDoesNotMatch", "{f}");
    }
    assert_eq!(obs.executions(&pipeline).len(), 1);
    assert_eq!(obs.builds(&project).len(), 1);
    drop(r);

    // One generated action removed: the daemon names the denial and the config item.
    set_policy(
        &obs,
        "mlopsd",
        &widened(&policy, Some("sagemaker:StartPipelineExecution")),
    );
    obs.put_metric(&ns, "drift", &[], 0.4);
    let dir2 = tempfile::tempdir().unwrap();
    let text2 = text.replace(
        &dir.path().join("state").display().to_string(),
        &dir2.path().join("state").display().to_string(),
    );
    let opts = Opts {
        env: vec![
            ("AWS_ACCESS_KEY_ID", daemon_key),
            ("AWS_SECRET_ACCESS_KEY", daemon_secret),
        ],
        notify: true,
    };
    let r = Running::start(dir2.path(), &text2, opts);
    let f = r.wait_for_event_where("run_failed", T, |v| v["target"] == "pipeline:train");
    assert_eq!(f["config_item"], "[pipelines.train]");
    assert_eq!(f["error_code"], "AccessDenied", "{f}");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("sagemaker:StartPipelineExecution"),
        "the denial names the action: {f}"
    );
}

#[test]
fn declared_pipeline_actions_are_enforced_and_a_missing_one_is_reported() {
    // Requests before enforcement: two users with keys (3 each) and two spare (see above).
    const SETUP_REQUESTS: usize = 8;
    let moto = moto_with_auth(SETUP_REQUESTS);
    let aws = TestAws::with_endpoint("iam-decl", &moto.1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    let example = std::fs::read_to_string(format!(
        "{}/examples/pipelines/churn-training.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let def = dir.path().join("pipelines/churn.json");
    std::fs::write(&def, &example).unwrap();
    let pipeline = aws.name("churn");
    let text = common::daemon_head(&dir.path().join("state"), &moto.1).replace("max_attempts = 2", "max_attempts = 1")
        + &format!(
            "[pipelines.churn]\npipeline_name = \"{pipeline}\"\ndefinition = \"pipelines/churn.json\"\nrole_arn = \"arn:aws:iam::123456789012:role/SageMakerPipelineRole\"\n"
        );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &text).unwrap();
    let policy = generated_policy(&path);
    let actions = mlopsd::iam::actions(&policy);
    for a in [
        "sagemaker:DescribePipeline",
        "sagemaker:CreatePipeline",
        "sagemaker:UpdatePipeline",
        "sagemaker:AddTags",
        "iam:PassRole",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let ((daemon_key, daemon_secret), obs) =
        enforced_users(&aws, &moto.1, "mlopsd", &widened(&policy, None));
    let opts = || Opts {
        env: vec![
            ("AWS_ACCESS_KEY_ID", daemon_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", daemon_secret.clone()),
        ],
        notify: true,
    };
    // Under the generated policy: create, then an edit updates.
    let r = Running::start(dir.path(), &text, opts());
    r.wait_event("pipeline_created", 1, T);
    let edit = |text: &str| {
        let tmp = def.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &def).unwrap();
    };
    let edited = example.replace("\"max_depth\": \"5\"", "\"max_depth\": \"6\"");
    edit(&edited);
    r.wait_event("pipeline_updated", 1, T);
    let out = r.raw_output();
    assert!(
        !out.contains("AccessDenied") && !out.contains("not authorized"),
        "a call was denied with the generated policy:\n{out}"
    );
    let held = obs
        .rt
        .block_on(obs.sm.describe_pipeline().pipeline_name(&pipeline).send())
        .unwrap();
    assert!(held
        .pipeline_definition()
        .unwrap()
        .contains("\"max_depth\":\"6\""));

    // Without UpdatePipeline: the next edit fails, naming the denial and the action.
    set_policy(
        &obs,
        "mlopsd",
        &widened(&policy, Some("sagemaker:UpdatePipeline")),
    );
    edit(&example);
    let f = r.wait_event("pipeline_apply_failed", 1, T);
    assert_eq!(f["pipeline"], "churn");
    assert_eq!(f["operation"], "UpdatePipeline");
    assert!(f["code"].as_str().unwrap().contains("AccessDenied"), "{f}");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("sagemaker:UpdatePipeline"),
        "the denial names the action: {f}"
    );
}

#[test]
fn deploy_actions_are_enforced_and_a_missing_one_is_reported() {
    // Requests before enforcement: the group, a package made Approved, an alarm in OK (5),
    // two users with keys (3 each) and two spare (see above).
    const SETUP_REQUESTS: usize = 13;
    let moto = moto_with_auth(SETUP_REQUESTS);
    let aws = TestAws::with_endpoint("iam-deploy", &moto.1);
    let group = aws.name("models");
    aws.create_group(&group); // 1
    aws.create_approved_package(&group); // 2, 3
    let alarm = aws.name("5xx");
    aws.create_alarm(&alarm, &aws.name("ns")); // 4
    aws.set_alarm_state(&alarm, "OK"); // 5
    let dir = tempfile::tempdir().unwrap();
    let endpoint = aws.name("churn");
    // (the registry is read every second: no gate or event tells of the next version here)
    let text = common::daemon_head(&dir.path().join("state"), &moto.1)
        .replace("poll_interval = \"1s\"", "poll_interval = \"1s\"\nreconcile_interval = \"1s\"")
        + &format!(
            "[endpoints.churn]\nendpoint_name = \"{endpoint}\"\nmodel_package_group = \"{group}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/SageMakerModelRole\"\ninstance_type = \"ml.m5.large\"\nstrategy = {{ canary = \"10%\", wait = \"0s\" }}\nrollback_alarms = [\"{alarm}\"]\nbake = \"1s\"\non_rollback = \"reject\"\n"
        );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &text).unwrap();
    let policy = generated_policy(&path);
    let ((daemon_key, daemon_secret), obs) =
        enforced_users(&aws, &moto.1, "mlopsd", &widened(&policy, None));
    let opts = Opts {
        env: vec![
            ("AWS_ACCESS_KEY_ID", daemon_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", daemon_secret.clone()),
        ],
        notify: true,
    };
    // Under the generated policy: the endpoint is created and baked (the alarm read).
    let r = Running::start(dir.path(), &text, opts);
    r.wait_for_event_where("deploy_progress", T, |v| v["result"] == "baked");
    let out = r.raw_output();
    assert!(
        !out.contains("AccessDenied") && !out.contains("not authorized"),
        "a call was denied with the generated policy:\n{out}"
    );
    // Without UpdateEndpoint: the next version's deployment fails, naming the action.
    set_policy(
        &obs,
        "mlopsd",
        &widened(&policy, Some("sagemaker:UpdateEndpoint")),
    );
    obs.create_approved_package(&group);
    let f = r.wait_for_event_where("deploy_ended", T, |v| v["result"] == "failed");
    let why = f["reason"].as_str().unwrap_or_default();
    assert!(why.contains("AccessDenied"), "{f}");
    assert!(
        why.contains("sagemaker:UpdateEndpoint"),
        "the denial names the action: {f}"
    );
}

#[test]
fn doctor_reports_a_denied_read_as_forbidden_naming_the_action() {
    // Requests before enforcement: the project (1), two users with their keys (3 each), two
    // spare.
    const SETUP_REQUESTS: usize = 9;
    let moto = moto_with_auth(SETUP_REQUESTS);
    let aws = TestAws::with_endpoint("iam-doctor", &moto.1);
    let project = aws.create_project("ci");
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &moto.1).replace("max_attempts = 2", "max_attempts = 1")
        + &format!(
            "[pipelines.train]\npipeline_name = \"{}\"\n\n[builds.ci]\nproject_name = \"{project}\"\n",
            aws.name("absent")
        );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &text).unwrap();
    let policy = generated_policy(&path);
    let ((key, secret), obs) = enforced_users(&aws, &moto.1, "doctor", &widened(&policy, None));
    let run = || {
        let out = Command::new(common::bin())
            .args(["doctor", "--json", "--config", path.to_str().unwrap()])
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .output()
            .unwrap();
        let j: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), j)
    };
    let find = |j: &Value, kind: &str| {
        j["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind)
            .cloned()
            .unwrap()
    };
    // Under the generated policy every read is allowed: the absent pipeline is missing, the
    // project is there.
    let (code, j) = run();
    assert_eq!(code, Some(1), "{j:#}");
    assert_eq!(find(&j, "pipeline")["status"], "missing", "{j:#}");
    assert_eq!(find(&j, "build")["status"], "ok", "{j:#}");

    // Without codebuild:BatchGetProjects: forbidden, naming the action and the item.
    set_policy(
        &obs,
        "doctor",
        &widened(&policy, Some("codebuild:BatchGetProjects")),
    );
    let (code, j) = run();
    assert_eq!(code, Some(1));
    let b = find(&j, "build");
    assert_eq!(b["status"], "forbidden", "{j:#}");
    assert_eq!(b["name"], "ci");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("codebuild:BatchGetProjects is denied"),
        "{b}"
    );
    assert_eq!(
        find(&j, "pipeline")["status"],
        "missing",
        "the rest is still read"
    );
}

#[test]
fn policy_passes_the_parliament_linter() {
    for cfg in [
        "config/mlops.toml",
        "tests/fuzz_corpus/demo.toml",
        "config/demo.toml",
        "tests/config_cases/declared_ok.toml",
        "tests/config_cases/ha_ok.toml",
    ] {
        let path = format!("{}/{cfg}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(common::bin())
            .args([
                "iam-policy",
                "--config",
                &path,
                "--account-id",
                "123456789012",
                "--report-bucket",
                "ml-reports",
            ])
            .env("MLOPSD_DEMO_STATE", "/tmp/x")
            .env("MLOPSD_DEMO_ENDPOINT", "http://127.0.0.1:1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let policy = String::from_utf8(out.stdout).unwrap();
        let lint = Command::new(venv_bin("parliament"))
            .args(["--string", &policy])
            .stdin(Stdio::null())
            .output()
            .expect("run parliament");
        let findings = String::from_utf8_lossy(&lint.stdout).to_string()
            + &String::from_utf8_lossy(&lint.stderr);
        assert!(
            lint.status.success() && findings.trim().is_empty(),
            "{cfg}: parliament findings:\n{findings}\npolicy:\n{policy}"
        );
    }
    // The linter is not a rubber stamp: a mismatched resource type is a finding.
    let bad = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["codebuild:StartBuild"],"Resource":["arn:aws:sns:us-east-1:123456789012:t"]}]}"#;
    let lint = Command::new(venv_bin("parliament"))
        .args(["--string", bad])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!lint.status.success());
}

#[test]
fn cloudformation_template_passes_cfn_lint() {
    let t = format!(
        "{}/deploy/cloudformation/mlopsd.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(venv_bin("cfn-lint"))
        .arg(&t)
        .stdin(Stdio::null())
        .output()
        .expect("run cfn-lint");
    assert!(
        out.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn account_id_comes_from_sts_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[aws]\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\n[checks.c]\nschedule = \"every 1m\"\nnamespace = \"n\"\nmetric = \"m\"\nabove = 1\n[pipelines.p]\npipeline_name = \"Train\"\n[rules.r]\non_check = \"c\"\nstart_pipeline = \"p\"\n",
            common::aws::endpoint()
        ),
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["iam-policy", "--config", path.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    // moto's account; SageMaker names are lowercased in ARNs.
    assert!(
        p.to_string()
            .contains("arn:aws:sagemaker:eu-west-1:123456789012:pipeline/train"),
        "{p}"
    );
    let (code, _, err) = mlopsd(&[
        "iam-policy",
        "--config",
        path.to_str().unwrap(),
        "--account-id",
        "12345",
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("not a 12-digit AWS account id"), "{err}");
}

#[test]
fn report_check_actions_are_enforced_and_a_denied_read_is_the_checks_error() {
    use crate::drift::{
        create_bucket, create_job, create_schedule, put, record_execution, VIOLATIONS,
    };
    // Requests before enforcement: the pipeline, the bucket, a report, the schedule, the
    // processing job, its violations (6), two users with keys (3 each) and two spare.
    const SETUP_REQUESTS: usize = 14;
    let moto = moto_with_auth(SETUP_REQUESTS);
    let aws = TestAws::with_endpoint("iam-reports", &moto.1);
    let pipeline = aws.create_pipeline("train"); // 1
    let bucket = aws.name("bucket");
    create_bucket(&aws, &bucket); // 2
    put(
        &aws,
        &bucket,
        "evidently/drift.json",
        r#"{"metrics": [{"result": {"share_of_drifted_columns": 0.5}}]}"#,
    ); // 3
    let schedule = aws.name("monitor");
    create_schedule(&aws, &schedule); // 4
    let job = create_job(&aws, &aws.name("job"), &bucket, "monitor/out"); // 5
    put(
        &aws,
        &bucket,
        "monitor/out/constraint_violations.json",
        VIOLATIONS,
    ); // 6
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &moto.1).replace("max_attempts = 2", "max_attempts = 1")
        + &format!(
            "[pipelines.train]\npipeline_name = \"{pipeline}\"\n\n\
             [checks.dq]\nmonitor = \"{schedule}\"\nschedule = \"every 1s\"\n\n\
             [checks.evidently]\nreport = \"s3://{bucket}/evidently/\"\nvalue = \"metrics.0.result.share_of_drifted_columns\"\nabove = 0.3\nschedule = \"every 1s\"\n\n\
             [rules.retrain]\non_check = \"dq\"\nstart_pipeline = \"train\"\nparameters = {{ F = \"{{{{ check.features }}}}\" }}\n"
        );
    let path = dir.path().join("mlops.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = mlopsd(&[
        "iam-policy",
        "--config",
        path.to_str().unwrap(),
        "--account-id",
        "123456789012",
    ]);
    assert_eq!(
        code, 64,
        "a monitor's report bucket must be named (usage): {out}"
    );
    assert!(err.contains("--report-bucket"), "{err}");
    let (code, out, err) = mlopsd(&[
        "iam-policy",
        "--config",
        path.to_str().unwrap(),
        "--account-id",
        "123456789012",
        "--report-bucket",
        &bucket,
    ]);
    assert_eq!(code, 0, "{err}");
    let policy: Value = serde_json::from_str(&out).unwrap();
    let actions = mlopsd::iam::actions(&policy);
    for a in [
        "sagemaker:DescribeMonitoringSchedule",
        "sagemaker:DescribeProcessingJob",
        "s3:ListBucket",
        "s3:GetObject",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let list = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == json!(["s3:ListBucket"]))
        .expect("a ListBucket statement");
    assert_eq!(list["Resource"], format!("arn:aws:s3:::{bucket}"));
    assert_eq!(
        list["Condition"]["StringLike"]["s3:prefix"],
        json!(["evidently/*"]),
        "listing only under the prefix"
    );
    // moto matches no `s3:prefix` condition: the widened form drops it (as it drops the ARNs).
    let for_moto = |drop: Option<&str>| {
        let mut p = widened(&policy, drop);
        for s in p["Statement"].as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("Condition");
        }
        p
    };
    let ((key, secret), obs) = enforced_users(&aws, &moto.1, "mlopsd", &for_moto(None));
    let opts = Opts {
        env: vec![
            ("AWS_ACCESS_KEY_ID", key.clone()),
            ("AWS_SECRET_ACCESS_KEY", secret.clone()),
        ],
        notify: true,
    };
    assert_eq!(
        record_execution(&moto.1, &schedule, "CompletedWithViolations", &job),
        200
    );
    // Under the generated policy: both checks read their reports, the rule starts.
    let r = Running::start(dir.path(), &text, opts);
    r.wait_event("run_started", 1, T);
    r.wait_for_event_where("check_evaluated", T, |v| v["check"] == "evidently");
    let out = r.raw_output();
    assert!(
        !out.contains("AccessDenied") && !out.contains("not authorized"),
        "a call was denied with the generated policy:\n{out}"
    );
    // Without s3:ListBucket: the report check's error says denied, naming the action.
    set_policy(&obs, "mlopsd", &for_moto(Some("s3:ListBucket")));
    let f = r.wait_for_event_where("check_failed", T, |v| v["check"] == "evidently");
    let why = f["error"].as_str().unwrap_or_default();
    assert!(why.starts_with("denied"), "{f}");
    assert!(
        why.contains("s3:ListBucket"),
        "the denial names the action: {f}"
    );
}
