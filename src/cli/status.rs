//! `mlopsd status`: asks the running daemon for `/status` and prints it as compact tables
//! (or the JSON with `--json`). A plain HTTP/1.0 GET over loopback; no client library needed.
//! The document is the server's own type (`http::status::StatusDoc`), read back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::http::status::{StatusDoc, ThresholdOp};

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

/// The daemon's `/status` document.
pub(crate) fn fetch(addr: &str) -> Result<StatusDoc, StatusError> {
    let (code, body) = get(addr, "/status")?;
    if code != 200 {
        return Err(StatusError::BadAnswer {
            addr: addr.into(),
            reason: format!("HTTP {code}"),
        });
    }
    serde_json::from_str(&body).map_err(|e| StatusError::BadAnswer {
        addr: addr.into(),
        reason: format!("not a /status document: {e}"),
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

/// A value, or `-` for none.
fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".into())
}

fn header(row: &[&str]) -> Vec<String> {
    row.iter().map(|s| s.to_string()).collect()
}

/// The human view of `/status`.
pub(crate) fn render(addr: &str, st: &StatusDoc) -> String {
    let mut out = head(addr, st);
    for section in [
        checks(st),
        rules(st),
        runs(st),
        gates(st),
        endpoints(st),
        declared(st),
    ]
    .into_iter()
    .flatten()
    {
        out.push('\n');
        out.push_str(&section);
    }
    out
}

/// The daemon, its config, its last reload, its HA role.
fn head(addr: &str, st: &StatusDoc) -> String {
    let c = &st.config;
    let mut out = format!(
        "mlopsd {} at {addr}: config {} (hash {}) loaded {}\n",
        st.version, c.path, c.hash, c.loaded_at
    );
    match &c.last_reload {
        Some(r) if !r.ok => out.push_str(&format!(
            "last reload FAILED at {} (previous config keeps running):\n  {}\n",
            r.at,
            or_dash(&r.error).replace('\n', "\n  ")
        )),
        Some(r) => out.push_str(&format!("last reload ok at {}\n", r.at)),
        None => {}
    }
    if let Some(ha) = &st.ha {
        out.push_str(&format!(
            "role {} (replica {}, table {}): leader {}, fencing {}, lease age {} ms, log entry {}{}\n",
            ha.role,
            ha.replica,
            ha.table,
            or_dash(&ha.leader),
            or_dash(&ha.fencing),
            or_dash(&ha.lease_age_ms),
            ha.applied_seq,
            if ha.config_differs {
                "; CONFIG DIFFERS from the leader's"
            } else if !ha.table_reachable {
                "; CUT OFF from the table"
            } else {
                ""
            }
        ));
    }
    out
}

fn checks(st: &StatusDoc) -> Option<String> {
    let mut rows = vec![header(&[
        "CHECK",
        "STATE",
        "LAST",
        "THRESHOLD",
        "BREACHES",
        "NEXT",
    ])];
    for ch in &st.checks {
        let op = match ch.threshold.op {
            ThresholdOp::Below => "<",
            ThresholdOp::Above => ">",
        };
        rows.push(vec![
            ch.name.clone(),
            ch.state.as_str().to_string(),
            or_dash(&ch.last_value),
            format!("{op} {}", ch.threshold.value),
            format!("{}/{}", ch.breach_count, ch.for_count),
            or_dash(&ch.next_fire),
        ]);
    }
    let mut out = table(&rows);
    for ch in st.checks.iter() {
        if let Some(e) = &ch.error {
            out.push_str(&format!(
                "check {} cannot be read since {} ({} reads): {}\n",
                ch.name, e.since, e.count, e.error
            ));
        }
    }
    Some(out)
}

fn rules(st: &StatusDoc) -> Option<String> {
    let mut rows = vec![header(&[
        "RULE",
        "TRIGGER",
        "FIRINGS",
        "LAST FIRED",
        "COOLDOWN UNTIL",
        "ACTIVE",
    ])];
    for r in &st.rules {
        let active: Vec<String> = r
            .targets
            .iter()
            .map(|t| format!("{}={}", t.target, t.active_runs))
            .collect();
        rows.push(vec![
            format!("{}{}", r.name, if r.dry_run { " (dry run)" } else { "" }),
            r.trigger.clone(),
            r.firings.to_string(),
            or_dash(&r.last_fired),
            or_dash(&r.cooldown_until),
            if active.is_empty() {
                "-".into()
            } else {
                active.join(",")
            },
        ]);
    }
    Some(table(&rows))
}

fn runs(st: &StatusDoc) -> Option<String> {
    let mut rows = vec![header(&[
        "RUN",
        "RULE",
        "TARGET",
        "STATUS",
        "STARTED",
        "DURATION",
        "CORRELATION",
    ])];
    for r in st.runs.iter().take(10) {
        rows.push(vec![
            r.id.to_string(),
            r.rule.clone(),
            r.target.clone(),
            r.status.clone(),
            or_dash(&r.started),
            r.duration_s
                .map(|d| format!("{d}s"))
                .unwrap_or_else(|| "-".into()),
            r.correlation_id.clone(),
        ]);
    }
    Some(table(&rows))
}

fn gates(st: &StatusDoc) -> Option<String> {
    if st.gates.is_empty() {
        return None;
    }
    let mut rows = vec![header(&["GATE", "PACKAGE", "DECISION", "VALUE"])];
    for g in &st.gates {
        for d in g.decisions.iter().take(5) {
            rows.push(vec![
                g.name.clone(),
                d.arn.clone(),
                d.decision.clone(),
                or_dash(&d.value),
            ]);
        }
    }
    Some(table(&rows))
}

fn endpoints(st: &StatusDoc) -> Option<String> {
    if st.endpoints.is_empty() {
        return None;
    }
    let mut rows = vec![header(&[
        "ENDPOINT",
        "SERVES",
        "WANTS",
        "STATE",
        "BAKE LEFT",
        "DETAIL",
    ])];
    let v = |x: &Option<u32>| x.map_or("-".to_string(), |v| format!("v{v}"));
    for e in &st.endpoints {
        let state = match e.deployment_version {
            Some(d) => format!("{} v{d}", e.state),
            None => e.state.clone(),
        };
        rows.push(vec![
            e.name.clone(),
            v(&e.version),
            v(&e.wanted),
            state,
            e.bake_left_s
                .map_or("-".to_string(), |s| format!("{}s", s.round() as i64)),
            e.reason
                .clone()
                .or_else(|| e.waiting.clone())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    Some(table(&rows))
}

fn declared(st: &StatusDoc) -> Option<String> {
    let declared: Vec<_> = st
        .pipelines
        .iter()
        .filter_map(|p| Some((p, p.declared.as_ref()?)))
        .collect();
    if declared.is_empty() {
        return None;
    }
    let mut rows = vec![header(&[
        "PIPELINE",
        "DEFINITION",
        "STATE",
        "SINCE",
        "DETAIL",
    ])];
    for (p, d) in declared {
        rows.push(vec![
            p.name.clone(),
            d.definition.clone(),
            d.state.clone(),
            or_dash(&d.since),
            or_dash(&d.detail),
        ]);
    }
    Some(table(&rows))
}
