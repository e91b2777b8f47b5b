//! A fault-injecting HTTP proxy in front of moto: counts requests per AWS operation and, by
//! rule, answers with an error status, drops the connection, delays, truncates, or rewrites
//! the upstream response body (to make a pipeline or build fail, which moto cannot do).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and body (e.g. 400 ThrottlingException, 500).
    Status(u16, String),
    /// Close the connection without answering.
    Reset,
    /// Wait before forwarding.
    Delay(Duration),
    /// Wait, then hang up without forwarding (a request lost on the way, seen as a timeout).
    Hang(Duration),
    /// Forward, then cut the response body short.
    Truncate,
    /// Forward, then replace text in the response body.
    Rewrite(String, String),
}

#[derive(Debug, Clone)]
struct Rule {
    op: String,
    fault: Fault,
    /// How many more requests this applies to (`usize::MAX`: all).
    times: usize,
    /// Apply only to every nth matching request (1 = each).
    every: usize,
    seen: usize,
    /// With `op = "*"`: operations this rule leaves alone.
    except: Vec<String>,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    counts: HashMap<String, usize>,
    faults: HashMap<String, usize>,
    bodies: HashMap<String, Vec<String>>,
}

#[derive(Clone)]
pub struct Proxy {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s2 = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (up, sh) = (upstream.clone(), s2.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &sh);
                });
            }
        });
        Proxy { url, shared }
    }

    /// Applies `fault` to the next `times` requests of operation `op` (e.g. "StartPipelineExecution").
    pub fn fault(&self, op: &str, fault: Fault, times: usize) {
        self.shared.lock().unwrap().rules.push(Rule {
            op: op.into(),
            fault,
            times,
            every: 1,
            seen: 0,
            except: vec![],
        });
    }

    /// Applies `fault` to every `every`th request of `op`, indefinitely.
    pub fn fault_every(&self, op: &str, fault: Fault, every: usize) {
        self.shared.lock().unwrap().rules.push(Rule {
            op: op.into(),
            fault,
            times: usize::MAX,
            every,
            seen: 0,
            except: vec![],
        });
    }

    /// Applies `fault` to every `every`th request of any operation but those in `except`.
    pub fn fault_every_except(&self, fault: Fault, every: usize, except: &[&str]) {
        let except = except.iter().map(|s| s.to_string()).collect();
        self.shared.lock().unwrap().rules.push(Rule {
            op: "*".into(),
            fault,
            times: usize::MAX,
            every,
            seen: 0,
            except,
        });
    }

    /// Requests seen in all.
    pub fn total(&self) -> usize {
        self.shared.lock().unwrap().counts.values().sum()
    }

    /// Faults injected in all.
    pub fn total_faults(&self) -> usize {
        self.shared.lock().unwrap().faults.values().sum()
    }

    pub fn clear(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    pub fn count(&self, op: &str) -> usize {
        self.shared
            .lock()
            .unwrap()
            .counts
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// The request bodies seen for `op`, in order.
    pub fn bodies(&self, op: &str) -> Vec<String> {
        self.shared
            .lock()
            .unwrap()
            .bodies
            .get(op)
            .cloned()
            .unwrap_or_default()
    }

    pub fn faults(&self, op: &str) -> usize {
        self.shared
            .lock()
            .unwrap()
            .faults
            .get(op)
            .copied()
            .unwrap_or(0)
    }
}

/// The error type a JSON-protocol answer names in `x-amzn-ErrorType`: the body's `__type`,
/// else throttling or an internal failure.
fn error_type(text: &str) -> &str {
    if let Some(i) = text.find("\"__type\":\"") {
        let rest = &text[i + 10..];
        if let Some(end) = rest.find('"') {
            return &rest[..end];
        }
    }
    if text.contains("Throttl") {
        "ThrottlingException"
    } else {
        "InternalFailure"
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

fn operation(head: &str, body: &[u8]) -> String {
    for line in head.lines() {
        if let Some(v) = line
            .strip_prefix("x-amz-target:")
            .or_else(|| line.strip_prefix("X-Amz-Target:"))
        {
            return v.trim().rsplit('.').next().unwrap_or("").to_string();
        }
    }
    let b = String::from_utf8_lossy(body);
    for kv in b.split('&') {
        if let Some(a) = kv.strip_prefix("Action=") {
            return a.to_string();
        }
    }
    // REST (S3): method + path
    head.lines()
        .next()
        .unwrap_or("")
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn handle(mut c: TcpStream, upstream: &str, sh: &Arc<Mutex<Shared>>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let head_end = loop {
        let n = c.read(&mut tmp)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = c.read(&mut tmp)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[head_end..].to_vec();
    let op = operation(&head, &body);
    let fault = {
        let mut s = sh.lock().unwrap();
        *s.counts.entry(op.clone()).or_default() += 1;
        s.bodies
            .entry(op.clone())
            .or_default()
            .push(String::from_utf8_lossy(&body).into_owned());
        let mut chosen = None;
        for r in s.rules.iter_mut() {
            let applies = r.op == op || (r.op == "*" && !r.except.contains(&op));
            if applies && r.times > 0 {
                r.seen += 1;
                if r.seen % r.every == 0 {
                    if r.times != usize::MAX {
                        r.times -= 1;
                    }
                    chosen = Some(r.fault.clone());
                    break;
                }
            }
        }
        if chosen.is_some() {
            *s.faults.entry(op.clone()).or_default() += 1;
        }
        chosen
    };
    match &fault {
        Some(Fault::Status(code, text)) => {
            let resp = format!(
                "HTTP/1.1 {code} Error\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\nx-amzn-ErrorType: {}\r\n\r\n{text}",
                text.len(),
                error_type(text)
            );
            c.write_all(resp.as_bytes())?;
            return c.shutdown(Shutdown::Both);
        }
        Some(Fault::Reset) => return c.shutdown(Shutdown::Both),
        Some(Fault::Hang(d)) => {
            std::thread::sleep(*d);
            return c.shutdown(Shutdown::Both);
        }
        Some(Fault::Delay(d)) => std::thread::sleep(*d),
        _ => {}
    }
    // Forward with Connection: close, read the whole answer.
    let mut up = TcpStream::connect(upstream)?;
    let fixed_head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let fixed_head =
        fixed_head.trim_end_matches("\r\n").to_string() + "\r\nConnection: close\r\n\r\n";
    up.write_all(fixed_head.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let Some(rh) = find(&resp, b"\r\n\r\n").map(|i| i + 4) else {
        return c.write_all(&resp);
    };
    let mut rbody = resp[rh..].to_vec();
    let rhead = String::from_utf8_lossy(&resp[..rh]).to_string();
    match &fault {
        Some(Fault::Rewrite(from, to)) => {
            rbody = String::from_utf8_lossy(&rbody)
                .replace(from.as_str(), to.as_str())
                .into_bytes();
        }
        Some(Fault::Truncate) => {
            // Claim the full length, send half, hang up.
            let lines: Vec<String> = rhead.split("\r\n").map(|l| l.to_string()).collect();
            c.write_all(lines.join("\r\n").as_bytes())?;
            c.write_all(&rbody[..rbody.len() / 2])?;
            return c.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    let new_head: Vec<String> = rhead
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", rbody.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    c.write_all(new_head.join("\r\n").as_bytes())?;
    c.write_all(&rbody)?;
    c.shutdown(Shutdown::Both)
}
