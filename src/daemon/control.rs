//! What an operator does to a running daemon, for both roles: SIGTERM/SIGINT (stop), SIGHUP
//! and an edit of the config or a definition file (reload). The file watcher sends what
//! SIGHUP sends: `Controls::next` turns both into one `Control`.

use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::watch::{self, Watch};
use super::RunError;
use crate::config::{self, Config};

/// Wait after a data change with no close yet (a writer still busy) before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Wait after a close-after-write or rename, to fold a burst of events into one reload.
const SETTLE: Duration = Duration::from_millis(5);

/// Why a role's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// `shutdown` was cancelled (a test, or the process's owner).
    Requested,
    Sigterm,
    Sigint,
    /// This replica stopped leading (HA): it goes back to being a standby.
    SteppedDown,
}

impl Exit {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Exit::Requested => "requested",
            Exit::Sigterm => "SIGTERM",
            Exit::Sigint => "SIGINT",
            Exit::SteppedDown => "stepped down",
        }
    }
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP.
    Signal,
    /// The config file or one of its definition files changed.
    File,
}

impl Trigger {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::File => "file",
        }
    }
}

/// An operator's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Stop(Exit),
    Reload(Trigger),
}

/// The signals and the file watch of one role's loop.
pub(crate) struct Controls {
    hup: Signal,
    term: Signal,
    int: Signal,
    watch: Option<Watch>,
    files: mpsc::Receiver<watch::Change>,
    /// When a file change is quiet enough to reload.
    reload_at: Option<Instant>,
}

impl Controls {
    /// Handles SIGHUP, SIGTERM and SIGINT, and watches the config file and the definition
    /// files `cfg` names (without a watch, SIGHUP still reloads).
    pub(crate) fn new(path: &Path, cfg: &Config) -> Result<Controls, RunError> {
        let on = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| RunError::Other(format!("cannot handle {name}: {e}")))
        };
        let (tx, files) = mpsc::channel(64);
        let watch = match Watch::new(path, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot watch the config file; reload with SIGHUP");
                None
            }
        };
        let mut c = Controls {
            hup: on(SignalKind::hangup(), "SIGHUP")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            int: on(SignalKind::interrupt(), "SIGINT")?,
            watch,
            files,
            reload_at: None,
        };
        c.watch_files(cfg);
        Ok(c)
    }

    /// Watches the definition files of the running config (after a reload).
    pub(crate) fn watch_files(&mut self, cfg: &Config) {
        if let Some(w) = self.watch.as_mut() {
            w.set_extra(&config::definition_files(cfg));
        }
    }

    /// The next request. Cancel-safe: a file change waiting for quiet is kept in `self`.
    pub(crate) async fn next(&mut self) -> Control {
        loop {
            let at = self.reload_at;
            let quiet = async move {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.term.recv() => return Control::Stop(Exit::Sigterm),
                _ = self.int.recv() => return Control::Stop(Exit::Sigint),
                _ = self.hup.recv() => return Control::Reload(Trigger::Signal),
                Some(change) = self.files.recv() => {
                    self.reload_at = Some(Instant::now() + match change {
                        // A writer closed the file or a new file was renamed in: reload now
                        // (after a short settle, so a burst of such events is one reload).
                        watch::Change::Settled => SETTLE,
                        // Data still being written: wait for quiet (or for the close).
                        watch::Change::Busy => DEBOUNCE,
                    });
                }
                _ = quiet => {
                    self.reload_at = None;
                    return Control::Reload(Trigger::File);
                }
            }
        }
    }
}
