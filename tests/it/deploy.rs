//! Deploy (SPEC "Deploy") against moto server, extended at launch by scripts/moto_server.py
//! with `UpdateEndpoint` and endpoint status over time (Creating/Updating → InService, or
//! RollingBack → InService on the old config when a rollback alarm is ALARM in moto's
//! CloudWatch). AWS's side is read with the SDK; write calls are counted by the fault proxy.
//! The endpoint is created for the first Approved version, updated with a canary for the
//! next, rolled back by SageMaker (and the version rejected) for a third; a bake alarm rolled
//! back by mlopsd; promotion with a required tag; dry run; kill -9 at each step; faults.

use crate::support as common;

use std::time::Duration;

use common::aws::TestAws;
use common::proxy::{Fault, Proxy};
use common::{Opts, Running};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const MODEL_ROLE: &str = "arn:aws:iam::123456789012:role/SageMakerModelRole";

struct Setup {
    aws: TestAws,
    dir: tempfile::TempDir,
    topic: String,
    group: String,
    alarm: String,
}

fn setup(prefix: &str) -> Setup {
    let mut aws = TestAws::new(prefix);
    let topic = aws.create_topic("ops");
    let group = aws.name("group");
    aws.create_group(&group);
    let alarm = aws.name("5xx");
    aws.create_alarm(&alarm, &aws.name("ns"));
    aws.set_alarm_state(&alarm, "OK");
    // The models' role (shared by the tests on one moto server: made once).
    let iam = aws_sdk_iam::Client::new(&aws.conf);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"sagemaker.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    if let Err(e) = aws.rt.block_on(
        iam.create_role()
            .role_name("SageMakerModelRole")
            .assume_role_policy_document(trust)
            .send(),
    ) {
        let code = aws_sdk_iam::error::ProvideErrorMetadata::code(&e)
            .unwrap_or_default()
            .to_string();
        assert_eq!(code, "EntityAlreadyExists", "create role: {e:?}");
    }
    Setup {
        aws,
        dir: tempfile::tempdir().unwrap(),
        topic,
        group,
        alarm,
    }
}

impl Setup {
    /// An Approved version of the group; its ARN.
    fn approved(&self) -> String {
        self.aws.create_approved_package(&self.group)
    }
    fn status_of(&self, arn: &str) -> (String, String) {
        let d = self
            .aws
            .rt
            .block_on(
                self.aws
                    .sm
                    .describe_model_package()
                    .model_package_name(arn)
                    .send(),
            )
            .expect("describe package");
        (
            d.model_approval_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            d.approval_description().unwrap_or_default().to_string(),
        )
    }
    /// The endpoint's (status, config), or `None`.
    fn endpoint(&self, name: &str) -> Option<(String, String)> {
        let d = self
            .aws
            .rt
            .block_on(self.aws.sm.describe_endpoint().endpoint_name(name).send())
            .ok()?;
        Some((
            d.endpoint_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            d.endpoint_config_name().unwrap_or_default().to_string(),
        ))
    }
    fn config_exists(&self, name: &str) -> bool {
        self.aws
            .rt
            .block_on(
                self.aws
                    .sm
                    .describe_endpoint_config()
                    .endpoint_config_name(name)
                    .send(),
            )
            .is_ok()
    }
    /// The daemon's config: one endpoint block `name` (its SageMaker endpoint the same,
    /// prefixed), with `extra` lines in the block and `more` after it.
    fn config(&self, aws_endpoint: &str, name: &str, extra: &str, more: &str) -> String {
        let mut s = common::daemon_head(&self.dir.path().join("state"), aws_endpoint).replace(
            "poll_interval = \"1s\"",
            "poll_interval = \"500ms\"\nreconcile_interval = \"1s\"",
        );
        s.push_str(&format!(
            "[notifiers.ops]\ntopic_arn = \"{}\"\nrepeat_interval = \"1h\"\n\n",
            self.topic
        ));
        s.push_str(&format!(
            "[endpoints.{name}]\nendpoint_name = \"{}\"\nmodel_package_group = \"{}\"\nexecution_role_arn = \"{MODEL_ROLE}\"\ninstance_type = \"ml.m5.large\"\ninstance_count = 2\nnotify = [\"ops\"]\n{extra}\n{more}",
            self.endpoint_name(name),
            self.group,
        ));
        s
    }
    fn endpoint_name(&self, name: &str) -> String {
        self.aws.name(name)
    }
    fn start(&self, text: &str) -> Running {
        Running::start(self.dir.path(), text, common::aws_env())
    }
}

/// The `deploy_progress` / `deploy_ended` event of `endpoint` with this result (and version).
fn result_is(v: &Value, result: &str, version: u64) -> bool {
    v["result"] == result && v["version"] == version
}

fn wait_result(d: &Running, event: &str, result: &str, version: u64) -> Value {
    d.wait_for_event_where(event, T, |v| result_is(v, result, version))
}

#[test]
fn create_then_canary_update_then_sagemaker_rollback_rejects_and_never_loops() {
    let s = setup("deploy-main");
    let proxy = Proxy::start(&common::aws::endpoint());
    let v1 = s.approved();
    let block = format!(
        "strategy = {{ canary = \"10%\", wait = \"0s\" }}\nrollback_alarms = [\"{}\"]\non_rollback = \"reject\"\n",
        s.alarm
    );
    let d = s.start(&s.config(&proxy.url, "churn", &block, ""));
    let ep = s.endpoint_name("churn");

    // The first Approved version: the endpoint is created.
    wait_result(&d, "deploy_progress", "baked", 1);
    let (status, config1) = s.endpoint(&ep).expect("endpoint created");
    assert_eq!(status, "InService");
    assert!(config1.starts_with(&format!("{ep}-v1-")), "{config1}");
    assert_eq!(proxy.count("CreateEndpoint"), 1);
    assert_eq!(proxy.count("UpdateEndpoint"), 0);
    let tags = s.aws.rt.block_on(
        s.aws
            .sm
            .list_tags()
            .resource_arn(format!(
                "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{config1}"
            ))
            .send(),
    );
    assert!(
        tags.expect("tags")
            .tags()
            .iter()
            .any(|t| t.key() == Some("managed-by") && t.value() == Some("mlopsd")),
        "the config mlopsd made is tagged"
    );

    // A second approval: an UpdateEndpoint with a canary and the rollback alarm.
    let _v2 = s.approved();
    wait_result(&d, "deploy_progress", "baked", 2);
    let (status, config2) = s.endpoint(&ep).unwrap();
    assert_eq!(status, "InService");
    assert!(config2.starts_with(&format!("{ep}-v2-")), "{config2}");
    let bodies = proxy.bodies("UpdateEndpoint");
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let b: Value = serde_json::from_str(&bodies[0]).unwrap();
    let routing = &b["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"];
    assert_eq!(routing["Type"], "CANARY", "{b}");
    assert_eq!(routing["CanarySize"]["Value"], 10, "{b}");
    assert_eq!(
        b["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"][0]["AlarmName"],
        s.alarm.as_str()
    );

    // What operators see: /status, `mlopsd status`, /metrics.
    let addr = d.http_addr();
    let st = common::http_get_json(&addr, "/status");
    let e = &st["endpoints"][0];
    assert_eq!(e["name"], "churn", "{st}");
    assert_eq!(e["state"], "baked", "{e}");
    assert_eq!(e["deployment_version"], 2, "{e}");
    assert_eq!(e["config"], config2.as_str(), "{e}");
    let (code, out, _) = common::mlopsd(&["status", "--addr", &addr]);
    assert_eq!(code, 0);
    assert!(
        out.contains("ENDPOINT") && out.contains("baked v2"),
        "{out}"
    );
    let metrics = common::http_get(&addr, "/metrics");
    assert!(
        metrics.contains("mlopsd_deployments_total{endpoint=\"churn\",result=\"baked\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mlopsd_endpoint_version{endpoint=\"churn\"} 2"),
        "{metrics}"
    );
    let page = common::http_get(&addr, "/");
    assert!(
        page.contains("<h2>Endpoints</h2>"),
        "the page has a row per endpoint"
    );

    // A third: the rollback alarm goes to ALARM while it deploys; SageMaker rolls back.
    let v3 = s.approved();
    d.wait_for_event_where("deploy_progress", T, |v| {
        v["result"] == "started" && v["version"] == 3
    });
    s.aws.set_alarm_state(&s.alarm, "ALARM");
    let ended = wait_result(&d, "deploy_ended", "rolled_back", 3);
    assert!(
        ended["reason"].as_str().unwrap_or("").contains(&s.alarm),
        "{ended}"
    );
    let (status, config) = s.endpoint(&ep).unwrap();
    assert_eq!(
        (status.as_str(), config.as_str()),
        ("InService", config2.as_str()),
        "back on v2"
    );
    // on_rollback = "reject": the version is Rejected with the reason, so v2 is the newest.
    let t0 = std::time::Instant::now();
    while s.status_of(&v3).0 != "Rejected" && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, why) = s.status_of(&v3);
    assert_eq!(st, "Rejected");
    assert!(why.contains("rolled back"), "{why}");
    assert_eq!(s.status_of(&v1).0, "Approved");

    // Never loop: several reconciles later, no new update was sent.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        proxy.count("UpdateEndpoint"),
        2,
        "one update for v2, one for v3"
    );
    assert_eq!(proxy.count("CreateEndpoint"), 1);
    // v1's config and model are gone (older than the previous), v2's stay.
    assert!(s.config_exists(&config2));
    assert!(!s.config_exists(&config1), "v1's config is cleaned up");

    // One correlation id per deployment, each step told (never held back by the notifier's
    // repeat_interval of an hour: each deployment's steps are news), and the rollback told.
    let notes = s.aws.notes_until(T, |n| {
        n.iter().any(|x| x.event() == "deploy_rolled_back")
            && n.iter().filter(|x| x.event() == "deploy_started").count() == 3
    });
    let baked: Vec<_> = notes
        .iter()
        .filter(|n| n.event() == "deploy_baked")
        .collect();
    assert_eq!(baked.len(), 2, "v1 and v2 baked: {notes:#?}");
    assert_ne!(
        baked[0].attrs["correlation_id"],
        baked[1].attrs["correlation_id"]
    );
    let rb = notes
        .iter()
        .find(|n| n.event() == "deploy_rolled_back")
        .unwrap();
    assert!(rb.body.contains("sagemaker"), "{}", rb.body);
    let started3 = d
        .events("deploy_progress")
        .into_iter()
        .find(|v| v["result"] == "started" && v["version"] == 3)
        .unwrap();
    assert_eq!(
        rb.attrs.get("correlation_id").map(String::as_str),
        started3["correlation_id"].as_str()
    );
}

#[test]
fn an_alarm_during_the_bake_is_rolled_back_by_mlopsd_and_chains_on_failure() {
    let s = setup("deploy-bake");
    let proxy = Proxy::start(&common::aws::endpoint());
    s.approved();
    let block = format!("rollback_alarms = [\"{}\"]\nbake = \"1h\"\n", s.alarm);
    let more = "[rules.page]\non_failure = \"endpoint:churn\"\nnotify = [\"ops\"]\n\n[rules.tested]\non_success = \"endpoint:churn\"\nnotify = [\"ops\"]\n";
    // v1 is created; without an earlier config its bake can only fail, so it bakes first
    // with a short bake: the block is edited after.
    let short = format!("rollback_alarms = [\"{}\"]\nbake = \"1s\"\n", s.alarm);
    let d = s.start(&s.config(&proxy.url, "churn", &short, more));
    wait_result(&d, "deploy_progress", "baked", 1);
    let ep = s.endpoint_name("churn");
    let (_, config1) = s.endpoint(&ep).unwrap();
    common::replace_by_rename(&d.config, &s.config(&proxy.url, "churn", &block, more));
    d.wait_event("config_reload_accepted", 1, T);

    s.approved();
    wait_result(&d, "deploy_progress", "succeeded", 2);
    let (_, config2) = s.endpoint(&ep).unwrap();
    assert!(config2.contains("-v2-"));
    // on_success chained (before the bake).
    d.wait_for_event_where("rule_fired", T, |v| v["rule"] == "tested");
    s.aws.set_alarm_state(&s.alarm, "ALARM");
    let ended = wait_result(&d, "deploy_ended", "rolled_back", 2);
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("during the bake"),
        "{ended}"
    );
    let (status, config) = s.endpoint(&ep).unwrap();
    assert_eq!(
        (status.as_str(), config.as_str()),
        ("InService", config1.as_str())
    );
    d.wait_for_event_where("rule_fired", T, |v| v["rule"] == "page");
    let notes = s
        .aws
        .notes_until(T, |n| n.iter().any(|x| x.event() == "deploy_rolled_back"));
    let rb = notes
        .iter()
        .find(|n| n.event() == "deploy_rolled_back")
        .unwrap();
    assert!(rb.body.contains("mlopsd"), "{}", rb.body);
    // The rollback was all at once, without alarms; v2 is not deployed again (notify only).
    let bodies = proxy.bodies("UpdateEndpoint");
    assert_eq!(bodies.len(), 2, "v2, then the rollback: {bodies:?}");
    let first: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        first["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"],
        "ALL_AT_ONCE",
        "the default strategy: {first}"
    );
    let b: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(b["EndpointConfigName"], config1.as_str());
    assert!(
        b["DeploymentConfig"]["AutoRollbackConfiguration"].is_null(),
        "{b}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(proxy.count("UpdateEndpoint"), 2, "never loop");
    d.wait_for_event_where("deploy_skipped", T, |v| v["version"] == 2);
}

#[test]
fn promote_from_waits_for_a_bake_and_the_tag() {
    let s = setup("deploy-promote");
    let proxy = Proxy::start(&common::aws::endpoint());
    let v1 = s.approved();
    let prod = format!(
        "[endpoints.prod]\nendpoint_name = \"{}\"\npromote_from = \"staging\"\nrequire_tag = {{ \"mlopsd-promote\" = \"prod\" }}\nmodel_package_group = \"{}\"\nexecution_role_arn = \"{MODEL_ROLE}\"\ninstance_type = \"ml.m5.large\"\nnotify = [\"ops\"]\n",
        s.endpoint_name("prod"),
        s.group
    );
    let d = s.start(&s.config(&proxy.url, "staging", "", &prod));
    wait_result(&d, "deploy_progress", "baked", 1);
    d.wait_for_event_where("deploy_waiting", T, |v| {
        v["endpoint"] == "prod" && v["reason"].as_str().unwrap_or("").contains("tag")
    });
    assert!(
        s.endpoint(&s.endpoint_name("prod")).is_none(),
        "not without the tag"
    );
    s.aws
        .rt
        .block_on(
            s.aws
                .sm
                .add_tags()
                .resource_arn(&v1)
                .tags(
                    aws_sdk_sagemaker::types::Tag::builder()
                        .key("mlopsd-promote")
                        .value("prod")
                        .build(),
                )
                .send(),
        )
        .expect("tag");
    d.wait_for_event_where("deploy_progress", T, |v| {
        v["endpoint"] == "prod" && v["result"] == "baked"
    });
    let (_, c) = s.endpoint(&s.endpoint_name("prod")).unwrap();
    assert!(c.contains("-v1-"), "{c}");
}

#[test]
fn dry_run_decides_and_calls_nothing_that_changes_aws() {
    let s = setup("deploy-dry");
    let proxy = Proxy::start(&common::aws::endpoint());
    s.approved();
    let d = s.start(&s.config(&proxy.url, "churn", "dry_run = true\n", ""));
    let e = d.wait_event("deploy_dry_run", 1, T);
    assert_eq!(e["operation"], "create");
    std::thread::sleep(Duration::from_secs(3));
    for op in [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "UpdateEndpoint",
    ] {
        assert_eq!(proxy.count(op), 0, "{op}");
    }
    assert_eq!(d.events("deploy_dry_run").len(), 1, "logged once");
}

/// kill -9 at `point`, then a restart: the same deployment finishes, with one model, one
/// config and one create (or update) in all.
fn crash_at(point: &str, update: bool) {
    let s = setup(&format!("deploy-crash-{}", point.replace('_', "")));
    let proxy = Proxy::start(&common::aws::endpoint());
    s.approved();
    let block = format!("rollback_alarms = [\"{}\"]\nbake = \"2s\"\n", s.alarm);
    let text = s.config(&proxy.url, "churn", &block, "");
    if update {
        let d = s.start(&text);
        wait_result(&d, "deploy_progress", "baked", 1);
        drop(d);
        s.approved();
    }
    let v = if update { 2 } else { 1 };
    let mut opts: Opts<'_> = common::aws_env();
    opts.env
        .push(("MLOPSD_FAILPOINT", format!("{point}:churn")));
    let mut d = Running::start(s.dir.path(), &text, opts);
    let st = d.wait_exit(T);
    assert!(!st.success(), "killed at {point}");
    drop(d);
    let d = s.start(&text);
    wait_result(&d, "deploy_progress", "baked", v);
    let started: Vec<Value> = d
        .events("deploy_progress")
        .into_iter()
        .filter(|e| e["result"] == "started")
        .collect();
    assert!(
        started.is_empty(),
        "the restart resumed, not decided again: {started:?}"
    );
    let ep = s.endpoint_name("churn");
    let (status, config) = s.endpoint(&ep).unwrap();
    assert_eq!(status, "InService");
    assert!(config.contains(&format!("-v{v}-")), "{config}");
    let (models, configs) = (
        proxy.count("CreateModel"),
        proxy.count("CreateEndpointConfig"),
    );
    let want = if update { 2 } else { 1 };
    assert!(models <= want, "{point}: {models} CreateModel calls");
    assert!(
        configs <= want,
        "{point}: {configs} CreateEndpointConfig calls"
    );
    if update {
        assert_eq!(proxy.count("UpdateEndpoint"), 1, "{point}: one update");
    } else {
        assert_eq!(proxy.count("CreateEndpoint"), 1, "{point}: one create");
    }
}

#[test]
fn kill_after_deciding_resumes_the_same_deployment() {
    crash_at("after_deploy_decision", true);
}

#[test]
fn kill_after_the_model_resumes_the_same_deployment() {
    crash_at("after_model", true);
}

#[test]
fn kill_after_the_config_resumes_the_same_deployment() {
    crash_at("after_config", false);
}

#[test]
fn kill_after_the_update_call_resumes_without_a_second_update() {
    crash_at("after_deploy_sent", true);
}

#[test]
fn kill_during_the_bake_resumes_the_bake() {
    crash_at("during_bake", true);
}

/// Faults on the calls that change the endpoint: throttling and a 5xx are sent again after a
/// describe; a create or update that landed but whose answer was lost is found, not repeated.
#[test]
fn faults_on_create_and_update_never_make_a_second_call_land() {
    let s = setup("deploy-faults");
    let proxy = Proxy::start(&common::aws::endpoint());
    s.approved();
    let text = s.config(&proxy.url, "churn", "", "");
    // The create's answer is lost after it landed.
    proxy.fault("CreateEndpoint", Fault::Truncate, 1);
    let d = s.start(&text);
    wait_result(&d, "deploy_progress", "baked", 1);
    assert_eq!(
        proxy.count("CreateEndpoint"),
        1,
        "found by a describe, not created again"
    );
    // Throttled, then a 500, then landed with its answer lost.
    proxy.fault(
        "UpdateEndpoint",
        Fault::Status(
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into(),
        ),
        1,
    );
    s.approved();
    wait_result(&d, "deploy_progress", "baked", 2);
    proxy.fault(
        "UpdateEndpoint",
        Fault::Status(
            500,
            r#"{"__type":"InternalFailure","message":"boom"}"#.into(),
        ),
        1,
    );
    s.approved();
    wait_result(&d, "deploy_progress", "baked", 3);
    proxy.fault("UpdateEndpoint", Fault::Truncate, 1);
    s.approved();
    wait_result(&d, "deploy_progress", "baked", 4);
    let ep = s.endpoint_name("churn");
    assert!(s.endpoint(&ep).unwrap().1.contains("-v4-"));
    // v2: throttled + sent; v3: 500 + sent; v4: one (landed, answer lost).
    assert_eq!(proxy.count("UpdateEndpoint"), 5);
    assert_eq!(proxy.faults("UpdateEndpoint"), 3);
}

/// `diff`, `doctor` and `plan` on an endpoint block, before and after the daemon deployed.
#[test]
fn diff_doctor_and_plan_tell_the_endpoint() {
    let s = setup("deploy-cli");
    s.approved();
    let block = format!("rollback_alarms = [\"{}\"]\n", s.alarm);
    let text = s.config(&s.aws.endpoint, "churn", &block, "");
    let path = s.dir.path().join("mlops.toml");
    std::fs::write(&path, &text).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = common::mlopsd(&["diff", "--config", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("[endpoints.churn]: deploy v1 (serves nothing: the endpoint is created)"),
        "{out}"
    );
    let (code, out, err) = common::mlopsd(&["doctor", "--config", p, "--json"]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    let ep = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "endpoint")
        .cloned()
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(ep["status"], "ok", "{ep}");
    assert!(ep["detail"].as_str().unwrap().contains("absent"), "{ep}");
    assert_eq!(code, 0, "{out}");
    // A misspelt rollback alarm is missing.
    let bad = text.replace(&s.alarm, "no-such-alarm");
    std::fs::write(&path, &bad).unwrap();
    let (code, out, _) = common::mlopsd(&["doctor", "--config", p]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no-such-alarm"), "{out}");
    // A misspelt role is missing.
    let bad = text.replace("SageMakerModelRole", "SageMakerModelRoel");
    std::fs::write(&path, &bad).unwrap();
    let (code, out, _) = common::mlopsd(&["doctor", "--config", p]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no IAM role arn:aws:iam::123456789012:role/SageMakerModelRoel"),
        "{out}"
    );
    std::fs::write(&path, &text).unwrap();
    let (code, out, _) = common::mlopsd(&["plan", "--config", p, "--json", "--count", "1"]);
    assert_eq!(code, 0);
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert!(plan["endpoints"][0]["description"]
        .as_str()
        .unwrap()
        .contains("newest Approved version"));

    let d = s.start(&text);
    wait_result(&d, "deploy_progress", "baked", 1);
    let (code, out, _) = common::mlopsd(&["diff", "--config", p, "--json"]);
    assert_eq!(code, 0, "{out}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["endpoints"][0]["action"], "in_sync", "{j}");
    assert_eq!(j["endpoints"][0]["served"], 1, "{j}");
}

/// Someone else's update of the endpoint is waited for, never fought: mlopsd deploys the new
/// version once the endpoint is InService again, with one UpdateEndpoint of its own.
#[test]
fn an_endpoint_busy_with_someone_elses_change_is_waited_for() {
    let s = setup("deploy-busy");
    let proxy = Proxy::start(&common::aws::endpoint());
    let v1 = s.approved();
    let rolling = "strategy = { rolling = \"50%\", wait = \"0s\" }\n";
    let d = s.start(&s.config(&proxy.url, "churn", rolling, ""));
    wait_result(&d, "deploy_progress", "baked", 1);
    let ep = s.endpoint_name("churn");
    // A hand-made config of v1, and an update to it from outside mlopsd.
    let theirs = s.aws.name("theirs");
    let sm = &s.aws.sm;
    s.aws
        .rt
        .block_on(
            sm.create_model()
                .model_name(&theirs)
                .execution_role_arn(MODEL_ROLE)
                .primary_container(
                    aws_sdk_sagemaker::types::ContainerDefinition::builder()
                        .model_package_name(&v1)
                        .build(),
                )
                .send(),
        )
        .expect("their model");
    s.aws
        .rt
        .block_on(
            sm.create_endpoint_config()
                .endpoint_config_name(&theirs)
                .production_variants(
                    aws_sdk_sagemaker::types::ProductionVariant::builder()
                        .variant_name("theirs")
                        .model_name(&theirs)
                        .instance_type(
                            aws_sdk_sagemaker::types::ProductionVariantInstanceType::MlM5Large,
                        )
                        .initial_instance_count(1)
                        .build(),
                )
                .send(),
        )
        .expect("their config");
    s.aws
        .rt
        .block_on(
            sm.update_endpoint()
                .endpoint_name(&ep)
                .endpoint_config_name(&theirs)
                .send(),
        )
        .expect("their update");
    s.approved();
    d.wait_for_event_where("deploy_waiting", T, |v| {
        v["reason"].as_str().unwrap_or("").contains("never fought")
    });
    wait_result(&d, "deploy_progress", "baked", 2);
    assert_eq!(
        proxy.count("UpdateEndpoint"),
        1,
        "mlopsd's own update, once"
    );
    let b: Value = serde_json::from_str(&proxy.bodies("UpdateEndpoint")[0]).unwrap();
    let rolling = &b["DeploymentConfig"]["RollingUpdatePolicy"];
    assert_eq!(
        rolling["MaximumBatchSize"]["Type"], "CAPACITY_PERCENT",
        "{b}"
    );
    assert_eq!(rolling["MaximumBatchSize"]["Value"], 50, "{b}");
    assert!(
        b["DeploymentConfig"]["BlueGreenUpdatePolicy"].is_null(),
        "{b}"
    );
    assert!(s.endpoint(&ep).unwrap().1.contains("-v2-"));
    // Their config, in use until then, is not mlopsd's to delete.
    assert!(s.config_exists(&theirs));
}

fn envelope(id: &str, detail_type: &str, detail: Value) -> String {
    serde_json::json!({"version": "0", "id": id, "source": "aws.sagemaker", "detail-type": detail_type,
        "account": "123456789012", "time": "2026-12-01T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": detail})
    .to_string()
}

/// With `[events]` and polling an hour apart: a package state change event makes the block
/// read the registry, and the endpoint events make mlopsd describe the endpoint (hints: the
/// verdict is still DescribeEndpoint's).
#[test]
fn package_and_endpoint_events_drive_a_deployment_without_polling() {
    let s = setup("deploy-events");
    let queue = s
        .aws
        .rt
        .block_on(
            s.aws
                .sqs
                .create_queue()
                .queue_name(s.aws.name("events"))
                .send(),
        )
        .expect("queue")
        .queue_url()
        .unwrap()
        .to_string();
    let send = |body: String| {
        s.aws
            .rt
            .block_on(
                s.aws
                    .sqs
                    .send_message()
                    .queue_url(&queue)
                    .message_body(body)
                    .send(),
            )
            .expect("send");
    };
    s.approved();
    let text = s
        .config(
            &s.aws.endpoint,
            "churn",
            "",
            &format!("[events]\nqueue_url = \"{queue}\"\n"),
        )
        .replace(
            "poll_interval = \"500ms\"\nreconcile_interval = \"1s\"",
            "poll_interval = \"1h\"\nreconcile_interval = \"1h\"",
        );
    let d = s.start(&text);
    let ep = s.endpoint_name("churn");
    // Read at start: the endpoint is created; nothing describes it for an hour …
    d.wait_for_event_where("deploy_progress", T, |v| v["result"] == "started");
    std::thread::sleep(Duration::from_secs(4));
    assert!(d
        .events("deploy_progress")
        .iter()
        .all(|v| v["result"] == "started"));
    // … until its event arrives.
    send(envelope(
        "ep-1",
        "SageMaker Endpoint State Change",
        serde_json::json!({"EndpointName": ep, "EndpointStatus": "IN_SERVICE"}),
    ));
    wait_result(&d, "deploy_progress", "baked", 1);
    // A new version: the package event makes the block read the registry now.
    s.approved();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !d.events("deploy_progress")
            .iter()
            .any(|v| v["version"] == 2),
        "read before the event?"
    );
    send(envelope(
        "pkg-2",
        "SageMaker Model Package State Change",
        serde_json::json!({"ModelPackageGroupName": s.group, "ModelApprovalStatus": "Approved"}),
    ));
    d.wait_for_event_where("deploy_progress", T, |v| {
        v["result"] == "started" && v["version"] == 2
    });
    std::thread::sleep(Duration::from_secs(3));
    send(envelope(
        "ep-2",
        "SageMaker Endpoint Deployment State Change",
        serde_json::json!({"EndpointName": ep}),
    ));
    wait_result(&d, "deploy_progress", "baked", 2);
    assert!(s.endpoint(&ep).unwrap().1.contains("-v2-"));
}

/// A gate's approval makes the endpoint block read the registry at once (the reconcile is an
/// hour away), and the update shifts traffic linearly.
#[test]
fn a_gates_approval_deploys_at_once_with_linear_traffic() {
    let s = setup("deploy-gate");
    let proxy = Proxy::start(&common::aws::endpoint());
    s.approved();
    let gate = format!(
        "[gates.approval]\nmodel_package_group = \"{}\"\nschedule = \"every 1s\"\nmetric = \"accuracy\"\nmin = 0.8\n",
        s.group
    );
    let text = s
        .config(
            &proxy.url,
            "churn",
            "strategy = { linear = \"25%\", wait = \"0s\" }\n",
            &gate,
        )
        .replace("reconcile_interval = \"1s\"", "reconcile_interval = \"1h\"");
    let d = s.start(&text);
    wait_result(&d, "deploy_progress", "baked", 1);
    s.aws.create_pending_package(&s.group, "0.93");
    d.wait_event("gate_applied", 1, T);
    let read = d.wait_for_event_where("endpoint_read", T, |v| v["why"] == "gate_approved");
    assert_eq!(read["endpoint"], "churn");
    wait_result(&d, "deploy_progress", "baked", 2);
    let b: Value = serde_json::from_str(&proxy.bodies("UpdateEndpoint")[0]).unwrap();
    let routing = &b["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"];
    assert_eq!(routing["Type"], "LINEAR", "{b}");
    assert_eq!(routing["LinearStepSize"]["Value"], 25, "{b}");
    assert_eq!(routing["LinearStepSize"]["Type"], "CAPACITY_PERCENT", "{b}");
}

/// A block removed by a reload while its create is in flight: the call that was sent is still
/// followed to its end (as a removed rule's runs are), and nothing new is decided for it.
#[test]
fn a_removed_block_still_follows_its_call_to_the_end() {
    let s = setup("deploy-removed");
    s.approved();
    let text = s.config(&s.aws.endpoint, "churn", "", "");
    let d = s.start(&text);
    d.wait_for_event_where("deploy_following", T, |v| v["status"] == "Creating");
    let without = text[..text.find("[endpoints.churn]").unwrap()].to_string();
    common::replace_by_rename(&d.config, &without);
    d.wait_event("config_reload_accepted", 1, T);
    wait_result(&d, "deploy_progress", "baked", 1);
    let (status, config) = s.endpoint(&s.endpoint_name("churn")).unwrap();
    assert_eq!(status, "InService");
    assert!(config.contains("-v1-"));
    s.approved();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !d.events("deploy_progress")
            .iter()
            .any(|v| v["version"] == 2),
        "nothing decided for a removed block"
    );
}

/// A block removed while its deployment bakes: the bake waits for the block (its alarms left
/// with it); nothing is judged rolled back.
#[test]
fn a_removed_block_leaves_its_bake_alone() {
    let s = setup("deploy-removed-bake");
    s.approved();
    let block = format!("rollback_alarms = [\"{}\"]\nbake = \"1h\"\n", s.alarm);
    let text = s.config(&s.aws.endpoint, "churn", &block, "");
    let d = s.start(&text);
    wait_result(&d, "deploy_progress", "succeeded", 1);
    let without = text[..text.find("[endpoints.churn]").unwrap()].to_string();
    common::replace_by_rename(&d.config, &without);
    d.wait_event("config_reload_accepted", 1, T);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        d.events("deploy_ended").is_empty(),
        "{:?}",
        d.events("deploy_ended")
    );
    assert!(s
        .endpoint(&s.endpoint_name("churn"))
        .unwrap()
        .1
        .contains("-v1-"));
}

/// One deployment at a time: a version approved while another deploys goes next, as soon as
/// that one ends (the reconcile is an hour away).
#[test]
fn a_version_approved_meanwhile_goes_next() {
    let s = setup("deploy-next");
    s.approved();
    let text = s
        .config(&s.aws.endpoint, "churn", "", "")
        .replace("reconcile_interval = \"1s\"", "reconcile_interval = \"1h\"");
    let d = s.start(&text);
    d.wait_for_event_where("deploy_following", T, |v| v["status"] == "Creating");
    s.approved();
    wait_result(&d, "deploy_progress", "baked", 1);
    wait_result(&d, "deploy_progress", "baked", 2);
    let read = d.wait_for_event_where("endpoint_read", T, |v| v["why"] == "deployment_ended");
    assert_eq!(read["endpoint"], "churn");
}
