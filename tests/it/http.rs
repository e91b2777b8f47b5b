//! The operator surface against the running daemon: /metrics, /healthz, /status, the status
//! page (also rendered in headless Chromium to a screenshot that must not be blank), and
//! `mlopsd status`.

use crate::support as common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::aws::TestAws;
use common::{mlopsd, Opts, Running};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

fn env() -> Opts<'static> {
    common::aws_env()
}

/// Plain HTTP GET: (status, content-type, body).
fn get(addr: &str, path: &str) -> (u16, String, String) {
    let (code, body) = mlopsd::cli::status::get(addr, path).expect("daemon answers");
    // Content type from a second request with the header kept.
    let raw = raw_get(addr, path);
    let ct = raw
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (code, ct, body)
}

fn raw_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").next().unwrap_or("").to_string()
}

struct World {
    _dir: tempfile::TempDir,
    r: Running,
    addr: String,
    aws: TestAws,
}

/// A daemon with two checks (one breaching), a rule that retrains, a gate; after the loop ran.
fn world(prefix: &str) -> World {
    let mut aws = TestAws::new(prefix);
    let pipeline = aws.create_pipeline("train");
    let topic = aws.create_topic("alerts");
    let ns = format!("{}/m", aws.prefix);
    aws.put_metric(&ns, "drift", &[], 0.3);
    aws.put_metric(&ns, "latency", &[], 40.0);
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &aws.endpoint)
        + &format!(
            r#"[notifiers.ops]
topic_arn = "{topic}"

[pipelines.train]
pipeline_name = "{pipeline}"

[checks.drift]
schedule = "every 1s"
namespace = "{ns}"
metric = "drift"
above = 0.1

[checks.latency]
schedule = "every 1s"
namespace = "{ns}"
metric = "latency"
statistic = "Maximum"
below = 25

[rules.retrain]
on_check = "drift"
start_pipeline = "train"
cooldown = "1h"
notify = ["ops"]

[gates.approve]
model_package_group = "{prefix}-none"
schedule = "every 1h"
metric = "accuracy"
min = 0.8
"#,
        );
    let r = Running::start(dir.path(), &text, env());
    let addr = r.http_addr();
    r.wait_event("run_succeeded", 1, T);
    r.wait_for("several evaluations", T, |l| {
        l.iter().filter(|v| v["event"] == "check_evaluated").count() >= 8
    });
    World {
        _dir: dir,
        r,
        addr,
        aws,
    }
}

#[test]
fn metrics_healthz_status_and_page() {
    let w = world("http");
    let (code, ct, body) = get(&w.addr, "/metrics");
    assert_eq!(code, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    for want in [
        "mlopsd_config_last_reload_successful 1",
        "mlopsd_config_last_reload_success_timestamp_seconds ",
        "mlopsd_check_evaluations_total{check=\"drift\"}",
        "mlopsd_check_breaches_total{check=\"drift\"}",
        "mlopsd_check_value{check=\"drift\"} 0.3",
        "mlopsd_check_threshold{check=\"latency\"} 25.0",
        "mlopsd_check_breaching{check=\"drift\"} 1",
        "mlopsd_rule_firings_total{rule=\"retrain\"} 1",
        "mlopsd_rule_suppressions_total{rule=\"retrain\",reason=\"cooldown\"}",
        "mlopsd_runs_started_total{kind=\"pipeline\",target=\"train\"} 1",
        "mlopsd_runs_succeeded_total{kind=\"pipeline\",target=\"train\"} 1",
        "mlopsd_runs_active{kind=\"pipeline\",target=\"train\"} 0",
        "mlopsd_aws_requests_total{service=\"cloudwatch\",operation=\"GetMetricData\"}",
        "mlopsd_aws_requests_total{service=\"sagemaker\",operation=\"StartPipelineExecution\"} 1",
        "mlopsd_aws_request_duration_seconds_bucket{le=",
        "mlopsd_notifications_sent_total{notifier=\"ops\",event=\"run_started\"} 1",
        "mlopsd_schedule_lateness_seconds_count",
        // The series the config names exist from the start, at 0.
        "mlopsd_gate_decisions_total{gate=\"approve\",decision=\"approved\"} 0",
        "mlopsd_runs_failed_total{kind=\"pipeline\",target=\"train\"} 0",
        "mlopsd_check_errors_total{check=\"drift\"} 0",
        "mlopsd_config_reloads_total{result=\"failure\"} 0",
        // A family with no series yet is described.
        "# TYPE mlopsd_deployments counter",
    ] {
        assert!(body.contains(want), "/metrics lacks `{want}`:\n{body}");
    }

    let (code, _, body) = get(&w.addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let (code, ct, body) = get(&w.addr, "/status");
    assert_eq!(code, 200);
    assert!(ct.starts_with("application/json"), "{ct}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert!(st["config"]["path"]
        .as_str()
        .unwrap()
        .ends_with("mlops.toml"));
    assert_eq!(st["config"]["hash"].as_str().unwrap().len(), 16);
    let checks = st["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    let drift = checks.iter().find(|c| c["name"] == "drift").unwrap();
    assert_eq!(drift["state"], "breaching");
    assert_eq!(drift["schedule"], "every 1s");
    assert!(drift["next_fire"].as_str().unwrap().ends_with('Z'));
    assert!(drift["values"].as_array().unwrap().len() >= 3);
    assert_eq!(drift["values"][0]["breached"], true);
    let latency = checks.iter().find(|c| c["name"] == "latency").unwrap();
    assert_eq!(latency["state"], "ok");
    assert_eq!(
        latency["threshold"],
        serde_json::json!({"op": "below", "value": 25.0})
    );
    let rule = &st["rules"][0];
    assert_eq!(rule["name"], "retrain");
    assert_eq!(rule["firings"], 1);
    assert!(rule["cooldown_until"].as_str().is_some());
    assert_eq!(rule["targets"][0]["active_runs"], 0);
    let run = &st["runs"][0];
    assert_eq!(run["status"], "succeeded");
    assert!(run["arn"].as_str().unwrap().contains(":pipeline/"));
    assert_eq!(run["correlation_id"], drift["correlation_id"]);
    assert_eq!(st["gates"][0]["name"], "approve");

    let (code, ct, html) = get(&w.addr, "/");
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert_eq!(
        html.matches("<tr class=\"check\">").count(),
        2,
        "one row per check"
    );
    assert_eq!(
        html.matches("<svg class=\"spark\"").count(),
        2,
        "one sparkline per check"
    );
    assert_eq!(
        html.matches("class=\"threshold\"").count(),
        2,
        "a threshold line per check"
    );
    assert!(html.contains("class=\"breach\""), "breach markers");
    assert!(html.contains("succeeded"), "recent run");
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    // mlopsd status, for humans and for machines.
    let (code, out, err) = mlopsd(&["status", "--addr", &w.addr]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("drift") && l.contains("breaching") && l.contains("> 0.1")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("latency") && l.contains("ok") && l.contains("< 25")),
        "{out}"
    );
    assert!(out.contains("RULE") && out.contains("retrain"), "{out}");
    assert!(out.contains("succeeded"), "{out}");
    let (code, out, _) = mlopsd(&["status", "--addr", &w.addr, "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["checks"].as_array().unwrap().len(), 2);
    let _ = &w.aws;
}

#[test]
fn a_rejected_reload_shows_on_metrics_and_status() {
    let w = world("http-reload");
    let text = std::fs::read_to_string(&w.r.config).unwrap();
    std::fs::write(&w.r.config, text.replace("every 1h", "every hour")).unwrap();
    w.r.wait_event("config_reload_rejected", 1, T);
    let (_, _, body) = get(&w.addr, "/metrics");
    assert!(
        body.contains("mlopsd_config_last_reload_successful 0"),
        "{body}"
    );
    assert!(
        body.contains("mlopsd_config_reloads_total{result=\"failure\"} 1"),
        "{body}"
    );
    let (_, _, st) = get(&w.addr, "/status");
    let st: Value = serde_json::from_str(&st).unwrap();
    assert_eq!(st["config"]["last_reload"]["ok"], false);
    assert!(
        st["config"]["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("mlops.toml:"),
        "{st}"
    );
    let (_, _, html) = get(&w.addr, "/");
    assert!(html.contains("the previous config keeps running"));
    std::fs::write(&w.r.config, text).unwrap();
    w.r.wait_event("config_reload_unchanged", 1, T);
    let (_, _, body) = get(&w.addr, "/metrics");
    assert!(
        body.contains("mlopsd_config_last_reload_successful 1"),
        "{body}"
    );
}

#[test]
fn healthz_turns_503_when_the_state_store_is_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n[checks.a]\nschedule = \"every 1h\"\nnamespace = \"n\"\nmetric = \"m\"\nabove = 1\n",
        dir.path().join("state").display()
    );
    let r = Running::start(dir.path(), &text, env());
    let addr = r.http_addr();
    assert_eq!(get(&addr, "/healthz").0, 200);
    // Another process takes the database's write lock.
    let c = rusqlite::Connection::open(dir.path().join("state/mlopsd.db")).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('lock', 'x') ON CONFLICT (key) DO UPDATE SET value = 'y';").unwrap();
    let (code, _, body) = get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("unhealthy: the state store is not writable"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1);
    c.execute_batch("ROLLBACK;").unwrap();
    assert_eq!(get(&addr, "/healthz").0, 200);
}

#[test]
fn status_command_says_clearly_when_no_daemon_runs() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let (code, _, err) = mlopsd(&["status", "--addr", &addr]);
    assert_eq!(code, 69);
    assert!(
        err.contains(&format!("mlopsd is not running at {addr}")),
        "{err}"
    );
}

#[test]
fn port_in_use_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"{addr}\"\n",
        dir.path().join("state").display()
    );
    let mut r = Running::start(dir.path(), &text, env());
    assert_eq!(r.wait_exit(T).code(), Some(69));
    assert!(
        r.raw_output()
            .contains(&format!("cannot serve HTTP on {addr} (daemon.listen)")),
        "{}",
        r.raw_output()
    );
}

fn chromium() -> String {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return c.to_string();
        }
    }
    panic!("headless Chromium is needed for the status page test: install Debian's `chromium` (.ci/run does)");
}

#[test]
fn status_page_renders_in_headless_chromium() {
    let w = world("http-page");
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("status.png");
    let start = Instant::now();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{}/", w.addr))
        .output()
        .expect("run chromium");
    assert!(
        shot.exists(),
        "no screenshot after {:?}: {}",
        start.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!((info.width, info.height), (1200, 900));
    let px = info.line_size / info.width as usize;
    let mut colors = std::collections::HashMap::new();
    for p in buf[..info.buffer_size()].chunks(px) {
        *colors.entry(p[..3].to_vec()).or_insert(0usize) += 1;
    }
    let total = (info.width * info.height) as usize;
    let top = colors.values().max().copied().unwrap_or(0);
    assert!(
        colors.len() > 50,
        "only {} colors: blank page?",
        colors.len()
    );
    assert!(
        top < total * 97 / 100,
        "one color covers {}% of the page",
        top * 100 / total
    );
    // The red of the threshold lines and breach markers is on the screen.
    let red = colors
        .keys()
        .filter(|c| c[0] > 180 && c[1] < 90 && c[2] < 90)
        .count();
    assert!(red > 0, "no red threshold/breach pixels");
    std::fs::copy(&shot, std::env::temp_dir().join("mlopsd-status-page.png")).ok();
}

/// The metric names a PromQL text names (`mlopsd_…`), and the labels its `by (…)` clauses group by.
fn promql_names(q: &str) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut rest = q;
    while let Some(i) = rest.find("mlopsd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    let mut labels = Vec::new();
    for part in q.split("by (").skip(1) {
        let inner = part.split(')').next().unwrap_or("");
        labels.extend(
            inner
                .split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && l != "le"),
        );
    }
    (names, labels)
}

/// The type of the family a sample name belongs to (`…_total` of a counter, `…_bucket` of a
/// histogram, …), from the scrape's `# TYPE` lines (served with or without samples).
fn served_type<'a>(scrape: &'a str, name: &str) -> Option<&'a str> {
    let families: HashMap<&str, &str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    families.into_iter().find_map(|(f, ty)| {
        let hit = match ty {
            "counter" => name == format!("{f}_total"),
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{f}{s}")),
            _ => name == f,
        };
        hit.then_some(ty)
    })
}

/// The sample lines of one metric (that exact name, with or without labels).
fn series<'a>(scrape: &'a str, name: &str) -> Vec<&'a str> {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .collect()
}

/// Every PromQL text of a Grafana dashboard: panel targets, template variable queries,
/// annotations.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_names_only_metrics_the_daemon_serves() {
    let path = format!(
        "{}/deploy/grafana/mlopsd-dashboard.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(dash["uid"], "mlopsd");
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    assert!(queries.len() >= 30, "{queries:?}");

    let w = world("dash");
    let (_, _, scrape) = get(&w.addr, "/metrics");
    let served = |name: &str| served_type(&scrape, name).is_some();
    let mut named = std::collections::BTreeSet::new();
    for q in &queries {
        let (names, labels) = promql_names(q);
        assert!(!names.is_empty(), "a query naming no mlopsd metric: {q}");
        for n in &names {
            assert!(
                served(n),
                "the dashboard queries {n}, which /metrics does not serve ({q}):\n{scrape}"
            );
            named.insert(n.clone());
        }
        // A `by (label)` names a label the metric's series carry (where it has series yet).
        let lines: Vec<&str> = names.iter().flat_map(|n| series(&scrape, n)).collect();
        for l in labels {
            assert!(
                lines.is_empty() || lines.iter().any(|s| s.contains(&format!("{l}=\""))),
                "label {l} of `{q}` is on no series of its metric"
            );
        }
    }
    // What the issue asks the dashboard to show is all there.
    for want in [
        "mlopsd_check_value",
        "mlopsd_check_threshold",
        "mlopsd_rule_firings_total",
        "mlopsd_rule_suppressions_total",
        "mlopsd_runs_started_total",
        "mlopsd_runs_failed_total",
        "mlopsd_aws_errors_total",
        "mlopsd_aws_request_duration_seconds_bucket",
        "mlopsd_config_last_reload_successful",
        "mlopsd_events_total",
        "mlopsd_leader",
    ] {
        assert!(named.contains(want), "the dashboard shows {want}");
    }
}

#[test]
fn the_cloudwatch_agent_config_ships_metrics_the_daemon_serves() {
    let dir = format!("{}/deploy/cloudwatch", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(format!("{dir}/amazon-cloudwatch-agent.json")).unwrap();
    let agent: Value = serde_json::from_str(&text).expect("the agent config is JSON");
    let prom = &agent["logs"]["metrics_collected"]["prometheus"];
    let scrape_cfg = std::fs::read_to_string(format!("{dir}/mlopsd-prometheus.yaml")).unwrap();
    assert!(
        prom["prometheus_config_path"]
            .as_str()
            .unwrap()
            .ends_with("/mlopsd-prometheus.yaml"),
        "{prom}"
    );
    // The scrape reaches daemon.listen's default, under the job the declarations match.
    assert!(scrape_cfg.contains("- job_name: mlopsd\n"), "{scrape_cfg}");
    assert!(scrape_cfg.contains("- 127.0.0.1:9464\n"), "{scrape_cfg}");
    let journald = &agent["logs"]["logs_collected"]["journald"]["collect_list"][0];
    assert_eq!(journald["units"], serde_json::json!(["mlopsd"]));
    assert_eq!(journald["log_group_name"], "/mlopsd/daemon");
    // The CloudFormation template makes both log groups and lets the agent write to them.
    let cfn = std::fs::read_to_string(format!(
        "{}/deploy/cloudformation/mlopsd.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for group in ["/mlopsd/daemon", prom["log_group_name"].as_str().unwrap()] {
        assert!(
            cfn.contains(&format!("Default: {group}\n")),
            "{group} in the template"
        );
    }
    assert!(cfn.contains("logs:PutLogEvents"));

    let w = world("cwagent");
    let (_, _, scrape) = get(&w.addr, "/metrics");
    let decls = prom["emf_processor"]["metric_declaration"]
        .as_array()
        .unwrap();
    assert!(decls.len() >= 10);
    let mut shipped = Vec::new();
    for d in decls {
        assert_eq!(d["source_labels"], serde_json::json!(["job"]));
        assert_eq!(d["label_matcher"], "^mlopsd$");
        let dims: Vec<&str> = d["dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|set| set.as_array().unwrap())
            .map(|l| l.as_str().unwrap())
            .collect();
        for sel in d["metric_selectors"].as_array().unwrap() {
            let sel = sel.as_str().unwrap();
            let name = sel
                .strip_prefix('^')
                .and_then(|n| n.strip_suffix('$'))
                .unwrap_or_else(|| panic!("a selector names one metric exactly: {sel}"));
            // The agent drops histograms; counters arrive as deltas, gauges as they are.
            match served_type(&scrape, name) {
                Some("counter" | "gauge") => {}
                other => panic!("{name}: served as {other:?}, which the agent cannot ship"),
            }
            // Each dimension is a label of the metric's series (`instance` is the scrape's).
            let series = series(&scrape, name);
            for dim in &dims {
                assert!(
                    *dim == "instance"
                        || series.is_empty()
                        || series.iter().all(|l| l.contains(&format!("{dim}=\""))),
                    "{name} has no label {dim}: {series:?}"
                );
            }
            shipped.push(name.to_string());
        }
    }
    for want in [
        "mlopsd_check_value",
        "mlopsd_rule_firings_total",
        "mlopsd_runs_failed_total",
        "mlopsd_aws_errors_total",
        "mlopsd_leader",
        "mlopsd_config_last_reload_successful",
    ] {
        assert!(
            shipped.iter().any(|s| s == want),
            "{want} reaches CloudWatch"
        );
    }
}
