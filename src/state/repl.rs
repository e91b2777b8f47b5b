//! Replication of the store for high availability (`daemon.ha_table`).
//!
//! Every write of the store is one SQLite transaction made through [`W`], which records the
//! statements it runs with their parameters. With a leader's [`LogSink`] set, the recorded
//! transaction is encoded as one log entry and appended to the HA table *before* the local
//! commit, with the next sequence number; the append is conditioned on the leader's fencing
//! number, so a deposed leader's entry is refused, its local transaction rolls back, and it
//! steps down. A standby applies the log's entries in order to its own SQLite file
//! ([`Store::apply_entry`]), so the local file of every replica is a prefix of the log: the
//! table is the truth, the file a cache. The statements are deterministic (times and ids are
//! parameters, row ids follow from the state), so replaying them gives the same rows.
//!
//! An entry is a small binary encoding (distinct SQL texts once, then each statement as an
//! index and its values), deflated.

use std::io::{Read, Write};
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{params, OptionalExtension, ToSql, Transaction};

use super::{Store, StoreError, R};

/// Where a leader's log entries go (the HA table). `append` blocks until the entry is stored
/// or refused; an error means the entry may or may not be stored, and the caller must stop
/// acting until it has caught up with the log again.
pub(crate) trait LogSink: Send + Sync {
    fn append(&self, seq: u64, entry: Vec<u8>) -> Result<(), String>;
}

/// How the store's writes are replicated.
#[derive(Clone)]
pub(crate) enum Repl {
    /// One machine: writes are local only.
    Off,
    /// A standby: the loop does not run and nothing but the log's entries may be written.
    Standby,
    /// The leader: every write is appended to the log before it is committed.
    Leader(Arc<dyn LogSink>),
}

/// One recorded statement.
pub(crate) struct Op {
    sql: String,
    values: Vec<Value>,
}

/// A write transaction of the store: reads through `Deref`, writes through [`W::exec`].
pub(crate) struct W<'c> {
    tx: Transaction<'c>,
    ops: Option<Vec<Op>>,
}

impl<'c> std::ops::Deref for W<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

fn conversion(msg: String) -> StoreError {
    StoreError::Invalid(msg)
}

fn not_leading(msg: String) -> StoreError {
    StoreError::NotLeading(msg)
}

impl W<'_> {
    /// Runs one write statement (and records it when the store is replicated).
    pub(crate) fn exec(&mut self, sql: &str, params: &[&dyn ToSql]) -> R<usize> {
        let mut values = Vec::with_capacity(params.len());
        for p in params {
            values.push(match p.to_sql()? {
                ToSqlOutput::Borrowed(v) => Value::from(v),
                ToSqlOutput::Owned(v) => v,
                _ => return Err(conversion("unsupported parameter kind".into())),
            });
        }
        let n = self
            .tx
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(values.iter()))?;
        if let Some(ops) = &mut self.ops {
            ops.push(Op {
                sql: sql.to_string(),
                values,
            });
        }
        Ok(n)
    }
}

/// The last log entry applied to (or committed in) this file; 0 for none.
fn seq_of(c: &rusqlite::Connection) -> R<u64> {
    let v: Option<String> = c
        .query_row("SELECT value FROM meta WHERE key = 'ha_seq'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn set_seq(tx: &Transaction<'_>, seq: u64) -> R<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('ha_seq', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![seq.to_string()],
    )?;
    Ok(())
}

impl Store {
    /// Sets how writes are replicated (a change of role).
    pub(crate) fn set_repl(&self, r: Repl) {
        *self.repl.write().unwrap_or_else(|p| p.into_inner()) = r;
    }

    fn repl(&self) -> Repl {
        self.repl.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` as one write transaction: committed whole or not at all, and with a leader's
    /// sink, appended to the log first.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut W<'_>) -> R<T>) -> R<T> {
        let repl = self.repl();
        if matches!(repl, Repl::Standby) {
            return Err(not_leading(
                "this replica is a standby: only the leader writes state".into(),
            ));
        }
        let mut c = self.conn();
        let tx = c.transaction()?;
        let mut w = W {
            tx,
            ops: matches!(repl, Repl::Leader(_)).then(Vec::new),
        };
        let out = f(&mut w)?;
        let W { tx, ops } = w;
        if let (Repl::Leader(sink), Some(ops)) = (&repl, ops) {
            if !ops.is_empty() {
                let seq = seq_of(&tx)? + 1;
                let entry = encode(&ops).map_err(|e| conversion(e.to_string()))?;
                sink.append(seq, entry).map_err(|e| {
                    not_leading(format!("the HA table did not take state write {seq}: {e}"))
                })?;
                set_seq(&tx, seq)?;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// One statement as its own write transaction.
    pub(crate) fn write1(&self, sql: &str, params: &[&dyn ToSql]) -> R<usize> {
        self.write(|w| w.exec(sql, params))
    }

    /// The sequence number of the last log entry in this file.
    pub(crate) fn applied_seq(&self) -> R<u64> {
        seq_of(&self.conn())
    }

    /// Applies log entry `seq` (a standby's catch-up). Entries at or below the applied one are
    /// skipped (`Ok(false)`); a gap is an error, never applied out of order.
    pub(crate) fn apply_entry(&self, seq: u64, entry: &[u8]) -> R<bool> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let at = seq_of(&tx)?;
        if seq <= at {
            return Ok(false);
        }
        if seq != at + 1 {
            return Err(conversion(format!(
                "log entry {seq} follows {at}: entries {}..{} are missing",
                at + 1,
                seq - 1
            )));
        }
        let ops = decode(entry).map_err(conversion)?;
        for op in ops {
            tx.prepare_cached(&op.sql)?
                .execute(rusqlite::params_from_iter(op.values.iter()))?;
        }
        set_seq(&tx, seq)?;
        tx.commit()?;
        Ok(true)
    }
}

impl Store {
    /// Writes a consistent copy of this file to `path` (`VACUUM INTO`) and returns the last
    /// log entry it holds: a snapshot of the replicated state for compacting the log.
    pub(crate) fn snapshot_to(&self, path: &std::path::Path) -> R<u64> {
        let c = self.conn();
        let seq = seq_of(&c)?;
        let _ = std::fs::remove_file(path);
        c.execute("VACUUM INTO ?1", params![path.to_string_lossy()])?;
        Ok(seq)
    }

    /// Replaces every replicated table's rows with the snapshot file's, as of log entry
    /// `seq`, in one transaction (this file's own `meta`, its store id, is kept).
    pub(crate) fn restore_from(&self, path: &std::path::Path, seq: u64) -> R<()> {
        let mut c = self.conn();
        c.execute(
            "ATTACH DATABASE ?1 AS snap",
            params![path.to_string_lossy()],
        )?;
        let r = (|| {
            let version: i64 = c.query_row("PRAGMA snap.user_version", [], |r| r.get(0))?;
            let mine: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version != mine {
                return Err(conversion(format!(
                    "the HA snapshot has schema version {version}, this mlopsd {mine}: run the same version on every replica"
                )));
            }
            let tx = c.transaction()?;
            let tables: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT name FROM snap.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'meta'",
                )?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<super::Sql<_>>()?
            };
            for t in &tables {
                tx.execute(&format!("DELETE FROM main.\"{t}\""), [])?;
                tx.execute(
                    &format!("INSERT INTO main.\"{t}\" SELECT * FROM snap.\"{t}\""),
                    [],
                )?;
            }
            set_seq(&tx, seq)?;
            Ok(tx.commit()?)
        })();
        let _ = c.execute("DETACH DATABASE snap", []);
        r
    }
}

const FORMAT: u8 = 1;

fn put_u32(out: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
    let n = u32::try_from(n).map_err(|_| std::io::Error::other("state write too large"))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn encode(ops: &[Op]) -> std::io::Result<Vec<u8>> {
    let mut sqls: Vec<&str> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut body = Vec::new();
    put_u32(&mut body, ops.len())?;
    for op in ops {
        let i = *index.entry(op.sql.as_str()).or_insert_with(|| {
            sqls.push(op.sql.as_str());
            sqls.len() - 1
        });
        put_u32(&mut body, i)?;
        put_u32(&mut body, op.values.len())?;
        for v in &op.values {
            match v {
                Value::Null => body.push(0),
                Value::Integer(n) => {
                    body.push(1);
                    body.extend_from_slice(&n.to_le_bytes());
                }
                Value::Real(f) => {
                    body.push(2);
                    body.extend_from_slice(&f.to_bits().to_le_bytes());
                }
                Value::Text(s) => {
                    body.push(3);
                    put_u32(&mut body, s.len())?;
                    body.extend_from_slice(s.as_bytes());
                }
                Value::Blob(b) => {
                    body.push(4);
                    put_u32(&mut body, b.len())?;
                    body.extend_from_slice(b);
                }
            }
        }
    }
    let mut raw = vec![FORMAT];
    put_u32(&mut raw, sqls.len())?;
    for s in &sqls {
        put_u32(&mut raw, s.len())?;
        raw.extend_from_slice(s.as_bytes());
    }
    raw.extend_from_slice(&body);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&raw)?;
    z.finish()
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("log entry is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn text(&mut self) -> Result<String, String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "log entry has bad text".into())
    }
}

fn decode(entry: &[u8]) -> Result<Vec<Op>, String> {
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(entry)
        .read_to_end(&mut raw)
        .map_err(|e| format!("log entry does not inflate: {e}"))?;
    let mut c = Cursor(&raw);
    let format = c.take(1)?[0];
    if format != FORMAT {
        return Err(format!(
            "log entry has format {format}; this mlopsd reads format {FORMAT} (run the same version on every replica)"
        ));
    }
    let n = c.u32()?;
    let mut sqls = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        sqls.push(c.text()?);
    }
    let n = c.u32()?;
    let mut ops = Vec::with_capacity(n.min(65536));
    for _ in 0..n {
        let sql = sqls
            .get(c.u32()?)
            .ok_or("log entry names an unknown statement")?
            .clone();
        let k = c.u32()?;
        let mut values = Vec::with_capacity(k.min(64));
        for _ in 0..k {
            values.push(match c.take(1)?[0] {
                0 => Value::Null,
                1 => Value::Integer(c.u64()? as i64),
                2 => Value::Real(f64::from_bits(c.u64()?)),
                3 => Value::Text(c.text()?),
                4 => {
                    let n = c.u32()?;
                    Value::Blob(c.take(n)?.to_vec())
                }
                t => return Err(format!("log entry has an unknown value tag {t}")),
            });
        }
        ops.push(Op { sql, values });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ItemKind;
    use chrono::DateTime;
    use std::sync::Mutex;

    /// A sink that keeps the entries (and can refuse).
    #[derive(Default)]
    struct Log {
        entries: Mutex<Vec<(u64, Vec<u8>)>>,
        refuse: std::sync::atomic::AtomicBool,
    }
    impl LogSink for Log {
        fn append(&self, seq: u64, entry: Vec<u8>) -> Result<(), String> {
            if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("deposed".into());
            }
            self.entries.lock().unwrap().push((seq, entry));
            Ok(())
        }
    }

    fn dump(s: &Store) -> Vec<String> {
        let c = s.conn();
        let mut out = Vec::new();
        for t in [
            "schedule_state",
            "check_state",
            "check_values",
            "rule_state",
            "runs",
            "outbox",
            "dedupe",
            "gate_decisions",
            "events_seen",
            "pipeline_applies",
        ] {
            let mut st = c
                .prepare(&format!("SELECT * FROM {t} ORDER BY rowid"))
                .unwrap();
            let n = st.column_count();
            let rows = st
                .query_map([], |r| {
                    let vals: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get::<_, Value>(i).unwrap()))
                        .collect();
                    Ok(format!("{t}: {}", vals.join(", ")))
                })
                .unwrap();
            out.extend(rows.map(|r| r.unwrap()));
        }
        out
    }

    #[test]
    fn a_standby_replaying_the_log_has_the_leaders_rows() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = Store::open(a.path()).unwrap();
        let standby = Store::open(b.path()).unwrap();
        let log = Arc::new(Log::default());
        leader.set_repl(Repl::Leader(log.clone()));
        standby.set_repl(Repl::Standby);
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        leader
            .record_fires(ItemKind::Rule, &[("r".into(), t), ("s".into(), t)])
            .unwrap();
        let state = crate::engine::RuleState {
            firings: 3,
            last_fired: Some(t),
            cooldown_until: None,
        };
        let run = crate::state::NewRun {
            kind: crate::config::RunKind::Pipeline,
            target: "p".into(),
            token: "tok-1".into(),
            request: "{\"x\": 1.5e308}".into(),
            correlation_id: "c-1".into(),
            check: None,
        };
        let ids = leader
            .record_firing("r", &state, &[run], t, None, &[])
            .unwrap()
            .unwrap()
            .0;
        leader.mark_started(ids[0], "arn:x", t, &[]).unwrap();
        // A write that changes nothing is no entry.
        leader.mark_started(ids[0], "arn:y", t, &[]).unwrap();
        let entries = log.entries.lock().unwrap().clone();
        assert_eq!(
            entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "one entry per write transaction, numbered"
        );
        assert!(standby.record_fire(ItemKind::Rule, "r", t).is_err());
        for (seq, e) in &entries {
            assert!(standby.apply_entry(*seq, e).unwrap());
        }
        // Applied twice: skipped.
        assert!(!standby.apply_entry(2, &entries[1].1).unwrap());
        assert_eq!(dump(&leader), dump(&standby));
        assert_eq!(standby.applied_seq().unwrap(), 4);
        assert_eq!(leader.applied_seq().unwrap(), 4);
        // A refused append rolls the local transaction back.
        log.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = leader.record_fire(ItemKind::Rule, "new", t).unwrap_err();
        assert!(e.to_string().contains("did not take state write 5"), "{e}");
        assert_eq!(leader.last_fire(ItemKind::Rule, "new").unwrap(), None);
        assert_eq!(leader.applied_seq().unwrap(), 4);
    }

    /// A write refused because this replica does not lead (a standby's, or one whose log
    /// append was refused) is `StoreError::NotLeading`, told apart from every other failure
    /// (which `Health` then never counts as a store fault: `health::tests`).
    #[test]
    fn a_write_refused_for_not_leading_is_its_own_error() {
        let a = tempfile::tempdir().unwrap();
        let store = Store::open(a.path()).unwrap();
        let log = Arc::new(Log::default());
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        log.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        store.set_repl(Repl::Leader(log.clone()));
        let refused = store.record_fire(ItemKind::Rule, "r", t);
        store.set_repl(Repl::Standby);
        let standby = store.record_fire(ItemKind::Rule, "r", t);
        for r in [refused, standby] {
            let e = r.unwrap_err();
            assert!(e.is_not_leading(), "{e}");
        }
        assert!(!conversion("disk I/O error".into()).is_not_leading());
    }

    #[test]
    fn a_snapshot_restores_the_replicated_rows_at_its_entry() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = Store::open(a.path()).unwrap();
        let log = Arc::new(Log::default());
        leader.set_repl(Repl::Leader(log.clone()));
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        leader
            .record_fires(ItemKind::Rule, &[("r".into(), t)])
            .unwrap();
        let snap = a.path().join("snap.db");
        assert_eq!(leader.snapshot_to(&snap).unwrap(), 1);
        let standby = Store::open(b.path()).unwrap();
        // The standby had something else (an older state): replaced, not merged.
        standby.record_fire(ItemKind::Check, "stale", t).unwrap();
        let id = standby.store_id().unwrap();
        standby.restore_from(&snap, 1).unwrap();
        assert_eq!(dump(&standby), dump(&leader));
        assert_eq!(standby.applied_seq().unwrap(), 1);
        assert_eq!(standby.store_id().unwrap(), id, "its own store id is kept");
        // Entries after the snapshot apply on top.
        leader
            .record_fires(ItemKind::Rule, &[("s".into(), t)])
            .unwrap();
        let (seq, e) = log.entries.lock().unwrap()[1].clone();
        assert!(standby.apply_entry(seq, &e).unwrap());
        assert_eq!(dump(&standby), dump(&leader));
    }

    #[test]
    fn a_gap_or_a_bad_entry_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let ok = encode(&[Op {
            sql: "INSERT INTO meta (key, value) VALUES (?1, ?2)".into(),
            values: vec![Value::Text("k".into()), Value::Text("v".into())],
        }])
        .unwrap();
        let e = s.apply_entry(2, &ok).unwrap_err();
        assert!(e.to_string().contains("entries 1..1 are missing"), "{e}");
        for bad in [&b"not deflate"[..], &ok[..ok.len() / 2], &[]] {
            assert!(s.apply_entry(1, bad).is_err());
        }
        assert_eq!(s.applied_seq().unwrap(), 0);
        assert!(s.apply_entry(1, &ok).unwrap());
    }
}
