//! Config text in blocks, one per top-level table (`[daemon]`, `[checks.NAME]`, …), for two
//! things a 10,000-check file needs:
//!
//! - **Block-wise loading** (`parse_blockwise`): a plain file is parsed one table at a time, so
//!   the TOML tokens and tree of only one small table exist at once (one parse of a 2.9 MB file
//!   holds ~40 MB of tokens). `config::parse` takes this path first; any file it is not sure
//!   of, and any file with any problem, goes through the whole-file parse, which reports
//!   every problem with its location. Both give the same `Config`, which tests check.
//! - **Fast reload** (`reparse`): when an edit changed only some `[checks|rules|gates.NAME]`
//!   blocks and every other block hashes the same as in the running config's `Index`, only
//!   the changed blocks are parsed and validated, against the running config. Anything else
//!   returns `None` and the caller parses the whole file as usual.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

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
    if inner.is_empty()
        || !inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return None;
    }
    Some(inner)
}

/// Splits a file into (header, block text) at table headers; `None` where that split could
/// be wrong (multi-line strings, arrays of tables or `[[` anywhere, keys before the first
/// header, a line that starts with `[` but is no plain header).
///
/// One SIMD scan for `[` finds every line that starts a table (only spaces or tabs before
/// it): at 10,000 checks a line-by-line walk cost more than everything else of a reload.
fn blocks(text: &str) -> Option<Vec<(&str, &str)>> {
    use memchr::memmem;
    if memmem::find(text.as_bytes(), b"\"\"\"").is_some()
        || memmem::find(text.as_bytes(), b"'''").is_some()
    {
        return None;
    }
    let bytes = text.as_bytes();
    let mut starts: Vec<usize> = Vec::new();
    for i in memchr::memchr_iter(b'[', bytes) {
        if bytes.get(i + 1) == Some(&b'[') {
            return None;
        }
        let line_start = bytes[..i]
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t'))
            .map(|p| (bytes[p] == b'\n').then_some(p + 1))
            .unwrap_or(Some(0));
        if let Some(ls) = line_start {
            starts.push(ls);
        }
    }
    // Before the first header: only blank lines and comments, and (as TOML requires of a
    // comment) no control character but a tab; the blocks' own parse checks the rest.
    let first = starts.first().copied().unwrap_or(text.len());
    let pre = &bytes[..first];
    let bad_control = pre.iter().enumerate().any(|(i, &b)| {
        (b < 0x20 && b != b'\t' && b != b'\n' && !(b == b'\r' && pre.get(i + 1) == Some(&b'\n')))
            || b == 0x7f
    });
    if bad_control
        || !text[..first]
            .lines()
            .all(|l| matches!(l.trim_start().chars().next(), None | Some('#')))
    {
        return None;
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        let block = &text[s..end];
        let line = block.split_inclusive('\n').next().unwrap_or(block);
        out.push((header(line)?, block));
    }
    Some(out)
}

/// A `[section.name]` header of one of the per-item sections, split.
fn item_header(h: &str) -> Option<(&str, &str)> {
    let (section, name) = h.split_once('.')?;
    (!name.contains('.') && matches!(section, "checks" | "rules" | "gates"))
        .then_some((section, name))
}

fn hash(s: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// What the fast reload needs of the running config's text: per block, a hash of its header
/// and of its text (a few hundred KiB at 10,000 checks, instead of the text itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index(Vec<(u64, u64)>);

impl Index {
    /// `None` for a file the block split cannot be sure of: its reloads are always full.
    pub fn of(text: &str) -> Option<Index> {
        Some(Index(
            blocks(text)?
                .iter()
                .map(|(h, t)| (hash(h), hash(t)))
                .collect(),
        ))
    }
}

/// Reads one `[section.name]` block on its own against `cfg`; `None` on any problem.
fn read_block(section: &str, name: &str, text: &str, cfg: &Config) -> Option<Item> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let top = doc.get_ref();
    if top.len() != 1 {
        return None;
    }
    let inner = match top.get(section)?.get_ref() {
        toml::de::DeValue::Table(t) if t.len() == 1 => match t.get(name)?.get_ref() {
            toml::de::DeValue::Table(t) => t,
            _ => return None,
        },
        _ => return None,
    };
    read_item(section, name, inner, cfg)
}

/// Builds the config of a plain file one table at a time (see the module doc). `None` when
/// the file is not plain (see `blocks`), repeats a header, has a header other than
/// `[daemon]`, `[aws]` or `[SECTION.NAME]`, or has any problem at all: the whole-file parse
/// then decides, and reports.
pub fn parse_blockwise(text: &str) -> Option<Config> {
    parse_blockwise_sharing(text, None, std::path::Path::new("."))
}

/// As `parse_blockwise`; every item equal to `prev`'s item of that name is `prev`'s (the
/// `Arc` is shared, the copy just read is dropped at once), so a reload holds two copies of
/// only what changed. Definition files are read from `base`.
pub(crate) fn parse_blockwise_sharing(
    text: &str,
    prev: Option<&Config>,
    base: &std::path::Path,
) -> Option<Config> {
    let all = blocks(text)?;
    let mut seen = HashSet::with_capacity(all.len());
    // The small sections are parsed together, as one document, by the whole-file path.
    let mut head = String::new();
    let mut items: [Vec<(&str, &str)>; 3] = Default::default();
    for (h, t) in all {
        if !seen.insert(h) {
            return None;
        }
        if let Some((section, name)) = item_header(h) {
            let i = ["checks", "gates", "rules"]
                .iter()
                .position(|s| *s == section)?;
            items[i].push((name, t));
            continue;
        }
        let small = match h.split_once('.') {
            None => matches!(h, "daemon" | "aws" | "events"),
            Some((s, n)) => {
                !n.contains('.') && matches!(s, "notifiers" | "pipelines" | "builds" | "endpoints")
            }
        };
        if !small {
            return None;
        }
        head.push_str(t);
        if !t.ends_with('\n') {
            head.push('\n');
        }
    }
    if seen.is_empty() {
        return None;
    }
    let mut cfg = super::build::parse_head(&head, base)?;
    // Checks and gates first: rules are checked against the names of the checks.
    for (i, section) in ["checks", "gates", "rules"].iter().enumerate() {
        for (name, t) in &items[i] {
            match read_block(section, name, t, &cfg)? {
                Item::Check(c) => put(
                    &mut cfg.checks,
                    name,
                    c,
                    prev.and_then(|p| p.checks.get(*name)),
                    None,
                ),
                Item::Gate(g) => put(
                    &mut cfg.gates,
                    name,
                    g,
                    prev.and_then(|p| p.gates.get(*name)),
                    None,
                ),
                Item::Rule(r) => put(
                    &mut cfg.rules,
                    name,
                    r,
                    prev.and_then(|p| p.rules.get(*name)),
                    None,
                ),
            }
        }
    }
    Some(cfg)
}

/// Puts `item` into `map` as `name`: `prev`'s `Arc` when the two are equal (the copy just read
/// is dropped at once), else a new one, whose name then goes into `changed`.
fn put<T: PartialEq>(
    map: &mut BTreeMap<String, Arc<T>>,
    name: &str,
    item: T,
    prev: Option<&Arc<T>>,
    changed: Option<&mut Vec<String>>,
) {
    let value = match prev {
        Some(p) if **p == item => p.clone(),
        _ => {
            if let Some(c) = changed {
                c.push(name.to_string());
            }
            Arc::new(item)
        }
    };
    map.insert(name.to_string(), value);
}

/// What a fast reload gives: the new config, its diff against the old, the new text's index.
pub struct Reparsed {
    pub cfg: Config,
    pub diff: ConfigDiff,
    pub index: Index,
}

/// The new config, if it can be had from `old` by re-reading only the blocks of `new_text`
/// whose hash differs from `old_index`'s. The diff compares only those items (no other can
/// differ).
pub fn reparse(old: &Config, old_index: &Index, new_text: &str) -> Option<Reparsed> {
    let b = blocks(new_text)?;
    if b.len() != old_index.0.len() {
        return None;
    }
    let mut index = Vec::with_capacity(b.len());
    let mut changed: Vec<(&str, &str)> = Vec::new();
    for ((h, t), (oh, ot)) in b.iter().zip(&old_index.0) {
        let (hh, th) = (hash(h), hash(t));
        if hh != *oh {
            return None;
        }
        if th != *ot {
            changed.push((h, t));
            if changed.len() > MAX_CHANGED {
                return None;
            }
        }
        index.push((hh, th));
    }
    let mut cfg = old.clone();
    let mut diff = ConfigDiff::default();
    for (h, text) in changed {
        let (section, name) = item_header(h)?;
        match read_block(section, name, text, old)? {
            // Rules on a check may name `{{ check.* }}` only while it reads a report: a
            // change of that is checked against them by a full parse.
            Item::Check(c)
                if old
                    .checks
                    .get(name)
                    .is_some_and(|o| o.reads_report() != c.reads_report()) =>
            {
                return None
            }
            Item::Check(c) => put(
                &mut cfg.checks,
                name,
                c,
                old.checks.get(name),
                Some(&mut diff.checks.changed),
            ),
            Item::Rule(r) => put(
                &mut cfg.rules,
                name,
                r,
                old.rules.get(name),
                Some(&mut diff.rules.changed),
            ),
            Item::Gate(g) => put(
                &mut cfg.gates,
                name,
                g,
                old.gates.get(name),
                Some(&mut diff.gates.changed),
            ),
        }
    }
    Some(Reparsed {
        cfg,
        diff,
        index: Index(index),
    })
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
        (
            "schedule = \"*/5 * * * *\"\nnamespace = \"ns\"\nmetric = \"m7\"",
            "schedule = \"cron(0 * * * ? *)\"\nnamespace = \"ns\"\nmetric = \"m7\"",
        ),
        (
            "parameters = { B = \"9\" }",
            "parameters = { B = \"nine\", A = \"2\" }",
        ),
        ("min = 0.8", "max = 0.99"),
        (
            "cooldown = \"1h\"\nnotify = [\"ops\"]\n\n[checks.c12]",
            "cooldown = \"2h\"\ndry_run = true\nnotify = [\"ops\"]\n\n[checks.c12]",
        ),
        ("above = 0.41", "above   =   0.41 # same value, other text"),
        // Problems: the fast path must step aside so the full parse reports them.
        ("above = 0.21", "above = \"high\""),
        ("on_check = \"c4\"", "on_check = \"nope\""),
        ("metric = \"m5\"", "metrik = \"m5\""),
        ("[checks.c6]", "[checks.c6x]"),
        ("above = 0.81", "above = 0.81\nbelow = 0.1"),
        ("pipeline_name = \"p\"", "pipeline_name = \"q\""),
        ("timezone = \"Europe/Berlin\"", "timezone = \"Asia/Tokyo\""),
        (
            "schedule = \"rate(5 minutes)\"",
            "schedule = \"rate(5 minute)\"",
        ),
        ("[rules.r2]", "[[rules.r2]]"),
        (
            "namespace = \"ns\"\nmetric = \"m8\"",
            "namespace = '''ns'''\nmetric = \"m8\"",
        ),
        ("[checks.c9]", "[checks.c1]"),
        ("[rules.r9]", "[checks.r9]"),
        ("[gates.g]", "[gates]"),
        ("[pipelines.p]", "[pipelines.p.x]"),
        (
            "for = 2\n\n[rules.r10]",
            "for = 2\n[checks.c10.dims]\n\n[rules.r10]",
        ),
        ("[daemon]", "[daemon]\nchecks.c0.schedule = \"x\""),
        ("above = 0.11", "above = 0.11\n[checks]"),
    ];

    fn full(text: &str) -> Result<Config, super::super::ConfigError> {
        super::super::build::parse_full(text, Path::new("x"))
    }

    #[test]
    fn a_check_that_stops_reading_a_report_is_checked_against_its_rules() {
        let text = "[pipelines.p]\npipeline_name = \"p\"\n\n[checks.d]\nreport = \"s3://bucket/p/\"\nviolations = \"violations\"\nschedule = \"every 1m\"\n\n[rules.r]\non_check = \"d\"\nstart_pipeline = \"p\"\nparameters = { F = \"{{ check.features }}\" }\n";
        let old = full(text).expect("valid");
        let index = Index::of(text).unwrap();
        let edited = text.replace(
            "report = \"s3://bucket/p/\"\nviolations = \"violations\"",
            "namespace = \"ns\"\nmetric = \"m\"\nabove = 1",
        );
        assert!(
            reparse(&old, &index, &edited).is_none(),
            "not the fast path"
        );
        let e = full(&edited).expect_err("the rule names check.features");
        assert!(e.to_string().contains("names `check`"), "{e}");
        // Another report source is still a report: the fast path takes it.
        let other = text.replace("s3://bucket/p/", "s3://bucket/q/");
        assert!(reparse(&old, &index, &other).is_some());
    }

    #[test]
    fn fast_reload_always_agrees_with_a_full_parse() {
        let old_text = base();
        let old = full(&old_text).unwrap();
        let idx = Index::of(&old_text).unwrap();
        let mut fast = 0;
        for (i, (from, to)) in EDITS.iter().enumerate() {
            assert!(
                old_text.contains(from),
                "edit {i}: {from:?} not in the base config"
            );
            let new_text = old_text.replacen(from, to, 1);
            let full_cfg = full(&new_text);
            if let Some(r) = reparse(&old, &idx, &new_text) {
                fast += 1;
                assert_eq!(
                    Some(&r.cfg),
                    full_cfg.as_ref().ok(),
                    "edit {i}: the fast path disagrees with a full parse"
                );
                let full_diff = ConfigDiff::new(&old, &r.cfg);
                assert_eq!(r.diff.counts(), full_diff.counts(), "edit {i}: diff");
                assert_eq!(
                    (
                        &r.diff.checks.changed,
                        &r.diff.rules.changed,
                        &r.diff.gates.changed
                    ),
                    (
                        &full_diff.checks.changed,
                        &full_diff.rules.changed,
                        &full_diff.gates.changed
                    )
                );
                assert_eq!(
                    Some(r.index),
                    Index::of(&new_text),
                    "edit {i}: the new index"
                );
            }
        }
        assert!(
            fast >= 7,
            "the fast path took only {fast} of the valid edits"
        );
        // Several blocks at once, and an unchanged file.
        let two = old_text
            .replacen("above = 0.11", "above = 0.12", 1)
            .replacen("cooldown = \"1h\"", "cooldown = \"3h\"", 1);
        assert_eq!(
            reparse(&old, &idx, &two).map(|r| r.cfg).as_ref(),
            full(&two).ok().as_ref()
        );
        let same = reparse(&old, &idx, &old_text).unwrap();
        assert_eq!((same.cfg, same.diff.is_empty()), (old, true));
    }

    #[test]
    fn blockwise_loading_always_agrees_with_a_full_parse() {
        let base = base();
        let mut texts: Vec<(String, String)> = EDITS
            .iter()
            .map(|(f, t)| (format!("edit {f:?}"), base.replacen(f, t, 1)))
            .collect();
        texts.push(("base".into(), base.clone()));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["config", "tests/config_cases", "tests/fuzz_corpus"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "toml") {
                    texts.push((
                        e.path().display().to_string(),
                        String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned(),
                    ));
                }
            }
        }
        let mut taken = Vec::new();
        for (what, text) in &texts {
            if let Some(cfg) = parse_blockwise(text) {
                assert_eq!(
                    Some(&cfg),
                    full(text).as_ref().ok(),
                    "{what}: block-wise loading disagrees with a full parse"
                );
                taken.push(what.as_str());
            }
        }
        // It must be the path plain files take, the reference config included.
        assert!(taken.contains(&"base"), "{taken:?}");
        assert!(
            taken.iter().any(|w| w.ends_with("config/mlops.toml")),
            "{taken:?}"
        );
        assert!(taken.len() >= 10, "block-wise loading took only {taken:?}");
        assert!(
            parse_blockwise("# only a comment\n").is_none(),
            "an empty file is the full parse's to reject"
        );
    }

    #[test]
    fn a_full_reload_shares_unchanged_items_with_the_running_config() {
        let old_text = base();
        let old = full(&old_text).unwrap();
        // A new check changes the block structure: not a fast reload, a block-wise one.
        let new_text = old_text.replacen("above = 0.51", "above = 0.52", 1) + "\n[checks.extra]\nschedule = \"every 1h\"\nnamespace = \"ns\"\nmetric = \"x\"\nabove = 1\n";
        assert!(reparse(&old, &Index::of(&old_text).unwrap(), &new_text).is_none());
        let new = parse_blockwise_sharing(&new_text, Some(&old), Path::new(".")).unwrap();
        assert_eq!(Some(&new), full(&new_text).as_ref().ok());
        assert!(
            Arc::ptr_eq(&new.checks["c0"], &old.checks["c0"]),
            "an unchanged check is shared"
        );
        assert!(
            Arc::ptr_eq(&new.rules["r5"], &old.rules["r5"]),
            "an unchanged rule is shared"
        );
        assert!(
            !Arc::ptr_eq(&new.checks["c5"], &old.checks["c5"]),
            "a changed check is new"
        );
        assert_ne!(new.checks["c5"], old.checks["c5"]);
    }

    #[test]
    fn splits_only_plain_files() {
        assert!(
            blocks("a = 1\n[x.y]\nb = 2\n").is_none(),
            "keys before the first header"
        );
        assert!(blocks("[x]\nv = \"\"\"\n[y]\n\"\"\"\n").is_none());
        assert!(blocks("[x.\"quoted\"]\n").is_none());
        let b = blocks("# c\n\n[x.a] # note\nk = 1\n[x.b]\nk = [\n 1,\n]\n").unwrap();
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), ["x.a", "x.b"]);
        assert_eq!(b[0].1, "[x.a] # note\nk = 1\n");
        // Indented headers split; brackets in values and comments do not.
        let b = blocks("[x.a]\nk = [\"v\"] # [x.c]\n \t[x.b]\nk = 2\n").unwrap();
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), ["x.a", "x.b"]);
        assert!(blocks("[x.a]\nk = [[1], [2]]\n").is_none(), "`[[` anywhere");
        assert!(
            blocks("[x.a]\nk = [\n  [1],\n]\n").is_none(),
            "a line that starts with `[` but is no header"
        );
        assert!(blocks("# c\n  # d\n\n[x]\n").is_some());
        assert_eq!(blocks("").map(|b| b.len()), Some(0));
    }
}
