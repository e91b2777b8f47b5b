//! Test harness: runs the real `mlopsd` binary in a temp dir, collects its JSON log lines and
//! the systemd notifications it sends to a `NOTIFY_SOCKET` the test binds itself.
#![allow(dead_code)]

pub mod aws;
pub mod fake;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mlopsd"))
}

/// Runs `mlopsd ARGS` to completion: (exit code, stdout, stderr).
pub fn mlopsd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run mlopsd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub struct Running {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    logs: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<Vec<String>>>,
    notes: Arc<Mutex<Vec<String>>>,
    _notify: Option<Arc<UnixDatagram>>,
}

pub struct Opts<'a> {
    pub env: Vec<(&'a str, String)>,
    pub notify: bool,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            env: vec![],
            notify: true,
        }
    }
}

impl Running {
    /// Starts `mlopsd run --config DIR/mlops.toml` with `config_text` written there.
    pub fn start(dir: &Path, config_text: &str, opts: Opts<'_>) -> Running {
        Self::start_args(dir, config_text, &[], opts)
    }

    /// `start` with more arguments to `mlopsd run` (`--listen`, `--state-dir`).
    pub fn start_args(dir: &Path, config_text: &str, args: &[&str], opts: Opts<'_>) -> Running {
        let config = dir.join("mlops.toml");
        std::fs::write(&config, config_text).expect("write config");
        let notes = Arc::new(Mutex::new(Vec::new()));
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"])
            .arg(&config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        cmd.env("MLOPSD_LOG_FORMAT", "json")
            .env("MLOPSD_LOG", "info,mlopsd=debug");
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        let mut sock = None;
        if opts.notify {
            let path = dir.join("notify.sock");
            let _ = std::fs::remove_file(&path);
            let s = Arc::new(UnixDatagram::bind(&path).expect("bind notify socket"));
            s.set_read_timeout(Some(Duration::from_millis(200))).ok();
            let (s2, n2) = (s.clone(), notes.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s2.recv(&mut buf) {
                        Ok(n) => {
                            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                            for line in msg.lines() {
                                n2.lock().unwrap().push(line.to_string());
                            }
                        }
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            if Arc::strong_count(&s2) == 1 {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
            cmd.env("NOTIFY_SOCKET", &path);
            sock = Some(s);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn mlopsd");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let (l2, r2) = (logs.clone(), raw.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l2.lock().unwrap().push(v);
                }
                r2.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let r3 = raw.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                r3.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        Running {
            child,
            dir: dir.to_path_buf(),
            config,
            logs,
            raw,
            notes,
            _notify: sock,
        }
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    pub fn raw_output(&self) -> String {
        self.raw.lock().unwrap().join("\n")
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }

    pub fn events(&self, name: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|v| v["event"] == name)
            .collect()
    }

    /// Waits until `pred` holds for the log lines seen so far; panics with the output otherwise.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if pred(&self.logs()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "timed out waiting for {what}; output so far:\n{}",
            self.raw_output()
        );
    }

    /// Waits for the `n`th (1-based) log event named `name` and returns it.
    pub fn wait_event(&self, name: &str, n: usize, timeout: Duration) -> Value {
        self.wait_for(&format!("{n} x event {name}"), timeout, |l| {
            l.iter().filter(|v| v["event"] == name).count() >= n
        });
        self.events(name)[n - 1].clone()
    }

    /// Waits for the first event named `name` that satisfies `pred`, and returns it.
    pub fn wait_for_event_where(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for(&format!("event {name} matching"), timeout, |l| {
            l.iter().any(|v| v["event"] == name && pred(v))
        });
        self.events(name)
            .into_iter()
            .find(|v| pred(v))
            .unwrap_or_default()
    }

    /// The address the status server listens on (from its `http_listening` event).
    pub fn http_addr(&self) -> String {
        let ev = self.wait_event("http_listening", 1, Duration::from_secs(20));
        ev["addr"].as_str().expect("addr").to_string()
    }

    pub fn wait_note(&self, note: &str, n: usize, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.notes().iter().filter(|x| *x == note).count() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "timed out waiting for notify {note} x{n}; got {:?}\noutput:\n{}",
            self.notes(),
            self.raw_output()
        );
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(100));
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!(
            "mlopsd did not exit within {timeout:?}; output:\n{}",
            self.raw_output()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[daemon]` and `[aws]` tables of a test config: state in `state`, HTTP on a free
/// loopback port, fast polling, AWS at `endpoint`.
pub fn daemon_head(state: &Path, endpoint: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\npoll_interval = \"1s\"\n{}\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nmax_attempts = 2\n\n",
        state.display(),
        backend_lines(state)
    )
}

/// With `MLOPSD_TEST_BACKEND=dynamodb` the daemon tests that use `daemon_head` run on the HA
/// backend: one replica, its state in a DynamoDB table on moto made for this state directory
/// (so a restart of the same test finds the same table). Unset, or `sqlite`: state in SQLite.
pub fn backend_lines(state: &Path) -> String {
    match std::env::var("MLOPSD_TEST_BACKEND").as_deref() {
        Ok("dynamodb") => {}
        Ok("sqlite") | Err(_) => return String::new(),
        Ok(other) => panic!("MLOPSD_TEST_BACKEND={other}: use sqlite or dynamodb"),
    }
    static TABLES: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    let mut tables = TABLES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, t)) = tables.iter().find(|(p, _)| p == state) {
        return format!("ha_table = \"{t}\"\nha_lease = \"3s\"\nha_notify = []\n");
    }
    let n = tables.len();
    let aws = aws::TestAws::new(&format!("be{n}"));
    let t = aws.create_ha_table("state");
    tables.push((state.to_path_buf(), t.clone()));
    // leader_changed is told by tests/ha.rs; here SNS sees what it sees on SQLite.
    format!("ha_table = \"{t}\"\nha_lease = \"3s\"\nha_notify = []\n")
}

/// Writes `text` to `path` by writing a sibling temp file and renaming it over (as vim does).
pub fn replace_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// GET `path` of the daemon at `addr`: the body (panics unless 200).
pub fn http_get(addr: &str, path: &str) -> String {
    let (code, body) = mlopsd::cli::status::get(addr, path).expect("daemon answers");
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// GET `path` as JSON.
pub fn http_get_json(addr: &str, path: &str) -> Value {
    serde_json::from_str(&http_get(addr, path)).expect("JSON answer")
}

/// Daemon options with moto's test credentials (and the notify socket).
pub fn aws_env() -> Opts<'static> {
    Opts {
        env: vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ],
        notify: true,
    }
}

/// A program of the project's Python environment (moto server, cfn-lint, parliament,
/// jsonschema), which scripts/test installs into .venv.
pub fn venv_bin(name: &str) -> String {
    let p = format!("{}/.venv/bin/{name}", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&p).exists(),
        "{p} is missing: scripts/test installs moto server, cfn-lint and parliament into .venv"
    );
    p
}

/// The generated files both packages carry (completions, man page), from the binary the tests
/// were built with, into target/assets where the package metadata looks for them.
pub fn make_assets() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/assets"))
        .arg(env!("CARGO_BIN_EXE_mlopsd"))
        .output()
        .expect("run scripts/assets");
    assert!(
        out.status.success(),
        "scripts/assets: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command's exit code and its stdout and stderr together.
pub fn run(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}
