//! Watches the config file for changes. The parent directory is watched, not the file, so
//! editors that write a new file and rename it over the old one are seen too.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Starts watching; every relevant change sends `()` (the loop debounces).
pub fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let name = abs.file_name().map(|n| n.to_os_string());
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            if ev.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == name) {
                let _ = tx.try_send(());
            }
        }
        Err(e) => tracing::warn!(error = %e, "config watcher error"),
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}
