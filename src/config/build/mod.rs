//! Stage 2 of config loading: from what `reader` read to validated `Config` types, with
//! references between items resolved. Collects every problem. One file per section
//! (`daemon` with `[aws]` and notifiers, `ha`, `events`, `pipelines` with builds, `checks`,
//! `rules`, `gates`), each part of a section read by a short named function; `common` holds
//! the readers they share.

mod checks;
mod common;
mod daemon;
mod endpoints;
mod events;
mod gates;
mod ha;
mod pipelines;
mod reports;
mod rules;

pub(super) use checks::CHECK_KEYS;
pub(super) use gates::GATE_KEYS;
pub(super) use pipelines::PIPELINE_KEYS;
pub(super) use rules::RULE_KEYS;

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::de::DeTable;

use super::reader::{line_col, Diags, Sp, Table};
use super::*;
use checks::read_check;
use gates::read_gate;
use rules::{read_rule, Known};

/// Parses and validates config text as one document; `path` is used in messages only.
/// Reports every problem, located.
pub fn parse_full(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_doc(text, path, false, &crate::config::base_dir(path))
}

/// The `[daemon]`, `[aws]`, `[notifiers|pipelines|builds.NAME]` blocks of a file being loaded
/// block-wise (which may all be absent); `None` on any problem.
/// Definition files are read from `base`.
pub(super) fn parse_head(text: &str, base: &Path) -> Option<Config> {
    parse_doc(text, Path::new(""), true, base).ok()
}

fn parse_doc(text: &str, path: &Path, empty_ok: bool, base: &Path) -> Result<Config, ConfigError> {
    let mut d = Diags::default();
    let cfg = match DeTable::parse(text) {
        Ok(doc) if doc.get_ref().is_empty() && !empty_ok => {
            // An emptied file (an editor mid-save, a truncated copy) must not remove everything.
            d.push(
                0..0,
                "the config is empty: it defines no [daemon], [aws], [checks], [rules] or [gates]",
            );
            None
        }
        Ok(doc) => build(&mut d, doc.get_ref(), 0..0, base),
        Err(e) => {
            // A syntax error: report it (and any others the parser recovers from), stop there.
            let (_, errs) = DeTable::parse_recoverable(text);
            let errs = if errs.is_empty() { vec![e] } else { errs };
            for e in errs {
                let span = e.span().unwrap_or(0..0);
                d.push(span, format!("TOML syntax error: {}", e.message().trim()));
            }
            None
        }
    };
    if d.0.is_empty() {
        if let Some(c) = cfg {
            return Ok(c);
        }
    }
    let mut errors: Vec<(usize, usize, String)> =
        d.0.into_iter()
            .map(|x| {
                let (l, c) = line_col(text, x.span.start);
                (l, c, x.message)
            })
            .collect();
    errors.sort_by_key(|a| (a.0, a.1));
    errors.dedup();
    if errors.is_empty() {
        errors.push((1, 1, "config could not be built".into()));
    }
    Err(ConfigError {
        path: path.to_path_buf(),
        errors,
    })
}

/// Reads one `[checks.NAME]`, `[rules.NAME]` or `[gates.NAME]` table against an existing
/// config (for its pipelines, builds, default zone and the names items may reference).
/// `None` when the table has any problem: the caller then parses the whole file, which
/// reports it with its proper location.
pub(super) fn read_item(
    section: &str,
    name: &str,
    tbl: &DeTable<'_>,
    cfg: &Config,
) -> Option<Item> {
    let mut d = Diags::default();
    let mut refs = Refs::default();
    let mut t = Table::new(format!("{section}.{name}"), tbl, 0..0);
    let tz = Some(cfg.daemon.timezone);
    let item = match section {
        "checks" => {
            let c = read_check(&mut d, &mut t, tz, cfg.events.is_some());
            t.finish(&mut d, CHECK_KEYS);
            c.map(Item::Check)
        }
        "rules" => {
            let known = Known {
                pipelines: &cfg.pipelines,
                builds: &cfg.builds,
                checks: &cfg.checks,
                has_events: cfg.events.is_some(),
            };
            let r = read_rule(&mut d, &mut t, tz, &known, &mut refs);
            t.finish(&mut d, RULE_KEYS);
            r.map(Item::Rule)
        }
        "gates" => {
            let g = read_gate(&mut d, &mut t, tz, &mut refs);
            t.finish(&mut d, GATE_KEYS);
            g.map(Item::Gate)
        }
        _ => None,
    };
    let known = refs.checks.iter().all(|r| cfg.checks.contains_key(&r.v))
        && refs
            .pipelines
            .iter()
            .all(|r| cfg.pipelines.contains_key(&r.v))
        && refs.builds.iter().all(|r| cfg.builds.contains_key(&r.v))
        && refs
            .endpoints
            .iter()
            .all(|r| cfg.endpoints.contains_key(&r.v))
        && refs
            .notifiers
            .iter()
            .all(|r| cfg.notifiers.contains_key(&r.v));
    if !d.0.is_empty() || !known || !crate::config::reader::valid_name(name) {
        return None;
    }
    item
}

pub(super) enum Item {
    Check(Check),
    Rule(Rule),
    Gate(Gate),
}

/// (name, span) of everything that names another item, checked once all items are known.
#[derive(Default)]
pub(super) struct Refs {
    checks: Vec<Sp<String>>,
    pipelines: Vec<Sp<String>>,
    builds: Vec<Sp<String>>,
    notifiers: Vec<Sp<String>>,
    endpoints: Vec<Sp<String>>,
}

const SECTIONS: &[&str] = &[
    "daemon",
    "aws",
    "notifiers",
    "pipelines",
    "builds",
    "checks",
    "rules",
    "gates",
    "endpoints",
    "events",
];

fn build(d: &mut Diags, doc: &DeTable<'_>, span: Range<usize>, base: &Path) -> Option<Config> {
    let mut top = Table::new("", doc, span);
    let mut refs = Refs::default();
    let daemon = daemon::read_daemon(d, &mut top, &mut refs);
    let events = events::read_events(d, &mut top);
    let default_tz = daemon.as_ref().map(|x| x.timezone);
    let aws = daemon::read_aws(d, &mut top);
    let has_events = matches!(&events, Some(Some(_))) || (events.is_none() && top.has("events"));
    let notifiers = named(d, &mut top, "notifiers", daemon::NOTIFIER_KEYS, |d, t| {
        daemon::read_notifier(d, t)
    });
    let pipelines = read_pipelines(d, &mut top, base, &mut refs);
    let builds = named(d, &mut top, "builds", pipelines::BUILD_KEYS, |d, t| {
        pipelines::read_build(d, t)
    });
    let checks = named(d, &mut top, "checks", CHECK_KEYS, |d, t| {
        read_check(d, t, default_tz, has_events).map(Arc::new)
    });
    let known = Known {
        pipelines: &pipelines,
        builds: &builds,
        checks: &checks,
        has_events,
    };
    let rules = named(d, &mut top, "rules", RULE_KEYS, |d, t| {
        read_rule(d, t, default_tz, &known, &mut refs).map(Arc::new)
    });
    let gates = named(d, &mut top, "gates", GATE_KEYS, |d, t| {
        read_gate(d, t, default_tz, &mut refs).map(Arc::new)
    });
    let endpoints = named(
        d,
        &mut top,
        "endpoints",
        endpoints::ENDPOINT_KEYS,
        |d, t| endpoints::read_endpoint(d, t, &mut refs),
    );
    let endpoints = endpoints::check_endpoints(d, &endpoints);
    top.finish(d, SECTIONS);
    check_references(d, doc, &refs);
    Some(Config {
        daemon: daemon?,
        aws: aws?,
        notifiers,
        pipelines,
        builds,
        checks,
        rules,
        gates,
        endpoints,
        events: events?,
    })
}

/// Every `[section.NAME]` read by `read`, then checked for keys other than `keys`.
fn named<'a, 'i, T>(
    d: &mut Diags,
    top: &mut Table<'a, 'i>,
    section: &'a str,
    keys: &[&str],
    mut read: impl FnMut(&mut Diags, &mut Table<'a, 'i>) -> Option<T>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for (name, mut t) in top.named_tables(d, section) {
        if let Some(x) = read(d, &mut t) {
            out.insert(name.v.clone(), x);
        }
        t.finish(d, keys);
    }
    out
}

/// `[pipelines.*]`; two declared blocks for one SageMaker pipeline would put back each
/// other's definition, so each SageMaker pipeline is declared at most once.
fn read_pipelines(
    d: &mut Diags,
    top: &mut Table<'_, '_>,
    base: &Path,
    refs: &mut Refs,
) -> BTreeMap<String, Pipeline> {
    let mut pipelines = BTreeMap::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (name, mut t) in top.named_tables(d, "pipelines") {
        if let Some(p) = pipelines::read_pipeline(d, &mut t, base, refs) {
            if p.declared.is_some() {
                if let Some(first) = owners.get(&p.pipeline_name) {
                    let span = t.key_span("pipeline_name").unwrap_or(t.span.clone());
                    d.push(span, format!("[pipelines.{}] declares the SageMaker pipeline \"{}\" that [pipelines.{first}] declares already; one definition per pipeline", name.v, p.pipeline_name));
                } else {
                    owners.insert(p.pipeline_name.clone(), name.v.clone());
                }
            }
            pipelines.insert(name.v.clone(), p);
        }
        t.finish(d, PIPELINE_KEYS);
    }
    pipelines
}

/// Every name an item refers to must exist. An item that failed to build still counts as
/// known, so one mistake is reported once, where it is.
fn check_references(d: &mut Diags, doc: &DeTable<'_>, refs: &Refs) {
    let known = |section: &str| -> Vec<String> {
        doc.get(section)
            .and_then(|v| match v.get_ref() {
                toml::de::DeValue::Table(t) => {
                    Some(t.iter().map(|(k, _)| k.get_ref().to_string()).collect())
                }
                _ => None,
            })
            .unwrap_or_default()
    };
    // A set for lookups: configs with 10,000 checks and rules must not compare every pair.
    for (what, section, list) in [
        ("check", "checks", &refs.checks),
        ("pipeline", "pipelines", &refs.pipelines),
        ("build", "builds", &refs.builds),
        ("notifier", "notifiers", &refs.notifiers),
        ("endpoint", "endpoints", &refs.endpoints),
    ] {
        let names = known(section);
        let set: HashSet<&str> = names.iter().map(String::as_str).collect();
        for r in list {
            if !set.contains(r.v.as_str()) {
                let hint = if names.is_empty() {
                    format!("no [{section}.*] is defined")
                } else {
                    format!("defined: {}", names.join(", "))
                };
                d.push(
                    r.span.clone(),
                    format!("unknown {what} \"{}\" ({hint})", r.v),
                );
            }
        }
    }
}
