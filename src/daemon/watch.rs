//! Watches the config file (and the definition files it names) for changes. Parent
//! directories are watched, not the files, so editors that write a new file and rename it
//! over the old one are seen too.
//!
//! A change is `Settled` when a writer closed the file or a file was renamed or created in
//! place: the content is complete and the loop reloads at once. A bare data change (a writer
//! still busy, or one that never closes) is `Busy`: the loop waits for quiet first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Settled,
    Busy,
}

/// Classifies a file event; `None` for events that do not change the content.
pub(super) fn classify(kind: &EventKind) -> Option<Change> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Settled),
        EventKind::Access(_) => None,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
            Some(Change::Settled)
        }
        _ => Some(Change::Busy),
    }
}

/// Watches the config file and the definition files it names: each file's parent directory
/// is watched (non-recursively), and an event for one of the files is sent to the loop.
pub(super) struct Watch {
    watcher: RecommendedWatcher,
    files: Arc<Mutex<HashSet<PathBuf>>>,
    config: PathBuf,
    dirs: HashSet<PathBuf>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn parent(p: &Path) -> PathBuf {
    p.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Watch {
    /// Starts watching the config file.
    pub(super) fn new(path: &Path, tx: mpsc::Sender<Change>) -> notify::Result<Watch> {
        let config = absolute(path);
        let files = Arc::new(Mutex::new(HashSet::from([config.clone()])));
        let seen = files.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(ev) => {
                    let Some(change) = classify(&ev.kind) else {
                        return;
                    };
                    let ours = match seen.lock() {
                        Ok(f) => ev.paths.iter().any(|p| f.contains(p)),
                        Err(_) => true,
                    };
                    if ours {
                        let _ = tx.try_send(change);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "config watcher error"),
            })?;
        let dir = parent(&config);
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(Watch {
            watcher,
            files,
            config,
            dirs: HashSet::from([dir]),
        })
    }

    /// Watches these files too (the definition files of the running config), and no others.
    pub(super) fn set_extra(&mut self, extra: &[PathBuf]) {
        let want: HashSet<PathBuf> = extra
            .iter()
            .map(|p| absolute(p))
            .chain([self.config.clone()])
            .collect();
        let dirs: HashSet<PathBuf> = want.iter().map(|p| parent(p)).collect();
        for d in dirs.difference(&self.dirs) {
            if let Err(e) = self.watcher.watch(d, RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, dir = %d.display(), "cannot watch a definition file's directory; reload with SIGHUP after editing it");
            }
        }
        for d in self.dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(d);
        }
        self.dirs = dirs;
        if let Ok(mut f) = self.files.lock() {
            *f = want;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RenameMode};

    #[test]
    fn close_and_rename_settle_data_changes_wait() {
        assert_eq!(
            classify(&EventKind::Access(AccessKind::Close(AccessMode::Write))),
            Some(Change::Settled)
        );
        assert_eq!(
            classify(&EventKind::Modify(ModifyKind::Name(RenameMode::To))),
            Some(Change::Settled)
        );
        assert_eq!(
            classify(&EventKind::Create(CreateKind::File)),
            Some(Change::Settled)
        );
        assert_eq!(
            classify(&EventKind::Modify(ModifyKind::Data(DataChange::Content))),
            Some(Change::Busy)
        );
        assert_eq!(
            classify(&EventKind::Access(AccessKind::Open(AccessMode::Read))),
            None
        );
    }
}
