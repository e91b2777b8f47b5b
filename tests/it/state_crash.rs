//! SIGKILL in the middle of state writes: the store reopens cleanly, every transaction is
//! whole or absent, and nothing acknowledged as committed is lost.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlopsd::state::Store;
use rusqlite::params;

const CHILD_ENV: &str = "MLOPSD_STATE_CRASH_CHILD";

/// The store's file opened as the store opens it (WAL, `synchronous=FULL`), for raw SQL.
fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(dir.join(mlopsd::state::DB_FILE))
        .expect("open the store's file");
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        .expect("pragmas");
    c
}

/// In the child: transactions of two rows each, forever, printing each committed number.
fn writer(dir: &str) {
    // Store::open takes the lock and sets up the schema; the writes go through the same file.
    let _store = Store::open(std::path::Path::new(dir)).expect("open in child");
    let mut c = raw(std::path::Path::new(dir));
    let mut out = std::io::stdout();
    for i in 0i64.. {
        {
            let tx = c.transaction().expect("tx");
            tx.execute(
                "INSERT INTO schedule_state (kind, name, last_fire_ms) VALUES ('crash', ?1, ?2)",
                params![format!("n{i}"), i],
            )
            .expect("row 1");
            tx.execute(
                "INSERT INTO rule_state (name, firings) VALUES (?1, ?2)",
                params![format!("n{i}"), i],
            )
            .expect("row 2");
            tx.commit().expect("commit");
        }
        let _ = writeln!(out, "{i}");
        let _ = out.flush();
    }
}

#[test]
fn sigkill_mid_write_reopens_cleanly() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        writer(&dir);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "state_crash::sigkill_mid_write_reopens_cleanly",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Let it commit a varying number of transactions, then kill it mid-stream.
        let target = 50 + round * 37;
        let mut last_acked: i64 = -1;
        let start = Instant::now();
        while let Some(Ok(l)) = lines.next() {
            if let Ok(n) = l.trim().parse::<i64>() {
                last_acked = n;
                if n >= (target * (round + 1)) as i64 {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "child too slow");
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        assert!(last_acked >= 0, "child committed nothing");

        let store = Store::open(tmp.path()).expect("reopen after SIGKILL");
        let c = raw(tmp.path());
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let a: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM schedule_state WHERE kind = 'crash'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let b: i64 = c
            .query_row("SELECT COUNT(*) FROM rule_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(a, b, "round {round}: a transaction was torn");
        let max: i64 = c
            .query_row("SELECT MAX(firings) FROM rule_state", [], |r| r.get(0))
            .unwrap();
        assert!(
            max >= last_acked,
            "round {round}: acknowledged commit {last_acked} lost (max {max})"
        );
        drop(c);
        drop(store);
        // Empty the tables so the next round's child starts from a clean count.
        let _s = Store::open(tmp.path()).unwrap();
        let c = raw(tmp.path());
        c.execute("DELETE FROM schedule_state WHERE kind = 'crash'", [])
            .unwrap();
        c.execute("DELETE FROM rule_state", []).unwrap();
    }
}
