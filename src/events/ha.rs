//! High-availability events: leading, following, stepped down, the table, snapshots.

/// HA: this replica leads now (after catching up with the table's log).
pub(crate) fn ha_leading(
    table: &str,
    replica: &str,
    fencing: u64,
    applied_seq: u64,
    previous: Option<&str>,
) {
    tracing::info!(
        event = "ha_leading",
        table,
        replica,
        fencing,
        applied_seq,
        previous = previous.unwrap_or(""),
        "this replica leads: it evaluates, decides, starts and publishes"
    );
}

/// HA: this replica stopped leading.
pub(crate) fn ha_stepped_down(table: &str, replica: &str, reason: &str) {
    tracing::warn!(
        event = "ha_stepped_down",
        table,
        replica,
        reason,
        "this replica stopped acting and is a standby"
    );
}

/// HA: another replica leads; this one watches.
pub(crate) fn ha_following(table: &str, replica: &str, leader: &str, fencing: u64) {
    tracing::info!(
        event = "ha_following",
        table,
        replica,
        leader,
        fencing,
        "another replica leads; this one is a standby"
    );
}

/// HA: the leader runs a config whose hash differs from this replica's.
pub(crate) fn ha_config_differs(leader: &str, leader_hash: &str, hash: &str) {
    tracing::warn!(event = "ha_config_differs", leader, leader_hash, hash, "the leader runs a different config than this replica; deploy the same file to every replica");
}

/// HA: the table did not answer (reads of the log or the lease).
pub(crate) fn ha_table_unreachable(table: &str, error: &str) {
    tracing::warn!(
        event = "ha_table_unreachable",
        table,
        error,
        "cannot reach the HA table; retrying"
    );
}

/// HA: a snapshot replaced this replica's state (it was behind the compacted log).
pub(crate) fn ha_snapshot_restored(table: &str, seq: u64, bytes: usize) {
    tracing::info!(
        event = "ha_snapshot_restored",
        table,
        seq,
        bytes,
        "restored the state from the table's snapshot"
    );
}

/// HA: the leader stored a snapshot and deleted the log before it.
pub(crate) fn ha_compacted(table: &str, seq: u64, bytes: usize, deleted: usize) {
    tracing::info!(
        event = "ha_compacted",
        table,
        seq,
        bytes,
        deleted,
        "stored a snapshot of the state and deleted the log before it"
    );
}
