//! The reload diff: a pure function from (old, new) config to what was added, changed and
//! removed, by name, per section. Unchanged items are not listed (10,000 names per reload).

use std::collections::BTreeMap;

use super::Config;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SectionDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl SectionDiff {
    fn of<T: PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Self {
        let mut d = SectionDiff::default();
        for (k, v) in new {
            match old.get(k) {
                None => d.added.push(k.clone()),
                Some(o) if o == v => {}
                Some(_) => d.changed.push(k.clone()),
            }
        }
        d.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        d
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConfigDiff {
    pub checks: SectionDiff,
    pub rules: SectionDiff,
    pub gates: SectionDiff,
    pub pipelines: SectionDiff,
    pub builds: SectionDiff,
    pub notifiers: SectionDiff,
    pub endpoints: SectionDiff,
    /// `[daemon]` or `[aws]` changed: these need a restart to take effect (logged as such).
    pub restart_needed: Vec<&'static str>,
}

impl ConfigDiff {
    pub fn new(old: &Config, new: &Config) -> Self {
        let mut restart_needed = Vec::new();
        if old.aws != new.aws {
            restart_needed.push("aws");
        }
        if old.events != new.events {
            restart_needed.push("events");
        }
        if old.daemon.state_dir != new.daemon.state_dir {
            restart_needed.push("daemon.state_dir");
        }
        if old.daemon.ha_table != new.daemon.ha_table {
            restart_needed.push("daemon.ha_table");
        }
        if old.daemon.ha_lease != new.daemon.ha_lease {
            restart_needed.push("daemon.ha_lease");
        }
        if old.daemon.listen != new.daemon.listen
            || old.daemon.allow_remote_listen != new.daemon.allow_remote_listen
        {
            restart_needed.push("daemon.listen");
        }
        ConfigDiff {
            checks: SectionDiff::of(&old.checks, &new.checks),
            rules: SectionDiff::of(&old.rules, &new.rules),
            gates: SectionDiff::of(&old.gates, &new.gates),
            pipelines: SectionDiff::of(&old.pipelines, &new.pipelines),
            builds: SectionDiff::of(&old.builds, &new.builds),
            notifiers: SectionDiff::of(&old.notifiers, &new.notifiers),
            endpoints: SectionDiff::of(&old.endpoints, &new.endpoints),
            restart_needed,
        }
    }

    pub fn is_empty(&self) -> bool {
        [
            &self.checks,
            &self.rules,
            &self.gates,
            &self.pipelines,
            &self.builds,
            &self.notifiers,
            &self.endpoints,
        ]
        .iter()
        .all(|s| s.is_empty())
            && self.restart_needed.is_empty()
    }

    /// (added, changed, removed) counts over all sections, for the reload event.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let all = [
            &self.checks,
            &self.rules,
            &self.gates,
            &self.pipelines,
            &self.builds,
            &self.notifiers,
            &self.endpoints,
        ];
        (
            all.iter().map(|s| s.added.len()).sum(),
            all.iter().map(|s| s.changed.len()).sum(),
            all.iter().map(|s| s.removed.len()).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[checks.a]
schedule = "every 1m"
namespace = "ns"
metric = "m"
above = 1
[checks.b]
schedule = "every 1m"
namespace = "ns"
metric = "m"
above = 1
[rules.r]
on_check = "a"
notify = ["n"]
[notifiers.n]
topic_arn = "arn:aws:sns:us-east-1:123456789012:t"
"#;

    #[test]
    fn diff_by_name() {
        let old = crate::config::parse(BASE, Path::new("x")).unwrap();
        let newer = BASE
            .replace(
                "[checks.b]\nschedule = \"every 1m\"",
                "[checks.c]\nschedule = \"every 1m\"",
            )
            .replace("above = 1\n[rules", "above = 2\n[rules");
        let new = crate::config::parse(&newer, Path::new("x")).unwrap();
        let d = ConfigDiff::new(&old, &new);
        assert_eq!(d.checks.added, ["c"]);
        assert_eq!(d.checks.removed, ["b"]);
        assert_eq!(d.checks.changed, Vec::<String>::new(), "a is unchanged");
        assert!(d.rules.is_empty(), "r is unchanged");
        assert!(ConfigDiff::new(&old, &old).is_empty());
    }
}
