//! The real daemon in a temp dir: readiness, hot reload (in place, by rename, invalid,
//! SIGHUP), systemd notifications, watchdog, shutdown, state errors, catch-up.

use crate::support as common;
use std::time::Duration;

use common::{replace_by_rename, Opts, Running};

const T: Duration = Duration::from_secs(20);

fn config(dir: &std::path::Path, checks: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n\n[notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n\n{checks}",
        dir.join("state").display()
    )
}

fn check(name: &str, schedule: &str, above: f64) -> String {
    format!("[checks.{name}]\nschedule = \"{schedule}\"\nnamespace = \"ns\"\nmetric = \"m\"\nabove = {above}\n\n")
}

#[test]
fn reloads_in_place_by_rename_rejects_invalid_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut r = Running::start(d, &config(d, &check("a", "every 1h", 1.0)), Opts::default());
    r.wait_note("READY=1", 1, T);
    let ready = r.wait_event("daemon_ready", 1, T);
    assert_eq!(ready["scheduled"], 1);
    let a_next = r
        .events("schedule_next")
        .iter()
        .filter(|e| e["name"] == "a")
        .count();
    assert_eq!(a_next, 1);

    // In place: add a check.
    std::fs::write(
        &r.config,
        config(
            d,
            &(check("a", "every 1h", 1.0) + &check("b", "every 2h", 1.0)),
        ),
    )
    .unwrap();
    let ev = r.wait_event("config_reload_accepted", 1, T);
    assert_eq!(ev["trigger"], "file");
    assert_eq!(ev["checks_added"], "b");
    assert_eq!(ev["checks_changed"], "");
    // The unchanged check kept its next fire time: it was not re-armed.
    assert_eq!(
        r.events("schedule_next")
            .iter()
            .filter(|e| e["name"] == "a")
            .count(),
        1
    );
    assert_eq!(
        r.events("schedule_next")
            .iter()
            .filter(|e| e["name"] == "b")
            .count(),
        1
    );

    // By rename (vim, atomic writers): change b's threshold, remove a.
    replace_by_rename(&r.config, &config(d, &check("b", "every 2h", 5.0)));
    let ev = r.wait_event("config_reload_accepted", 2, T);
    assert_eq!(ev["checks_changed"], "b");
    assert_eq!(ev["checks_removed"], "a");
    // b changed its threshold, not its schedule: still not re-armed.
    assert_eq!(
        r.events("schedule_next")
            .iter()
            .filter(|e| e["name"] == "b")
            .count(),
        1
    );

    // Invalid: rejected with its location; the old config keeps running.
    std::fs::write(&r.config, config(d, &check("b", "every 2 hours", 5.0))).unwrap();
    let ev = r.wait_event("config_reload_rejected", 1, T);
    let err = ev["error"].as_str().unwrap();
    assert!(
        err.contains("mlops.toml:10:12: bad schedule in `schedule`"),
        "{err}"
    );
    assert_eq!(ev["error_count"], 1);

    // SIGHUP with the (still invalid) file: rejected again; RELOADING=1 … READY=1 around it.
    let readies = r.notes().iter().filter(|n| *n == "READY=1").count();
    r.signal(libc::SIGHUP);
    let ev = r.wait_event("config_reload_rejected", 2, T);
    assert_eq!(ev["trigger"], "signal");
    r.wait_note("READY=1", readies + 1, T);
    assert!(
        r.notes().iter().any(|n| n == "RELOADING=1"),
        "{:?}",
        r.notes()
    );
    assert!(
        r.notes().iter().any(|n| n.starts_with("MONOTONIC_USEC=")),
        "{:?}",
        r.notes()
    );

    // Fixed: accepted, and it is a diff against the config that kept running (b at 5.0).
    std::fs::write(&r.config, config(d, &check("b", "every 2h", 5.0))).unwrap();
    r.wait_event("config_reload_unchanged", 1, T);

    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_eq!(status.code(), Some(0), "{}", r.raw_output());
    assert!(r.notes().iter().any(|n| n == "STOPPING=1"));
    let stopped = r.wait_event("daemon_stopped", 1, T);
    assert_eq!(stopped["clean"], true);
}

#[test]
fn file_deleted_or_replaced_by_directory_keeps_old_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = Running::start(d, &config(d, &check("a", "every 1h", 1.0)), Opts::default());
    r.wait_event("daemon_ready", 1, T);
    std::fs::remove_file(&r.config).unwrap();
    let ev = r.wait_event("config_reload_rejected", 1, T);
    assert!(
        ev["error"].as_str().unwrap().contains("cannot read config"),
        "{ev}"
    );
    std::fs::create_dir(&r.config).unwrap();
    r.signal(libc::SIGHUP);
    let ev = r.wait_event("config_reload_rejected", 2, T);
    assert!(
        ev["error"].as_str().unwrap().contains("is a directory"),
        "{ev}"
    );
    std::fs::remove_dir(&r.config).unwrap();
    std::fs::write(&r.config, config(d, &check("a", "every 1h", 1.0))).unwrap();
    r.wait_event("config_reload_unchanged", 1, T);
}

#[test]
fn watchdog_pings_at_half_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = Running::start(
        d,
        &config(d, &check("a", "every 1h", 1.0)),
        Opts {
            env: vec![("WATCHDOG_USEC", "200000".into())],
            notify: true,
        },
    );
    r.wait_note("READY=1", 1, T);
    // 100 ms apart: several within a few seconds.
    r.wait_note("WATCHDOG=1", 5, T);
}

#[test]
fn invalid_config_at_start_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut r = Running::start(
        d,
        &config(d, &check("a", "every 1 h", 1.0)),
        Opts::default(),
    );
    let status = r.wait_exit(T);
    assert_eq!(status.code(), Some(78));
    assert!(
        r.raw_output().contains("mlops.toml:10:12: bad schedule"),
        "{}",
        r.raw_output()
    );
    assert!(!r.notes().iter().any(|n| n == "READY=1"));
}

#[test]
fn corrupt_state_exits_with_clear_error_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("state")).unwrap();
    std::fs::write(d.join("state/mlopsd.db"), vec![0xA5u8; 8192]).unwrap();
    let mut r = Running::start(d, &config(d, &check("a", "every 1h", 1.0)), Opts::default());
    let status = r.wait_exit(T);
    assert_eq!(status.code(), Some(65), "{}", r.raw_output());
    let out = r.raw_output();
    assert!(out.contains("is corrupt"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn truncated_state_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let s = mlopsd::state::Store::open(&d.join("state")).unwrap();
        for i in 0..2000 {
            s.record_fire(
                mlopsd::config::ItemKind::Rule,
                &format!("r{i}"),
                chrono::Utc::now(),
            )
            .unwrap();
        }
        s.checkpoint().unwrap();
    }
    let db = d.join("state/mlopsd.db");
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2 + 100).unwrap();
    drop(f);
    let mut r = Running::start(d, &config(d, &check("a", "every 1h", 1.0)), Opts::default());
    let status = r.wait_exit(T);
    assert_eq!(status.code(), Some(65), "{}", r.raw_output());
    assert!(r.raw_output().contains("is corrupt"), "{}", r.raw_output());
}

#[test]
fn second_daemon_on_same_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = config(d, &check("a", "every 1h", 1.0));
    let a = Running::start(d, &text, Opts::default());
    a.wait_event("daemon_ready", 1, T);
    let d2 = d.join("second");
    std::fs::create_dir(&d2).unwrap();
    let mut b = Running::start(&d2, &text, Opts::default());
    let status = b.wait_exit(T);
    assert_eq!(status.code(), Some(75));
    assert!(
        b.raw_output().contains("in use by another mlopsd"),
        "{}",
        b.raw_output()
    );
}

#[test]
fn catch_up_once_after_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rules = "[rules.tick]\non_schedule = \"every 1s\"\ncatch_up = \"once\"\nnotify = [\"ops\"]\ndry_run = true\n";
    let text = config(d, rules);
    let mut r = Running::start(d, &text, Opts::default());
    r.wait_for("a fire of rule tick", T, |l| {
        l.iter()
            .any(|v| v["event"] == "schedule_fired" && v["name"] == "tick")
    });
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait_exit(T).code(), Some(0));
    drop(r);
    std::thread::sleep(Duration::from_millis(2500));
    let r = Running::start(d, &text, Opts::default());
    let ev = r.wait_event("catch_up", 1, T);
    assert_eq!(ev["rule"], "tick");
}

#[test]
fn small_edits_reload_incrementally_and_other_edits_fully() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two = check("a", "every 1h", 1.0) + &check("b", "every 2h", 1.0);
    let r = Running::start(d, &config(d, &two), Opts::default());
    r.wait_event("daemon_ready", 1, T);
    // One threshold changed: only that block is read again.
    std::fs::write(
        &r.config,
        config(
            d,
            &(check("a", "every 1h", 1.0) + &check("b", "every 2h", 7.0)),
        ),
    )
    .unwrap();
    let ev = r.wait_event("config_reload_accepted", 1, T);
    assert_eq!(ev["incremental"], true, "{ev}");
    assert_eq!(ev["checks_changed"], "b");
    // A schedule change through the fast path re-arms only that check.
    std::fs::write(
        &r.config,
        config(
            d,
            &(check("a", "every 3h", 1.0) + &check("b", "every 2h", 7.0)),
        ),
    )
    .unwrap();
    let ev = r.wait_event("config_reload_accepted", 2, T);
    assert_eq!(ev["incremental"], true, "{ev}");
    assert_eq!(ev["checks_changed"], "a");
    assert_eq!(
        r.events("schedule_next")
            .iter()
            .filter(|e| e["name"] == "a")
            .count(),
        2
    );
    assert_eq!(
        r.events("schedule_next")
            .iter()
            .filter(|e| e["name"] == "b")
            .count(),
        1
    );
    // A new item changes the block structure: a full parse.
    std::fs::write(
        &r.config,
        config(
            d,
            &(check("a", "every 3h", 1.0)
                + &check("b", "every 2h", 7.0)
                + &check("c", "every 1h", 1.0)),
        ),
    )
    .unwrap();
    let ev = r.wait_event("config_reload_accepted", 3, T);
    assert_eq!(ev["incremental"], false, "{ev}");
    assert_eq!(ev["checks_added"], "c");
    // A bad value in one block: the full parse reports it with its location.
    std::fs::write(
        &r.config,
        config(
            d,
            &(check("a", "every 3h", 1.0)
                + &check("b", "every 2 h", 7.0)
                + &check("c", "every 1h", 1.0)),
        ),
    )
    .unwrap();
    let ev = r.wait_event("config_reload_rejected", 1, T);
    assert!(
        ev["error"]
            .as_str()
            .unwrap()
            .contains("mlops.toml:16:12: bad schedule"),
        "{ev}"
    );
}

/// A service manager that stops reading its notify socket (its queue holds ~10 datagrams)
/// must not stall the daemon: every reload sends RELOADING=1 and READY=1. Before the fix the
/// sixth reload blocked the loop for good in a blocking send.
#[test]
fn a_notify_socket_nobody_reads_never_stalls_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sock_path = d.join("deaf.sock");
    let _deaf = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    let opts = Opts {
        env: vec![("NOTIFY_SOCKET", sock_path.display().to_string())],
        notify: false,
    };
    let r = Running::start(d, &config(d, &check("a", "every 1h", 1.0)), opts);
    r.wait_event("daemon_ready", 1, T);
    for i in 1..=15 {
        std::fs::write(
            &r.config,
            config(d, &check("a", "every 1h", 1.0 + i as f64)),
        )
        .unwrap();
        let ev = r.wait_event("config_reload_accepted", i, T);
        assert_eq!(ev["checks_changed"], "a", "{ev}");
    }
    let dropped = r.events("systemd_notify_failed");
    assert!(!dropped.is_empty(), "a full notify queue is logged");
    assert!(
        dropped[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("temporarily unavailable"),
        "{}",
        dropped[0]
    );
}
