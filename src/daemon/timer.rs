//! The timer table: when each scheduled item fires next. Pure data; the control loop sleeps
//! until `peek()` and asks for `pop_due(now)`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

pub(super) use crate::config::ItemKind;

pub(super) type Key = (ItemKind, String);

#[derive(Debug, Default)]
pub(super) struct Timer {
    next: BTreeMap<Key, DateTime<Utc>>,
    queue: BTreeSet<(DateTime<Utc>, Key)>,
}

impl Timer {
    /// Sets (or clears, with `None`) the next fire of `key`.
    pub(super) fn set(&mut self, key: Key, at: Option<DateTime<Utc>>) {
        if let Some(old) = self.next.remove(&key) {
            self.queue.remove(&(old, key.clone()));
        }
        if let Some(at) = at {
            self.queue.insert((at, key.clone()));
            self.next.insert(key, at);
        }
    }

    pub(super) fn remove(&mut self, key: &Key) {
        if let Some(old) = self.next.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    pub(super) fn contains(&self, key: &Key) -> bool {
        self.next.contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.next.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// The earliest pending fire.
    pub(super) fn peek(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// Removes and returns every item due at or before `now`, earliest first.
    pub(super) fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<(Key, DateTime<Utc>)> {
        let mut out = Vec::new();
        while let Some((t, _)) = self.queue.first() {
            if *t > now {
                break;
            }
            if let Some((t, k)) = self.queue.pop_first() {
                self.next.remove(&k);
                out.push((k, t));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn pops_in_order_and_only_due() {
        let mut tm = Timer::default();
        tm.set((ItemKind::Check, "b".into()), Some(t(20)));
        tm.set((ItemKind::Check, "a".into()), Some(t(10)));
        tm.set((ItemKind::Gate, "g".into()), Some(t(30)));
        assert_eq!(tm.peek(), Some(t(10)));
        let due = tm.pop_due(t(20));
        assert_eq!(
            due.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(tm.len(), 1);
        tm.set((ItemKind::Gate, "g".into()), Some(t(5)));
        assert_eq!(tm.peek(), Some(t(5)));
        tm.set((ItemKind::Gate, "g".into()), None);
        assert!(tm.is_empty());
    }
}
