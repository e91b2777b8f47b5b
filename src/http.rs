//! The read-only HTTP server on `daemon.listen`: `/metrics` (Prometheus), `/healthz`,
//! `/status` (JSON) and `/` (a server-rendered status page with inline SVG sparklines).
//! It reads the loop's published `View` and the state store; it never changes anything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::{ts, Clock};
use crate::config::{Config, RunKind, Target, Threshold, Trigger};
use crate::duration::format_duration;
use crate::health::Health;
use crate::state::{self, Store};

/// What the control loop publishes for readers.
#[derive(Debug, Clone)]
pub struct View {
    pub cfg: Arc<Config>,
    pub path: String,
    pub hash: String,
    pub loaded_at: DateTime<Utc>,
    pub last_reload: Option<ReloadInfo>,
}

#[derive(Debug, Clone)]
pub struct ReloadInfo {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub trigger: String,
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct HttpState {
    pub view: watch::Receiver<Arc<View>>,
    pub store: Arc<Store>,
    /// Unix ms (on `clock`) of the control loop's last iteration.
    pub heartbeat: Arc<AtomicI64>,
    /// Store operations failing now.
    pub health: Arc<Health>,
    pub clock: Clock,
}

/// The loop is considered stuck when it has not turned for this long.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(state)
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, stop: CancellationToken) {
    let app = router(state);
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = res {
        tracing::error!(event = "http_failed", error = %e, "status server stopped");
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let m = crate::metrics::get();
    if let Ok(counts) = state::off_loop(&s.store, |st| st.active_run_counts()).await {
        let cfg = s.view.borrow().cfg.clone();
        let names = cfg
            .pipelines
            .keys()
            .map(|n| (RunKind::Pipeline, n))
            .chain(cfg.builds.keys().map(|n| (RunKind::Build, n)));
        for (kind, name) in names {
            let n = counts
                .get(&Target {
                    kind,
                    name: name.clone(),
                })
                .copied()
                .unwrap_or(0);
            m.runs_active
                .get_or_create(&crate::metrics::run(kind.as_str(), name))
                .set(n as i64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn healthz(State(s): State<HttpState>) -> Response {
    let now = s.clock.now().timestamp_millis();
    let age = now - s.heartbeat.load(Ordering::Relaxed);
    if age > HEARTBEAT_STALE.as_millis() as i64 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: the control loop has not run for {} s\n",
                age / 1000
            ),
        )
            .into_response();
    }
    if let Err(e) =
        state::off_loop(&s.store, |st| st.probe_write_within(Duration::from_secs(1))).await
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: the state store is not writable: {e}\n"),
        )
            .into_response();
    }
    if let Some(i) = s.health.ha() {
        if let Some(age) = i.cut_off() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "unhealthy: cut off from the HA table \"{}\" for {} s ({}); this replica does not act\n",
                    i.table,
                    age.as_secs(),
                    i.contact_error.as_deref().unwrap_or("no answer")
                ),
            )
                .into_response();
        }
        if let Some(e) = &i.log_error {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "unhealthy: cannot follow the HA table's log ({e}); this replica does not lead until it can\n"
                ),
            )
                .into_response();
        }
    }
    // A standby writes nothing but the log it applies: writes refused or left over from its
    // time as leader are not faults of its store.
    let standby = s
        .health
        .ha()
        .is_some_and(|i| !matches!(i.role, crate::health::Role::Leader { .. }));
    let faults = if standby {
        Vec::new()
    } else {
        s.health.store_faults(s.clock.now())
    };
    if !faults.is_empty() {
        let mut body = String::from("unhealthy: state store operations are failing:\n");
        for f in faults {
            let _ = writeln!(
                body,
                "- {}: {} (since {}, {} time(s))",
                f.operation,
                f.error,
                ts(&f.since),
                f.count
            );
        }
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    values: Option<usize>,
}

async fn status(State(s): State<HttpState>, q: Query<StatusQuery>) -> Response {
    let view = s.view.borrow().clone();
    let store = s.store.clone();
    let n = q
        .values
        .unwrap_or(50)
        .min(crate::state::KEEP_VALUES as usize);
    let now = s.clock.now();
    let health = s.health.clone();
    match tokio::task::spawn_blocking(move || status_json(&view, &store, &health, now, n)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn page(State(s): State<HttpState>) -> Response {
    let view = s.view.borrow().clone();
    let store = s.store.clone();
    let now = s.clock.now();
    let health = s.health.clone();
    match tokio::task::spawn_blocking(move || {
        render_page(&status_json(&view, &store, &health, now, 60))
    })
    .await
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `/status`: everything an operator asks "what is it doing and why". A fixed number of
/// store queries, however many checks and rules there are.
pub fn status_json(
    view: &View,
    store: &Store,
    health: &Health,
    now: DateTime<Utc>,
    values: usize,
) -> Value {
    let cfg = &view.cfg;
    let pre = health.preflight();
    use crate::doctor::ResourceKind as K;
    let problem = |kind: K, name: &str| -> Option<Value> {
        pre.findings
            .get(&(kind, name.to_string()))
            .filter(|f| f.status != crate::doctor::Status::Ok)
            .map(|f| json!({"item": f.config_item(), "resource": f.resource, "status": f.status.as_str(), "detail": f.detail}))
    };
    // A rule's or gate's problems: its targets' and its notifiers'.
    let problems_of = |targets: &[(K, &str)], notify: &[String]| -> Vec<Value> {
        targets
            .iter()
            .copied()
            .chain(notify.iter().map(|n| (K::Notifier, n.as_str())))
            .filter_map(|(k, n)| problem(k, n))
            .collect()
    };
    let states = store.check_states().unwrap_or_default();
    let mut all_values = store.all_check_values(values).unwrap_or_default();
    let rule_states = store.rule_states().unwrap_or_default();
    let checks: Vec<Value> = cfg
        .checks
        .iter()
        .map(|(name, c)| {
            let (st, last_eval) = states.get(name).cloned().unwrap_or_default();
            let vals = all_values.remove(name).unwrap_or_default();
            let state = if st.breaching {
                "breaching"
            } else if st.breach_count > 0 {
                "pending"
            } else if last_eval.is_some() {
                "ok"
            } else {
                "not evaluated"
            };
            json!({
                "name": name,
                "schedule": c.timed.expression,
                "timezone": c.timed.timezone.name(),
                "next_fire": c.timed.schedule.next_after(c.timed.timezone, now).map(|t| ts(&t)),
                "metric": c.source_text(),
                "statistic": c.statistic,
                "threshold": { "op": match c.threshold { Threshold::Above(_) => "above", Threshold::Below(_) => "below" }, "value": c.threshold.value() },
                "for": c.for_count,
                "state": state,
                "breach_count": st.breach_count,
                "correlation_id": st.correlation_id,
                "last_value": st.last_value,
                "last_evaluated": last_eval.map(|t| ts(&t)),
                "values": vals.iter().map(|(t, v, b)| json!({"at": ts(t), "value": v, "breached": b})).collect::<Vec<_>>(),
                "preflight": problem(K::Check, name),
            })
        })
        .collect();
    let active = store.active_run_counts().unwrap_or_default();
    let rules: Vec<Value> = cfg
        .rules
        .iter()
        .map(|(name, r)| {
            let st = rule_states.get(name).cloned().unwrap_or_default();
            let trigger = match &r.trigger {
                Trigger::Check(c) => format!("on_check {c}"),
                Trigger::Schedule(t) => format!("on_schedule \"{}\" ({})", t.expression, t.timezone),
                Trigger::Success(t) => format!("on_success {t}"),
                Trigger::Failure(t) => format!("on_failure {t}"),
                Trigger::Event(p) => format!("on_event {p}"),
            };
            let next = match &r.trigger {
                Trigger::Schedule(t) => t.schedule.next_after(t.timezone, now).map(|x| ts(&x)),
                _ => None,
            };
            let targets: Vec<Value> = r
                .start
                .iter()
                .map(|s| {
                    let t = s.target();
                    json!({"target": t.to_string(), "active_runs": active.get(&t).copied().unwrap_or(0)})
                })
                .collect();
            let target_items: Vec<(K, &str)> = r
                .start
                .iter()
                .map(|s| match s {
                    crate::config::Start::Pipeline { name, .. } => (K::Pipeline, name.as_str()),
                    crate::config::Start::Build { name, .. } => (K::Build, name.as_str()),
                })
                .collect();
            let rule_problems = problems_of(&target_items, &r.notify);
            json!({
                "name": name,
                "trigger": trigger,
                "preflight": rule_problems,
                "next_fire": next,
                "firings": st.firings,
                "last_fired": st.last_fired.map(|t| ts(&t)),
                "cooldown_until": st.cooldown_until.filter(|c| *c > now).map(|t| ts(&t)),
                "cooldown": r.cooldown.map(format_duration),
                "dry_run": r.dry_run,
                "targets": targets,
            })
        })
        .collect();
    let runs: Vec<Value> = store
        .recent_runs(50)
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let end = r.ended.unwrap_or(now);
            let dur = r.started.map(|s| (end - s).num_seconds());
            json!({
                "id": r.id,
                "rule": r.rule,
                "target": r.target().to_string(),
                "status": r.status.as_str(),
                "arn": r.arn,
                "detail": r.detail,
                "correlation_id": r.correlation_id,
                "check": r.check,
                "decided": r.decided.map(|t| ts(&t)),
                "started": r.started.map(|t| ts(&t)),
                "ended": r.ended.map(|t| ts(&t)),
                "duration_s": dur,
            })
        })
        .collect();
    let decisions = store.recent_gate_decisions(200).unwrap_or_default();
    let gates: Vec<Value> = cfg
        .gates
        .iter()
        .map(|(name, g)| {
            let last: Vec<Value> = decisions
                .iter()
                .filter(|d| &d.gate == name)
                .take(10)
                .map(|d| json!({"arn": d.arn, "decision": d.decision.as_str(), "value": d.value, "reason": d.reason, "at": d.at.map(|t| ts(&t))}))
                .collect();
            json!({
                "name": name,
                "preflight": problems_of(&[(K::Gate, name.as_str())], &g.notify),
                "model_package_group": g.model_package_group,
                "schedule": g.timed.expression,
                "next_fire": g.timed.schedule.next_after(g.timed.timezone, now).map(|t| ts(&t)),
                "decisions": last,
            })
        })
        .collect();
    let applies = store.pipeline_applies().unwrap_or_default();
    let pipelines: Vec<Value> = cfg
        .pipelines
        .iter()
        .map(|(name, p)| {
            let declared = p.declared.as_ref().map(|d| {
                let a = applies.iter().find(|a| &a.pipeline == name);
                let row = a.map(|a| a.row.clone()).unwrap_or_default();
                // A stored "in sync" is of the state applied then: a file edited since is
                // not in sync until it is applied.
                let state = match row.state {
                    crate::reconcile::SyncState::InSync
                        if row.applied.as_deref() != Some(d.state_hash().as_str()) =>
                    {
                        "pending"
                    }
                    s => s.as_str(),
                };
                json!({
                    "definition": d.file,
                    "definition_hash": d.definition.hash,
                    "role_arn": d.role_arn,
                    "reconcile": d.reconcile.as_str(),
                    "state": state,
                    "detail": row.detail,
                    "arn": a.and_then(|a| a.arn.clone()),
                    "since": a.and_then(|a| a.changed).map(|t| ts(&t)),
                    "last_compared": a.and_then(|a| a.checked).map(|t| ts(&t)),
                })
            });
            json!({
                "name": name,
                "pipeline_name": p.pipeline_name,
                "preflight": problem(K::Pipeline, name),
                "max_concurrent": p.max_concurrent,
                "declared": declared,
            })
        })
        .collect();
    json!({
        "generated_at": ts(&now),
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "path": view.path,
            "hash": view.hash,
            "loaded_at": ts(&view.loaded_at),
            "last_reload": view.last_reload.as_ref().map(|r| json!({"at": ts(&r.at), "ok": r.ok, "trigger": r.trigger, "error": r.error})),
        },
        "checks": checks,
        "rules": rules,
        "runs": runs,
        "gates": gates,
        "pipelines": pipelines,
        "preflight": {
            "checked_at": pre.checked_at.map(|t| ts(&t)),
            "problems": pre.findings.values().filter(|f| f.status != crate::doctor::Status::Ok)
                .map(|f| json!({"kind": f.kind.as_str(), "name": f.name, "item": f.config_item(), "resource": f.resource, "status": f.status.as_str(), "detail": f.detail}))
                .collect::<Vec<_>>(),
        },
        "role": health.ha().map_or("single", |i| i.role.as_str()),
        "ha": health.ha().map(|i| json!({
            "table": i.table,
            "replica": i.replica,
            "role": i.role.as_str(),
            "role_since": ts(&i.role_since),
            "leader": i.leader(),
            "fencing": i.fencing(),
            "lease_ms": i.lease.as_millis() as u64,
            // Since the lease item last changed (a standby's view) or was last renewed (the leader).
            "lease_age_ms": i.lease_changed.map(|t| t.elapsed().as_millis() as u64),
            "applied_seq": store.applied_seq().unwrap_or(i.applied_seq),
            "table_reachable": i.cut_off().is_none(),
            "table_error": i.contact_error,
            "log_error": i.log_error,
            "config_hash": i.config_hash,
            "leader_config_hash": i.leader_config_hash,
            "config_differs": i.config_differs(),
        })),
        "events": cfg.events.as_ref().map(|ev| {
            let q = health.queue();
            json!({
                "queue_url": ev.queue_url,
                "state": match &q { None => "starting", Some(q) if q.reachable => "receiving", Some(_) => "unreachable" },
                "since": q.as_ref().map(|q| ts(&q.since)),
                "last_error": q.as_ref().and_then(|q| q.last_error.clone()),
                "failures": q.as_ref().map_or(0, |q| q.failures),
            })
        }),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.001) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An inline SVG sparkline of a check's values with its threshold line and breach markers.
pub fn sparkline(values: &[(Option<f64>, bool)], threshold: f64, label: &str) -> String {
    let (w, h, pad) = (240.0f64, 48.0f64, 4.0f64);
    let nums: Vec<f64> = values
        .iter()
        .filter_map(|(v, _)| *v)
        .chain(std::iter::once(threshold))
        .collect();
    let (mut lo, mut hi) = nums
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    if (hi - lo).abs() < f64::EPSILON {
        lo -= 1.0;
        hi += 1.0;
    }
    let y = |v: f64| pad + (h - 2.0 * pad) * (1.0 - (v - lo) / (hi - lo));
    let n = values.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * (i as f64) / (n - 1.0);
    let mut s = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(label),
        esc(label)
    );
    let _ = write!(
        s,
        "<line class=\"threshold\" x1=\"0\" x2=\"{w}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/>",
        ty = y(threshold)
    );
    // The value line, broken where there was no data.
    let mut seg: Vec<String> = Vec::new();
    let flush = |seg: &mut Vec<String>, s: &mut String| {
        if seg.len() > 1 {
            let _ = write!(
                s,
                "<polyline class=\"values\" points=\"{}\"/>",
                seg.join(" ")
            );
        } else if seg.len() == 1 {
            let p: Vec<&str> = seg[0].split(',').collect();
            let _ = write!(
                s,
                "<circle class=\"point\" cx=\"{}\" cy=\"{}\" r=\"1.5\"/>",
                p[0], p[1]
            );
        }
        seg.clear();
    };
    for (i, (v, _)) in values.iter().enumerate() {
        match v {
            Some(v) => seg.push(format!("{:.1},{:.1}", x(i), y(*v))),
            None => flush(&mut seg, &mut s),
        }
    }
    flush(&mut seg, &mut s);
    for (i, (v, b)) in values.iter().enumerate() {
        if *b {
            let cy = v.map(y).unwrap_or(pad);
            let _ = write!(
                s,
                "<circle class=\"breach\" cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"2.5\"/>",
                x(i)
            );
        }
    }
    s.push_str("</svg>");
    s
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:1rem;color:#1b1f24;background:#f6f8fa}\
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}\
.meta{color:#57606a;font-size:.9rem;margin:.2rem 0}.wrap{overflow-x:auto;background:#fff;border:1px solid #d0d7de;border-radius:6px}\
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #eaeef2;vertical-align:middle;white-space:nowrap}\
th{background:#f6f8fa;font-weight:600}td small{color:#57606a}.num{font-variant-numeric:tabular-nums}\
.badge{display:inline-block;padding:.1rem .45rem;border-radius:1rem;font-size:.8rem;font-weight:600}\
.ok,.succeeded,.approved,.in_sync{background:#dafbe1;color:#116329}.breaching,.failed,.start_failed,.rejected,.drifted,.missing,.forbidden,.unreachable{background:#ffebe9;color:#a40e26}\
.pending,.started,.decided,.no_metric,.applying,.no_data{background:#fff8c5;color:#7d4e00}.none{background:#eaeef2;color:#57606a}\
svg.spark{display:block}svg .threshold{stroke:#cf222e;stroke-width:1;stroke-dasharray:4 3}svg .values{fill:none;stroke:#0969da;stroke-width:1.6}\
svg .point{fill:#0969da}svg .breach{fill:#cf222e}code{font-size:.8rem}\
@media (max-width:640px){body{padding:.5rem}th,td{padding:.35rem .4rem}}";

fn badge(s: &str) -> String {
    let class = s.split_whitespace().next().unwrap_or("").to_string();
    let class = if [
        "ok",
        "succeeded",
        "approved",
        "breaching",
        "failed",
        "start_failed",
        "rejected",
        "pending",
        "started",
        "decided",
        "no_metric",
        "in_sync",
        "drifted",
        "applying",
        "missing",
        "forbidden",
        "no_data",
        "unreachable",
    ]
    .contains(&class.as_str())
    {
        class
    } else {
        "none".into()
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(s))
}

fn short_arn(a: &str) -> String {
    let tail = a.rsplit(['/', ':']).next().unwrap_or(a);
    format!("<code title=\"{}\">…{}</code>", esc(a), esc(tail))
}

/// The status page's template (`src/page.html`), HTML-escaped by minijinja; the helpers it
/// calls return markup they have escaped themselves.
fn page_env() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        use minijinja::Value as V;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        // A template that does not parse is a build-time mistake, caught by the page tests.
        if let Err(e) = env.add_template("page.html", include_str!("page.html")) {
            tracing::error!(event = "http_failed", error = %e, "status page template does not parse");
        }
        env.add_function("badge", |s: String| V::from_safe_string(badge(&s)));
        env.add_function("num", |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "–".into()));
        env.add_function("arn", |a: Option<String>| V::from_safe_string(a.as_deref().map(short_arn).unwrap_or_else(|| "–".into())));
        env
    })
}

/// `/`: the status page, from the same JSON as `/status`.
pub fn render_page(st: &Value) -> String {
    let sparks: Vec<minijinja::Value> = st["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ch| {
            let vals: Vec<(Option<f64>, bool)> = ch["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    (
                        v["value"].as_f64(),
                        v["breached"].as_bool().unwrap_or(false),
                    )
                })
                .collect();
            let th = ch["threshold"]["value"].as_f64().unwrap_or(0.0);
            let op = if ch["threshold"]["op"] == "below" {
                "<"
            } else {
                ">"
            };
            let label = format!(
                "{}: {} values, threshold {op} {}",
                ch["name"].as_str().unwrap_or(""),
                vals.len(),
                fmt_num(th)
            );
            minijinja::Value::from_safe_string(sparkline(&vals, th, &label))
        })
        .collect();
    let ctx = minijinja::context! { st => minijinja::Value::from_serialize(st), sparks => sparks, css => minijinja::Value::from_safe_string(CSS.to_string()) };
    match page_env()
        .get_template("page.html")
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(event = "http_failed", error = %e, "cannot render the status page");
            format!("<!doctype html><title>mlopsd status</title><p>cannot render the status page: {}</p>", esc(&e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_has_threshold_values_and_breach_markers() {
        let svg = sparkline(
            &[
                (Some(0.05), false),
                (Some(0.2), true),
                (None, false),
                (Some(0.3), true),
            ],
            0.1,
            "drift",
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("class=\"threshold\""));
        assert_eq!(svg.matches("class=\"breach\"").count(), 2);
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "the gap splits the line: {svg}"
        );
        assert!(svg.contains("<title>drift</title>"));
    }

    #[test]
    fn page_escapes_text() {
        let st = json!({"config": {"path": "<x>", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now"});
        let p = render_page(&st);
        assert!(p.contains("&lt;x&gt;") && !p.contains("<x>"));
        assert!(p.contains("no runs yet"));
    }

    #[test]
    fn page_shows_the_events_queue_state() {
        let st = json!({"config": {"path": "p", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now",
                        "events": {"queue_url": "https://sqs.x/1/q", "state": "unreachable", "last_error": "sqs ReceiveMessage failed: <boom>"}});
        let p = render_page(&st);
        assert!(
            p.contains("events queue <code>https:&#x2f;&#x2f;sqs.x&#x2f;1&#x2f;q</code>"),
            "escaped like all text: {p}"
        );
        assert!(
            p.contains("badge unreachable\">unreachable") && p.contains("&lt;boom&gt;"),
            "{p}"
        );
    }

    #[test]
    fn page_shows_the_ha_role_and_a_cut_off() {
        let st = json!({"config": {"path": "p", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now",
                        "ha": {"role": "standby", "replica": "b", "table": "t1", "leader": "a", "fencing": 2, "lease_age_ms": 900, "applied_seq": 41,
                               "config_differs": true, "table_reachable": false, "table_error": "connection refused"}});
        let p = render_page(&st);
        assert!(p.contains("standby</span> replica <code>b</code>"), "{p}");
        assert!(p.contains("leader <code>a</code>, fencing 2"), "{p}");
        assert!(
            p.contains("config differs") && p.contains("connection refused"),
            "{p}"
        );
        let single = json!({"config": {"path": "p", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now"});
        assert!(!render_page(&single).contains("replica"));
    }

    #[test]
    fn badge_class_is_the_state_word() {
        assert_eq!(
            badge("breaching 2/2"),
            "<span class=\"badge breaching\">breaching 2/2</span>"
        );
        assert_eq!(
            badge("weird<"),
            "<span class=\"badge none\">weird&lt;</span>"
        );
    }
}
