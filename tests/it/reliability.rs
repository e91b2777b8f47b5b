//! Reliability under faults, signals and bad files: each test can fail, and the figures it
//! saw are printed (RELIABILITY.md collects them; run with `--nocapture` to see them).

use crate::support as common;

use std::time::{Duration, Instant};

use common::aws::TestAws;
use common::proxy::{Fault, Proxy};
use common::{replace_by_rename, Opts, Running};

const T: Duration = Duration::from_secs(60);

fn env() -> Opts<'static> {
    common::aws_env()
}

fn head(dir: &std::path::Path, endpoint: &str, extra_aws: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\npoll_interval = \"1s\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nmax_attempts = 3\nattempt_timeout = \"1s\"\n{extra_aws}\n",
        dir.join("state").display()
    )
}

/// Many firings through a proxy that throttles, fails, resets, truncates and delays requests:
/// every decided start happens exactly once, every run is followed to its end.
#[test]
fn faults_over_many_firings_start_each_exactly_once() {
    let pipelines_n: usize = std::env::var("MLOPSD_SOAK_PIPELINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    const BUILDS: usize = 4;
    let mut aws = TestAws::new("soak");
    let topic = aws.create_topic("alerts");
    let proxy = Proxy::start(&aws.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let ns = format!("{}/soak", aws.prefix);
    let mut text = head(dir.path(), &proxy.url, "");
    text.push_str(&format!(
        "[notifiers.ops]\ntopic_arn = \"{topic}\"\nrepeat_interval = \"0s\"\n\n"
    ));
    let mut pipelines = Vec::new();
    for i in 0..pipelines_n {
        let p = aws.create_pipeline(&format!("p{i}"));
        aws.put_metric(&ns, &format!("m{i}"), &[], 1.0);
        text.push_str(&format!(
            "[pipelines.p{i}]\npipeline_name = \"{p}\"\n\n[checks.c{i}]\nschedule = \"every 1s\"\nnamespace = \"{ns}\"\nmetric = \"m{i}\"\nabove = 0.5\n\n[rules.r{i}]\non_check = \"c{i}\"\nstart_pipeline = \"p{i}\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n\n"
        ));
        pipelines.push(p);
    }
    let mut projects = Vec::new();
    for i in 0..BUILDS {
        let b = aws.create_project(&format!("b{i}"));
        text.push_str(&format!(
            "[builds.b{i}]\nproject_name = \"{b}\"\n\n[rules.nightly{i}]\non_schedule = \"every 2s\"\nstart_build = \"b{i}\"\ncooldown = \"1h\"\nnotify = [\"ops\"]\n\n"
        ));
        projects.push(b);
    }
    // Response-losing faults (truncate, delay-then-forward) are kept off StartBuild: moto neither
    // honours idempotency tokens nor echoes the build variable the daemon finds builds by, so a
    // build whose answer is lost cannot be recognised on moto (it is on AWS). Request-side faults
    // (throttle, 5xx, reset before forwarding) hit every operation.
    let throttle = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    proxy.fault_every_except(Fault::Status(400, throttle.into()), 10, &[]);
    proxy.fault_every_except(Fault::Status(500, "internal error".into()), 13, &[]);
    proxy.fault_every_except(Fault::Reset, 17, &[]);
    proxy.fault_every_except(Fault::Truncate, 23, &["StartBuild"]);
    proxy.fault_every_except(
        Fault::Delay(Duration::from_millis(1500)),
        29,
        &["StartBuild", "StartPipelineExecution"],
    );
    proxy.fault_every_except(Fault::Hang(Duration::from_millis(1500)), 31, &[]);

    let r = Running::start(dir.path(), &text, env());
    // Let the faults act for a while, then stop them and let everything settle.
    std::thread::sleep(Duration::from_secs(12));
    let faults = proxy.total_faults();
    let during = proxy.total();
    proxy.clear();
    let start = Instant::now();
    r.wait_for("every run to end", Duration::from_secs(90), |l| {
        l.iter().filter(|v| v["event"] == "run_succeeded").count() >= pipelines_n + BUILDS
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut starts = 0;
    for p in &pipelines {
        let n = aws.executions(p).len();
        assert_eq!(n, 1, "pipeline {p}: {n} executions");
        starts += n;
    }
    for b in &projects {
        let n = aws.builds(b).len();
        assert_eq!(n, 1, "project {b}: {n} builds");
        starts += n;
    }
    let ended = r.events("run_succeeded").len();
    assert_eq!(ended, pipelines_n + BUILDS, "each end handled once");
    assert!(!r.raw_output().contains("panicked"));
    // The daemon recovered: it still evaluates, and /healthz is fine.
    let addr = r.http_addr();
    assert_eq!(mlopsd::cli::status::get(&addr, "/healthz").unwrap().0, 200);
    println!(
        "RELIABILITY aws-faults: {} decided starts under {faults} injected faults in {during} requests: {starts} started, 0 doubled, 0 lost; {ended} runs followed to the end ({:.0} s to settle after faults stopped); start retries logged: {}",
        pipelines_n + BUILDS,
        start.elapsed().as_secs_f64(),
        r.events("start_retry").len()
    );
}

#[test]
fn sigterm_during_an_in_flight_call_exits_0_within_grace() {
    let aws = TestAws::new("term");
    let proxy = Proxy::start(&aws.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let text = head(dir.path(), &proxy.url, "")
        + &format!("[checks.c]\nschedule = \"every 1s\"\nnamespace = \"{}/t\"\nmetric = \"m\"\nabove = 1\n", aws.prefix);
    // A call that would outlast the 2 s grace: the daemon abandons it and still exits 0.
    proxy.fault(
        "GetMetricData",
        Fault::Hang(Duration::from_secs(20)),
        usize::MAX,
    );
    let mut r = Running::start(dir.path(), &text, env());
    // Two in flight: the preflight's read (which a shutdown does not wait for) and the check's.
    r.wait_for("the check's GetMetricData call in flight", T, |_| {
        proxy.count("GetMetricData") >= 2
    });
    r.signal(libc::SIGTERM);
    let st = r.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", r.raw_output());
    assert_eq!(r.events("shutdown_grace_exceeded").len(), 1);
    assert_eq!(r.events("daemon_stopped")[0]["clean"], false);
    drop(r);

    // A call that finishes within the grace: a clean stop.
    proxy.clear();
    proxy.fault(
        "GetMetricData",
        Fault::Delay(Duration::from_millis(800)),
        usize::MAX,
    );
    let before = proxy.count("GetMetricData");
    let mut r = Running::start(dir.path(), &text, env());
    r.wait_for("a GetMetricData call in flight", T, |_| {
        proxy.count("GetMetricData") > before
    });
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(
        r.events("daemon_stopped")[0]["clean"],
        true,
        "{}",
        r.raw_output()
    );
    assert!(r.notes().iter().any(|n| n == "STOPPING=1"));
}

#[test]
fn sighup_storm_leaves_one_consistent_config() {
    let dir = tempfile::tempdir().unwrap();
    let base = head(dir.path(), "http://127.0.0.1:9", "");
    let cfg = |n: usize| {
        format!("{base}[checks.c{n}]\nschedule = \"every 1h\"\nnamespace = \"ns\"\nmetric = \"m\"\nabove = {n}\n")
    };
    let r = Running::start(dir.path(), &cfg(0), env());
    r.wait_event("daemon_ready", 1, T);
    for i in 1..=100 {
        if i % 10 == 0 {
            std::fs::write(&r.config, cfg(i)).unwrap();
        }
        r.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(10));
    }
    let last = cfg(100);
    let want = mlopsd::config::content_hash(&last);
    std::fs::write(&r.config, &last).unwrap();
    r.signal(libc::SIGHUP);
    r.wait_for("the final config applied", T, |l| {
        l.iter().any(|v| {
            (v["event"] == "config_reload_accepted" || v["event"] == "config_reload_unchanged")
                && v["hash"] == want.as_str()
        })
    });
    let st = common::http_get_json(&r.http_addr(), "/status");
    let names: Vec<&str> = st["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c100"]);
    assert_eq!(st["config"]["hash"], want.as_str());
    assert!(
        r.events("config_reload_rejected").is_empty(),
        "only valid files were written"
    );
    let reloads = r
        .logs()
        .iter()
        .filter(|v| {
            v["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("config_reload"))
        })
        .count();
    println!("RELIABILITY sighup-storm: 101 SIGHUPs in ~1 s → {reloads} reloads, final config c100 (hash {want}), no rejection");
}

#[test]
fn bad_files_keep_the_old_config_running() {
    let dir = tempfile::tempdir().unwrap();
    let good = head(dir.path(), "http://127.0.0.1:9", "")
        + "[checks.a]\nschedule = \"every 1h\"\nnamespace = \"ns\"\nmetric = \"m\"\nabove = 1\n";
    let r = Running::start(dir.path(), &good, env());
    r.wait_event("daemon_ready", 1, T);
    let mut n = 0;
    let mut rejected = |what: &str, needle: &str| {
        n += 1;
        let ev = r.wait_event("config_reload_rejected", n, T);
        assert!(
            ev["errors"].as_str().unwrap().contains(needle),
            "{what}: {ev}"
        );
    };
    std::fs::write(&r.config, "").unwrap();
    rejected("emptied", "the config is empty");
    std::fs::write(&r.config, &good[..good.len() / 2]).unwrap();
    rejected("truncated mid-write", "mlops.toml:");
    std::fs::write(&r.config, [0xff, 0xfe, b'[', b'x']).unwrap();
    rejected("not UTF-8", "not valid UTF-8");
    std::fs::remove_file(&r.config).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere.toml"), &r.config).unwrap();
    r.signal(libc::SIGHUP);
    rejected("dangling symlink (unreadable)", "cannot read config");
    std::fs::remove_file(&r.config).unwrap();
    replace_by_rename(&r.config, &good);
    r.wait_event("config_reload_unchanged", 1, T);
    // Through all of it the original check stayed scheduled.
    let st = common::http_get_json(&r.http_addr(), "/status");
    assert_eq!(st["checks"][0]["name"], "a");
}

#[test]
fn older_schema_is_migrated_and_its_data_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // A version-0 file: an SQLite database this build has never written to.
    {
        let c = rusqlite::Connection::open(state.join("mlopsd.db")).unwrap();
        c.execute_batch("CREATE TABLE keepme (x INTEGER); INSERT INTO keepme VALUES (42);")
            .unwrap();
    }
    let s = mlopsd::state::Store::open(&state).unwrap();
    assert_eq!(s.schema_version().unwrap(), mlopsd::state::SCHEMA_VERSION);
    let c = rusqlite::Connection::open(state.join("mlopsd.db")).unwrap();
    let x: i64 = c
        .query_row("SELECT x FROM keepme", [], |r| r.get(0))
        .unwrap();
    assert_eq!(x, 42);
}

/// A small tmpfs, unmounted on drop (the tests run as root, as CI does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(dir: &std::path::Path, size: &str) -> Tmpfs {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs for the full-disk test needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the filesystem; returns the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_disk_is_reported_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fs = Tmpfs::new(&mnt, "2m");
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n\n[aws]\nendpoint_url = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\n\n[notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n\n[rules.tick]\non_schedule = \"every 1s\"\nnotify = [\"ops\"]\ndry_run = true\n",
        mnt.join("state").display()
    );
    let r = Running::start(dir.path(), &text, env());
    let addr = r.http_addr();
    assert_eq!(mlopsd::cli::status::get(&addr, "/healthz").unwrap().0, 200);
    let filler = fs.fill();
    r.wait_for("a state write to fail", T, |l| {
        l.iter().any(|v| v["event"] == "state_error")
    });
    let (code, body) = mlopsd::cli::status::get(&addr, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("not writable") && body.contains("full"),
        "{body}"
    );
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    while mlopsd::cli::status::get(&addr, "/healthz").unwrap().0 != 200 {
        assert!(start.elapsed() < T, "did not recover after space was freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!r.raw_output().contains("panicked"));
    drop(r);

    // Starting on a full disk: a clear error and exit code, no panic.
    let text2 = text.replace(
        &mnt.join("state").display().to_string(),
        &mnt.join("state2").display().to_string(),
    );
    let _filler = fs.fill();
    let d2 = dir.path().join("second");
    std::fs::create_dir(&d2).unwrap();
    let mut r = Running::start(&d2, &text2, env());
    let st = r.wait_exit(T);
    let out = r.raw_output();
    assert_eq!(st.code(), Some(74), "{out}");
    assert!(
        out.contains("state store") && (out.contains("full") || out.contains("No space")),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
}

/// Correlation ids (`c-` and 16 hex digits) in a request body.
fn correlation_ids(body: &str) -> Vec<String> {
    let b = body.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 18 <= b.len() {
        if &b[i..i + 2] == b"c-"
            && b[i + 2..i + 18].iter().all(u8::is_ascii_hexdigit)
            && (i + 18 == b.len() || !b[i + 18].is_ascii_hexdigit())
        {
            out.push(body[i..i + 18].to_string());
            i += 18;
        } else {
            i += 1;
        }
    }
    out
}

/// A full disk while notifications really go out (no dry run): a message published whose
/// "sent" mark cannot be stored is not published again — not in a tight loop, not at all —
/// and the mark is stored once space is back.
#[test]
fn full_disk_with_real_notifications_publishes_each_message_once() {
    let mut aws = TestAws::new("fulldisk");
    let topic = aws.create_topic("alerts");
    let proxy = Proxy::start(&aws.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fs = Tmpfs::new(&mnt, "2m");
    let mut text = head(&mnt, &proxy.url, "");
    text.push_str(&format!(
        "[notifiers.ops]\ntopic_arn = \"{topic}\"\nrepeat_interval = \"0s\"\n\n[rules.tick]\non_schedule = \"every 1s\"\nnotify = [\"ops\"]\n"
    ));
    let r = Running::start(dir.path(), &text, env());
    r.wait_event("notification_sent", 1, T);
    // The next publish is slow (within the SDK's 1 s attempt timeout); the disk fills while
    // it is in flight, after its message was queued and before it is marked sent.
    proxy.fault("Publish", Fault::Delay(Duration::from_millis(800)), 1);
    r.wait_for("a publish in flight", T, |_| proxy.faults("Publish") >= 1);
    let filler = fs.fill();
    r.wait_for_event_where("state_error", T, |v| {
        v["operation"] == "mark a notification sent"
    });
    let at_fill = proxy.count("Publish");
    std::thread::sleep(Duration::from_secs(5));
    let during = proxy.count("Publish") - at_fill;
    println!("full disk, real notifications: {during} Publish calls in the 5 s after the first failed sent-mark");
    assert!(
        during <= 10,
        "published {during} times in 5 s while marks failed: a re-publish loop"
    );
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    while mlopsd::cli::status::get(&r.http_addr(), "/healthz")
        .unwrap()
        .0
        != 200
    {
        assert!(start.elapsed() < T, "did not recover after space was freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Some more ticks go out after recovery; no message was ever published twice.
    let n = proxy.count("Publish");
    r.wait_for("more notifications after recovery", T, |_| {
        proxy.count("Publish") >= n + 2
    });
    // (an id appears in a message's body and in its attributes: count it once per request)
    let mut ids: Vec<String> = proxy
        .bodies("Publish")
        .iter()
        .flat_map(|b| {
            let mut v = correlation_ids(b);
            v.sort();
            v.dedup();
            v
        })
        .collect();
    let total = ids.len();
    assert!(total >= 3, "{total} correlation ids seen");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "a notification was published twice");
    assert!(!r.raw_output().contains("panicked"));
}
