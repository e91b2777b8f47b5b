//! Fast reload: when an edit changed only some `[checks.NAME]`, `[rules.NAME]` or
//! `[gates.NAME]` blocks of a file whose other blocks are byte-identical to the running
//! config's, only the changed blocks are parsed and validated, against the running config.
//! Anything else (a syntax the block split cannot be sure of, a changed header, a change in
//! another section, any problem in a changed block) returns `None`, and the caller parses and
//! validates the whole file as usual. A test checks that both paths always agree.

use super::build::{read_item, Item};
use super::diff::ConfigDiff;
use super::Config;

/// Most blocks that may change before a full parse is as quick.
const MAX_CHANGED: usize = 64;

/// A top-level table header line `[a.b]` (no quoting, no arrays of tables).
fn header(line: &str) -> Option<&str> {
    let t = line.trim();
    let t = t.split_once('#').map(|(a, _)| a.trim_end()).unwrap_or(t);
    let inner = t.strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return None;
    }
    Some(inner)
}

/// Splits a file into (header, block text) at table headers; `None` where that split could
/// be wrong (multi-line strings, arrays of tables, keys before the first header, a line that
/// starts with `[` but is no plain header).
fn blocks(text: &str) -> Option<Vec<(&str, &str)>> {
    if text.contains("\"\"\"") || text.contains("'''") || text.contains("[[") {
        return None;
    }
    let mut out: Vec<(&str, usize)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            out.push((header(line)?, offset));
        } else if out.is_empty() && !(t.is_empty() || t.starts_with('#')) {
            return None;
        }
        offset += line.len();
    }
    let ends: Vec<usize> = out.iter().skip(1).map(|(_, o)| *o).chain(std::iter::once(text.len())).collect();
    Some(out.iter().zip(ends).map(|((h, start), end)| (*h, &text[*start..end])).collect())
}

/// The new config, if it can be had from `old` by re-reading only the changed blocks.
pub fn reparse(old: &Config, old_text: &str, new_text: &str) -> Option<Config> {
    reparse_with_diff(old, old_text, new_text).map(|(c, _)| c)
}

/// As `reparse`, with the diff against `old` (only the re-read items can differ, so only they
/// are compared).
pub fn reparse_with_diff(old: &Config, old_text: &str, new_text: &str) -> Option<(Config, ConfigDiff)> {
    let (a, b) = (blocks(old_text)?, blocks(new_text)?);
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0) {
        return None;
    }
    let changed: Vec<(&str, &str)> = a.iter().zip(&b).filter(|(x, y)| x.1 != y.1).map(|(_, y)| *y).collect();
    if changed.len() > MAX_CHANGED {
        return None;
    }
    let mut cfg = old.clone();
    let mut diff = ConfigDiff::default();
    for (h, text) in changed {
        let (section, name) = h.split_once('.')?;
        if name.contains('.') || !matches!(section, "checks" | "rules" | "gates") {
            return None;
        }
        let doc = toml::de::DeTable::parse(text).ok()?;
        let inner = match doc.get_ref().get(section)?.get_ref() {
            toml::de::DeValue::Table(t) => match t.get(name)?.get_ref() {
                toml::de::DeValue::Table(t) => t,
                _ => return None,
            },
            _ => return None,
        };
        let n = name.to_string();
        match read_item(section, name, inner, old)? {
            Item::Check(c) => {
                if old.checks.get(name) != Some(&c) {
                    diff.checks.changed.push(n.clone());
                }
                cfg.checks.insert(n, c);
            }
            Item::Rule(r) => {
                if old.rules.get(name) != Some(&r) {
                    diff.rules.changed.push(n.clone());
                }
                cfg.rules.insert(n, r);
            }
            Item::Gate(g) => {
                if old.gates.get(name) != Some(&g) {
                    diff.gates.changed.push(n.clone());
                }
                cfg.gates.insert(n, g);
            }
        }
    }
    Some((cfg, diff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn base() -> String {
        let mut s = String::from("# generated\n[daemon]\ntimezone = \"Europe/Berlin\"\n\n[notifiers.ops]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n\n[pipelines.p]\npipeline_name = \"p\"\nparameters = { A = \"1\" }\n\n");
        for i in 0..30 {
            s.push_str(&format!(
                "[checks.c{i}]\nschedule = \"*/5 * * * *\"\nnamespace = \"ns\"\nmetric = \"m{i}\"\nabove = 0.{i}1\nfor = {}\n\n[rules.r{i}]\non_check = \"c{i}\"\nstart_pipeline = \"p\"\nparameters = {{ B = \"{i}\" }}\ncooldown = \"1h\"\nnotify = [\"ops\"]\n\n",
                1 + i % 3
            ));
        }
        s.push_str("[gates.g]\nmodel_package_group = \"grp\"\nschedule = \"rate(5 minutes)\"\nmetric = \"accuracy\"\nmin = 0.8\n");
        s
    }

    const EDITS: &[(&str, &str)] = &[
        ("above = 0.51", "above = 0.75"),
        ("for = 1\n\n[rules.r3]", "for = 3\n\n[rules.r3]"),
        ("schedule = \"*/5 * * * *\"\nnamespace = \"ns\"\nmetric = \"m7\"", "schedule = \"cron(0 * * * ? *)\"\nnamespace = \"ns\"\nmetric = \"m7\""),
        ("parameters = { B = \"9\" }", "parameters = { B = \"nine\", A = \"2\" }"),
        ("min = 0.8", "max = 0.99"),
        ("cooldown = \"1h\"\nnotify = [\"ops\"]\n\n[checks.c12]", "cooldown = \"2h\"\ndry_run = true\nnotify = [\"ops\"]\n\n[checks.c12]"),
        // Problems: the fast path must step aside so the full parse reports them.
        ("above = 0.21", "above = \"high\""),
        ("on_check = \"c4\"", "on_check = \"nope\""),
        ("metric = \"m5\"", "metrik = \"m5\""),
        ("[checks.c6]", "[checks.c6x]"),
        ("above = 0.81", "above = 0.81\nbelow = 0.1"),
        ("pipeline_name = \"p\"", "pipeline_name = \"q\""),
        ("timezone = \"Europe/Berlin\"", "timezone = \"Asia/Tokyo\""),
        ("schedule = \"rate(5 minutes)\"", "schedule = \"rate(5 minute)\""),
        ("[rules.r2]", "[[rules.r2]]"),
        ("namespace = \"ns\"\nmetric = \"m8\"", "namespace = '''ns'''\nmetric = \"m8\""),
    ];

    #[test]
    fn always_agrees_with_a_full_parse() {
        let old_text = base();
        let old = crate::config::parse(&old_text, Path::new("x")).unwrap();
        let mut fast = 0;
        for (i, (from, to)) in EDITS.iter().enumerate() {
            assert!(old_text.contains(from), "edit {i}: {from:?} not in the base config");
            let new_text = old_text.replacen(from, to, 1);
            let full = crate::config::parse(&new_text, Path::new("x"));
            match reparse(&old, &old_text, &new_text) {
                Some(cfg) => {
                    fast += 1;
                    assert_eq!(Some(&cfg), full.as_ref().ok(), "edit {i}: the fast path disagrees with a full parse");
                    let (_, d) = reparse_with_diff(&old, &old_text, &new_text).unwrap();
                    let full_diff = crate::config::diff::ConfigDiff::new(&old, &cfg);
                    assert_eq!(d.counts(), full_diff.counts(), "edit {i}: diff");
                    assert_eq!((&d.checks.changed, &d.rules.changed, &d.gates.changed), (&full_diff.checks.changed, &full_diff.rules.changed, &full_diff.gates.changed));
                }
                None => {}
            }
        }
        assert!(fast >= 6, "the fast path took only {fast} of the valid edits");
        // Several blocks at once, and an unchanged file.
        let two = old_text.replacen("above = 0.11", "above = 0.12", 1).replacen("cooldown = \"1h\"", "cooldown = \"3h\"", 1);
        assert_eq!(reparse(&old, &old_text, &two).as_ref(), crate::config::parse(&two, Path::new("x")).ok().as_ref());
        assert_eq!(reparse(&old, &old_text, &old_text).as_ref(), Some(&old));
    }

    #[test]
    fn splits_only_plain_files() {
        assert!(blocks("a = 1\n[x.y]\nb = 2\n").is_none(), "keys before the first header");
        assert!(blocks("[x]\nv = \"\"\"\n[y]\n\"\"\"\n").is_none());
        assert!(blocks("[x.\"quoted\"]\n").is_none());
        let b = blocks("# c\n\n[x.a] # note\nk = 1\n[x.b]\nk = [\n 1,\n]\n").unwrap();
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), ["x.a", "x.b"]);
        assert_eq!(b[0].1, "[x.a] # note\nk = 1\n");
    }
}
