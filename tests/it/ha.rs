//! High availability end to end: real `mlopsd` processes sharing one config file and one
//! DynamoDB table on moto (conditions and transactions enforced). Two and three replicas;
//! kill -9 of the leader at each failpoint of a firing; SIGSTOP past the lease; DynamoDB
//! throttling and dropped connections through the fault proxy; a replica cut off from the
//! table; start errors for a missing table or a wrong key schema.

use crate::support as common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::aws::{Note, TestAws};
use common::proxy::{Fault, Proxy};
use common::{http_get_json, Running};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// One test at a time: each runs two or three daemons whose leases are timed, and the CI
/// machine has two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
const LEASE_S: u64 = 3;

struct Cluster {
    aws: TestAws,
    table: String,
    pipelines: Vec<String>,
    /// The shared config text (every replica runs the same file).
    text: String,
    root: tempfile::TempDir,
}

/// A table, `n` pipelines each with a breaching check whose rule starts it once (cooldown 1h)
/// and tells `ops` (repeat_interval 0s: every message goes out), and `extra` config.
fn cluster(prefix: &str, n: usize, endpoint: Option<&str>, extra: &str) -> Cluster {
    let mut aws = TestAws::new(prefix);
    let table = aws.create_ha_table("ha");
    let topic = aws.create_topic("ops");
    let root = tempfile::tempdir().unwrap();
    let ns = format!("{}/ha", aws.prefix);
    let endpoint = endpoint.unwrap_or(&aws.endpoint).to_string();
    // attempt_timeout is long: a Publish whose answer is late is retried by the SDK, and SNS
    // delivers each attempt that landed (at least once, README "Notifications are at least once"). With 2 s, a moto slowed
    // by a loaded CI machine told one notice 3 times (max_attempts) in a failover test, which
    // counts what failover doubles, not what a slow answer does.
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\npoll_interval = \"1s\"\nha_table = \"{table}\"\nha_lease = \"{LEASE_S}s\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nmax_attempts = 3\nattempt_timeout = \"10s\"\n\n[notifiers.ops]\ntopic_arn = \"{topic}\"\nrepeat_interval = \"0s\"\n\n",
        root.path().join("unused").display()
    );
    let mut pipelines = Vec::new();
    for i in 0..n {
        let p = aws.create_pipeline(&format!("p{i}"));
        aws.put_metric(&ns, &format!("m{i}"), &[], 1.0);
        text.push_str(&format!(
            "[pipelines.p{i}]\npipeline_name = \"{p}\"\n\n[checks.c{i}]\nschedule = \"every 1s\"\nnamespace = \"{ns}\"\nmetric = \"m{i}\"\nabove = 0.5\n\n[rules.r{i}]\non_check = \"c{i}\"\nstart_pipeline = \"p{i}\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n\n"
        ));
        pipelines.push(p);
    }
    text.push_str(extra);
    Cluster {
        aws,
        table,
        pipelines,
        text,
        root,
    }
}

impl Cluster {
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Starts replica `name` (its own directory and state, the shared config text).
    fn replica(&self, name: &str, env: &[(&'static str, &str)]) -> Running {
        self.replica_with(name, &self.text, env)
    }

    fn replica_with(&self, name: &str, text: &str, env: &[(&'static str, &str)]) -> Running {
        let dir = self.dir(name);
        let state = dir.join("state");
        let mut opts = common::aws_env();
        opts.env.push(("MLOPSD_REPLICA_ID", name.to_string()));
        for (k, v) in env {
            opts.env.push((k, v.to_string()));
        }
        Running::start_args(&dir, text, &["--state-dir", state.to_str().unwrap()], opts)
    }

    /// Executions of each pipeline.
    fn executions(&self) -> Vec<usize> {
        self.pipelines
            .iter()
            .map(|p| self.aws.executions(p).len())
            .collect()
    }

    /// The log items of the table as (seq, fencing), in order.
    fn log(&self) -> Vec<(u64, u64)> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = self
                .aws
                .rt
                .block_on(
                    self.aws
                        .ddb
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :p")
                        .expression_attribute_values(":p", V::S("log".into()))
                        .set_exclusive_start_key(start.take())
                        .send(),
                )
                .expect("query the log");
            for i in r.items() {
                let sk = i["sk"].as_s().unwrap();
                let seq: u64 = sk.split('#').next().unwrap().parse().unwrap();
                let f: u64 = i["f"].as_n().unwrap().parse().unwrap();
                if sk.ends_with("#0000") {
                    out.push((seq, f));
                }
            }
            match r.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }
}

/// The log is one history: numbered without a gap, and the fencing number never goes
/// down (no entry of a deposed leader after its successor's).
fn assert_one_history(log: &[(u64, u64)], what: &str) {
    assert!(!log.is_empty(), "{what}: the log has entries");
    // From 1, or from just after the snapshot it was compacted to.
    let first = log[0].0;
    for (i, (seq, _)) in log.iter().enumerate() {
        assert_eq!(
            *seq,
            first + i as u64,
            "{what}: log numbered without gaps: {log:?}"
        );
    }
    for w in log.windows(2) {
        assert!(w[0].1 <= w[1].1, "{what}: fencing never goes down: {log:?}");
    }
}

fn status(r: &Running) -> Value {
    http_get_json(&r.http_addr(), "/status")
}

fn wait_status(r: &Running, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let addr = r.http_addr();
    loop {
        if let Ok((200, body)) = mlopsd::cli::status::get(&addr, "/status") {
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                if pred(&v) {
                    return v;
                }
            }
        }
        assert!(
            start.elapsed() < T,
            "timed out waiting for {what}; output:\n{}",
            r.raw_output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Events told once per incident or run (a rule in cooldown tells `rule_suppressed` at each
/// evaluation, by design).
const ONCE: [&str; 5] = [
    "check_breached",
    "run_started",
    "run_succeeded",
    "leader_changed",
    "rule_fired",
];

/// (event, correlation id) → how many times it was told.
fn told_by_id(notes: &[Note]) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for n in notes.iter().filter(|n| ONCE.contains(&n.event())) {
        *m.entry((n.event().to_string(), n.attrs["correlation_id"].clone()))
            .or_insert(0) += 1;
    }
    m
}

/// (event, rule) → how many times it was told.
fn told(notes: &[Note]) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for n in notes.iter().filter(|n| ONCE.contains(&n.event())) {
        *m.entry((n.event().to_string(), n.attrs["rule"].clone()))
            .or_insert(0) += 1;
    }
    m
}

#[test]
fn failover_at_each_failpoint_starts_and_tells_each_exactly_once() {
    let _serial = serial();
    for point in [
        "after_decision",
        "after_start_sent",
        "while_following",
        "after_publish",
    ] {
        let c = cluster(&format!("ha-{}", point.replace('_', "-")), 3, None, "");
        let mut a = c.replica("a", &[("MLOPSD_FAILPOINT", point)]);
        a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
        let b = c.replica("b", &[]);
        let st = a.wait_exit(T);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "{point}: {}",
            a.raw_output()
        );
        let killed_at = Instant::now();
        // Killed: nothing was given up; b took the lease after watching it unchanged.
        let took = b.wait_for_event_where("ha_lease_taken", T, |_| true);
        assert_eq!(took["took"], "expired", "{point}: {took}");
        let led = b.wait_for_event_where("ha_leading", T, |e| e["replica"] == "b");
        assert_eq!(
            led["fencing"], 2,
            "{point}: a new leader, a new fencing number"
        );
        assert_eq!(led["previous"], "a", "{point}");
        assert!(
            killed_at.elapsed() < Duration::from_secs(LEASE_S + 5),
            "{point}: took over within the lease and a few seconds"
        );
        // Every pipeline runs to its end, started by whichever replica.
        let want: Vec<(String, String)> = (0..3)
            .flat_map(|i| {
                ["check_breached", "run_started", "run_succeeded"]
                    .map(|e| (e.to_string(), format!("r{i}")))
            })
            .chain([("leader_changed".to_string(), "ha".to_string())])
            .collect();
        let mut notes = c.aws.notes_until(T, |n| {
            let t = told(n);
            want.iter().all(|k| t.contains_key(k))
                && t.get(&("leader_changed".into(), "ha".into())) >= Some(&2)
        });
        // Anything sent twice would arrive meanwhile.
        std::thread::sleep(Duration::from_secs(3));
        notes.extend(c.aws.drain(Duration::from_secs(1)));
        assert_eq!(
            c.executions(),
            vec![1, 1, 1],
            "{point}: each started exactly once"
        );
        let t = told(&notes);
        // At least once: a kill -9 while SNS takes a message and before it is marked sent
        // (the `after_publish` point, or a publish in flight at any other point) makes the
        // new leader send that one again, with the same correlation id. Nothing else twice.
        let mut copies: HashMap<(String, String, String), usize> = HashMap::new();
        for n in notes.iter().filter(|n| ONCE.contains(&n.event())) {
            *copies
                .entry((
                    n.event().to_string(),
                    n.attrs["rule"].clone(),
                    n.attrs["correlation_id"].clone(),
                ))
                .or_insert(0) += 1;
        }
        let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2),
            "{point}: at most the one interrupted message again: {twice:?}"
        );
        let distinct: std::collections::HashSet<_> = copies
            .keys()
            .map(|(e, r, _)| (e.clone(), r.clone()))
            .collect();
        assert_eq!(
            distinct.len(),
            want.len(),
            "{point}: one incident and one run per rule: {copies:?}"
        );
        let leader_notes = t[&("leader_changed".to_string(), "ha".to_string())];
        assert!(
            (2..=3).contains(&leader_notes),
            "{point}: one leader_changed per leader"
        );
        for k in &want {
            assert!(t.contains_key(k), "{point}: {k:?} was told");
        }
        assert_eq!(
            a.events("rule_fired").len() + b.events("rule_fired").len(),
            3,
            "{point}: each firing decided once, by one replica (the new leader resumed the old one's decisions)"
        );
        assert_one_history(&c.log(), point);
        let st = wait_status(&b, "the new leader leading", |s| s["role"] == "leader");
        let ha_events: Vec<String> = b
            .logs()
            .iter()
            .filter(|v| {
                v["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("ha_") || e == "state_error")
            })
            .map(|v| v.to_string())
            .collect();
        assert!(
            st["ha"]["fencing"].as_u64() >= Some(2),
            "{point}: {ha_events:#?}"
        );
    }
}

#[test]
fn three_replicas_one_leads_and_a_sigstopped_leader_is_deposed_and_steps_down() {
    let _serial = serial();
    // A schedule rule writes state every second (and tells ops), so the leader is mid-work
    // whenever it is stopped.
    let extra = "[rules.tick]\non_schedule = \"every 1s\"\nnotify = [\"ops\"]\n";
    let c = cluster("ha-three", 2, None, extra);
    let a = c.replica("a", &[]);
    a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
    let b = c.replica("b", &[]);
    let cc = c.replica("c", &[]);
    for r in [&b, &cc] {
        let st = wait_status(r, "a standby that sees a lead", |s| {
            s["ha"]["leader"] == "a" && s["role"] == "standby"
        });
        assert_eq!(st["ha"]["fencing"], 1);
        assert!(st["ha"]["lease_age_ms"].as_u64().unwrap() < 2 * LEASE_S * 1000);
        assert_eq!(st["ha"]["config_differs"], false);
        let health = mlopsd::cli::status::get(&r.http_addr(), "/healthz").unwrap();
        assert_eq!(health.0, 200, "a standby is healthy: {}", health.1);
        let metrics = common::http_get(&r.http_addr(), "/metrics");
        assert!(metrics.contains("mlopsd_leader 0"), "{metrics}");
        let (code, out, err) = common::mlopsd(&["status", "--addr", &r.http_addr()]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("role standby") && out.contains("leader a, fencing 1"),
            "{out}"
        );
    }
    assert!(common::http_get(&a.http_addr(), "/metrics").contains("mlopsd_leader 1"));
    // A standby's state follows the leader's: it shows the same runs.
    wait_status(&b, "the replicated runs", |s| {
        s["runs"].as_array().is_some_and(|r| r.len() == 2)
    });

    // Both starts told before the stop (the SNS messages read back), so the stop does not land
    // while those are published.
    let mut notes = c.aws.notes_until(T, |n| {
        n.iter().filter(|n| n.event() == "run_started").count() >= 2
    });
    // Stop the leader for two leases: one of the standbys takes over.
    a.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let new = loop {
        let led: Vec<String> = [&b, &cc]
            .iter()
            .flat_map(|r| r.events("ha_leading"))
            .map(|e| e["replica"].as_str().unwrap_or_default().to_string())
            .collect();
        if let Some(n) = led.first() {
            break n.clone();
        }
        assert!(stopped_at.elapsed() < T, "no standby took over");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (leader, other) = if new == "b" { (&b, &cc) } else { (&cc, &b) };
    wait_status(other, "the other standby following the new leader", |s| {
        s["ha"]["leader"] == new.as_str() && s["ha"]["fencing"] == 2
    });
    std::thread::sleep(Duration::from_secs(2 * LEASE_S).saturating_sub(stopped_at.elapsed()));
    a.signal(libc::SIGCONT);
    a.wait_for_event_where("ha_stepped_down", T, |e| e["replica"] == "a");
    let st = wait_status(&a, "the old leader following", |s| {
        s["role"] == "standby" && s["ha"]["leader"] == new.as_str()
    });
    assert_eq!(st["ha"]["fencing"], 2);
    assert!(common::http_get(&a.http_addr(), "/metrics").contains("mlopsd_leader 0"));
    // Let the new leader work a while, then check that nothing was doubled.
    std::thread::sleep(Duration::from_secs(4));
    notes.extend(c.aws.drain(Duration::from_secs(2)));
    assert_eq!(c.executions(), vec![1, 1], "each pipeline started once");
    // At least once, as for a kill -9: a stop that lands between SNS taking a message and the
    // "sent" mark reaching the table (or with a Publish in flight, which completes on SIGCONT:
    // SNS has no fencing) makes the new leader send that one message again, with the same
    // correlation id (CI saw a run_started told twice this way). Nothing else twice.
    let seen = told_by_id(&notes);
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.len() <= 1 && doubled.iter().all(|(_, n)| **n == 2),
        "at most the one interrupted notification went out twice: {doubled:?}"
    );
    for e in ["run_started", "leader_changed"] {
        assert!(seen.keys().any(|(k, _)| k == e), "{e} told: {seen:?}");
    }
    assert_one_history(&c.log(), "sigstop");
    assert!(
        c.log().iter().any(|(_, f)| *f == 2),
        "the new leader wrote state"
    );
    assert_eq!(status(leader)["role"], "leader");
    assert!(
        a.events("ha_leading").len() == 1,
        "the old leader did not lead again"
    );
}

#[test]
fn dynamodb_throttling_and_dropped_connections_are_retried_and_cut_off_is_told() {
    let _serial = serial();
    let aws = TestAws::new("ha-faults-endpoint");
    let proxy = Proxy::start(&aws.endpoint);
    let extra = "[rules.tick]\non_schedule = \"every 1s\"\nnotify = [\"ops\"]\n";
    let c = cluster("ha-faults", 3, Some(&proxy.url), extra);
    let throttle = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"Rate exceeded"}"#;
    for op in ["TransactWriteItems", "PutItem", "GetItem", "Query"] {
        proxy.fault_every(op, Fault::Status(400, throttle.into()), 4);
        proxy.fault_every(op, Fault::Status(500, "internal error".into()), 7);
        proxy.fault_every(op, Fault::Reset, 9);
    }
    let a = c.replica("a", &[]);
    a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
    let b = c.replica("b", &[]);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        proxy.faults("TransactWriteItems") > 0 && proxy.faults("GetItem") > 0,
        "the faults hit DynamoDB"
    );
    proxy.clear();
    let notes = c.aws.notes_until(T, |n| {
        let t = told(n);
        (0..3).all(|i| t.contains_key(&("run_succeeded".to_string(), format!("r{i}"))))
    });
    assert_eq!(c.executions(), vec![1, 1, 1], "each started exactly once");
    let seen = told_by_id(&notes);
    let trace = |r: &Running| -> Vec<String> {
        r.logs()
            .iter()
            .filter(|v| {
                v["event"].as_str().is_some_and(|e| {
                    e.starts_with("ha_") || e.starts_with("state_") || e.starts_with("notification")
                })
            })
            .map(|v| v.to_string())
            .collect()
    };
    assert!(
        seen.iter().all(|(_, n)| *n == 1),
        "nothing told twice: {seen:?}\na: {:#?}\nb: {:#?}",
        trace(&a),
        trace(&b)
    );
    assert_one_history(&c.log(), "faults");
    // One replica leads (whichever the faults left in charge), the other follows it.
    let leaders: Vec<Value> = [&a, &b]
        .iter()
        .map(|r| wait_status(r, "a settled role", |s| s["ha"]["leader"].is_string()))
        .collect();
    assert_eq!(
        leaders.iter().filter(|s| s["role"] == "leader").count(),
        1,
        "{leaders:?}"
    );

    // Cut both replicas off from DynamoDB (every request hangs up): the leader stops acting
    // and /healthz says so; when the table answers again, one leads again.
    for op in ["TransactWriteItems", "PutItem", "GetItem", "Query"] {
        proxy.fault(op, Fault::Reset, usize::MAX);
    }
    let led_before = c.log().len();
    for r in [&a, &b] {
        let start = Instant::now();
        loop {
            let (code, body) = mlopsd::cli::status::get(&r.http_addr(), "/healthz").unwrap();
            if code == 503 && body.contains("cut off from the HA table") {
                assert!(body.contains(&c.table), "{body}");
                break;
            }
            assert!(start.elapsed() < T, "no cut-off on /healthz: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(common::http_get(&r.http_addr(), "/metrics").contains("mlopsd_leader 0"));
    }
    proxy.clear();
    let start = Instant::now();
    loop {
        let roles: Vec<Value> = [&a, &b].iter().map(|r| status(r)["role"].clone()).collect();
        if roles.iter().any(|r| r == "leader") {
            break;
        }
        assert!(start.elapsed() < T, "no leader after the table came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    for r in [&a, &b] {
        let start = Instant::now();
        loop {
            let (code, body) = mlopsd::cli::status::get(&r.http_addr(), "/healthz").unwrap();
            if code == 200 {
                break;
            }
            assert!(start.elapsed() < T, "healthy again: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c.log().len() > led_before,
        "the new leader writes state again"
    );
    assert_one_history(&c.log(), "after the cut-off");
    assert_eq!(c.executions(), vec![1, 1, 1]);
}

/// A planned stop (SIGTERM, as `systemctl restart` sends) hands the lease over: the leader
/// finishes, gives the lease up, and a standby takes it at its next look (every 5 s at most)
/// because it was released — not after watching it unchanged for the lease (30 s here) —
/// with nothing doubled or lost.
#[test]
fn a_stopped_leader_gives_the_lease_up_and_a_standby_leads_at_once() {
    let _serial = serial();
    let c = cluster("ha-release", 2, None, "");
    let text = c
        .text
        .replace(&format!("ha_lease = \"{LEASE_S}s\""), "ha_lease = \"30s\"");
    let mut a = c.replica_with("a", &text, &[]);
    a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
    let b = c.replica_with("b", &text, &[]);
    wait_status(&b, "b follows a", |s| s["ha"]["leader"] == "a");
    // a decides and starts both pipelines, then is stopped.
    let mut notes = c.aws.notes_until(T, |n| {
        let t = told(n);
        (0..2).all(|i| t.contains_key(&("run_succeeded".to_string(), format!("r{i}"))))
    });
    a.signal(libc::SIGTERM);
    assert!(a.wait_exit(T).success(), "a clean stop");
    let released = a.events("ha_lease_released");
    assert_eq!(released.len(), 1, "{:#?}", a.logs());
    assert_eq!(released[0]["fencing"], 1);
    let took = b.wait_for_event_where("ha_lease_taken", T, |_| true);
    assert_eq!(took["took"], "released", "{took}");
    let led = b.wait_for_event_where("ha_leading", T, |e| e["replica"] == "b");
    assert_eq!(led["fencing"], 2, "{led}");
    let st = wait_status(&b, "b leads", |s| s["role"] == "leader");
    assert_eq!(st["ha"]["fencing"], 2);
    // b's first writes follow a's in one history; nothing was started twice.
    std::thread::sleep(Duration::from_secs(3));
    let log = c.log();
    assert!(log.iter().any(|e| e.1 == 2), "b writes state: {log:?}");
    assert_one_history(&log, "after the handover");
    assert_eq!(c.executions(), vec![1, 1]);
    notes.extend(c.aws.notes_until(T, |n| {
        n.iter()
            .any(|n| n.event() == "leader_changed" && n.attrs["correlation_id"] == "ha-2")
    }));
    // Each notice once (a stopped, not killed: nothing was in flight at SNS).
    let seen = told_by_id(&notes);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let t = told(&notes);
    for i in 0..2 {
        assert_eq!(t[&("run_started".to_string(), format!("r{i}"))], 1, "{t:?}");
    }
}

#[test]
fn a_missing_table_or_a_wrong_key_schema_is_a_clear_start_error() {
    let _serial = serial();
    let aws = TestAws::new("ha-start");
    let dir = tempfile::tempdir().unwrap();
    let absent = aws.name("nowhere");
    let text = |table: &str| {
        format!(
            "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nha_table = \"{table}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nmax_attempts = 1\n",
            dir.path().join("state").display(),
            aws.endpoint
        )
    };
    let mut r = Running::start(dir.path(), &text(&absent), common::aws_env());
    let st = r.wait_exit(T);
    assert_eq!(st.code(), Some(69), "{}", r.raw_output());
    assert!(
        r.raw_output()
            .contains(&format!("the HA table \\\"{absent}\\\" does not exist")),
        "{}",
        r.raw_output()
    );
    // A table keyed by `id` (N).
    let wrong = aws.name("wrong");
    {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        aws.rt
            .block_on(
                aws.ddb
                    .create_table()
                    .table_name(&wrong)
                    .billing_mode(BillingMode::PayPerRequest)
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name("id")
                            .key_type(KeyType::Hash)
                            .build()
                            .unwrap(),
                    )
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name("id")
                            .attribute_type(ScalarAttributeType::N)
                            .build()
                            .unwrap(),
                    )
                    .send(),
            )
            .unwrap();
    }
    drop(r);
    let mut r = Running::start(dir.path(), &text(&wrong), common::aws_env());
    let st = r.wait_exit(T);
    assert_eq!(st.code(), Some(78), "{}", r.raw_output());
    assert!(
        r.raw_output()
            .contains("mlopsd needs partition key `pk` (S)"),
        "{}",
        r.raw_output()
    );
    assert!(!r.raw_output().contains("panicked"), "{}", r.raw_output());

    // `mlopsd doctor` tells the same before any start: one line for the table.
    let good = aws.create_ha_table("good");
    for (table, status, code) in [
        (&good, "ok", 0),
        (&absent, "missing", 1),
        (&wrong, "missing", 1),
    ] {
        let cfg = dir.path().join("doctor.toml");
        std::fs::write(&cfg, text(table)).unwrap();
        let (c, out, err) =
            common::mlopsd(&["doctor", "--config", cfg.to_str().unwrap(), "--json"]);
        assert_eq!(c, code, "{table}: {out}{err}");
        let j: Value = serde_json::from_str(&out).unwrap();
        let f = &j["resources"][0];
        assert_eq!(f["kind"], "ha", "{out}");
        assert_eq!(f["status"], status, "{out}");
        assert_eq!(f["name"], table.as_str());
    }
}

#[test]
fn a_standby_validates_and_reloads_its_config_and_tells_a_differing_one() {
    let _serial = serial();
    let c = cluster("ha-differs", 1, None, "");
    let a = c.replica("a", &[]);
    a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
    // B runs a config with one more notifier: a different hash.
    let other = format!(
        "{}\n[notifiers.more]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:more\"\n",
        c.text
    );
    let b = c.replica_with("b", &other, &[]);
    b.wait_event("ha_config_differs", 1, T);
    let st = wait_status(&b, "config_differs on /status", |s| {
        s["ha"]["config_differs"] == true
    });
    assert_eq!(st["role"], "standby");
    assert_ne!(st["ha"]["config_hash"], st["ha"]["leader_config_hash"]);
    // A bad edit on the standby is rejected and the running config kept.
    let cfg: &Path = &b.config;
    common::replace_by_rename(cfg, "[daemon\nnot toml");
    b.wait_event("config_reload_rejected", 1, T);
    assert_eq!(status(&b)["role"], "standby");
    let metrics = common::http_get(&b.http_addr(), "/metrics");
    assert!(
        metrics.contains("mlopsd_config_reloads_total{result=\"failure\"} 1"),
        "a standby's reloads are counted: {metrics}"
    );
    // The same file as the leader's: the difference goes away.
    common::replace_by_rename(cfg, &c.text);
    wait_status(&b, "the same config as the leader", |s| {
        s["ha"]["config_differs"] == false && s["config"]["last_reload"]["ok"] == true
    });
    // The leader reloads an edit: its new hash reaches the standby through the lease item.
    common::replace_by_rename(&a.config, &other);
    a.wait_event("config_reload_accepted", 1, T);
    wait_status(&b, "the leader's new config told", |s| {
        s["ha"]["config_differs"] == true
    });
    // Logged once more (the standby's loop tells each new difference once).
    b.wait_event("ha_config_differs", 2, T);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.events("ha_config_differs").len(), 2);
}

#[test]
fn the_log_is_compacted_and_a_new_replica_starts_from_the_snapshot() {
    let _serial = serial();
    let extra = "[rules.tick]\non_schedule = \"every 1s\"\nnotify = [\"ops\"]\n";
    let c = cluster("ha-compact", 2, None, extra);
    let mut a = c.replica("a", &[("MLOPSD_HA_COMPACT_SECS", "2")]);
    a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
    let compacted = a.wait_for_event_where("ha_compacted", T, |e| {
        e["deleted"].as_u64().unwrap_or(0) > 0
    });
    let at = compacted["seq"].as_u64().unwrap();
    let log = c.log();
    assert!(
        log.iter().all(|(s, _)| *s > at),
        "the log before the snapshot ({at}) is gone: {log:?}"
    );
    // A replica that never ran starts from the snapshot, then the log after it.
    let b = c.replica("b", &[]);
    let restored = b.wait_event("ha_snapshot_restored", 1, T);
    assert!(restored["seq"].as_u64().unwrap() >= at);
    let st = wait_status(&b, "the replicated runs", |s| {
        s["runs"].as_array().is_some_and(|r| r.len() == 2)
    });
    assert_eq!(st["role"], "standby");
    // And leads from there: the runs are not started again, the schedule goes on.
    a.child.kill().unwrap();
    a.wait_exit(T);
    b.wait_for_event_where("ha_leading", T, |e| e["replica"] == "b");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.executions(), vec![1, 1]);
    let log = c.log();
    assert_one_history(&log, "after compaction and failover");
    assert!(log.iter().any(|(_, f)| *f == 2), "b wrote state: {log:?}");
}

/// A log entry no replica can apply (a damaged item; or a newer mlopsd's schema): no replica
/// leads from a stale file — the leader, refused at its next write, steps down and cannot catch
/// up either — and /healthz says why. With the item gone, one leads again and goes on.
#[test]
fn an_entry_no_replica_can_apply_stops_leadership_until_it_is_gone() {
    let _serial = serial();
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let extra = "[rules.tick]\non_schedule = \"every 1s\"\nnotify = [\"ops\"]\n";
    let c = cluster("ha-bad-entry", 1, None, extra);
    let a = c.replica("a", &[]);
    a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
    let b = c.replica("b", &[]);
    b.wait_for_event_where("ha_following", T, |e| e["leader"] == "a");
    std::thread::sleep(Duration::from_secs(2));
    // A few entries ahead of the leader, and never over an entry it wrote: it meets the item
    // at its own next append there.
    let sk = loop {
        let ahead = c.log().last().map(|(s, _)| s + 3).unwrap();
        let sk = format!("{ahead:020}#0000");
        let put = c.aws.rt.block_on(
            c.aws
                .ddb
                .put_item()
                .table_name(&c.table)
                .item("pk", V::S("log".into()))
                .item("sk", V::S(sk.clone()))
                .item(
                    "d",
                    V::B(aws_smithy_types::Blob::new(b"not an entry".to_vec())),
                )
                .item("n", V::N("1".into()))
                .item("f", V::N("1".into()))
                .condition_expression("attribute_not_exists(sk)")
                .send(),
        );
        if put.is_ok() {
            break sk;
        }
    };
    for r in [&a, &b] {
        wait_status(
            r,
            "a replica that cannot follow the log, not leading",
            |s| s["role"] == "standby" && s["ha"]["log_error"].is_string(),
        );
        let (code, body) = mlopsd::cli::status::get(&r.http_addr(), "/healthz").unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("cannot follow the HA table's log"), "{body}");
    }
    let runs_then = c.log().len();
    std::thread::sleep(Duration::from_secs(2 * LEASE_S));
    assert_eq!(c.log().len(), runs_then, "nobody wrote state meanwhile");
    c.aws
        .rt
        .block_on(
            c.aws
                .ddb
                .delete_item()
                .table_name(&c.table)
                .key("pk", V::S("log".into()))
                .key("sk", V::S(sk))
                .send(),
        )
        .unwrap();
    let start = Instant::now();
    while ![&a, &b].iter().any(|r| status(r)["role"] == "leader") {
        assert!(start.elapsed() < T, "nobody leads after the item is gone");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_one_history(&c.log(), "after the damaged entry");
}

/// A deployment in flight when the leader is killed (its CreateEndpoint sent, the answer not
/// stored): the new leader resumes the same deployment from the table — no second create,
/// the endpoint ends on that version — and only the leader ever called SageMaker hosting.
#[test]
fn failover_during_a_deployment_resumes_it_without_a_second_create() {
    failover_during_a_deployment("ha-deploy", "after_deploy_sent:churn", false);
}

/// The leader killed at its first look at the rollback alarms during the bake: the new leader
/// bakes on from the table and the version is baked, with one create.
#[test]
fn failover_during_a_bake_resumes_the_bake() {
    failover_during_a_deployment("ha-bake", "during_bake:churn", true);
}

fn failover_during_a_deployment(prefix: &str, failpoint: &str, bake: bool) {
    let _serial = serial();
    let proxy = Proxy::start(&common::aws::endpoint());
    let probe = TestAws::new(prefix);
    let group = probe.name("group");
    probe.create_group(&group);
    probe.create_approved_package(&group);
    let ep = probe.name("churn");
    let mut extra = format!(
        "[endpoints.churn]\nendpoint_name = \"{ep}\"\nmodel_package_group = \"{group}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/r\"\ninstance_type = \"ml.m5.large\"\nnotify = [\"ops\"]\n"
    );
    if bake {
        let alarm = probe.name("5xx");
        probe.create_alarm(&alarm, &probe.name("ns"));
        probe.set_alarm_state(&alarm, "OK");
        extra.push_str(&format!("rollback_alarms = [\"{alarm}\"]\nbake = \"3s\"\n"));
    }
    let c = cluster(prefix, 0, Some(&proxy.url), &extra);
    let mut a = c.replica("a", &[("MLOPSD_FAILPOINT", failpoint)]);
    a.wait_for_event_where("ha_leading", T, |e| e["replica"] == "a");
    let b = c.replica("b", &[]);
    let st = a.wait_exit(T);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    b.wait_for_event_where("ha_leading", T, |e| e["replica"] == "b");
    b.wait_for_event_where("deploy_progress", T, |e| e["result"] == "baked");
    assert!(
        b.events("deploy_progress")
            .iter()
            .all(|e| e["result"] != "started"),
        "b resumed a's deployment, it did not decide another"
    );
    assert_eq!(proxy.count("CreateEndpoint"), 1, "one create");
    assert_eq!(proxy.count("CreateModel"), 1);
    assert_eq!(proxy.count("CreateEndpointConfig"), 1);
    let d = probe
        .rt
        .block_on(probe.sm.describe_endpoint().endpoint_name(&ep).send())
        .expect("endpoint");
    assert!(d.endpoint_config_name().unwrap_or("").contains("-v1-"));
    assert_one_history(&c.log(), failpoint);
}
