//! The daemon process: the config loaded, the store opened, HTTP served, then one role's loop
//! until a stop — the control loop (`event_loop`) on a single machine, or with `ha_table`
//! the HA supervisor (`ha`), which runs a standby and, while this replica leads, the same
//! control loop. Both roles take signals and file edits through `control` and reload
//! through `reload`. The loop's rooms (`checks`, `rules`, `runs`, `gates`, `notices`,
//! `declared`, `inbound`) are `impl Work` blocks; `outbox` and the events consumer are tasks.

mod checks;
mod control;
mod declared;
pub(crate) mod deploys;
mod event_loop;
mod gates;
mod ha;
mod inbound;
mod notices;
mod outbox;
mod reload;
pub(crate) mod reports;
mod rules;
mod runs;
mod systemd;
mod timer;
mod watch;
mod work;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aws::{Aws, HaTable};
use crate::clock::Clock;
use crate::cloud::{Cloud, Gated, HaCheckError, Identity as _};
use crate::config::{self, Config, ConfigError, ItemKind, Trigger};
use crate::events;
use crate::health::Health;
use crate::http;
use crate::state::{StateError, Store};

/// Why `run` returned with an error, and the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Listen(String),
    #[error("{0}")]
    Ha(HaCheckError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => crate::exit::CONFIG,
            RunError::State(s) => s.exit_code(),
            RunError::Listen(_) => crate::exit::UNAVAILABLE,
            RunError::Ha(e) => e.exit_code(),
            RunError::Other(_) => crate::exit::FAILED,
        }
    }
}

/// What lives for the whole process, across roles (HA): the store, HTTP's view and health.
pub(crate) struct Base {
    path: PathBuf,
    clock: Clock,
    store: Arc<Store>,
    view: tokio::sync::watch::Sender<Arc<http::View>>,
    heartbeat: Arc<std::sync::atomic::AtomicI64>,
    health: Arc<Health>,
}

/// The config as loaded, kept across roles.
pub(crate) struct Loaded {
    cfg: Arc<Config>,
    /// Block hashes of the text `cfg` was loaded from, for fast reloads of small edits
    /// (`None`: the file is not plain enough; every reload is a full one).
    index: Option<config::blocks::Index>,
    hash: String,
}

/// Why the control loop returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Asked to stop (a signal or `shutdown`): the process ends.
    Stopped,
    /// This replica stopped leading (HA): it goes back to being a standby.
    Demoted,
}

/// Runs the daemon until `shutdown` is cancelled or SIGTERM/SIGINT arrives. `main` runs it with
/// `Runtime::block_on`, so the loop turns on the main thread, not on an async worker: its
/// synchronous store calls (each commit `synchronous=FULL`) hold only the loop. Spawned AWS
/// calls, HTTP and the outbox run on the workers and reach the store through `state::off_loop`.
pub(crate) async fn run(path: PathBuf, shutdown: CancellationToken) -> Result<(), RunError> {
    let connect = |cfg: config::AwsConfig| async move {
        let aws = Aws::new(&cfg).await;
        tracing::info!(event = "aws_configured", region = %aws.region(), endpoint = %cfg.endpoint_url.clone().unwrap_or_else(|| "default".into()), max_attempts = cfg.max_attempts, "AWS clients ready");
        aws
    };
    run_with(path, Clock::System, connect, shutdown).await
}

/// `run` with the clock and the AWS side given (`connect` gets `[aws]` once the config is
/// loaded): a test drives the real loop on paused time against an in-memory `Cloud`.
pub async fn run_with<C, F, Fut>(
    path: PathBuf,
    clock: Clock,
    connect: F,
    shutdown: CancellationToken,
) -> Result<(), RunError>
where
    C: Cloud,
    F: FnOnce(config::AwsConfig) -> Fut,
    Fut: std::future::Future<Output = C>,
{
    let text = config::read_text(&path).map_err(RunError::Config)?;
    let cfg = config::parse(&text, &path).map_err(RunError::Config)?;
    let hash = config::config_hash(&text, &cfg);
    events::config_loaded(&path, &hash, &cfg);
    // With HA the local file is a replica of the table's log, kept apart from a
    // single-machine store in the same state_dir.
    let store_dir = match &cfg.daemon.ha_table {
        None => cfg.daemon.state_dir.clone(),
        Some(t) => cfg.daemon.state_dir.join(format!("ha-{t}")),
    };
    let store = Arc::new(Store::open(&store_dir)?);
    let cloud = connect(cfg.aws.clone()).await;

    let listener = tokio::net::TcpListener::bind(cfg.daemon.listen).await.map_err(|e| {
        RunError::Listen(format!("cannot serve HTTP on {} (daemon.listen): {e}; change `listen` or stop what holds the port", cfg.daemon.listen))
    })?;
    let http_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();

    let m = crate::metrics::get();
    let now = clock.now();
    m.last_reload_ok.set(1);
    m.last_reload_success_ts
        .set(now.timestamp_millis() as f64 / 1000.0);
    m.up_since.set(now.timestamp_millis() as f64 / 1000.0);
    reload::threshold_gauges(&cfg, None);

    let cfg = Arc::new(cfg);
    let (view, view_rx) = tokio::sync::watch::channel(Arc::new(http::View {
        cfg: cfg.clone(),
        path: path.display().to_string(),
        hash: hash.clone(),
        loaded_at: now,
        last_reload: None,
    }));
    let heartbeat = Arc::new(std::sync::atomic::AtomicI64::new(now.timestamp_millis()));
    let health = Arc::new(Health::default());
    let http_tracker = TaskTracker::new();
    let stop_http = CancellationToken::new();
    let hs = http::HttpState {
        view: view_rx,
        store: store.clone(),
        heartbeat: heartbeat.clone(),
        health: health.clone(),
        clock,
    };
    http_tracker.spawn(http::serve(listener, hs, stop_http.clone()));
    tracing::info!(event = "http_listening", addr = %http_addr, "status server listening (/, /status, /metrics, /healthz)");
    let base = Base {
        path,
        clock,
        store,
        view,
        heartbeat,
        health,
    };
    let mut loaded = Loaded {
        cfg,
        index: config::blocks::Index::of(&text),
        hash,
    };
    drop(text);
    let r = match loaded.cfg.daemon.ha_table.clone() {
        None => {
            m.leader.set(1);
            event_loop::active(&base, &mut loaded, Gated::open(cloud), &shutdown, None)
                .await
                .map(|_| ())
        }
        Some(table) => {
            let table = HaTable::new(&loaded.cfg.aws, &table).await;
            ha::run(&base, &mut loaded, cloud, table, &shutdown).await
        }
    };
    stop_http.cancel();
    http_tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), http_tracker.wait()).await;
    r
}

/// The schedule of a check, a gate or an `on_schedule` rule.
fn timed_of<'a>(cfg: &'a Config, kind: ItemKind, name: &str) -> Option<&'a config::Timed> {
    match kind {
        ItemKind::Check => cfg
            .checks
            .get(name)
            .map(|c| &c.timed)
            .filter(|t| !matches!(t.schedule, crate::schedule::Schedule::Never)),
        ItemKind::Gate => cfg.gates.get(name).map(|g| &g.timed),
        ItemKind::Rule => cfg.rules.get(name).and_then(|r| match &r.trigger {
            Trigger::Schedule(t) => Some(t),
            _ => None,
        }),
    }
}

/// Hands memory freed after parsing a config back to the OS. A 10,000-check file's parse tree
/// is tens of MiB that glibc would otherwise keep mapped for the life of the process.
pub(crate) fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
