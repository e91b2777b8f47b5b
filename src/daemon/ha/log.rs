//! The replicated log from this replica's side: a standby (or a new leader catching up)
//! applies the table's entries to its file, restoring a snapshot first when it is behind one;
//! the leader compacts the log behind snapshots of its file.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cloud::HaLog;
use crate::events;
use crate::state::{self, Store};

/// Applies the table's log after this file's last entry; returns the last entry applied. A
/// snapshot newer than this file is restored first (the log before it may be compacted away).
pub(super) async fn tail<T: HaLog>(table: &T, store: &Arc<Store>) -> Result<u64, String> {
    let at = state::off_loop(store, |s| s.applied_seq())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(snap) = table.latest_snapshot().await.map_err(|e| e.to_string())? {
        if snap.seq > at {
            restore(table, store, snap.seq, snap.parts).await?;
        }
    }
    let at = state::off_loop(store, |s| s.applied_seq())
        .await
        .map_err(|e| e.to_string())?;
    let entries = table.read_log(at).await.map_err(|e| e.to_string())?;
    state::off_loop(store, move |s| {
        for (seq, e) in entries {
            s.apply_entry(seq, &e)?;
        }
        s.applied_seq()
    })
    .await
    .map_err(|e| format!("cannot apply the HA log to {}: {e}", store.path().display()))
}

/// Replaces this file's state with snapshot `seq` from the table.
async fn restore<T: HaLog>(
    table: &T,
    store: &Arc<Store>,
    seq: u64,
    parts: usize,
) -> Result<(), String> {
    use std::io::Read;
    let data = table
        .read_snapshot(seq, parts)
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .map_err(|e| format!("HA snapshot {seq} does not inflate: {e}"))?;
    let path = store.path().with_extension("restore");
    std::fs::write(&path, &raw).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let p2 = path.clone();
    let r = state::off_loop(store, move |s| s.restore_from(&p2, seq)).await;
    let _ = std::fs::remove_file(&path);
    r.map_err(|e| format!("cannot restore HA snapshot {seq}: {e}"))?;
    events::ha_snapshot_restored(table.name(), seq, data.len());
    Ok(())
}

/// How often the leader looks whether to compact the log, and the least log it compacts.
/// `MLOPSD_HA_COMPACT_SECS` (a test hook) sets the period and compacts any log.
fn compact_policy() -> (Duration, u64) {
    match std::env::var("MLOPSD_HA_COMPACT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(s) => (Duration::from_secs(s), 1),
        None => (Duration::from_secs(600), 64 * 1024),
    }
}

/// The leader's compaction: once the log written since the last snapshot is at least as big
/// as that snapshot (so compaction at most doubles what is written), a snapshot of this file
/// is stored and the log before it deleted. Standbys behind it restore the snapshot.
pub(super) async fn compact_loop<T: HaLog>(
    table: T,
    store: Arc<Store>,
    appended: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let (every, min_bytes) = compact_policy();
    let mut last_bytes = match table.latest_snapshot().await {
        Ok(Some(snap)) => snap.bytes,
        _ => 0,
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let since = appended.load(Ordering::Relaxed);
        if since < last_bytes.max(min_bytes) {
            continue;
        }
        let path = store.path().with_extension("snapshot");
        let p2 = path.clone();
        let seq = match state::off_loop(&store, move |s| s.snapshot_to(&p2)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = "ha_snapshot_failed", error = %e, "cannot snapshot the state for compaction");
                continue;
            }
        };
        let data = std::fs::read(&path).and_then(|raw| {
            let mut z =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&raw)?;
            z.finish()
        });
        let _ = std::fs::remove_file(&path);
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(event = "ha_snapshot_failed", error = %e, "cannot read the snapshot");
                continue;
            }
        };
        if stop.is_cancelled() {
            return;
        }
        match table.put_snapshot(seq, &data).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(event = "ha_snapshot_failed", error = %e, "cannot store the snapshot; the log is kept");
                continue;
            }
        }
        appended.fetch_sub(since, Ordering::Relaxed);
        last_bytes = data.len() as u64;
        match table.compact_through(seq).await {
            Ok(n) => events::ha_compacted(table.name(), seq, data.len(), n),
            Err(e) => {
                tracing::warn!(event = "ha_compact_failed", error = %e, "cannot delete the log before the snapshot; retried at the next one")
            }
        }
    }
}
