//! Watches the config file for changes. The parent directory is watched, not the file, so
//! editors that write a new file and rename it over the old one are seen too.
//!
//! A change is `Settled` when a writer closed the file or a file was renamed or created in
//! place: the content is complete and the loop reloads at once. A bare data change (a writer
//! still busy, or one that never closes) is `Busy`: the loop waits for quiet first.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Settled,
    Busy,
}

/// Classifies a file event; `None` for events that do not change the content.
pub fn classify(kind: &EventKind) -> Option<Change> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Settled),
        EventKind::Access(_) => None,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
            Some(Change::Settled)
        }
        _ => Some(Change::Busy),
    }
}

/// Starts watching; every relevant change is sent to the loop.
pub fn watch(path: &Path, tx: mpsc::Sender<Change>) -> notify::Result<RecommendedWatcher> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = abs.file_name().map(|n| n.to_os_string());
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            let Some(change) = classify(&ev.kind) else {
                return;
            };
            if ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = tx.try_send(change);
            }
        }
        Err(e) => tracing::warn!(error = %e, "config watcher error"),
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(w)
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
