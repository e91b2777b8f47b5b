//! The state store: SQLite (WAL, `synchronous=FULL`) under `daemon.state_dir`, with a schema
//! version in `PRAGMA user_version`, migrations from older versions, and an exclusive lock so
//! two daemons never share one store. Every write is one transaction: after `kill -9` or power
//! loss the store holds each decision whole or not at all.

mod checks;
mod deployments;
mod gates;
mod outbox;
mod pipelines;
mod repl;
mod rules;
mod runs;
mod seen;
#[cfg(test)]
mod tests;

pub(crate) use checks::{CheckEval, KEEP_VALUES};
pub(crate) use deployments::{DeployState, DeploymentRow, Move, NewDeployment};
pub(crate) use gates::GateDecision;
pub(crate) use outbox::{OutboxRow, Outgoing, Queued};
pub(crate) use repl::{LogSink, Repl, W};
pub(crate) use rules::{BatchFiring, Stored};
pub(crate) use runs::{NewRun, RunRow, RunState};

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::config::ItemKind;

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 6;
pub const DB_FILE: &str = "mlopsd.db";
const LOCK_FILE: &str = "mlopsd.lock";

/// A store call that failed: the one error type the rest of the daemon sees of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write refused because this replica does not lead (a standby, or a leader whose log
    /// append was refused or left without answer and who steps down for it). A change of
    /// role, not a fault of the store: logged, never shown as a failing store operation.
    #[error("{0}")]
    NotLeading(String),
    /// SQLite failed (a full disk, a missing table, a damaged file, …).
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    /// Data the store holds or is given that it cannot take (a log entry that does not
    /// decode, a gap in the log, a snapshot of another schema, a call that panicked).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether this is a write refused because this replica does not lead.
    pub(crate) fn is_not_leading(&self) -> bool {
        matches!(self, StoreError::NotLeading(_))
    }
}

/// The result of a store call.
pub(crate) type R<T> = Result<T, StoreError>;

/// The result of a SQLite call, inside the store.
pub(crate) type Sql<T> = rusqlite::Result<T>;

/// A value read from a column that does not parse as its type: the store is damaged.
pub(crate) fn bad_column(col: usize, what: &str, found: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        format!("unknown {what} {found:?} in the state store").into(),
    )
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(DateTime::<Utc>::from_timestamp_millis)
}

/// Why the store could not be opened (the daemon's start error and exit code).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: cannot create or open: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state store {path} is corrupt ({detail}); move it aside to start with empty state, or restore it from a backup")]
    Corrupt { path: PathBuf, detail: String },
    #[error("state store {path} has schema version {found}, newer than this mlopsd supports ({supported}); run the newer mlopsd or restore an older copy")]
    Newer {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("state store {path} is in use by another mlopsd process (lock held on {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("state store {path}: {source}")]
    Sqlite { path: PathBuf, source: StoreError },
}

impl StateError {
    /// The process exit code for this error (sysexits).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            StateError::Corrupt { .. } | StateError::Newer { .. } => crate::exit::DATAERR,
            StateError::Io { .. } | StateError::Sqlite { .. } => crate::exit::IOERR,
            StateError::Locked { .. } => crate::exit::TEMPFAIL,
        }
    }
}

/// Each migration takes the schema from version i to i + 1.
const MIGRATIONS: &[&str] = &[
    // 0 → 1
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- last fire of each scheduled item, for catch-up after downtime
    CREATE TABLE schedule_state (kind TEXT NOT NULL, name TEXT NOT NULL, last_fire_ms INTEGER NOT NULL, PRIMARY KEY (kind, name));
    CREATE TABLE check_state (
        name TEXT PRIMARY KEY, breach_count INTEGER NOT NULL DEFAULT 0, breaching INTEGER NOT NULL DEFAULT 0,
        correlation_id TEXT, last_value REAL, last_eval_ms INTEGER);
    CREATE TABLE check_values (name TEXT NOT NULL, at_ms INTEGER NOT NULL, value REAL, breached INTEGER NOT NULL, PRIMARY KEY (name, at_ms));
    CREATE TABLE rule_state (name TEXT PRIMARY KEY, firings INTEGER NOT NULL DEFAULT 0, last_fired_ms INTEGER, cooldown_until_ms INTEGER);
    -- one row per decided start; written before AWS is called
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY, rule TEXT NOT NULL, firing INTEGER NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
        token TEXT NOT NULL UNIQUE, request TEXT NOT NULL, correlation_id TEXT NOT NULL, check_name TEXT,
        status TEXT NOT NULL, arn TEXT, detail TEXT, decided_ms INTEGER NOT NULL, started_ms INTEGER, ended_ms INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX runs_status ON runs (status);
    -- notifications to send (at least once), and the dedupe memory for repeat_interval
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY, notifier TEXT NOT NULL, topic_arn TEXT NOT NULL, event TEXT NOT NULL, rule TEXT, check_name TEXT,
        correlation_id TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL,
        sent_ms INTEGER, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_ms INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX outbox_pending ON outbox (sent_ms, next_attempt_ms);
    CREATE TABLE dedupe (notifier TEXT NOT NULL, rule TEXT NOT NULL, event TEXT NOT NULL, last_sent_ms INTEGER NOT NULL, PRIMARY KEY (notifier, rule, event));
    CREATE TABLE gate_decisions (
        gate TEXT NOT NULL, package_arn TEXT NOT NULL, decision TEXT NOT NULL, value REAL, reason TEXT NOT NULL,
        decided_ms INTEGER NOT NULL, applied INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (gate, package_arn));
    "#,
    // 1 → 2: EventBridge event ids already handled (remembered 7 days), and runs by ARN.
    r#"
    CREATE TABLE events_seen (id TEXT PRIMARY KEY, seen_ms INTEGER NOT NULL);
    CREATE INDEX events_seen_at ON events_seen (seen_ms);
    CREATE INDEX runs_arn ON runs (arn);
    "#,
    // 2 → 3: declared pipelines: what was applied, what is decided, what drift was reported.
    r#"
    CREATE TABLE pipeline_applies (
        pipeline TEXT PRIMARY KEY, applied_hash TEXT, pending_op TEXT, pending_hash TEXT, drift_hash TEXT,
        state TEXT NOT NULL, detail TEXT, arn TEXT, changed_ms INTEGER NOT NULL, checked_ms INTEGER);
    "#,
    // 3 → 4: a run's end is chained (its on_success / on_failure rules considered) once, also
    // across a crash between storing the end and deciding the chained rules.
    r#"
    ALTER TABLE runs ADD COLUMN chained INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX runs_unchained ON runs (chained) WHERE chained = 0;
    "#,
    // 4 → 5: deployments of model package versions to endpoints (SPEC "Deploy").
    r#"
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY, endpoint TEXT NOT NULL, endpoint_name TEXT NOT NULL, version INTEGER NOT NULL,
        package_arn TEXT NOT NULL, spec TEXT NOT NULL, resource TEXT NOT NULL, prev_config TEXT, prev_version INTEGER,
        op TEXT NOT NULL, state TEXT NOT NULL, sent_ms INTEGER, confirmed INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, reason TEXT, rolled_back_by TEXT, correlation_id TEXT NOT NULL,
        decided_ms INTEGER NOT NULL, succeeded_ms INTEGER, bake_until_ms INTEGER, ended_ms INTEGER,
        chained INTEGER NOT NULL DEFAULT 0, reject INTEGER NOT NULL DEFAULT 0, cleaned INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX deployments_endpoint ON deployments (endpoint, id);
    CREATE INDEX deployments_state ON deployments (state);
    "#,
    // 5 → 6: report checks (SPEC "Drift reports"): the execution or object last evaluated
    // (once each), what it found, and whether its rules were considered.
    r#"
    ALTER TABLE check_state ADD COLUMN report_seen TEXT;
    ALTER TABLE check_state ADD COLUMN report_facts TEXT;
    ALTER TABLE check_state ADD COLUMN report_acted TEXT;
    "#,
];

/// The one seam where async code (HTTP handlers, the outbox sender) reaches the store: the
/// call runs on tokio's blocking pool, never on an async worker. A panic inside it becomes a
/// store error.
pub(crate) async fn off_loop<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> R<T> + Send + 'static,
) -> R<T> {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Invalid(format!("state store call failed: {e}"))),
    }
}

/// The embedded store. Cheap to share behind an `Arc`; calls are short transactions.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    repl: std::sync::RwLock<Repl>,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn classify(path: &Path, e: rusqlite::Error) -> StateError {
    use rusqlite::ErrorCode::*;
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        match f.code {
            NotADatabase | DatabaseCorrupt => {
                return StateError::Corrupt {
                    path: path.to_path_buf(),
                    detail: msg.clone().unwrap_or_else(|| f.to_string()),
                }
            }
            CannotOpen | ReadOnly | PermissionDenied | DiskFull | SystemIoFailure => {
                return StateError::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                }
            }
            DatabaseBusy | DatabaseLocked => {
                return StateError::Locked {
                    path: path.to_path_buf(),
                    lock: path.to_path_buf(),
                };
            }
            _ => {}
        }
    }
    StateError::Sqlite {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, migrating an older schema.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StateError::Io {
                path: lock_path.clone(),
                source: e,
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let path = dir.join(DB_FILE);
        if rc != 0 {
            return Err(StateError::Locked {
                path,
                lock: lock_path,
            });
        }
        let conn = Connection::open(&path).map_err(|e| classify(&path, e))?;
        let store = Store {
            path: path.clone(),
            conn: Mutex::new(conn),
            repl: std::sync::RwLock::new(Repl::Off),
            _lock: lock,
        };
        store.init().map_err(|e| match e {
            InitError::Sql(e) => classify(&path, e),
            InitError::State(s) => s,
        })?;
        Ok(store)
    }

    fn init(&self) -> Result<(), InitError> {
        let mut c = self.conn();
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        // Reading the header first: a file that is not SQLite fails here.
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(InitError::State(StateError::Newer {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            }));
        }
        let check: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(InitError::State(StateError::Corrupt {
                path: self.path.clone(),
                detail: check,
            }));
        }
        let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if mode.to_lowercase() != "wal" {
            tracing::warn!(journal_mode = %mode, "state store could not switch to WAL mode");
        }
        // FULL: a committed decision survives power loss, not only a crash.
        c.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            // (each migration runs in its own transaction)
            let tx = c.transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(from = i, to = i + 1, path = %self.path.display(), "state store migrated");
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A random id made when the store was created. It is part of every idempotency token, so
    /// a new store (state wiped or moved) never reuses an old store's tokens for new decisions.
    pub(crate) fn store_id(&self) -> R<String> {
        let c = self.conn();
        if let Some(id) = c
            .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
        {
            return Ok(id);
        }
        use sha2::{Digest, Sha256};
        let seed = format!(
            "{}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0),
            self.path.display()
        );
        let id: String = Sha256::digest(seed.as_bytes())
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        c.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?1)",
            params![id],
        )?;
        Ok(
            c.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
                r.get(0)
            })?,
        )
    }

    /// The connection, private to the store's own queries; a poisoned lock (a panic
    /// elsewhere mid-call) still yields it, since SQLite transactions keep the data
    /// consistent by themselves.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> R<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Records that a scheduled item fired at `at`.
    pub fn record_fire(&self, kind: ItemKind, name: &str, at: DateTime<Utc>) -> R<()> {
        self.write1(
            "INSERT INTO schedule_state (kind, name, last_fire_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, name) DO UPDATE SET last_fire_ms = excluded.last_fire_ms",
            params![kind.as_str(), name, at.timestamp_millis()],
        )?;
        Ok(())
    }

    /// Records several fires in one transaction.
    pub(crate) fn record_fires(&self, kind: ItemKind, fires: &[(String, DateTime<Utc>)]) -> R<()> {
        self.write(|w| {
            for (name, at) in fires {
                w.exec(
                    "INSERT INTO schedule_state (kind, name, last_fire_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (kind, name) DO UPDATE SET last_fire_ms = excluded.last_fire_ms",
                    params![kind.as_str(), name, at.timestamp_millis()],
                )?;
            }
            Ok(())
        })
    }

    pub(crate) fn last_fire(&self, kind: ItemKind, name: &str) -> R<Option<DateTime<Utc>>> {
        let ms: Option<i64> = self
            .conn()
            .query_row(
                "SELECT last_fire_ms FROM schedule_state WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(ms.and_then(DateTime::<Utc>::from_timestamp_millis))
    }

    /// Moves the WAL into the database file (at shutdown; the WAL keeps the data either way).
    pub fn checkpoint(&self) -> R<()> {
        Ok(self
            .conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?)
    }

    /// Checks that the store is writable now, waiting at most `wait` for a lock (health checks).
    pub(crate) fn probe_write_within(&self, wait: std::time::Duration) -> R<()> {
        let c = self.conn();
        c.busy_timeout(wait)?;
        let r = c.execute(
            "INSERT INTO meta (key, value) VALUES ('probe', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![Utc::now().timestamp_millis().to_string()],
        );
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(r.map(|_| ())?)
    }
}

enum InitError {
    Sql(rusqlite::Error),
    State(StateError),
}

impl From<rusqlite::Error> for InitError {
    fn from(e: rusqlite::Error) -> Self {
        InitError::Sql(e)
    }
}

#[cfg(test)]
mod open_tests {
    use super::*;

    #[test]
    fn creates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
            let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
            s.record_fire(ItemKind::Check, "a", t).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.last_fire(ItemKind::Check, "a").unwrap(),
            DateTime::<Utc>::from_timestamp(1_800_000_000, 0)
        );
        assert_eq!(s.last_fire(ItemKind::Check, "b").unwrap(), None);
    }

    #[test]
    fn second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("in use by another mlopsd"));
    }

    #[test]
    fn garbage_file_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DB_FILE),
            b"this is not a database, it is a text file\n".repeat(200),
        )
        .unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("is corrupt"), "{e}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::Newer { found: 99, .. }), "{e:?}");
        assert!(e.to_string().contains("newer than this mlopsd supports"));
    }
}
