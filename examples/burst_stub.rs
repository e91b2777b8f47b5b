//! The stub `scripts/bench events-burst` measures against: SQS (`ReceiveMessage` long poll,
//! `DeleteMessage`, `DeleteMessageBatch`) and SageMaker (`StartPipelineExecution` and the reads
//! following needs) over AWS's JSON protocol, each answered after a fixed delay (an in-region
//! round trip, 15 ms by default), on the project's own HTTP stack (axum on tokio), so the stub
//! is not what limits the rate. Counts requests by operation.
//!
//!   cargo run --release --example burst_stub -- PORT [DELAY_MS]
//!
//! Control (not AWS): `POST /stub/load?n=N&every=K` queues N S3 `Object Created` events whose
//! key is under `match/` for every K-th one (else `other/`); `POST /stub/reset` clears the
//! counts; `GET /stub/stats` answers the counts, the queue (visible, in flight), the starts
//! (and how many keys started more than once), the latest start and delete instants, the most
//! long polls in flight at once since the last reset, and each started key's latency from its
//! load to its start (ms).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    visible: VecDeque<(String, String, Instant)>,
    in_flight: HashMap<String, (String, String, Instant)>,
    next_id: u64,
    counts: BTreeMap<String, u64>,
    starts: HashMap<String, u32>,
    latency_ms: Vec<f64>,
    polls_in_flight: u32,
    most_polls: u32,
    last_start: Option<Instant>,
    last_delete: Option<Instant>,
    loaded_at: Option<Instant>,
}

struct Stub {
    inner: Mutex<Inner>,
    arrived: Notify,
    delay: Duration,
    epoch: Instant,
}

type S = Arc<Stub>;

fn reply(v: Value) -> axum::response::Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.0")],
        v.to_string(),
    )
        .into_response()
}

async fn aws(State(s): State<S>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("?")
        .to_string();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    {
        let mut i = s.inner.lock().unwrap();
        *i.counts.entry(op.clone()).or_default() += 1;
    }
    tokio::time::sleep(s.delay).await;
    match op.as_str() {
        "ReceiveMessage" => receive(&s, &req).await,
        "DeleteMessage" => {
            let mut i = s.inner.lock().unwrap();
            if let Some(r) = req["ReceiptHandle"].as_str() {
                i.in_flight.remove(r);
            }
            i.last_delete = Some(Instant::now());
            reply(json!({}))
        }
        "DeleteMessageBatch" => {
            let mut i = s.inner.lock().unwrap();
            let mut ok = Vec::new();
            for e in req["Entries"].as_array().cloned().unwrap_or_default() {
                if let Some(r) = e["ReceiptHandle"].as_str() {
                    i.in_flight.remove(r);
                }
                ok.push(json!({"Id": e["Id"]}));
            }
            i.last_delete = Some(Instant::now());
            reply(json!({"Successful": ok, "Failed": []}))
        }
        "StartPipelineExecution" => {
            let key = req["PipelineParameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["Name"] == "Key"))
                .and_then(|p| p["Value"].as_str())
                .unwrap_or_default()
                .to_string();
            let mut i = s.inner.lock().unwrap();
            let now = Instant::now();
            *i.starts.entry(key.clone()).or_default() += 1;
            if let Some(t) = i.loaded_at {
                i.latency_ms
                    .push(now.duration_since(t).as_secs_f64() * 1000.0);
            }
            i.last_start = Some(now);
            reply(
                json!({"PipelineExecutionArn": format!("arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/{}", key.replace('/', "-"))}),
            )
        }
        "ListPipelineExecutions" => reply(json!({"PipelineExecutionSummaries": []})),
        "DescribePipelineExecution" => reply(
            json!({"PipelineExecutionArn": req["PipelineExecutionArn"], "PipelineExecutionStatus": "Executing"}),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/x-amz-json-1.0")],
            json!({"__type": "UnknownOperationException", "message": op}).to_string(),
        )
            .into_response(),
    }
}

async fn receive(s: &S, req: &Value) -> axum::response::Response {
    let max = req["MaxNumberOfMessages"]
        .as_u64()
        .unwrap_or(1)
        .clamp(1, 10) as usize;
    let wait = Duration::from_secs(req["WaitTimeSeconds"].as_u64().unwrap_or(0).min(20));
    let deadline = Instant::now() + wait;
    {
        let mut i = s.inner.lock().unwrap();
        i.polls_in_flight += 1;
        i.most_polls = i.most_polls.max(i.polls_in_flight);
    }
    let batch = loop {
        let notified = s.arrived.notified();
        {
            let mut i = s.inner.lock().unwrap();
            if !i.visible.is_empty() || Instant::now() >= deadline {
                let n = max.min(i.visible.len());
                let taken: Vec<_> = i.visible.drain(..n).collect();
                for (id, body, t) in &taken {
                    let receipt = format!("r-{id}");
                    i.in_flight.insert(receipt, (id.clone(), body.clone(), *t));
                }
                i.polls_in_flight -= 1;
                break taken;
            }
        }
        let _ = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), notified)
            .await;
    };
    reply(json!({"Messages": batch.iter().map(|(id, body, _)| json!({
        "MessageId": id, "ReceiptHandle": format!("r-{id}"), "Body": body, "MD5OfBody": ""
    })).collect::<Vec<_>>()}))
}

#[derive(serde::Deserialize)]
struct Load {
    n: usize,
    every: usize,
}

async fn load(State(s): State<S>, Query(q): Query<Load>) -> impl IntoResponse {
    let mut i = s.inner.lock().unwrap();
    let now = Instant::now();
    i.loaded_at = Some(now);
    for _ in 0..q.n {
        i.next_id += 1;
        let n = i.next_id;
        let dir = if q.every > 0 && n.is_multiple_of(q.every as u64) {
            "match"
        } else {
            "other"
        };
        let ev = json!({"version": "0", "id": format!("ev-{n}"), "source": "aws.s3", "detail-type": "Object Created",
            "account": "123456789012", "time": "2026-12-04T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"bucket": {"name": "drop"}, "object": {"key": format!("{dir}/{n}.csv"), "size": 10}}});
        i.visible.push_back((format!("m-{n}"), ev.to_string(), now));
    }
    drop(i);
    s.arrived.notify_waiters();
    StatusCode::OK
}

async fn reset(State(s): State<S>) -> impl IntoResponse {
    let mut i = s.inner.lock().unwrap();
    i.counts.clear();
    i.starts.clear();
    i.latency_ms.clear();
    i.most_polls = i.polls_in_flight;
    i.last_start = None;
    i.last_delete = None;
    StatusCode::OK
}

async fn stats(State(s): State<S>) -> impl IntoResponse {
    let i = s.inner.lock().unwrap();
    let ms = |t: Option<Instant>| t.map(|t| t.duration_since(s.epoch).as_secs_f64() * 1000.0);
    reply(json!({
        "counts": i.counts,
        "visible": i.visible.len(),
        "in_flight": i.in_flight.len(),
        "starts": i.starts.values().map(|n| *n as u64).sum::<u64>(),
        "keys_started": i.starts.len(),
        "keys_started_twice": i.starts.values().filter(|n| **n > 1).count(),
        "most_polls": i.most_polls,
        "polls_in_flight": i.polls_in_flight,
        "now_ms": ms(Some(Instant::now())),
        "last_start_ms": ms(i.last_start),
        "last_delete_ms": ms(i.last_delete),
        "loaded_ms": ms(i.loaded_at),
        "latency_ms": i.latency_ms,
    }))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let delay = Duration::from_millis(args.get(2).and_then(|d| d.parse().ok()).unwrap_or(15));
    let s = Arc::new(Stub {
        inner: Mutex::new(Inner::default()),
        arrived: Notify::new(),
        delay,
        epoch: Instant::now(),
    });
    let app = Router::new()
        .route("/stub/load", post(load))
        .route("/stub/reset", post(reset))
        .route("/stub/stats", get(stats))
        .fallback(aws)
        .with_state(s);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!("{}", listener.local_addr().expect("addr").port());
    axum::serve(listener, app).await.expect("serve");
}
