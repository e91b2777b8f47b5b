//! Stage 2 of config loading: from what `reader` read to validated `Config` types, with
//! references between items resolved. Collects every problem.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use toml::de::DeTable;

use super::reader::{line_col, Diags, Sp, Table};
use super::*;
use crate::duration::parse_duration;
use crate::schedule::Schedule;

/// Parses and validates config text as one document; `path` is used in messages only.
/// Reports every problem, located.
pub fn parse_full(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_doc(text, path, false, &super::base_dir(path))
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

fn duration(d: &mut Diags, v: Option<Sp<String>>, key: &str, nonzero: bool) -> Option<Duration> {
    let v = v?;
    match parse_duration(&v.v) {
        Ok(x) if nonzero && x.is_zero() => {
            d.push(v.span, format!("`{key}` must be greater than zero"));
            None
        }
        Ok(x) => Some(x),
        Err(m) => {
            d.push(v.span, format!("`{key}`: {m}"));
            None
        }
    }
}

fn zone(d: &mut Diags, v: &Sp<String>) -> Option<Tz> {
    match v.v.parse::<Tz>() {
        Ok(z) => Some(z),
        Err(_) => {
            d.push(v.span.clone(), format!("unknown time zone \"{}\" (use an IANA name such as \"Europe/Berlin\" or \"UTC\")", v.v));
            None
        }
    }
}

fn schedule(d: &mut Diags, v: &Sp<String>, key: &str) -> Option<Schedule> {
    match Schedule::parse(&v.v) {
        Ok(s) => Some(s),
        Err(m) => {
            d.push(v.span.clone(), format!("bad schedule in `{key}`: {m}"));
            None
        }
    }
}

fn timed(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    key: &'static str,
    default_tz: Option<Tz>,
) -> Option<Timed> {
    let expr = t.req_string(d, key);
    let tzv = t.string(d, "timezone");
    let tz = match &tzv {
        Some(z) => zone(d, z),
        None => default_tz,
    };
    let expr = expr?;
    let sched = schedule(d, &expr, key)?;
    Some(Timed {
        expression: expr.v,
        schedule: sched,
        timezone: tz?,
    })
}

fn positive_u32(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    key: &'static str,
    default: u32,
) -> Option<u32> {
    match t.int_in(d, key, 1, u32::MAX as i64) {
        Some(v) => Some(v.v as u32),
        None if t.has(key) => None,
        None => Some(default),
    }
}

pub(super) const PIPELINE_KEYS: &[&str] = &[
    "pipeline_name",
    "parameters",
    "max_concurrent",
    "definition",
    "role_arn",
    "reconcile",
    "notify",
];

/// `[pipelines.NAME]`; with `definition`, the file is read (relative to `base`) and checked,
/// and so are the block's own parameters against it.
fn read_pipeline(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    base: &Path,
    refs: &mut Refs,
) -> Option<Pipeline> {
    let pipeline_name = t.req_string(d, "pipeline_name");
    let params = t.string_map(d, "parameters");
    let max_concurrent = positive_u32(d, t, "max_concurrent", 1);
    let definition = t.string(d, "definition");
    let role_arn = t.string(d, "role_arn");
    let reconcile = t.string(d, "reconcile");
    let notify = t.string_list(d, "notify");
    let mut ok = true;
    if let Some(n) = &notify {
        for x in &n.v {
            refs.notifiers.push(x.clone());
        }
    }
    let declared = match definition {
        None => {
            for (key, span) in [
                ("role_arn", role_arn.as_ref().map(|x| x.span.clone())),
                ("reconcile", reconcile.as_ref().map(|x| x.span.clone())),
                ("notify", notify.as_ref().map(|x| x.span.clone())),
            ] {
                if let Some(span) = span {
                    d.push(span, format!("`{key}` needs `definition` (the pipeline definition file mlopsd applies)"));
                    ok = false;
                }
            }
            None
        }
        Some(file) => {
            let role = match role_arn {
                Some(r) if r.v.starts_with("arn:") && r.v.contains(":role/") => Some(r.v),
                Some(r) => {
                    d.push(r.span.clone(), format!("`role_arn` must be an IAM role ARN such as \"arn:aws:iam::123456789012:role/SageMakerPipelineRole\", found {}", d.show(&r)));
                    None
                }
                None => {
                    let span = t.key_span("definition").unwrap_or(t.span.clone());
                    d.push(span, format!("[{}] has `definition` but no `role_arn`: the IAM role SageMaker runs the pipeline as is required", t.path));
                    None
                }
            };
            let mode = match reconcile.as_ref().map(|r| r.v.as_str()) {
                None | Some("apply") => Some(Reconcile::Apply),
                Some("report") => Some(Reconcile::Report),
                Some(other) => {
                    let span = reconcile
                        .as_ref()
                        .map(|r| r.span.clone())
                        .unwrap_or(t.span.clone());
                    d.push(
                        span,
                        format!("`reconcile` must be \"apply\" or \"report\", found \"{other}\""),
                    );
                    None
                }
            };
            let def = read_definition(d, &file, base);
            match (def, role, mode) {
                (Some((definition, path)), Some(role_arn), Some(reconcile)) => {
                    Some(Arc::new(Declared {
                        file: file.v,
                        path,
                        definition,
                        role_arn,
                        reconcile,
                        notify: notify
                            .map(|n| n.v.into_iter().map(|x| x.v).collect())
                            .unwrap_or_default(),
                    }))
                }
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    if let (Some(decl), Some(p)) = (&declared, &params) {
        if !check_declared_params(d, t, &p.v, &decl.file, &decl.definition, false) {
            ok = false;
        }
    }
    let (pipeline_name, max_concurrent) = (pipeline_name?, max_concurrent?);
    if !ok || params.is_none() && t.has("parameters") {
        return None;
    }
    Some(Pipeline {
        pipeline_name: pipeline_name.v,
        parameters: Arc::new(params.map(|x| x.v).unwrap_or_default()),
        max_concurrent,
        declared,
    })
}

/// Reads `definition = "…"` relative to `base`; every problem is reported at the key's value
/// and names the file.
fn read_definition(
    d: &mut Diags,
    file: &Sp<String>,
    base: &Path,
) -> Option<(super::definition::Definition, PathBuf)> {
    if file.v.is_empty() {
        d.push(file.span.clone(), "`definition` must not be empty");
        return None;
    }
    let path = base.join(&file.v);
    match super::definition::read(&path) {
        Ok(def) => Some((def, path)),
        Err(errors) => {
            for e in errors {
                let e = match e.strip_prefix("cannot be read: ") {
                    Some(why) => format!("cannot be read from {}: {why}", path.display()),
                    None => e,
                };
                // "… cannot be read", "… is not valid JSON", "… has no …": about the file;
                // anything else is about a part of it.
                let whole = ["cannot ", "is ", "has ", "must "]
                    .iter()
                    .any(|w| e.starts_with(w));
                let sep = if whole { " " } else { ": " };
                d.push(
                    file.span.clone(),
                    format!("definition \"{}\"{sep}{e}", file.v),
                );
            }
            None
        }
    }
}

/// Every parameter passed to a declared pipeline must be declared in its definition, and a
/// literal value must be of the declared type. Templates (`{{ event… }}`) are checked when
/// rendered. Each problem points at the parameter's key.
fn check_declared_params(
    d: &mut Diags,
    t: &Table<'_, '_>,
    params: &BTreeMap<String, String>,
    file: &str,
    def: &super::definition::Definition,
    templates: bool,
) -> bool {
    let spans = t.entry_spans("parameters");
    let span_of = |k: &str| {
        spans
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, s)| s.clone())
            .or_else(|| t.key_span("parameters"))
            .unwrap_or(t.span.clone())
    };
    let mut ok = true;
    for (k, v) in params {
        match def.parameter(k) {
            None => {
                d.push(
                    span_of(k),
                    format!(
                        "parameter `{k}` is not declared in definition \"{file}\" (declared: {})",
                        def.parameter_names()
                    ),
                );
                ok = false;
            }
            // A template is checked when rendered; a literal here.
            Some(ty) if !(ty.fits(v) || templates && v.contains("{{")) => {
                d.push(
                    span_of(k),
                    format!("parameter `{k}` = \"{v}\" is not of its declared type {ty} (definition \"{file}\")"),
                );
                ok = false;
            }
            Some(_) => {}
        }
    }
    ok
}

pub(super) const CHECK_KEYS: &[&str] = &[
    "alarm",
    "schedule",
    "timezone",
    "namespace",
    "metric",
    "dimensions",
    "statistic",
    "period",
    "above",
    "below",
    "for",
    "missing_data",
];
pub(super) const RULE_KEYS: &[&str] = &[
    "on_check",
    "on_schedule",
    "on_success",
    "on_failure",
    "on_event",
    "timezone",
    "start_pipeline",
    "start_build",
    "parameters",
    "environment",
    "source_version",
    "notify",
    "cooldown",
    "dry_run",
    "catch_up",
];
pub(super) const GATE_KEYS: &[&str] = &[
    "model_package_group",
    "schedule",
    "timezone",
    "metric",
    "report_path",
    "min",
    "max",
    "notify",
];

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
    let mut refs = Refs {
        checks: vec![],
        pipelines: vec![],
        builds: vec![],
        notifiers: vec![],
    };
    let mut t = Table::new(format!("{section}.{name}"), tbl, 0..0);
    let tz = Some(cfg.daemon.timezone);
    let item = match section {
        "checks" => {
            let c = read_check(&mut d, &mut t, tz, cfg.events.is_some());
            t.finish(&mut d, CHECK_KEYS);
            c.map(Item::Check)
        }
        "rules" => {
            let r = read_rule(
                &mut d,
                &mut t,
                tz,
                &cfg.pipelines,
                &cfg.builds,
                cfg.events.is_some(),
                &mut refs,
            );
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
            .notifiers
            .iter()
            .all(|r| cfg.notifiers.contains_key(&r.v));
    if !d.0.is_empty() || !known || !super::reader::valid_name(name) {
        return None;
    }
    item
}

pub(super) enum Item {
    Check(Check),
    Rule(Rule),
    Gate(Gate),
}

struct Refs {
    // (name, span) of everything that names another item, checked once all items are known.
    checks: Vec<Sp<String>>,
    pipelines: Vec<Sp<String>>,
    builds: Vec<Sp<String>>,
    notifiers: Vec<Sp<String>>,
}

fn build(d: &mut Diags, doc: &DeTable<'_>, span: Range<usize>, base: &Path) -> Option<Config> {
    let mut top = Table::new("", doc, span);
    let mut refs = Refs {
        checks: vec![],
        pipelines: vec![],
        builds: vec![],
        notifiers: vec![],
    };

    let daemon = read_daemon(d, &mut top, &mut refs);
    let events = read_events(d, &mut top);
    let default_tz = daemon.as_ref().map(|x| x.timezone);
    let aws = read_aws(d, &mut top);

    let mut notifiers = BTreeMap::new();
    for (name, mut t) in top.named_tables(d, "notifiers") {
        if let Some(n) = read_notifier(d, &mut t) {
            notifiers.insert(name.v.clone(), n);
        }
        t.finish(d, &["topic_arn", "repeat_interval", "subject", "format"]);
    }

    let mut pipelines = BTreeMap::new();
    // Two declared blocks for one SageMaker pipeline would put back each other's definition.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (name, mut t) in top.named_tables(d, "pipelines") {
        if let Some(p) = read_pipeline(d, &mut t, base, &mut refs) {
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

    let mut builds = BTreeMap::new();
    for (name, mut t) in top.named_tables(d, "builds") {
        let project_name = t.req_string(d, "project_name");
        let source_version = t.string(d, "source_version").map(|x| x.v);
        let environment = Arc::new(
            t.string_map(d, "environment")
                .map(|x| x.v)
                .unwrap_or_default(),
        );
        let max_concurrent = positive_u32(d, &mut t, "max_concurrent", 1);
        if let (Some(p), Some(m)) = (project_name, max_concurrent) {
            builds.insert(
                name.v.clone(),
                Build {
                    project_name: p.v,
                    source_version,
                    environment,
                    max_concurrent: m,
                },
            );
        }
        t.finish(
            d,
            &[
                "project_name",
                "source_version",
                "environment",
                "max_concurrent",
            ],
        );
    }

    let mut checks = BTreeMap::new();
    for (name, mut t) in top.named_tables(d, "checks") {
        let has_events =
            matches!(&events, Some(Some(_))) || (events.is_none() && top.has("events"));
        if let Some(c) = read_check(d, &mut t, default_tz, has_events) {
            checks.insert(name.v.clone(), Arc::new(c));
        }
        t.finish(d, CHECK_KEYS);
    }

    let rule_tables = top.named_tables(d, "rules");
    let mut rules = BTreeMap::new();
    for (name, mut t) in rule_tables {
        let has_events =
            matches!(&events, Some(Some(_))) || (events.is_none() && top.has("events"));
        if let Some(r) = read_rule(
            d, &mut t, default_tz, &pipelines, &builds, has_events, &mut refs,
        ) {
            rules.insert(name.v.clone(), Arc::new(r));
        }
        t.finish(d, RULE_KEYS);
    }

    let mut gates = BTreeMap::new();
    for (name, mut t) in top.named_tables(d, "gates") {
        if let Some(g) = read_gate(d, &mut t, default_tz, &mut refs) {
            gates.insert(name.v.clone(), Arc::new(g));
        }
        t.finish(d, GATE_KEYS);
    }

    top.finish(
        d,
        &[
            "daemon",
            "aws",
            "notifiers",
            "pipelines",
            "builds",
            "checks",
            "rules",
            "gates",
            "events",
        ],
    );

    // References: every name must exist (an item that failed to build still counts as known,
    // so one mistake is reported once, where it is).
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
    ] {
        let names = known(section);
        let set: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
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

    Some(Config {
        daemon: daemon?,
        aws: aws?,
        notifiers,
        pipelines,
        builds,
        checks,
        rules,
        gates,
        events: events?,
    })
}

fn read_daemon(d: &mut Diags, top: &mut Table<'_, '_>, refs: &mut Refs) -> Option<DaemonConfig> {
    let mut cfg = DaemonConfig {
        state_dir: PathBuf::from("/var/lib/mlopsd"),
        listen: "127.0.0.1:9464".parse().ok()?,
        allow_remote_listen: false,
        timezone: Tz::UTC,
        shutdown_grace: Duration::from_secs(30),
        poll_interval: Duration::from_secs(15),
        reconcile_interval: Duration::from_secs(600),
        ha_table: None,
        ha_lease: Duration::from_secs(15),
        ha_notify: None,
    };
    let Some(mut t) = top.table(d, "daemon") else {
        return if top.has("daemon") { None } else { Some(cfg) };
    };
    let mut ok = true;
    if let Some(s) = t.string(d, "state_dir") {
        if s.v.is_empty() {
            d.push(s.span, "`state_dir` must not be empty");
            ok = false;
        } else {
            cfg.state_dir = PathBuf::from(s.v);
        }
    }
    let allow = t
        .boolean(d, "allow_remote_listen")
        .map(|x| x.v)
        .unwrap_or(false);
    cfg.allow_remote_listen = allow;
    if let Some(s) = t.string(d, "listen") {
        match s.v.parse::<SocketAddr>() {
            Ok(a) if !a.ip().is_loopback() && !allow => {
                d.push(
                    s.span.clone(),
                    format!("`listen` = {} is not a loopback address; the status server shows internal state, so set `allow_remote_listen = true` to serve it beyond this host", d.show(&s)),
                );
                ok = false;
            }
            Ok(a) => cfg.listen = a,
            Err(_) => {
                d.push(
                    s.span.clone(),
                    format!(
                        "`listen` must be an address and port such as \"127.0.0.1:9464\", found {}",
                        d.show(&s)
                    ),
                );
                ok = false;
            }
        }
    }
    if let Some(z) = t.string(d, "timezone") {
        match zone(d, &z) {
            Some(z) => cfg.timezone = z,
            None => ok = false,
        }
    }
    if t.has("shutdown_grace") {
        let v = t.duration_text(d, "shutdown_grace");
        match duration(d, v, "shutdown_grace", false) {
            Some(g) => cfg.shutdown_grace = g,
            None => ok = false,
        }
    }
    if t.has("poll_interval") {
        let v = t.duration_text(d, "poll_interval");
        match duration(d, v, "poll_interval", true) {
            Some(g) => cfg.poll_interval = g,
            None => ok = false,
        }
    }
    if t.has("reconcile_interval") {
        let v = t.duration_text(d, "reconcile_interval");
        let span = v.as_ref().map(|x| x.span.clone());
        match duration(d, v, "reconcile_interval", true) {
            // Each reconcile reads every declared pipeline: not a rate to hammer AWS at.
            Some(g) if g < Duration::from_secs(1) => {
                d.push(
                    span.unwrap_or(t.span.clone()),
                    "`reconcile_interval` must be at least 1s (each reconcile makes a DescribePipeline call per declared pipeline)",
                );
                ok = false;
            }
            Some(g) => cfg.reconcile_interval = g,
            None => ok = false,
        }
    }
    if let Some(s) = t.string(d, "ha_table") {
        // DynamoDB's rule for table names.
        let valid = (3..=255).contains(&s.v.len())
            && s.v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if valid {
            cfg.ha_table = Some(s.v);
        } else {
            d.push(
                s.span.clone(),
                format!("`ha_table` must be a DynamoDB table name (3 to 255 of a-z, A-Z, 0-9, `_`, `-`, `.`), found {}", d.show(&s)),
            );
            ok = false;
        }
    }
    if t.has("ha_lease") {
        let v = t.duration_text(d, "ha_lease");
        let span = v.as_ref().map(|x| x.span.clone());
        match duration(d, v, "ha_lease", true) {
            // A lease is renewed three times per duration, and a standby waits a whole one.
            Some(g) if g < Duration::from_secs(3) || g > Duration::from_secs(600) => {
                d.push(
                    span.unwrap_or(t.span.clone()),
                    "`ha_lease` must be between 3s and 10m (the leader renews it three times per lease; a standby takes over after one)",
                );
                ok = false;
            }
            Some(g) => cfg.ha_lease = g,
            None => ok = false,
        }
    }
    if let Some(n) = t.string_list(d, "ha_notify") {
        refs.notifiers.extend(n.v.iter().cloned());
        cfg.ha_notify = Some(n.v.into_iter().map(|x| x.v).collect());
    }
    t.finish(
        d,
        &[
            "state_dir",
            "listen",
            "allow_remote_listen",
            "timezone",
            "shutdown_grace",
            "poll_interval",
            "reconcile_interval",
            "ha_table",
            "ha_lease",
            "ha_notify",
        ],
    );
    ok.then_some(cfg)
}

/// `[events]`: `Some(None)` when absent, `None` on a problem.
fn read_events(d: &mut Diags, top: &mut Table<'_, '_>) -> Option<Option<Events>> {
    let Some(mut t) = top.table(d, "events") else {
        return if top.has("events") { None } else { Some(None) };
    };
    let url = t.req_string(d, "queue_url");
    let ok = match &url {
        Some(u) if !(u.v.starts_with("https://") || u.v.starts_with("http://")) => {
            d.push(u.span.clone(), format!("`queue_url` must be an SQS queue URL such as \"https://sqs.us-east-1.amazonaws.com/123456789012/mlopsd-events\", found {}", d.show(u)));
            false
        }
        Some(_) => true,
        None => false,
    };
    t.finish(d, &["queue_url"]);
    (ok).then(|| url.map(|u| Events { queue_url: u.v }))
}

fn read_aws(d: &mut Diags, top: &mut Table<'_, '_>) -> Option<AwsConfig> {
    let mut cfg = AwsConfig {
        region: String::new(),
        profile: None,
        endpoint_url: None,
        max_attempts: 5,
        attempt_timeout: Duration::from_secs(20),
    };
    let Some(mut t) = top.table(d, "aws") else {
        if !top.has("aws") {
            // The region may come from the environment (AWS_REGION) like any AWS tool.
            return Some(cfg);
        }
        return None;
    };
    let mut ok = true;
    if let Some(r) = t.string(d, "region") {
        if r.v.is_empty() || !r.v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            d.push(
                r.span.clone(),
                format!(
                    "`region` must be an AWS region name such as \"us-east-1\", found {}",
                    d.show(&r)
                ),
            );
            ok = false;
        } else {
            cfg.region = r.v;
        }
    }
    cfg.profile = t.string(d, "profile").map(|x| x.v);
    if let Some(u) = t.string(d, "endpoint_url") {
        if !(u.v.starts_with("http://") || u.v.starts_with("https://")) || u.v.len() < 10 {
            d.push(
                u.span.clone(),
                format!(
                    "`endpoint_url` must be an http:// or https:// URL, found {}",
                    d.show(&u)
                ),
            );
            ok = false;
        } else {
            cfg.endpoint_url = Some(u.v);
        }
    }
    match t.int_in(d, "max_attempts", 1, 20) {
        Some(v) => cfg.max_attempts = v.v as u32,
        None if t.has("max_attempts") => ok = false,
        None => {}
    }
    if t.has("attempt_timeout") {
        let v = t.duration_text(d, "attempt_timeout");
        match duration(d, v, "attempt_timeout", true) {
            Some(x) => cfg.attempt_timeout = x,
            None => ok = false,
        }
    }
    t.finish(
        d,
        &[
            "region",
            "profile",
            "endpoint_url",
            "max_attempts",
            "attempt_timeout",
        ],
    );
    ok.then_some(cfg)
}

fn read_notifier(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<Notifier> {
    let topic = t.req_string(d, "topic_arn");
    if let Some(a) = &topic {
        if !a.v.starts_with("arn:") || a.v.split(':').count() < 6 || !a.v.contains(":sns:") {
            d.push(a.span.clone(), format!("`topic_arn` must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), found {}", d.show(a)));
        }
    }
    let repeat = if t.has("repeat_interval") {
        {
            let v = t.duration_text(d, "repeat_interval");
            duration(d, v, "repeat_interval", false)
        }
    } else {
        Some(Duration::from_secs(4 * 3600))
    };
    let subject = match t.string(d, "subject") {
        Some(s) => match check_template(&s.v) {
            Ok(()) => Some(s.v),
            Err(m) => {
                d.push(s.span, format!("`subject` is not a valid template: {m}"));
                None
            }
        },
        None => Some(DEFAULT_SUBJECT.to_string()),
    };
    let format = match t.string(d, "format") {
        Some(f) => match f.v.as_str() {
            "text" => Some(MessageFormat::Text),
            "json" => Some(MessageFormat::Json),
            other => {
                d.push(
                    f.span,
                    format!("`format` must be \"text\" or \"json\", found \"{other}\""),
                );
                None
            }
        },
        None => Some(MessageFormat::Text),
    };
    let topic = topic?;
    if !topic.v.starts_with("arn:") {
        return None;
    }
    Some(Notifier {
        topic_arn: topic.v,
        repeat_interval: repeat?,
        subject: subject?,
        format: format?,
    })
}

/// Compiles a subject template, so a bad template is a validate-time error.
/// A parameter value that may be a template (`{{ event.detail.object.key }}`): it must parse,
/// and it may name `event` only in an `on_event` rule.
fn check_value_template(v: &str, on_event: bool) -> Result<(), String> {
    if !v.contains("{{") && !v.contains("{%") {
        return Ok(());
    }
    let env = minijinja::Environment::new();
    let t = env
        .template_from_str(v)
        .map_err(|e| format!("template does not parse: {e}"))?;
    let names = t.undeclared_variables(false);
    if names.contains("event") && !on_event {
        return Err("names `event`, which only an `on_event` rule has".into());
    }
    if let Some(other) = names.iter().find(|n| n.as_str() != "event") {
        return Err(format!(
            "names `{other}`; a parameter template can name only `event`"
        ));
    }
    Ok(())
}

/// `on_event = { source = "…", detail_type = "…", match = { "detail.a.b" = V | { prefix = "…" } | { any_of = [ … ] } } }`
fn read_event_pattern(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<EventPattern> {
    let mut p = t.table(d, "on_event")?;
    let source = p.string(d, "source").map(|s| s.v);
    let detail_type = p.string(d, "detail_type").map(|s| s.v);
    let mut ok = true;
    let mut matches = Vec::new();
    if let Some(m) = p.raw("match") {
        match m.get_ref() {
            toml::de::DeValue::Table(mt) => {
                for (k, v) in mt.iter() {
                    let path = k.get_ref().to_string();
                    if path.is_empty() || path.split('.').any(str::is_empty) {
                        d.push(k.span(), format!("`match` path \"{path}\" must be dotted names such as \"detail.bucket.name\""));
                        ok = false;
                        continue;
                    }
                    match matcher(v.get_ref()) {
                        Ok(x) => matches.push((path, x)),
                        Err(e) => {
                            d.push(v.span(), format!("`match.\"{path}\"`: {e}"));
                            ok = false;
                        }
                    }
                }
            }
            other => {
                d.push(
                    m.span(),
                    format!(
                        "`match` must be a table of dotted paths, found {}",
                        super::reader::type_name(other)
                    ),
                );
                ok = false;
            }
        }
    }
    if source.is_none() && detail_type.is_none() && matches.is_empty() && ok {
        d.push(p.span.clone(), "`on_event` needs at least one of `source`, `detail_type`, `match` (an empty pattern would match every event)");
        ok = false;
    }
    let pattern_ok = !p.has("source") || source.is_some();
    let dt_ok = !p.has("detail_type") || detail_type.is_some();
    p.finish(d, &["source", "detail_type", "match"]);
    (ok && pattern_ok && dt_ok).then_some(EventPattern {
        source,
        detail_type,
        matches,
    })
}

fn scalar(v: &toml::de::DeValue<'_>) -> Option<serde_json::Value> {
    use toml::de::DeValue as V;
    match v {
        V::String(s) => Some(serde_json::Value::String(s.to_string())),
        V::Integer(i) => i.as_str().parse::<i64>().ok().map(serde_json::Value::from),
        V::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number),
        V::Boolean(b) => Some(serde_json::Value::Bool(*b)),
        _ => None,
    }
}

fn matcher(v: &toml::de::DeValue<'_>) -> Result<Matcher, String> {
    use toml::de::DeValue as V;
    if let Some(x) = scalar(v) {
        return Ok(Matcher::Equals(x));
    }
    let V::Table(t) = v else {
        return Err(format!(
            "must be a value, {{ prefix = \"…\" }} or {{ any_of = [ … ] }}, found {}",
            super::reader::type_name(v)
        ));
    };
    let keys: Vec<String> = t.iter().map(|(k, _)| k.get_ref().to_string()).collect();
    match (
        t.get("prefix").map(|x| x.get_ref()),
        t.get("any_of").map(|x| x.get_ref()),
        keys.len(),
    ) {
        (Some(V::String(s)), None, 1) => Ok(Matcher::Prefix(s.to_string())),
        (Some(_), None, 1) => Err("`prefix` must be a string".into()),
        (None, Some(V::Array(items)), 1) => {
            let vals: Option<Vec<_>> = items.iter().map(|i| scalar(i.get_ref())).collect();
            match vals {
                Some(v) if !v.is_empty() => Ok(Matcher::AnyOf(v)),
                Some(_) => Err("`any_of` must not be empty".into()),
                None => Err("`any_of` items must be strings, numbers or booleans".into()),
            }
        }
        (None, Some(_), 1) => Err("`any_of` must be an array".into()),
        _ => Err(format!(
            "must be {{ prefix = \"…\" }} or {{ any_of = [ … ] }}, found keys {}",
            keys.join(", ")
        )),
    }
}

pub fn check_template(src: &str) -> Result<(), String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.add_template("subject", src)
        .map_err(|e| e.to_string())
        .map(|_| ())
}

/// `alarm = NAME` instead of a metric: the check's one other source.
fn read_alarm_check(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    has_events: bool,
) -> Option<Check> {
    let alarm = t.req_string(d, "alarm");
    let mut ok = true;
    for k in [
        "namespace",
        "metric",
        "dimensions",
        "statistic",
        "period",
        "above",
        "below",
    ] {
        if let Some(span) = t.key_span(k) {
            d.push(span, format!("`{k}` is for a metric check; [{}] reads `alarm` (a check has one source: a metric or an alarm)", t.path));
            let _ = t.raw(k);
            ok = false;
        }
    }
    let timed = if t.has("schedule") {
        timed(d, t, "schedule", default_tz)
    } else if !has_events {
        d.push(
            t.span.clone(),
            format!(
                "[{}] needs a `schedule` (or an [events] section, whose alarm events wake it)",
                t.path
            ),
        );
        ok = false;
        None
    } else {
        let tzv = t.string(d, "timezone");
        let tz = match &tzv {
            Some(z) => zone(d, z),
            None => default_tz,
        };
        tz.map(|timezone| Timed {
            expression: "(alarm events)".into(),
            schedule: Schedule::Never,
            timezone,
        })
    };
    let for_count = positive_u32(d, t, "for", 1);
    let missing = missing_data(d, t);
    let alarm = alarm?;
    if alarm.v.is_empty() || alarm.v.len() > 255 {
        d.push(
            alarm.span.clone(),
            "`alarm` must be a CloudWatch alarm name (1 to 255 characters)",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Check {
        timed: timed?,
        alarm: Some(alarm.v),
        namespace: String::new(),
        metric: String::new(),
        dimensions: Vec::new(),
        statistic: String::new(),
        period: Duration::from_secs(60),
        threshold: Threshold::Above(0.5),
        for_count: for_count?,
        missing_data: missing?,
    })
}

fn missing_data(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<MissingData> {
    match t.string(d, "missing_data") {
        Some(m) => match m.v.as_str() {
            "ignore" => Some(MissingData::Ignore),
            "breach" => Some(MissingData::Breach),
            "ok" => Some(MissingData::Ok),
            other => {
                d.push(m.span, format!("`missing_data` must be \"ignore\", \"breach\" or \"ok\", found \"{other}\""));
                None
            }
        },
        None => Some(MissingData::Ignore),
    }
}

fn read_check(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    has_events: bool,
) -> Option<Check> {
    if t.has("alarm") {
        return read_alarm_check(d, t, default_tz, has_events);
    }
    let timed = timed(d, t, "schedule", default_tz);
    let namespace = t.req_string(d, "namespace");
    let metric = t.req_string(d, "metric");
    let dimensions: Dimensions = t
        .string_map(d, "dimensions")
        .map(|x| x.v.into_iter().collect())
        .unwrap_or_default();
    if dimensions.len() > 30 {
        d.push(
            t.span.clone(),
            "CloudWatch allows at most 30 dimensions per metric",
        );
    }
    let statistic = match t.string(d, "statistic") {
        Some(s) => match valid_statistic(&s.v) {
            Ok(()) => Some(s.v),
            Err(m) => {
                d.push(s.span, m);
                None
            }
        },
        None => Some("Average".to_string()),
    };
    let period = if t.has("period") {
        let span = t.raw("period").map(|v| v.span());
        let p = {
            let v = t.duration_text(d, "period");
            duration(d, v, "period", true)
        };
        match p {
            Some(p) if !valid_period(p) => {
                d.push(
                    span.unwrap_or(0..0),
                    "`period` must be 1s, 5s, 10s, 30s or a multiple of 60s (CloudWatch periods)",
                );
                None
            }
            other => other,
        }
    } else {
        Some(Duration::from_secs(300))
    };
    let above = t.float(d, "above");
    let below = t.float(d, "below");
    let threshold = match (above, below) {
        (Some(a), None) => Some(Threshold::Above(a.v)),
        (None, Some(b)) => Some(Threshold::Below(b.v)),
        (Some(_), Some(b)) => {
            d.push(
                b.span,
                "set either `above` or `below`, not both (use two checks for a band)",
            );
            None
        }
        (None, None) => {
            if !t.has("above") && !t.has("below") {
                d.push(
                    t.span.clone(),
                    format!("[{}] needs a threshold: `above = N` or `below = N`", t.path),
                );
            }
            None
        }
    };
    let for_count = positive_u32(d, t, "for", 1);
    let missing = missing_data(d, t);
    Some(Check {
        timed: timed?,
        alarm: None,
        namespace: namespace?.v,
        metric: metric?.v,
        dimensions,
        statistic: statistic?,
        period: period?,
        threshold: threshold?,
        for_count: for_count?,
        missing_data: missing?,
    })
}

fn valid_statistic(s: &str) -> Result<(), String> {
    if matches!(s, "Average" | "Sum" | "Minimum" | "Maximum" | "SampleCount") {
        return Ok(());
    }
    if let Some(p) = s.strip_prefix('p') {
        if let Ok(x) = p.parse::<f64>() {
            if (0.0..=100.0).contains(&x) && !p.starts_with('+') {
                return Ok(());
            }
        }
    }
    Err(format!("`statistic` must be Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99 or p99.9, found \"{s}\""))
}

fn valid_period(p: Duration) -> bool {
    let ms = p.as_millis();
    matches!(ms, 1_000 | 5_000 | 10_000 | 30_000) || (ms > 0 && ms.is_multiple_of(60_000))
}

fn parse_target(d: &mut Diags, v: &Sp<String>, key: &str, refs: &mut Refs) -> Option<Target> {
    let Some((kind, name)) = v.v.split_once(':') else {
        d.push(
            v.span.clone(),
            format!(
                "`{key}` must be \"pipeline:NAME\" or \"build:NAME\", found {}",
                d.show(v)
            ),
        );
        return None;
    };
    let r = Sp {
        v: name.to_string(),
        span: v.span.clone(),
    };
    match kind {
        "pipeline" => {
            refs.pipelines.push(r);
            Some(Target {
                kind: RunKind::Pipeline,
                name: name.to_string(),
            })
        }
        "build" => {
            refs.builds.push(r);
            Some(Target {
                kind: RunKind::Build,
                name: name.to_string(),
            })
        }
        other => {
            d.push(
                v.span.clone(),
                format!(
                    "`{key}`: unknown kind \"{other}\"; use \"pipeline:NAME\" or \"build:NAME\""
                ),
            );
            None
        }
    }
}

/// A pipeline's parameters (a build's environment) with a rule's overrides; the shared map
/// itself when the rule overrides nothing.
fn merged(base: &Params, over: Option<&BTreeMap<String, String>>) -> Params {
    match over {
        Some(o) if !o.is_empty() => {
            let mut m = (**base).clone();
            m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            Arc::new(m)
        }
        _ => base.clone(),
    }
}

fn read_rule(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    pipelines: &BTreeMap<String, Pipeline>,
    builds: &BTreeMap<String, Build>,
    has_events: bool,
    refs: &mut Refs,
) -> Option<Rule> {
    let triggers: Vec<&str> = [
        "on_check",
        "on_schedule",
        "on_success",
        "on_failure",
        "on_event",
    ]
    .into_iter()
    .filter(|k| t.has(k))
    .collect();
    let mut ok = true;
    if triggers.is_empty() {
        d.push(t.span.clone(), format!("[{}] needs a trigger: one of `on_check`, `on_schedule`, `on_success`, `on_failure`, `on_event`", t.path));
        ok = false;
    } else if triggers.len() > 1 {
        let second = t.key_span(triggers[1]).unwrap_or(t.span.clone());
        d.push(
            second,
            format!(
                "[{}] has more than one trigger ({}); a rule has exactly one",
                t.path,
                triggers.join(", ")
            ),
        );
        ok = false;
    }
    let trigger = match triggers.first().copied() {
        Some("on_check") => t.string(d, "on_check").map(|c| {
            refs.checks.push(c.clone());
            Trigger::Check(c.v)
        }),
        Some("on_schedule") => timed(d, t, "on_schedule", default_tz).map(Trigger::Schedule),
        Some("on_success") => t
            .string(d, "on_success")
            .and_then(|v| parse_target(d, &v, "on_success", refs))
            .map(Trigger::Success),
        Some("on_failure") => t
            .string(d, "on_failure")
            .and_then(|v| parse_target(d, &v, "on_failure", refs))
            .map(Trigger::Failure),
        Some("on_event") => {
            if !has_events {
                let span = t.key_span("on_event").unwrap_or(t.span.clone());
                d.push(span, "`on_event` needs an [events] section with the `queue_url` EventBridge delivers to");
                ok = false;
            }
            read_event_pattern(d, t).map(|p| Trigger::Event(Arc::new(p)))
        }
        _ => None,
    };
    // Read the other triggers too, so they are not also "unknown keys".
    for k in triggers.iter().skip(1) {
        let _ = t.raw(k);
    }
    if !triggers.contains(&"on_schedule") {
        if let Some(z) = t.string(d, "timezone") {
            d.push(
                z.span,
                "`timezone` only applies to a rule with `on_schedule`",
            );
            ok = false;
        }
    }

    let start_pipeline = t.string(d, "start_pipeline");
    let start_build = t.string(d, "start_build");
    let parameters = t.string_map(d, "parameters");
    let environment = t.string_map(d, "environment");
    // Values may be templates; only an `on_event` rule has an `event` to render them over.
    let on_event = triggers.first() == Some(&"on_event") && triggers.len() == 1;
    for m in [&parameters, &environment].into_iter().flatten() {
        for (k, v) in &m.v {
            if let Err(e) = check_value_template(v, on_event) {
                d.push(m.span.clone(), format!("`{k}`: {e}"));
                ok = false;
            }
        }
    }
    let source_version = t.string(d, "source_version");
    let notify = t.string_list(d, "notify");
    if let Some(n) = &notify {
        for x in &n.v {
            refs.notifiers.push(x.clone());
        }
    }
    if start_pipeline.is_none()
        && start_build.is_none()
        && notify.as_ref().is_none_or(|n| n.v.is_empty())
    {
        d.push(
            t.span.clone(),
            format!(
                "[{}] needs at least one action: `start_pipeline`, `start_build` or `notify`",
                t.path
            ),
        );
        ok = false;
    }
    if let (None, Some(p)) = (&start_pipeline, &parameters) {
        d.push(
            p.span.clone(),
            "`parameters` needs `start_pipeline` (they are merged over that pipeline's)",
        );
        ok = false;
    }
    if start_build.is_none() {
        for (k, v) in [
            ("environment", environment.as_ref().map(|x| x.span.clone())),
            (
                "source_version",
                source_version.as_ref().map(|x| x.span.clone()),
            ),
        ] {
            if let Some(span) = v {
                d.push(span, format!("`{k}` needs `start_build`"));
                ok = false;
            }
        }
    }

    let mut start = Vec::new();
    if let Some(p) = start_pipeline {
        refs.pipelines.push(p.clone());
        if let (Some(pl), Some(params)) = (pipelines.get(&p.v), &parameters) {
            if let Some(decl) = &pl.declared {
                if !check_declared_params(d, t, &params.v, &decl.file, &decl.definition, on_event) {
                    ok = false;
                }
            }
        }
        if let Some(pl) = pipelines.get(&p.v) {
            start.push(Start::Pipeline {
                name: p.v,
                parameters: merged(&pl.parameters, parameters.as_ref().map(|o| &o.v)),
            });
        } else {
            ok = false;
        }
    }
    if let Some(b) = start_build {
        refs.builds.push(b.clone());
        if let Some(bl) = builds.get(&b.v) {
            start.push(Start::Build {
                name: b.v,
                source_version: source_version
                    .map(|s| s.v)
                    .or_else(|| bl.source_version.clone()),
                environment: merged(&bl.environment, environment.as_ref().map(|o| &o.v)),
            });
        } else {
            ok = false;
        }
    }

    let cooldown = if t.has("cooldown") {
        let c = {
            let v = t.duration_text(d, "cooldown");
            duration(d, v, "cooldown", false)
        };
        if c.is_none() {
            ok = false;
        }
        c
    } else {
        None
    };
    let dry_run = match t.boolean(d, "dry_run") {
        Some(b) => b.v,
        None if t.has("dry_run") => {
            ok = false;
            false
        }
        None => false,
    };
    let catch_up = match t.string(d, "catch_up") {
        Some(c) => match c.v.as_str() {
            "none" => CatchUp::None,
            "once" => {
                if !triggers.contains(&"on_schedule") {
                    d.push(
                        c.span,
                        "`catch_up` only applies to a rule with `on_schedule`",
                    );
                    ok = false;
                }
                CatchUp::Once
            }
            other => {
                d.push(
                    c.span,
                    format!("`catch_up` must be \"none\" or \"once\", found \"{other}\""),
                );
                ok = false;
                CatchUp::None
            }
        },
        None => CatchUp::None,
    };
    let trigger = trigger?;
    if !ok {
        return None;
    }
    start.shrink_to_fit();
    Some(Rule {
        trigger,
        start,
        notify: notify
            .map(|n| n.v.into_iter().map(|x| x.v).collect())
            .unwrap_or_default(),
        cooldown,
        dry_run,
        catch_up,
    })
}

fn read_gate(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    default_tz: Option<Tz>,
    refs: &mut Refs,
) -> Option<Gate> {
    let group = t.req_string(d, "model_package_group");
    let timed = timed(d, t, "schedule", default_tz);
    let metric = t.string(d, "metric");
    let report = t.string(d, "report_path");
    let metric = match (metric, report) {
        (Some(m), None) => Some(GateMetric::Metadata(m.v)),
        (None, Some(r)) => Some(GateMetric::Report(r.v)),
        (Some(_), Some(r)) => {
            d.push(
                r.span,
                "set either `metric` (a CustomerMetadataProperties key) or `report_path`, not both",
            );
            None
        }
        (None, None) => {
            if !t.has("metric") && !t.has("report_path") {
                d.push(
                    t.span.clone(),
                    format!(
                        "[{}] needs `metric` (a CustomerMetadataProperties key) or `report_path`",
                        t.path
                    ),
                );
            }
            None
        }
    };
    let min = t.float(d, "min");
    let max = t.float(d, "max");
    let mut ok = !(t.has("min") && min.is_none() || t.has("max") && max.is_none());
    match (&min, &max) {
        (None, None) if ok => {
            d.push(
                t.span.clone(),
                format!("[{}] needs `min`, `max` or both", t.path),
            );
            ok = false;
        }
        (Some(a), Some(b)) if a.v > b.v => {
            d.push(
                b.span.clone(),
                format!("`max` ({}) is below `min` ({})", b.v, a.v),
            );
            ok = false;
        }
        _ => {}
    }
    let notify = t.string_list(d, "notify");
    if let Some(n) = &notify {
        for x in &n.v {
            refs.notifiers.push(x.clone());
        }
    }
    if !ok {
        return None;
    }
    Some(Gate {
        model_package_group: group?.v,
        timed: timed?,
        metric: metric?,
        min: min.map(|x| x.v),
        max: max.map(|x| x.v),
        notify: notify
            .map(|n| n.v.into_iter().map(|x| x.v).collect())
            .unwrap_or_default(),
    })
}
