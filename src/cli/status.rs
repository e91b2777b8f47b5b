//! `mlopsd status`: asks the running daemon for `/status` and prints it as compact tables
//! (or the JSON with `--json`). A plain HTTP/1.0 GET over loopback; no client library needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

/// `mlopsd status`: prints the daemon's `/status` as tables (or JSON); 69 when it does not
/// answer like mlopsd.
pub(crate) fn run(addr: &str, json: bool) -> u8 {
    match fetch(addr) {
        Ok(v) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", render(addr, &v));
            }
            crate::exit::OK
        }
        Err(e) => {
            eprintln!("mlopsd status: {e}");
            crate::exit::UNAVAILABLE
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("mlopsd is not running at {addr} (or not listening there): {reason}")]
    NotRunning { addr: String, reason: String },
    #[error("{addr} answered, but not like mlopsd: {reason}")]
    BadAnswer { addr: String, reason: String },
}

/// GET `path` from `addr`; returns (status code, body).
pub fn get(addr: &str, path: &str) -> Result<(u16, String), StatusError> {
    let not_running = |reason: String| StatusError::NotRunning {
        addr: addr.to_string(),
        reason,
    };
    let sa: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| not_running(e.to_string()))?
        .next()
        .ok_or_else(|| not_running("address does not resolve".into()))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(3))
        .map_err(|e| not_running(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| not_running(e.to_string()))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| not_running(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| StatusError::BadAnswer {
            addr: addr.into(),
            reason: "no HTTP header".into(),
        })?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| StatusError::BadAnswer {
            addr: addr.into(),
            reason: "no status code".into(),
        })?;
    Ok((code, body.to_string()))
}

pub fn fetch(addr: &str) -> Result<Value, StatusError> {
    let (code, body) = get(addr, "/status")?;
    if code != 200 {
        return Err(StatusError::BadAnswer {
            addr: addr.into(),
            reason: format!("HTTP {code}"),
        });
    }
    serde_json::from_str(&body).map_err(|e| StatusError::BadAnswer {
        addr: addr.into(),
        reason: format!("not JSON: {e}"),
    })
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map(|x| x.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, x)| format!("{x:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// The human view of `/status`.
pub fn render(addr: &str, st: &Value) -> String {
    let c = &st["config"];
    let mut out = format!(
        "mlopsd {} at {addr}: config {} (hash {}) loaded {}\n",
        s(&st["version"]),
        s(&c["path"]),
        s(&c["hash"]),
        s(&c["loaded_at"])
    );
    if let Some(r) = c["last_reload"].as_object() {
        if r.get("ok").and_then(Value::as_bool) == Some(false) {
            out.push_str(&format!(
                "last reload FAILED at {} (previous config keeps running):\n  {}\n",
                s(&r["at"]),
                s(&r["error"]).replace('\n', "\n  ")
            ));
        } else {
            out.push_str(&format!("last reload ok at {}\n", s(&r["at"])));
        }
    }
    let ha = &st["ha"];
    if ha.is_object() {
        out.push_str(&format!(
            "role {} (replica {}, table {}): leader {}, fencing {}, lease age {} ms, log entry {}{}\n",
            s(&ha["role"]),
            s(&ha["replica"]),
            s(&ha["table"]),
            s(&ha["leader"]),
            s(&ha["fencing"]),
            s(&ha["lease_age_ms"]),
            s(&ha["applied_seq"]),
            if ha["config_differs"] == Value::Bool(true) {
                "; CONFIG DIFFERS from the leader's"
            } else if ha["table_reachable"] == Value::Bool(false) {
                "; CUT OFF from the table"
            } else {
                ""
            }
        ));
    }
    let mut rows = vec![vec![
        "CHECK".into(),
        "STATE".into(),
        "LAST".into(),
        "THRESHOLD".into(),
        "BREACHES".into(),
        "NEXT".into(),
    ]];
    for ch in st["checks"].as_array().into_iter().flatten() {
        let op = if ch["threshold"]["op"] == "below" {
            "<"
        } else {
            ">"
        };
        rows.push(vec![
            s(&ch["name"]),
            s(&ch["state"]),
            s(&ch["last_value"]),
            format!("{op} {}", s(&ch["threshold"]["value"])),
            format!("{}/{}", s(&ch["breach_count"]), s(&ch["for"])),
            s(&ch["next_fire"]),
        ]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    let mut rows = vec![vec![
        "RULE".into(),
        "TRIGGER".into(),
        "FIRINGS".into(),
        "LAST FIRED".into(),
        "COOLDOWN UNTIL".into(),
        "ACTIVE".into(),
    ]];
    for r in st["rules"].as_array().into_iter().flatten() {
        let active: Vec<String> = r["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| format!("{}={}", s(&t["target"]), s(&t["active_runs"])))
            .collect();
        rows.push(vec![
            s(&r["name"])
                + if r["dry_run"] == true {
                    " (dry run)"
                } else {
                    ""
                },
            s(&r["trigger"]),
            s(&r["firings"]),
            s(&r["last_fired"]),
            s(&r["cooldown_until"]),
            if active.is_empty() {
                "-".into()
            } else {
                active.join(",")
            },
        ]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    let mut rows = vec![vec![
        "RUN".into(),
        "RULE".into(),
        "TARGET".into(),
        "STATUS".into(),
        "STARTED".into(),
        "DURATION".into(),
        "CORRELATION".into(),
    ]];
    for r in st["runs"].as_array().into_iter().flatten().take(10) {
        rows.push(vec![
            s(&r["id"]),
            s(&r["rule"]),
            s(&r["target"]),
            s(&r["status"]),
            s(&r["started"]),
            r["duration_s"]
                .as_i64()
                .map(|d| format!("{d}s"))
                .unwrap_or_else(|| "-".into()),
            s(&r["correlation_id"]),
        ]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    let gates = st["gates"].as_array().cloned().unwrap_or_default();
    if !gates.is_empty() {
        let mut rows = vec![vec![
            "GATE".into(),
            "PACKAGE".into(),
            "DECISION".into(),
            "VALUE".into(),
        ]];
        for g in &gates {
            for d in g["decisions"].as_array().into_iter().flatten().take(5) {
                rows.push(vec![
                    s(&g["name"]),
                    s(&d["arn"]),
                    s(&d["decision"]),
                    s(&d["value"]),
                ]);
            }
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    let declared: Vec<&Value> = st["pipelines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["declared"].is_object())
        .collect();
    if !declared.is_empty() {
        let mut rows = vec![vec![
            "PIPELINE".into(),
            "DEFINITION".into(),
            "STATE".into(),
            "SINCE".into(),
            "DETAIL".into(),
        ]];
        for p in declared {
            let d = &p["declared"];
            rows.push(vec![
                s(&p["name"]),
                s(&d["definition"]),
                s(&d["state"]),
                s(&d["since"]),
                s(&d["detail"]),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    out
}
