//! Preflight against moto server: `mlopsd doctor` gives each resource the config names its
//! exact status (a misspelt pipeline, a missing topic, a dimension that returns no data, and
//! one good item of each kind), exit codes 0 / 1 / 2, one readable line when the endpoint is
//! closed or there are no credentials; the daemon shows the same problems on `/status` before
//! any firing while the good items run as usual.

use crate::support as common;

use std::time::Duration;

use common::aws::TestAws;
use common::{Opts, Running};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn env() -> Opts<'static> {
    common::aws_env()
}

struct World {
    aws: TestAws,
    pipeline: String,
    project: String,
    topic: String,
    group: String,
    alarm: String,
    queue: String,
    ns: String,
}

fn world(prefix: &str) -> World {
    let mut aws = TestAws::new(prefix);
    let pipeline = aws.create_pipeline("train");
    let project = aws.create_project("ci");
    let topic = aws.create_topic("ops");
    let group = aws.name("models");
    aws.rt
        .block_on(
            aws.sm
                .create_model_package_group()
                .model_package_group_name(&group)
                .send(),
        )
        .unwrap();
    let ns = format!("{}/doctor", aws.prefix);
    aws.put_metric(&ns, "drift", &[("Endpoint", "prod")], 0.05);
    let alarm = aws.name("errors");
    aws.create_alarm(&alarm, &ns);
    let queue = aws
        .rt
        .block_on(aws.sqs.create_queue().queue_name(aws.name("events")).send())
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    World {
        aws,
        pipeline,
        project,
        topic,
        group,
        alarm,
        queue,
        ns,
    }
}

impl World {
    /// One good item of each kind; `bad` adds the misspelt and missing ones.
    fn config(&self, dir: &std::path::Path, endpoint: &str, bad: bool) -> String {
        let mut s = common::daemon_head(&dir.join("state"), endpoint)
            .replace("max_attempts = 2", "max_attempts = 1");
        s.push_str(&format!(
            "[events]\nqueue_url = \"{}\"\n\n[notifiers.ops]\ntopic_arn = \"{}\"\n\n[pipelines.train]\npipeline_name = \"{}\"\n\n[builds.ci]\nproject_name = \"{}\"\n\n\
             [checks.drift]\nschedule = \"every 1s\"\nnamespace = \"{}\"\nmetric = \"drift\"\ndimensions = {{ Endpoint = \"prod\" }}\nstatistic = \"Maximum\"\nperiod = \"1h\"\nabove = 0.5\n\n\
             [checks.errors]\nalarm = \"{}\"\n\n[gates.approve]\nmodel_package_group = \"{}\"\nschedule = \"rate(1 day)\"\nmetric = \"accuracy\"\nmin = 0.8\n\n\
             [rules.retrain]\non_check = \"drift\"\nstart_pipeline = \"train\"\nnotify = [\"ops\"]\n\n",
            self.queue, self.topic, self.pipeline, self.project, self.ns, self.alarm, self.group
        ));
        if bad {
            s.push_str(&format!(
                "[notifiers.pager]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:{}-no-such-topic\"\n\n\
                 [pipelines.typo]\npipeline_name = \"{}-trian\"\n\n\
                 [checks.wrong-dimension]\nschedule = \"cron(0 0 1 1 ? 2199)\"\nnamespace = \"{}\"\nmetric = \"drift\"\ndimensions = {{ Endpoint = \"production\" }}\nstatistic = \"Maximum\"\nperiod = \"1h\"\nabove = 0.5\n\n\
                 [rules.retrain-typo]\non_check = \"wrong-dimension\"\nstart_pipeline = \"typo\"\nnotify = [\"pager\"]\n\n",
                self.aws.prefix, self.pipeline, self.ns
            ));
        }
        s
    }
}

fn doctor(
    cfg: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
    clear: bool,
) -> (i32, String, String) {
    let mut c = std::process::Command::new(common::bin());
    c.arg("doctor").arg("--config").arg(cfg).args(args);
    if clear {
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
    } else {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
    }
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn status_of(json: &Value, kind: &str, name: &str) -> (String, String) {
    let r = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == kind && r["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in {json:#}"));
    (
        r["status"].as_str().unwrap().to_string(),
        r["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
fn doctor_names_each_problem_and_passes_the_good_items() {
    let w = world("doc");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mlops.toml");
    std::fs::write(&cfg, w.config(dir.path(), &w.aws.endpoint, true)).unwrap();

    let (code, out, err) = doctor(&cfg, &["--json"], &[], false);
    assert_eq!(code, 1, "{out}{err}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["identity"]["account"], "123456789012", "{j:#}");
    assert!(j["identity"]["arn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:"));
    assert_eq!(j["identity"]["region"], "us-east-1");
    let want = [
        ("pipeline", "train", "ok"),
        ("pipeline", "typo", "missing"),
        ("build", "ci", "ok"),
        ("notifier", "ops", "ok"),
        ("notifier", "pager", "missing"),
        ("check", "drift", "ok"),
        ("check", "errors", "ok"),
        ("check", "wrong-dimension", "no_data"),
        ("gate", "approve", "ok"),
        ("events", "events", "ok"),
    ];
    for (kind, name, status) in want {
        let (s, d) = status_of(&j, kind, name);
        assert_eq!(s, status, "{kind} {name}: {d}");
    }
    assert_eq!(j["resources"].as_array().unwrap().len(), want.len());
    let (_, d) = status_of(&j, "check", "wrong-dimension");
    assert!(
        d.contains("not with dimensions {Endpoint=production}") && d.contains("Endpoint=prod"),
        "says which dimension is wrong: {d}"
    );
    let (_, d) = status_of(&j, "pipeline", "typo");
    assert!(
        d.contains(&format!(
            "no SageMaker pipeline named \"{}-trian\"",
            w.pipeline
        )),
        "{d}"
    );

    // The text form: one line per resource, the config item and the reason.
    let (code, out, _) = doctor(&cfg, &[], &[], false);
    assert_eq!(code, 1);
    assert!(out.starts_with("identity: arn:aws:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("missing") && l.contains("[pipelines.typo]")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("no_data") && l.contains("[checks.wrong-dimension]")),
        "{out}"
    );

    // All good: exit 0.
    std::fs::write(&cfg, w.config(dir.path(), &w.aws.endpoint, false)).unwrap();
    let (code, out, err) = doctor(&cfg, &[], &[], false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("7 resource(s): 7 ok, 0 with a problem"),
        "{out}"
    );
}

#[test]
fn unreachable_aws_and_missing_credentials_are_one_readable_line() {
    let w = world("doc-down");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mlops.toml");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = format!("http://127.0.0.1:{port}");
    std::fs::write(&cfg, w.config(dir.path(), &url, false)).unwrap();
    let (code, out, err) = doctor(&cfg, &[], &[], false);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    assert!(
        out.contains(&format!("cannot connect to {url}")) && out.contains("Connection refused"),
        "names the endpoint and the OS error: {out}"
    );
    for dump in ["DispatchFailure", "ConnectorError", "source:"] {
        assert!(
            !out.contains(dump) && !err.contains(dump),
            "no SDK debug form: {out}{err}"
        );
    }

    // No credentials anywhere: no AWS_* variables, no profile files, IMDS unreachable.
    std::fs::write(&cfg, w.config(dir.path(), &w.aws.endpoint, false)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let envs = [
        ("HOME", home.path().to_str().unwrap()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_METADATA_SERVICE_TIMEOUT", "1"),
        ("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1"),
    ];
    let (code, out, err) = doctor(&cfg, &[], &envs, true);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    for said in [
        "NoCredentials",
        "the environment",
        "web identity",
        "instance role",
        "AWS_PROFILE",
    ] {
        assert!(out.contains(said), "{said} in {out}");
    }
    for dump in [
        "DispatchFailure",
        "ProviderError",
        "IMDS session token: service error",
    ] {
        assert!(!out.contains(dump), "no SDK debug form: {out}");
    }
    // `mlopsd check` says the same, on one line.
    let out = std::process::Command::new(common::bin())
        .args(["check", "drift", "--config", cfg.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.trim().lines().count() == 1
            && text.contains("check drift: could not evaluate: cloudwatch GetMetricData failed: NoCredentials: no AWS credentials"),
        "{text}"
    );
}

#[test]
fn the_daemon_shows_preflight_problems_before_any_firing_and_runs_the_good_items() {
    let w = world("doc-daemon");
    let dir = tempfile::tempdir().unwrap();
    let text = w.config(dir.path(), &w.aws.endpoint, true);
    // The good check breaches (value 0.05 vs below 0.5 would not; make it breach).
    let text = text.replace(
        "above = 0.5\n\n[checks.errors]",
        "above = 0.01\n\n[checks.errors]",
    );
    let r = Running::start(dir.path(), &text, env());
    let addr = r.http_addr();
    r.wait_event("preflight_done", 1, T);
    let st = common::http_get_json(&addr, "/status");
    let problems = st["preflight"]["problems"].as_array().unwrap();
    let items: Vec<&str> = problems
        .iter()
        .map(|p| p["item"].as_str().unwrap())
        .collect();
    assert!(items.contains(&"[pipelines.typo]"), "{items:?}");
    assert!(items.contains(&"[notifiers.pager]"), "{items:?}");
    assert!(items.contains(&"[checks.wrong-dimension]"), "{items:?}");
    assert_eq!(problems.len(), 3, "{problems:#?}");
    // Beside the item: the rule that would start the misspelt pipeline says so before it fires.
    let rule = st["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "retrain-typo")
        .unwrap();
    assert_eq!(rule["firings"], 0);
    let rp: Vec<&str> = rule["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["item"].as_str().unwrap())
        .collect();
    assert_eq!(rp, ["[pipelines.typo]", "[notifiers.pager]"]);
    let check = st["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wrong-dimension")
        .unwrap();
    assert_eq!(check["preflight"]["status"], "no_data", "{check}");
    assert_eq!(
        check["last_evaluated"],
        Value::Null,
        "before its first evaluation"
    );
    let m = common::http_get(&addr, "/metrics");
    assert!(m.contains("mlopsd_preflight_problems 3"), "{m}");
    let page = common::http_get(&addr, "/");
    assert!(
        page.contains("3 problem(s)") && page.contains("[pipelines.typo]"),
        "{page}"
    );
    // Each problem is logged once.
    assert_eq!(r.events("preflight_failed").len(), 3);

    // The good items run as usual: the good rule starts the good pipeline.
    let started = r.wait_event("run_started", 1, T);
    assert_eq!(started["rule"], "retrain");
    assert_eq!(w.aws.executions(&w.pipeline).len(), 1);

    // A reload that changes one good item reads only it: nothing is logged again.
    common::replace_by_rename(&r.config, &text.replace("min = 0.8", "min = 0.7"));
    r.wait_event("preflight_done", 2, T);
    assert_eq!(r.events("preflight_failed").len(), 3, "logged once");
    let st = common::http_get_json(&addr, "/status");
    assert_eq!(st["preflight"]["problems"].as_array().unwrap().len(), 3);
}
