//! Declared pipelines against moto server: the definition file is the truth. Create, update
//! on an edit of the JSON alone (hot reload), no write for an unchanged or reordered file,
//! drift put back or only reported, `mlopsd diff` and its exit codes with no write call,
//! apply failures through the fault proxy, a start held while its pipeline is applied, and
//! kill -9 between deciding an update and sending it. AWS's side is read with the SDK.

use crate::support as common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::aws::TestAws;
use common::proxy::{Fault, Proxy};
use common::{mlopsd, Opts, Running};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const ROLE: &str = "arn:aws:iam::123456789012:role/SageMakerPipelineRole";

fn env() -> Opts<'static> {
    common::aws_env()
}

/// The example definition (examples/pipelines/churn-training.json).
fn example() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipelines/churn-training.json"),
    )
    .expect("read the example definition")
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).expect("JSON")
}

/// A temp dir holding `pipelines/NAME.json` files and the config that declares them.
struct Setup {
    aws: TestAws,
    dir: tempfile::TempDir,
    topic: String,
}

fn setup(prefix: &str) -> Setup {
    let mut aws = TestAws::new(prefix);
    let topic = aws.create_topic("ops");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    Setup { aws, dir, topic }
}

impl Setup {
    fn def_path(&self, base: &str) -> PathBuf {
        self.dir
            .path()
            .join("pipelines")
            .join(format!("{base}.json"))
    }
    /// Writes a definition file by rename, as editors do.
    fn write_def(&self, base: &str, text: &str) {
        let p = self.def_path(base);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }
    /// `[pipelines.BASE]` declared from `pipelines/BASE.json`, for each (base, reconcile).
    fn config(&self, endpoint: &str, pipelines: &[(&str, &str)], extra: &str) -> String {
        let mut s = common::daemon_head(&self.dir.path().join("state"), endpoint)
            .replace("max_attempts = 2", "max_attempts = 1");
        s.push_str(&format!(
            "[notifiers.ops]\ntopic_arn = \"{}\"\nrepeat_interval = \"1ms\"\n\n",
            self.topic
        ));
        for (base, mode) in pipelines {
            s.push_str(&format!(
                "[pipelines.{base}]\npipeline_name = \"{}\"\ndefinition = \"pipelines/{base}.json\"\nrole_arn = \"{ROLE}\"\nreconcile = \"{mode}\"\nnotify = [\"ops\"]\n\n",
                self.aws.name(base)
            ));
        }
        s.push_str(extra);
        s
    }
    fn start(&self, text: &str, opts: Opts<'_>) -> Running {
        Running::start(self.dir.path(), text, opts)
    }
    /// (definition, role) as SageMaker holds them, or `None`.
    fn remote(&self, base: &str) -> Option<(String, String)> {
        let r = self
            .aws
            .rt
            .block_on(
                self.aws
                    .sm
                    .describe_pipeline()
                    .pipeline_name(self.aws.name(base))
                    .send(),
            )
            .ok()?;
        Some((
            r.pipeline_definition().unwrap_or_default().to_string(),
            r.role_arn().unwrap_or_default().to_string(),
        ))
    }
    /// An edit made outside mlopsd (the console, a notebook's `upsert()`).
    fn edit_outside(&self, base: &str, text: &str) {
        self.aws
            .rt
            .block_on(
                self.aws
                    .sm
                    .update_pipeline()
                    .pipeline_name(self.aws.name(base))
                    .pipeline_definition(text)
                    .send(),
            )
            .expect("update outside mlopsd");
    }
    fn tags(&self, base: &str) -> Vec<(String, String)> {
        let arn = self
            .aws
            .rt
            .block_on(
                self.aws
                    .sm
                    .describe_pipeline()
                    .pipeline_name(self.aws.name(base))
                    .send(),
            )
            .expect("describe")
            .pipeline_arn()
            .unwrap()
            .to_string();
        let r = self
            .aws
            .rt
            .block_on(self.aws.sm.list_tags().resource_arn(arn).send())
            .expect("list tags");
        r.tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

fn writes(p: &Proxy) -> usize {
    p.count("CreatePipeline") + p.count("UpdatePipeline")
}

fn edited(text: &str) -> String {
    let t = text.replace("\"max_depth\": \"5\"", "\"max_depth\": \"6\"");
    assert_ne!(t, text, "the example has max_depth 5");
    t
}

#[test]
fn creates_tagged_then_an_edit_of_the_json_alone_updates_and_keeps_check_state() {
    let s = setup("decl-create");
    let proxy = Proxy::start(&s.aws.endpoint);
    s.write_def("churn", &example());
    // A check that breaches on every evaluation and never fires (for = 1000): its breach
    // count shows whether a reload kept its state.
    s.aws
        .put_metric("decl/ns", "drift", &[("Endpoint", "e")], 0.9);
    let extra = "[checks.drift]\nschedule = \"every 1s\"\nnamespace = \"decl/ns\"\nmetric = \"drift\"\ndimensions = { Endpoint = \"e\" }\nstatistic = \"Maximum\"\nperiod = \"1h\"\nabove = 0.5\nfor = 1000\n";
    let text = s.config(&proxy.url, &[("churn", "apply")], extra);
    let mut d = s.start(&text, env());
    let created = d.wait_event("pipeline_created", 1, T);
    assert_eq!(created["pipeline"], "churn");
    let (def, role) = s.remote("churn").expect("the pipeline exists in SageMaker");
    assert_eq!(
        json(&def),
        json(&example()),
        "SageMaker holds the file's definition"
    );
    assert_eq!(role, ROLE);
    assert!(
        s.tags("churn")
            .contains(&("managed-by".to_string(), "mlopsd".to_string())),
        "tagged managed-by = mlopsd: {:?}",
        s.tags("churn")
    );
    assert_eq!(proxy.count("CreatePipeline"), 1);
    let body = proxy.bodies("CreatePipeline").pop().unwrap_or_default();
    assert!(
        body.contains("\"ClientRequestToken\":\"mlopsd-"),
        "the create carries a client request token: {body}"
    );
    s.aws
        .notes_until(T, |n| n.iter().any(|n| n.event() == "pipeline_created"));

    // Wait for a few breaches, then edit the JSON only.
    d.wait_for("3 breaches", T, |l| {
        l.iter()
            .any(|v| v["event"] == "check_evaluated" && v["breach_count"].as_u64() >= Some(3))
    });
    let before = d.events("check_evaluated").len();
    let last_count = d.events("check_evaluated")[before - 1]["breach_count"]
        .as_u64()
        .unwrap();
    s.write_def("churn", &edited(&example()));
    let updated = d.wait_event("pipeline_updated", 1, T);
    assert_eq!(updated["reason"], "definition changed", "{updated}");
    assert!(
        updated["changes"]
            .as_str()
            .unwrap_or_default()
            .contains("Steps[1].Arguments.HyperParameters.max_depth: \"5\" → \"6\""),
        "{updated}"
    );
    let (def, _) = s.remote("churn").unwrap();
    assert_eq!(json(&def), json(&edited(&example())));
    assert_eq!(proxy.count("UpdatePipeline"), 1);
    let reload = d.wait_event("config_reload_accepted", 1, T);
    assert_eq!(reload["trigger"], "file", "{reload}");
    // The check kept its breach count across the reload.
    d.wait_for("an evaluation after the reload", T, |l| {
        l.iter().filter(|v| v["event"] == "check_evaluated").count() > before + 1
    });
    let after: Vec<u64> = d
        .events("check_evaluated")
        .iter()
        .skip(before)
        .map(|v| v["breach_count"].as_u64().unwrap())
        .collect();
    assert!(
        after.iter().all(|c| *c > last_count),
        "breach counts after the reload {after:?} continue from {last_count}"
    );
    let n = s
        .aws
        .notes_until(T, |n| n.iter().any(|n| n.event() == "pipeline_updated"));
    let note = n.iter().find(|n| n.event() == "pipeline_updated").unwrap();
    assert!(note.body.contains("max_depth"), "{}", note.body);

    // Key order and whitespace only: the file reloads as unchanged, nothing is written.
    let mut v = json(&edited(&example()));
    let obj = v.as_object_mut().unwrap();
    let steps = obj.remove("Steps").unwrap();
    let mut reordered = serde_json::Map::new();
    reordered.insert("Steps".into(), steps);
    for (k, x) in obj.iter() {
        reordered.insert(k.clone(), x.clone());
    }
    let compact = Value::Object(reordered).to_string();
    s.write_def("churn", &compact);
    d.wait_event("config_reload_unchanged", 1, T);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(proxy.count("UpdatePipeline"), 1, "no update for key order");

    // A restart with the file unchanged: one DescribePipeline, no write.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success());
    drop(d);
    let p2 = Proxy::start(&s.aws.endpoint);
    let d2 = s.start(&s.config(&p2.url, &[("churn", "apply")], extra), env());
    d2.wait_event("pipeline_in_sync", 1, T);
    assert_eq!(p2.count("DescribePipeline"), 1);
    assert_eq!(writes(&p2), 0, "an unchanged file sends no write call");
    let st = common::http_get_json(&d2.http_addr(), "/status");
    let p = st["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "churn")
        .cloned()
        .unwrap();
    assert_eq!(p["declared"]["state"], "in_sync", "{p}");
    assert_eq!(p["declared"]["definition"], "pipelines/churn.json");
}

#[test]
fn drift_is_put_back_with_apply_and_only_reported_once_with_report() {
    let s = setup("decl-drift");
    let proxy = Proxy::start(&s.aws.endpoint);
    s.write_def("a", &example());
    s.write_def("b", &example());
    let text = s
        .config(&proxy.url, &[("a", "apply"), ("b", "report")], "")
        .replace("[notifiers.ops]", "[daemon.x]\n[notifiers.ops]");
    // reconcile every second (the default is 10m)
    let text = text.replace("[daemon.x]\n", "").replace(
        "poll_interval = \"1s\"",
        "poll_interval = \"1s\"\nreconcile_interval = \"1s\"",
    );
    let d = s.start(&text, env());
    d.wait_for("both created", T, |l| {
        l.iter()
            .filter(|v| v["event"] == "pipeline_created")
            .count()
            == 2
    });
    let outside = edited(&example());
    s.edit_outside("a", &outside);
    s.edit_outside("b", &outside);

    let drift_a = d.wait_for_event_where("pipeline_drifted", T, |v| v["pipeline"] == "a");
    assert_eq!(drift_a["action"], "put back");
    assert!(
        drift_a["changes"]
            .as_str()
            .unwrap()
            .contains("max_depth: \"6\" → \"5\""),
        "{drift_a}"
    );
    let back = d.wait_for_event_where("pipeline_updated", T, |v| v["pipeline"] == "a");
    assert_eq!(back["reason"], "put back after drift");
    assert_eq!(
        json(&s.remote("a").unwrap().0),
        json(&example()),
        "a is put back"
    );

    let drift_b = d.wait_for_event_where("pipeline_drifted", T, |v| v["pipeline"] == "b");
    assert_eq!(drift_b["action"], "reported");
    // Several more reconciles: b is reported once and left as it was edited.
    let seen = proxy.count("DescribePipeline");
    d.wait_for("three more reconciles", T, |_| {
        proxy.count("DescribePipeline") >= seen + 6
    });
    let b_drifts = d
        .events("pipeline_drifted")
        .iter()
        .filter(|v| v["pipeline"] == "b")
        .count();
    assert_eq!(b_drifts, 1, "reported once");
    assert_eq!(
        json(&s.remote("b").unwrap().0),
        json(&outside),
        "b is not put back"
    );
    assert!(
        !d.events("pipeline_updated")
            .iter()
            .any(|v| v["pipeline"] == "b"),
        "report never writes"
    );
    let notes = s.aws.notes_until(T, |n| {
        n.iter().filter(|n| n.event() == "pipeline_drifted").count() >= 2
    });
    let drifted: Vec<&str> = notes
        .iter()
        .filter(|n| n.event() == "pipeline_drifted")
        .map(|n| n.attrs["rule"].as_str())
        .collect();
    assert!(
        drifted.contains(&"a") && drifted.contains(&"b"),
        "{drifted:?}"
    );
    let st = common::http_get_json(&d.http_addr(), "/status");
    let b = st["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "b")
        .cloned()
        .unwrap();
    assert_eq!(b["declared"]["state"], "drifted", "{b}");
    // The status page shows it too.
    let page = common::http_get(&d.http_addr(), "/");
    assert!(
        page.contains("Declared pipelines") && page.contains("drifted"),
        "{page}"
    );

    // Deleted outside mlopsd: a drift too, and `apply` creates it again.
    s.aws
        .rt
        .block_on(
            s.aws
                .sm
                .delete_pipeline()
                .pipeline_name(s.aws.name("a"))
                .client_request_token("delete-outside-token-0000000000000")
                .send(),
        )
        .expect("delete outside mlopsd");
    let gone = d.wait_for_event_where("pipeline_drifted", T, |v| {
        v["pipeline"] == "a"
            && v["changes"]
                .as_str()
                .unwrap_or_default()
                .contains("deleted")
    });
    assert_eq!(gone["action"], "put back");
    let again = d.wait_for_event_where("pipeline_created", T, |v| {
        v["pipeline"] == "a" && v["reason"] == "put back after drift"
    });
    assert_eq!(again["pipeline_name"], s.aws.name("a").as_str());
    assert_eq!(json(&s.remote("a").unwrap().0), json(&example()));
}

#[test]
fn diff_shows_create_update_and_in_sync_with_exit_codes_and_writes_nothing() {
    let s = setup("decl-diff");
    let proxy = Proxy::start(&s.aws.endpoint);
    s.write_def("churn", &example());
    let cfg = s.dir.path().join("mlops.toml");
    std::fs::write(&cfg, s.config(&proxy.url, &[("churn", "apply")], "")).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["diff", "--config", &cfg];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(common::bin())
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // Absent: create, exit 1.
    let (code, out, err) = run(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("[pipelines.churn]") && out.contains(": create"),
        "{out}"
    );
    let (code, out, _) = run(&["--json"]);
    assert_eq!(code, 1);
    assert_eq!(json(&out)["pipelines"][0]["action"], "create");
    assert!(s.remote("churn").is_none(), "diff created nothing");

    // Created outside with the same definition (other key order): in sync, exit 0.
    let compact = json(&example()).to_string();
    s.aws
        .rt
        .block_on(
            s.aws
                .sm
                .create_pipeline()
                .pipeline_name(s.aws.name("churn"))
                .pipeline_definition(&compact)
                .role_arn(ROLE)
                .client_request_token("diff-test-create-token-000000000000")
                .send(),
        )
        .unwrap();
    let (code, out, err) = run(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": in sync"), "{out}");

    // Changed outside: update with each path, AWS's value → the file's, exit 1.
    s.edit_outside("churn", &edited(&example()));
    let (code, out, _) = run(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(": update, 1 change(s):"), "{out}");
    assert!(
        out.contains("Steps[1].Arguments.HyperParameters.max_depth: \"6\" → \"5\""),
        "{out}"
    );
    let (_, out, _) = run(&["--json"]);
    let c = &json(&out)["pipelines"][0];
    assert_eq!(c["action"], "update");
    assert_eq!(
        c["changes"][0]["path"],
        "Steps[1].Arguments.HyperParameters.max_depth"
    );
    assert_eq!(c["changes"][0]["aws"], "6");
    assert_eq!(c["changes"][0]["file"], "5");

    // No write call ever reached AWS.
    assert_eq!(
        proxy.count("DescribePipeline"),
        5,
        "one DescribePipeline per diff"
    );
    assert_eq!(writes(&proxy), 0, "diff changes nothing");

    // AWS unreachable: exit 2 and a line saying so.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    std::fs::write(
        &cfg,
        s.config(
            &format!("http://127.0.0.1:{port}"),
            &[("churn", "apply")],
            "",
        ),
    )
    .unwrap();
    let (code, out, err) = run(&[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("cannot compare") && out.contains("DescribePipeline"),
        "{out}"
    );
}

#[test]
fn apply_failures_are_told_and_retried_and_do_not_stop_the_daemon_or_other_pipelines() {
    let s = setup("decl-fault");
    let proxy = Proxy::start(&s.aws.endpoint);
    s.write_def("one", &example());
    s.write_def("two", &example());
    let throttle = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let denied = r#"{"__type":"AccessDeniedException","message":"User is not authorized to perform: sagemaker:UpdatePipeline"}"#;
    // The first create fails (throttled): one pipeline fails, the other is created.
    proxy.fault("CreatePipeline", Fault::Status(400, throttle.into()), 1);
    s.aws
        .put_metric("decl/fault", "m", &[("Endpoint", "e")], 0.1);
    let extra = "[checks.alive]\nschedule = \"every 1s\"\nnamespace = \"decl/fault\"\nmetric = \"m\"\ndimensions = { Endpoint = \"e\" }\nstatistic = \"Maximum\"\nperiod = \"1h\"\nabove = 0.5\n";
    let text = s
        .config(&proxy.url, &[("one", "apply"), ("two", "apply")], extra)
        .replace(
            "poll_interval = \"1s\"",
            "poll_interval = \"1s\"\nreconcile_interval = \"2s\"",
        );
    let d = s.start(&text, env());
    let failed = d.wait_event("pipeline_apply_failed", 1, T);
    assert_eq!(failed["code"], "ThrottlingException", "{failed}");
    assert_eq!(failed["operation"], "CreatePipeline");
    d.wait_event("pipeline_created", 1, T);
    // The failed one is created at the next reconcile.
    d.wait_event("pipeline_created", 2, T);
    assert!(s.remote("one").is_some() && s.remote("two").is_some());
    let notes = s.aws.notes_until(T, |n| {
        n.iter().any(|n| n.event() == "pipeline_apply_failed")
    });
    let nf = notes
        .iter()
        .find(|n| n.event() == "pipeline_apply_failed")
        .unwrap();
    assert!(nf.body.contains("ThrottlingException"), "{}", nf.body);

    // An edit meets a 500, then AccessDenied: told each time, applied once AWS takes it.
    proxy.fault(
        "UpdatePipeline",
        Fault::Status(500, "internal error".into()),
        1,
    );
    proxy.fault("UpdatePipeline", Fault::Status(400, denied.into()), 1);
    s.write_def("one", &edited(&example()));
    let f2 = d.wait_event("pipeline_apply_failed", 2, T);
    let f3 = d.wait_event("pipeline_apply_failed", 3, T);
    let codes = [f2["code"].as_str().unwrap(), f3["code"].as_str().unwrap()];
    assert!(codes.contains(&"AccessDeniedException"), "{codes:?}");
    assert_eq!(f3["operation"], "UpdatePipeline");
    let up = d.wait_for_event_where("pipeline_updated", T, |v| v["pipeline"] == "one");
    assert_eq!(
        up["reason"], "definition changed",
        "a retried edit is still an edit: {up}"
    );
    assert_eq!(json(&s.remote("one").unwrap().0), json(&edited(&example())));
    // The daemon ran on: the check kept being evaluated throughout.
    let evals = d.events("check_evaluated").len();
    d.wait_for("more evaluations", T, |l| {
        l.iter().filter(|v| v["event"] == "check_evaluated").count() > evals + 1
    });
    let m = common::http_get(&d.http_addr(), "/metrics");
    assert!(
        m.contains("mlopsd_pipeline_applies_total{pipeline=\"one\",result=\"failed\"}")
            || m.contains("mlopsd_pipeline_applies_total{result=\"failed\",pipeline=\"one\"}"),
        "{m}"
    );
    assert!(
        m.contains("mlopsd_pipeline_in_sync{pipeline=\"one\"} 1"),
        "{m}"
    );
}

#[test]
fn a_start_decided_while_its_pipeline_is_applied_goes_out_after_the_apply() {
    let s = setup("decl-hold");
    let proxy = Proxy::start(&s.aws.endpoint);
    s.write_def("train", &example());
    // The create takes 3 s; the rule fires within the first second.
    proxy.fault("CreatePipeline", Fault::Delay(Duration::from_secs(3)), 1);
    let extra = "[rules.kick]\non_schedule = \"every 1s\"\nstart_pipeline = \"train\"\nparameters = { InputData = \"s3://b/new/\", AccuracyThreshold = \"0.9\" }\ncooldown = \"1h\"\n";
    let d = s.start(&s.config(&proxy.url, &[("train", "apply")], extra), env());
    d.wait_event("start_held", 1, T);
    assert_eq!(
        proxy.count("StartPipelineExecution"),
        0,
        "not sent while the create is in flight"
    );
    let started = d.wait_event("run_started", 1, T);
    let logs = d.logs();
    let pos = |name: &str| logs.iter().position(|v| v["event"] == name).unwrap();
    assert!(
        pos("pipeline_created") < pos("run_started"),
        "created, then started"
    );
    assert!(started["arn"]
        .as_str()
        .unwrap()
        .contains(&s.aws.name("train")));
    assert!(
        d.events("start_failed").is_empty(),
        "the start found its pipeline"
    );
    let ex = s.aws.executions(&s.aws.name("train"));
    assert_eq!(ex.len(), 1, "{ex:?}");
}

#[test]
fn kill_between_deciding_an_update_and_sending_it_is_finished_once_on_restart() {
    let s = setup("decl-crash");
    s.write_def("churn", &example());
    let text = s.config(&s.aws.endpoint, &[("churn", "apply")], "");
    let mut d = s.start(&text, env());
    d.wait_event("pipeline_created", 1, T);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success());
    drop(d);

    // Edit, then start with a failpoint right after the update is decided and stored.
    s.write_def("churn", &edited(&example()));
    let proxy = Proxy::start(&s.aws.endpoint);
    let text = s.config(&proxy.url, &[("churn", "apply")], "");
    let mut opts = env();
    opts.env
        .push(("MLOPSD_FAILPOINT", "after_apply_decided".into()));
    let mut d = s.start(&text, opts);
    let st = d.wait_exit(T);
    assert!(!st.success(), "killed at the failpoint");
    assert_eq!(
        proxy.count("UpdatePipeline"),
        0,
        "nothing sent before the kill"
    );
    assert_eq!(json(&s.remote("churn").unwrap().0), json(&example()));
    drop(d);

    // Restart: the stored decision is finished as the same update, not seen as a drift.
    let d = s.start(&text, env());
    let up = d.wait_event("pipeline_updated", 1, T);
    assert_eq!(up["reason"], "definition changed", "{up}");
    assert!(d.events("pipeline_drifted").is_empty(), "not a drift");
    assert_eq!(proxy.count("UpdatePipeline"), 1);
    assert_eq!(
        json(&s.remote("churn").unwrap().0),
        json(&edited(&example()))
    );
    drop(d);

    // Killed after AWS took the update, before it was recorded: the restart confirms and
    // tells it, and sends nothing again.
    s.write_def("churn", &example());
    let mut opts = env();
    opts.env
        .push(("MLOPSD_FAILPOINT", "after_apply_sent".into()));
    let mut d = s.start(&text, opts);
    assert!(!d.wait_exit(T).success());
    assert_eq!(proxy.count("UpdatePipeline"), 2);
    drop(d);
    let d = s.start(&text, env());
    let up = d.wait_event("pipeline_updated", 1, T);
    assert_eq!(
        up["reason"], "confirmed: an earlier call had landed",
        "{up}"
    );
    d.wait_event("pipeline_in_sync", 1, T);
    assert_eq!(proxy.count("UpdatePipeline"), 2, "not sent again");
    assert!(d.events("pipeline_drifted").is_empty());
    let notes = s.aws.notes_until(T, |n| {
        n.iter().filter(|n| n.event() == "pipeline_updated").count() >= 2
    });
    assert!(
        notes
            .iter()
            .filter(|n| n.event() == "pipeline_updated")
            .count()
            >= 2
    );
}

#[test]
fn validate_names_the_definition_file_and_points_at_the_toml_key() {
    let s = setup("decl-validate");
    std::fs::write(
        s.def_path("bad"),
        "{\"Version\": \"2020-12-01\",\n \"Parameters\": [],\n \"Steps\": [}\n",
    )
    .unwrap();
    let text = s.config("http://127.0.0.1:1", &[("bad", "apply")], "");
    let cfg = s.dir.path().join("mlops.toml");
    std::fs::write(&cfg, &text).unwrap();
    let (code, _, err) = mlopsd(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    let line = text
        .lines()
        .position(|l| l.starts_with("definition = "))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "{}:{line}:14: definition \"pipelines/bad.json\" is not valid JSON: line 3, column 12",
            cfg.display()
        )),
        "{err}"
    );
    // The example validates.
    std::fs::write(s.def_path("bad"), example()).unwrap();
    let (code, out, err) = mlopsd(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}
