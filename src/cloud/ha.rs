//! What high availability asks of its table (SPEC "More than one machine"): the lease item,
//! written only by conditional writes, and the replicated log with its snapshots. DynamoDB is
//! the real one (`aws::dynamodb`); the lease's tests use one in memory.

use std::fmt;
use std::future::Future;

use super::AwsError;

/// The lease item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseItem {
    /// The replica that holds it.
    pub holder: String,
    /// Grows by one with every new leader; every state write of the leader is conditioned on it.
    pub fencing: u64,
    /// Grows by one with every write (a renewal, a takeover): what standbys watch.
    pub version: u64,
    /// The holder gave the lease up (a clean stop, after its last write): a standby takes
    /// over at once instead of after a whole lease, and no write of the holder's passes.
    pub released: bool,
}

/// What a conditional write of the lease item expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No lease item yet.
    Absent,
    /// The item a standby watched expire: still at this version.
    Version(u64),
    /// Our own lease: this holder and fencing number (a renewal).
    Held { holder: String, fencing: u64 },
}

/// Where the lease item lives.
pub trait LeaseTable: Clone + Send + Sync + 'static {
    /// The lease item (strongly consistent read), `None` when there is none.
    fn read(&self) -> impl Future<Output = Result<Option<LeaseItem>, AwsError>> + Send;
    /// Writes `item` if the stored item is as `expect` says; `Ok(false)` when it is not.
    fn write(
        &self,
        item: LeaseItem,
        expect: Expect,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;
}

/// The newest snapshot of the log: its last entry, its parts, its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRef {
    pub seq: u64,
    pub parts: usize,
    pub bytes: u64,
}

/// The HA table beyond the lease: the log of state writes, its snapshots, and the config
/// hashes replicas compare.
pub trait HaLog: LeaseTable {
    /// The table's name, for messages.
    fn name(&self) -> &str;
    /// Checks that the table exists with the key schema mlopsd needs.
    fn check(&self) -> impl Future<Output = Result<(), HaCheckError>> + Send;
    /// Appends log entry `seq` as one transaction, conditioned on `holder` holding the lease
    /// with `fencing`.
    fn append(
        &self,
        holder: &str,
        fencing: u64,
        seq: u64,
        entry: &[u8],
    ) -> impl Future<Output = Result<(), AppendError>> + Send;
    /// The entries after `after`, in order, each whole.
    fn read_log(
        &self,
        after: u64,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, AwsError>> + Send;
    /// The newest entry's sequence number (0: none).
    fn last_seq(&self) -> impl Future<Output = Result<u64, AwsError>> + Send;
    fn latest_snapshot(&self)
        -> impl Future<Output = Result<Option<SnapshotRef>, AwsError>> + Send;
    /// Stores a snapshot as of entry `seq`; false when a newer one was there already.
    fn put_snapshot(
        &self,
        seq: u64,
        data: &[u8],
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;
    fn read_snapshot(
        &self,
        seq: u64,
        parts: usize,
    ) -> impl Future<Output = Result<Vec<u8>, AwsError>> + Send;
    /// Deletes the log up to `seq` and older snapshots; how many items went.
    fn compact_through(&self, seq: u64) -> impl Future<Output = Result<usize, AwsError>> + Send;
    /// The config hash this replica writes on the lease item with each of its writes.
    fn set_config_hash(&self, hash: &str);
    /// The config hash on the lease item as last read (the leader's).
    fn leader_config_hash(&self) -> Option<String>;
}

/// What is wrong with the HA table, for the start error (and its exit code) and `doctor`.
#[derive(Debug, Clone, PartialEq)]
pub enum HaCheckError {
    Missing(String),
    Schema(String),
    Unreachable(String),
    Denied(String),
}

impl HaCheckError {
    /// sysexits: a wrong key schema is a configuration error; the rest is unavailable.
    pub fn exit_code(&self) -> u8 {
        match self {
            HaCheckError::Schema(_) => crate::exit::CONFIG,
            _ => crate::exit::UNAVAILABLE,
        }
    }
}

impl fmt::Display for HaCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaCheckError::Missing(m)
            | HaCheckError::Schema(m)
            | HaCheckError::Unreachable(m)
            | HaCheckError::Denied(m) => f.write_str(m),
        }
    }
}

/// Why a log append did not land.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendError {
    /// The lease is no longer ours (or the entry exists already): we were deposed.
    Deposed(String),
    /// AWS did not take it (after the SDK's retries); it may or may not be stored.
    Failed(AwsError),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Deposed(why) => write!(f, "deposed: {why}"),
            AppendError::Failed(e) => write!(f, "{e}"),
        }
    }
}
