//! DynamoDB: the HA table (partition key `pk`, sort key `sk`, both strings). The lease item
//! (`pk = "lease"`, `sk = "leader"`) is written only by conditional `PutItem`; each state
//! write of the leader is a log entry appended as one `TransactWriteItems` conditioned on its
//! fencing number; snapshots compact the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Observed;
use crate::cloud::{
    AppendError, AwsError, ErrorKind, Expect, HaCheckError, HaLog, LeaseItem, LeaseTable,
    SnapshotRef,
};
use crate::config::AwsConfig;

/// The HA table on DynamoDB (partition key `pk`, sort key `sk`, both strings): the lease item
/// is (`pk = "lease"`, `sk = "leader"`).
#[derive(Clone)]
pub struct HaTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// This replica's config hash, written on the lease item with each of its writes.
    config_hash: Arc<Mutex<String>>,
    /// The config hash on the lease item as last read (the leader's).
    leader_hash: Arc<Mutex<Option<String>>>,
}

const LEASE_PK: &str = "lease";
const LEASE_SK: &str = "leader";

/// The log items of the HA table: `pk = "log"`, `sk = "<seq, 20 digits>#<part, 4 digits>"`.
const LOG_PK: &str = "log";
/// Largest part of a log entry in one item (DynamoDB's item limit is 400 KB).
const LOG_PART: usize = 350_000;
/// Most parts of one entry: one `TransactWriteItems` holds 100 items, one is the lease check.
const LOG_MAX_PARTS: usize = 11;

fn log_sk(seq: u64, part: usize) -> String {
    format!("{seq:020}#{part:04}")
}

/// The snapshot items: parts `pk = "snap"`, `sk = "<seq>#<part>"`, and the pointer to the
/// newest whole one, `sk = "latest"`.
const SNAP_PK: &str = "snap";
const SNAP_LATEST: &str = "latest";

impl HaTable {
    /// The table `table` through `[aws]`'s SDK config (endpoint, credentials, retries).
    pub async fn new(cfg: &AwsConfig, table: &str) -> HaTable {
        let sdk = super::sdk_config(cfg).await;
        HaTable {
            client: aws_sdk_dynamodb::Client::new(&sdk),
            table: table.to_string(),
            config_hash: Default::default(),
            leader_hash: Default::default(),
        }
    }

    /// Every item a query matches, page after page.
    async fn query_all(
        &self,
        q: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>, AwsError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = q
                .clone()
                .set_exclusive_start_key(start.take())
                .send()
                .observed("dynamodb", "Query")
                .await?;
            out.extend(r.items.unwrap_or_default());
            match r.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

impl LeaseTable for HaTable {
    async fn read(&self) -> Result<Option<LeaseItem>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let r = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", V::S(LEASE_PK.into()))
            .key("sk", V::S(LEASE_SK.into()))
            .consistent_read(true)
            .send()
            .observed("dynamodb", "GetItem")
            .await?;
        let Some(item) = r.item else {
            return Ok(None);
        };
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        *self.leader_hash.lock().unwrap_or_else(|p| p.into_inner()) = s("config_hash");
        let n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|x| x.parse::<u64>().ok())
        };
        let released = item
            .get("released")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false);
        match (s("holder"), n("fencing"), n("version")) {
            (Some(holder), Some(fencing), Some(version)) => Ok(Some(LeaseItem {
                holder,
                fencing,
                version,
                released,
            })),
            _ => Err(AwsError::new(
                "dynamodb",
                "GetItem",
                ErrorKind::Refused,
                "MalformedLease",
                format!(
                    "the lease item in \"{}\" lacks holder, fencing or version",
                    self.table
                ),
            )),
        }
    }

    async fn write(&self, item: LeaseItem, expect: Expect) -> Result<bool, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        use Expect;
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", V::S(LEASE_PK.into()))
            .item("sk", V::S(LEASE_SK.into()))
            .item("holder", V::S(item.holder.clone()))
            .item("fencing", V::N(item.fencing.to_string()))
            .item("version", V::N(item.version.to_string()));
        let hash = self
            .config_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !hash.is_empty() {
            req = req.item("config_hash", V::S(hash));
        }
        if item.released {
            req = req.item("released", V::Bool(true));
        }
        req = match expect {
            Expect::Absent => req.condition_expression("attribute_not_exists(pk)"),
            Expect::Version(v) => req
                .condition_expression("version = :v")
                .expression_attribute_values(":v", V::N(v.to_string())),
            Expect::Held { holder, fencing } => req
                .condition_expression(
                    "holder = :h AND fencing = :f AND attribute_not_exists(released)",
                )
                .expression_attribute_values(":h", V::S(holder))
                .expression_attribute_values(":f", V::N(fencing.to_string())),
        };
        match req.send().observed("dynamodb", "PutItem").await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::ConditionFailed => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl HaLog for HaTable {
    fn name(&self) -> &str {
        &self.table
    }

    fn set_config_hash(&self, hash: &str) {
        *self.config_hash.lock().unwrap_or_else(|p| p.into_inner()) = hash.to_string();
    }

    fn leader_config_hash(&self) -> Option<String> {
        self.leader_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks that the table exists with the key schema mlopsd needs; the error says what is
    /// wrong with which table.
    async fn check(&self) -> Result<(), HaCheckError> {
        use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
        let r = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .observed("dynamodb", "DescribeTable")
            .await;
        let t = match r {
            Ok(r) => r.table,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(HaCheckError::Missing(format!(
                    "the HA table \"{}\" does not exist (create it with partition key `pk` (S) and sort key `sk` (S); the CloudFormation template does)",
                    self.table
                )))
            }
            Err(e) => {
                let m = format!("cannot read the HA table \"{}\": {e}", self.table);
                return Err(match e.kind {
                    ErrorKind::Denied => HaCheckError::Denied(m),
                    _ => HaCheckError::Unreachable(m),
                });
            }
        };
        let Some(t) = t else {
            return Err(HaCheckError::Missing(format!(
                "DescribeTable gave no table for \"{}\"",
                self.table
            )));
        };
        let types: std::collections::HashMap<&str, &ScalarAttributeType> = t
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name(), a.attribute_type()))
            .collect();
        let keys: Vec<(&str, &KeyType)> = t
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type()))
            .collect();
        let want = [("pk", KeyType::Hash), ("sk", KeyType::Range)];
        let ok = keys.len() == 2
            && want.iter().all(|(n, k)| {
                keys.contains(&(*n, k)) && types.get(n) == Some(&&ScalarAttributeType::S)
            });
        if ok {
            Ok(())
        } else {
            let found: Vec<String> = keys
                .iter()
                .map(|(n, k)| {
                    format!(
                        "{n} ({}, {})",
                        k.as_str(),
                        types.get(n).map(|t| t.as_str()).unwrap_or("?")
                    )
                })
                .collect();
            Err(HaCheckError::Schema(format!(
                "the HA table \"{}\" has the key schema {}; mlopsd needs partition key `pk` (S) and sort key `sk` (S)",
                self.table,
                found.join(", ")
            )))
        }
    }

    /// Appends log entry `seq` as one transaction: its parts (each only if absent) and a check
    /// that the lease is still `holder`'s with `fencing`. A conflict with a concurrent lease
    /// renewal is tried again (same client token: DynamoDB makes the retry idempotent).
    async fn append(
        &self,
        holder: &str,
        fencing: u64,
        seq: u64,
        entry: &[u8],
    ) -> Result<(), AppendError> {
        use aws_sdk_dynamodb::types::{
            AttributeValue as V, ConditionCheck, Put, TransactWriteItem,
        };
        let parts: Vec<&[u8]> = if entry.is_empty() {
            vec![entry]
        } else {
            entry.chunks(LOG_PART).collect()
        };
        if parts.len() > LOG_MAX_PARTS {
            return Err(AppendError::Failed(AwsError::new(
                "dynamodb",
                "TransactWriteItems",
                ErrorKind::Refused,
                "EntryTooLarge",
                format!(
                    "a state write of {} bytes (compressed) is over the {} bytes one DynamoDB transaction holds",
                    entry.len(),
                    LOG_PART * LOG_MAX_PARTS
                ),
            )));
        }
        let build = |e: aws_smithy_types::error::operation::BuildError| {
            AppendError::Failed(AwsError::new(
                "dynamodb",
                "TransactWriteItems",
                ErrorKind::Refused,
                "BuildError",
                e.to_string(),
            ))
        };
        let mut items = Vec::with_capacity(parts.len() + 1);
        for (i, p) in parts.iter().enumerate() {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", V::S(LOG_PK.into()))
                .item("sk", V::S(log_sk(seq, i)))
                .item("d", V::B(aws_smithy_types::Blob::new(p.to_vec())))
                .item("n", V::N(parts.len().to_string()))
                .item("f", V::N(fencing.to_string()))
                .condition_expression("attribute_not_exists(sk)")
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", V::S(LEASE_PK.into()))
            .key("sk", V::S(LEASE_SK.into()))
            .condition_expression("holder = :h AND fencing = :f AND attribute_not_exists(released)")
            .expression_attribute_values(":h", V::S(holder.into()))
            .expression_attribute_values(":f", V::N(fencing.to_string()))
            .build()
            .map_err(build)?;
        items.push(TransactWriteItem::builder().condition_check(check).build());
        // At most 36 characters; the same for every retry of this entry.
        let token = {
            use sha2::{Digest, Sha256};
            let d = Sha256::digest(format!("{holder}\0{fencing}\0{seq}").as_bytes());
            d.iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let mut conflicts = 0u32;
        loop {
            let r = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .send()
                .observed("dynamodb", "TransactWriteItems")
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.code == "TransactionCanceledException" => {
                    if e.message.contains("ConditionalCheckFailed") {
                        return Err(AppendError::Deposed(format!(
                            "state write {seq} was refused: the lease is no longer held by {holder} with fencing {fencing}, or entry {seq} is in the log already"
                        )));
                    }
                    if e.message.contains("TransactionConflict") && conflicts < 10 {
                        conflicts += 1;
                        tokio::time::sleep(Duration::from_millis(20 * conflicts as u64)).await;
                        continue;
                    }
                    return Err(AppendError::Failed(e));
                }
                Err(e) => return Err(AppendError::Failed(e)),
            }
        }
    }

    /// The log entries after `after`, in order (strongly consistent reads). An entry is
    /// whole: its parts were written in one transaction.
    async fn read_log(&self, after: u64) -> Result<Vec<(u64, Vec<u8>)>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND sk >= :from")
            .expression_attribute_values(":p", V::S(LOG_PK.into()))
            .expression_attribute_values(":from", V::S(format!("{:020}", after + 1)))
            .consistent_read(true);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for item in self.query_all(q).await? {
            let sk = item.get("sk").and_then(|v| v.as_s().ok());
            let d = item.get("d").and_then(|v| v.as_b().ok());
            let parsed = sk
                .and_then(|s| s.split_once('#'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)));
            let (Some((seq, part)), Some(d)) = (parsed, d) else {
                return Err(AwsError::new(
                    "dynamodb",
                    "Query",
                    ErrorKind::Refused,
                    "MalformedLog",
                    format!(
                        "a log item in \"{}\" has no sequence number or data (sk {:?})",
                        self.table, sk
                    ),
                ));
            };
            match out.last_mut() {
                Some((s, buf)) if *s == seq && part > 0 => buf.extend_from_slice(d.as_ref()),
                _ => out.push((seq, d.as_ref().to_vec())),
            }
        }
        Ok(out)
    }

    /// The newest log entry's sequence number (0: none).
    async fn last_seq(&self) -> Result<u64, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let r = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", V::S(LOG_PK.into()))
            .consistent_read(true)
            .scan_index_forward(false)
            .limit(1)
            .send()
            .observed("dynamodb", "Query")
            .await?;
        Ok(r.items()
            .first()
            .and_then(|i| i.get("sk"))
            .and_then(|v| v.as_s().ok())
            .and_then(|s| s.split_once('#'))
            .and_then(|(a, _)| a.parse().ok())
            .unwrap_or(0))
    }

    /// The newest snapshot: (its last log entry, its parts, its bytes), if any (strongly
    /// consistent).
    async fn latest_snapshot(&self) -> Result<Option<SnapshotRef>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let r = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", V::S(SNAP_PK.into()))
            .key("sk", V::S(SNAP_LATEST.into()))
            .consistent_read(true)
            .send()
            .observed("dynamodb", "GetItem")
            .await?;
        let n = |k: &str| {
            r.item
                .as_ref()
                .and_then(|i| i.get(k))
                .and_then(|v| v.as_n().ok())
                .and_then(|x| x.parse::<u64>().ok())
        };
        Ok(match (n("seq"), n("n")) {
            (Some(seq), Some(parts)) => Some(SnapshotRef {
                seq,
                parts: parts as usize,
                bytes: n("bytes").unwrap_or(0),
            }),
            _ => None,
        })
    }

    /// Stores a snapshot as of log entry `seq` (its parts, then the pointer, which only moves
    /// forward). Returns false when a newer snapshot was there already.
    async fn put_snapshot(&self, seq: u64, data: &[u8]) -> Result<bool, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let parts: Vec<&[u8]> = data.chunks(LOG_PART).collect();
        for (i, p) in parts.iter().enumerate() {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", V::S(SNAP_PK.into()))
                .item("sk", V::S(log_sk(seq, i)))
                .item("d", V::B(aws_smithy_types::Blob::new(p.to_vec())))
                .send()
                .observed("dynamodb", "PutItem")
                .await?;
        }
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", V::S(SNAP_PK.into()))
            .item("sk", V::S(SNAP_LATEST.into()))
            .item("seq", V::N(seq.to_string()))
            .item("n", V::N(parts.len().to_string()))
            .item("bytes", V::N(data.len().to_string()))
            .condition_expression("attribute_not_exists(sk) OR seq < :s")
            .expression_attribute_values(":s", V::N(seq.to_string()))
            .send()
            .observed("dynamodb", "PutItem")
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::ConditionFailed => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The parts of snapshot `seq`, joined.
    async fn read_snapshot(&self, seq: u64, parts: usize) -> Result<Vec<u8>, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":p", V::S(SNAP_PK.into()))
            .expression_attribute_values(":a", V::S(log_sk(seq, 0)))
            .expression_attribute_values(":b", V::S(log_sk(seq, 9999)))
            .consistent_read(true);
        let mut out = Vec::new();
        let mut got = 0;
        for i in self.query_all(q).await? {
            if let Some(d) = i.get("d").and_then(|v| v.as_b().ok()) {
                out.extend_from_slice(d.as_ref());
                got += 1;
            }
        }
        if got != parts {
            return Err(AwsError::new(
                "dynamodb",
                "Query",
                ErrorKind::Transient,
                "IncompleteSnapshot",
                format!(
                    "snapshot {seq} in \"{}\" has {got} of its {parts} parts",
                    self.table
                ),
            ));
        }
        Ok(out)
    }

    /// Deletes the log entries up to `seq` and the snapshots older than `seq` (after a
    /// snapshot at `seq` is the latest). Returns how many items went.
    async fn compact_through(&self, seq: u64) -> Result<usize, AwsError> {
        use aws_sdk_dynamodb::types::{AttributeValue as V, DeleteRequest, WriteRequest};
        let mut keys: Vec<(String, String)> = Vec::new();
        for (pk, below) in [(LOG_PK, log_sk(seq, 9999)), (SNAP_PK, log_sk(seq, 0))] {
            let q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND sk < :b")
                .expression_attribute_values(":p", V::S(pk.into()))
                .expression_attribute_values(":b", V::S(below.clone()))
                .projection_expression("pk, sk");
            for i in self.query_all(q).await? {
                if let Some(sk) = i.get("sk").and_then(|v| v.as_s().ok()) {
                    // The pointer sorts after the digits: never below a seq key.
                    keys.push((pk.to_string(), sk.clone()));
                }
            }
        }
        for chunk in keys.chunks(25) {
            let mut reqs: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for (pk, sk) in chunk {
                let del = DeleteRequest::builder()
                    .key("pk", V::S(pk.clone()))
                    .key("sk", V::S(sk.clone()))
                    .build()
                    .map_err(|e| {
                        AwsError::new(
                            "dynamodb",
                            "BatchWriteItem",
                            ErrorKind::Refused,
                            "BuildError",
                            e.to_string(),
                        )
                    })?;
                reqs.push(WriteRequest::builder().delete_request(del).build());
            }
            let mut pending = Some(reqs);
            let mut tries = 0;
            while let Some(reqs) = pending.take() {
                let r = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, reqs)
                    .send()
                    .observed("dynamodb", "BatchWriteItem")
                    .await?;
                let left = r
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .filter(|v| !v.is_empty());
                if let Some(left) = left {
                    tries += 1;
                    if tries > 8 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50 << tries.min(5))).await;
                    pending = Some(left);
                }
            }
        }
        Ok(keys.len())
    }
}
