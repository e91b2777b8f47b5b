//! The read-only HTTP server on `daemon.listen`: `/metrics` (Prometheus), `/healthz`,
//! `/status` (the typed document of `status`) and `/` (the status page, `page`). It reads the
//! loop's published `View`, the state store and `Health`; it never changes anything (but the
//! health probe's row).

mod page;
pub(crate) mod status;

pub(crate) use page::render_page;

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
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::{ts, Clock};
use crate::config::{Config, RunKind, Target};
use crate::health::Health;
use crate::state::{self, Store};

/// What the control loop publishes for readers.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub cfg: Arc<Config>,
    pub path: String,
    pub hash: String,
    pub loaded_at: DateTime<Utc>,
    pub last_reload: Option<ReloadInfo>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReloadInfo {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub trigger: String,
    pub error: Option<String>,
}

#[derive(Clone)]
pub(crate) struct HttpState {
    pub view: watch::Receiver<Arc<View>>,
    pub store: Arc<Store>,
    /// Unix ms (on `clock`) of the control loop's last iteration.
    pub heartbeat: Arc<AtomicI64>,
    /// Store operations failing now.
    pub health: Arc<Health>,
    pub clock: Clock,
}

/// The loop is considered stuck when it has not turned for this long.
pub(crate) const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(state)
}

/// Serves until `stop` is cancelled.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    stop: CancellationToken,
) {
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
    match tokio::task::spawn_blocking(move || status::build(&view, &store, &health, now, n)).await {
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
        render_page(&status::build(&view, &store, &health, now, 60))
    })
    .await
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
