//! The config model: validated types that cannot be wrong, and `load`/`parse` to build them.
//!
//! Loading is in two stages: `reader` walks the spanned TOML tree (types, unknown and missing
//! keys), `build` turns what it read into these types (durations, schedules, zones, templates)
//! and resolves references between items. Every problem of every stage is collected.

pub mod blocks;
mod build;
pub(crate) mod definition;
pub mod diff;
mod endpoint;
pub(crate) mod reader;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;

use crate::schedule::Schedule;

pub use build::parse_full;
pub use endpoint::{Capacity, Strategy};
pub(crate) use endpoint::{Endpoint, OnRollback};

/// Parses and validates config text; `path` is used in messages only. A plain file is loaded
/// one table at a time (`blocks::parse_blockwise`); anything else, and any file with a
/// problem, is parsed whole, and every problem is reported with its location.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_reusing(text, path, None)
}

/// As `parse`, for a reload of the running config `prev`: items equal to the running ones
/// share their memory with them (block-wise loading only).
pub(crate) fn parse_reusing(
    text: &str,
    path: &Path,
    prev: Option<&Config>,
) -> Result<Config, ConfigError> {
    let mut cfg = match blocks::parse_blockwise_sharing(text, prev, &base_dir(path)) {
        Some(cfg) => cfg,
        None => parse_full(text, path)?,
    };
    if let Some(o) = OVERRIDES.get() {
        if let Some(l) = o.listen {
            cfg.daemon.listen = l;
        }
        if let Some(d) = &o.state_dir {
            cfg.daemon.state_dir = d.clone();
        }
    }
    Ok(cfg)
}

/// What `mlopsd run --listen/--state-dir` puts in place of the file's values: the per-machine
/// keys, so that HA replicas can share one config file (and its hash) on one host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub listen: Option<std::net::SocketAddr>,
    pub state_dir: Option<std::path::PathBuf>,
}

static OVERRIDES: std::sync::OnceLock<Overrides> = std::sync::OnceLock::new();

/// Sets the overrides for this process (once, before the config is read).
pub(crate) fn set_overrides(o: Overrides) {
    let _ = OVERRIDES.set(o);
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub(crate) daemon: DaemonConfig,
    pub(crate) aws: AwsConfig,
    pub(crate) notifiers: BTreeMap<String, Notifier>,
    pub(crate) pipelines: BTreeMap<String, Pipeline>,
    pub(crate) builds: BTreeMap<String, Build>,
    // Behind `Arc`, so a reload that changes a few of 10,000 items copies pointers, not items.
    pub(crate) checks: BTreeMap<String, Arc<Check>>,
    pub(crate) rules: BTreeMap<String, Arc<Rule>>,
    pub(crate) gates: BTreeMap<String, Arc<Gate>>,
    /// `[endpoints.NAME]`: what each SageMaker endpoint should serve.
    pub(crate) endpoints: BTreeMap<String, Arc<Endpoint>>,
    /// `[events]`: the SQS queue EventBridge delivers to (none: everything is polled).
    pub(crate) events: Option<Events>,
}

impl Config {
    /// Every scheduled item of the config: checks, `on_schedule` rules and gates.
    pub fn scheduled(&self) -> Vec<(ItemKind, &String, &Timed)> {
        let mut out = Vec::new();
        for (n, c) in &self.checks {
            // (an alarm check without a schedule is woken by alarm events only)
            if !matches!(c.timed.schedule, crate::schedule::Schedule::Never) {
                out.push((ItemKind::Check, n, &c.timed));
            }
        }
        for (n, r) in &self.rules {
            if let Trigger::Schedule(t) = &r.trigger {
                out.push((ItemKind::Rule, n, t));
            }
        }
        for (n, g) in &self.gates {
            out.push((ItemKind::Gate, n, &g.timed));
        }
        out
    }
}

/// `[events]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Events {
    pub queue_url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DaemonConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Set to serve HTTP on a non-loopback address; refused otherwise.
    pub allow_remote_listen: bool,
    pub timezone: Tz,
    pub shutdown_grace: Duration,
    /// How often started runs are polled (`DescribePipelineExecution`, `BatchGetBuilds`).
    pub poll_interval: Duration,
    /// How often declared pipelines are compared with AWS (and put back when drifted).
    pub reconcile_interval: Duration,
    /// High availability: the DynamoDB table the replicas share (state and the lease).
    pub ha_table: Option<String>,
    /// How long a leader's lease lasts without renewal before a standby takes over.
    pub ha_lease: Duration,
    /// Who is told `leader_changed` (`None`: every notifier).
    pub ha_notify: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    pub region: String,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub max_attempts: u32,
    /// Timeout of one attempt of one AWS call (the SDK retries within `max_attempts`).
    pub attempt_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageFormat {
    Text,
    Json,
    /// Amazon Q Developer in chat applications' custom notification (Slack, Teams, Chime).
    Chat,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notifier {
    pub topic_arn: String,
    pub repeat_interval: Duration,
    /// A minijinja template, checked at load time.
    pub subject: String,
    pub format: MessageFormat,
}

pub(crate) const DEFAULT_SUBJECT: &str = "[mlops] {{ rule }}: {{ event }}";

/// Pipeline parameters or build environment variables. Shared: a rule that overrides none
/// of its pipeline's parameters holds the pipeline's map, not a copy.
pub(crate) type Params = Arc<BTreeMap<String, String>>;

/// CloudWatch dimensions, sorted by name. A list rather than a map: a check has one or two,
/// and the smallest map node is half a KiB (5 MiB at 10,000 checks).
pub(crate) type Dimensions = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pipeline {
    pub pipeline_name: String,
    pub parameters: Params,
    pub max_concurrent: u32,
    /// `definition = "…json"`: mlopsd owns the pipeline (creates, updates, puts it back).
    pub declared: Option<Arc<Declared>>,
}

/// `reconcile = "apply" | "report"`: what a change made outside mlopsd gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reconcile {
    /// Put back (`UpdatePipeline` with the file's definition).
    Apply,
    /// Logged and notified only.
    Report,
}

impl Reconcile {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Reconcile::Apply => "apply",
            Reconcile::Report => "report",
        }
    }
}

/// A pipeline whose definition file is the truth.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Declared {
    /// The path as written in the config (for messages).
    pub file: String,
    /// The file, resolved against the config file's directory (watched by the daemon).
    pub path: PathBuf,
    pub definition: definition::Definition,
    pub role_arn: String,
    pub reconcile: Reconcile,
    pub notify: Vec<String>,
}

impl Declared {
    /// A hash of what an apply makes AWS hold: the definition and the role.
    pub(crate) fn state_hash(&self) -> String {
        definition::state_hash(&self.definition.json, &self.role_arn)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Build {
    pub project_name: String,
    pub source_version: Option<String>,
    pub environment: Params,
    pub max_concurrent: u32,
}

/// A schedule with the zone its cron fields are read in.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub(crate) expression: String,
    pub(crate) schedule: Schedule,
    pub(crate) timezone: Tz,
}

impl Timed {
    /// The first fire strictly after `after`, in the item's own time zone.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.schedule.next_after(self.timezone, after)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingData {
    Ignore,
    Breach,
    Ok,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Threshold {
    Above(f64),
    Below(f64),
}

impl Threshold {
    pub(crate) fn value(&self) -> f64 {
        match self {
            Threshold::Above(v) | Threshold::Below(v) => *v,
        }
    }
    pub(crate) fn breached_by(&self, x: f64) -> bool {
        match self {
            Threshold::Above(t) => x > *t,
            Threshold::Below(t) => x < *t,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Above(v) => write!(f, "> {v}"),
            Threshold::Below(v) => write!(f, "< {v}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    /// An alarm check with `[events]` and no `schedule` has `Schedule::Never` here.
    pub timed: Timed,
    /// What the check reads.
    pub source: Source,
    pub threshold: Threshold,
    pub for_count: u32,
    pub missing_data: MissingData,
}

/// A check's one source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// A CloudWatch metric (`GetMetricData`).
    Metric(MetricSource),
    /// `alarm = NAME`: a CloudWatch alarm, evaluated as the value 1 while it is `ALARM`, 0
    /// while `OK`, and no data while `INSUFFICIENT_DATA`, against the threshold "above 0.5".
    Alarm(String),
    /// `monitor = NAME`: a SageMaker Model Monitor schedule, evaluated once per execution as
    /// the number of its violations that pass the filters (threshold "above 0" by default).
    Monitor(MonitorSource),
    /// `report = "s3://…/"`: the newest JSON object under a prefix, evaluated once per object.
    Report(ReportSource),
}

/// `check_types` / `features`: which violations count (all when a list is empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filters {
    pub check_types: Vec<String>,
    pub features: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MonitorSource {
    pub schedule: String,
    pub filters: Filters,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReportSource {
    pub bucket: String,
    /// The key prefix (may be empty: the whole bucket).
    pub prefix: String,
    /// `file`: only objects whose key ends so.
    pub file: Option<String>,
    pub read: ReportRead,
}

impl ReportSource {
    /// `s3://bucket/prefix`, as written.
    pub(crate) fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
    /// Whether an object key is one this check reads.
    pub(crate) fn holds(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && self.file.as_deref().is_none_or(|f| key.ends_with(f))
            && !key.ends_with('/')
    }
}

/// What a `report` check takes from its JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReportRead {
    /// `value = PATH`: the number at a dotted path.
    Value(String),
    /// `violations = PATH`: the list there, its length after the filters.
    Violations { path: String, filters: Filters },
}

/// A metric check's query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricSource {
    pub namespace: String,
    pub metric: String,
    pub dimensions: Dimensions,
    /// `Average`, `Sum`, `Minimum`, `Maximum`, `SampleCount` or `pNN`, as CloudWatch spells it.
    pub statistic: String,
    pub period: Duration,
}

impl Check {
    /// What the check reads, for people: `alarm NAME`, `NAMESPACE/METRIC`, `monitor NAME` or
    /// `report s3://…`.
    pub(crate) fn source_text(&self) -> String {
        match &self.source {
            Source::Alarm(a) => format!("alarm {a}"),
            Source::Metric(m) => format!("{}/{}", m.namespace, m.metric),
            Source::Monitor(m) => format!("monitor {}", m.schedule),
            Source::Report(r) => format!("report {}", r.uri()),
        }
    }
    /// The alarm an alarm check reads.
    pub(crate) fn alarm(&self) -> Option<&str> {
        match &self.source {
            Source::Alarm(a) => Some(a),
            _ => None,
        }
    }
    /// The query of a metric check.
    pub(crate) fn metric(&self) -> Option<&MetricSource> {
        match &self.source {
            Source::Metric(m) => Some(m),
            _ => None,
        }
    }
    /// The prefix a report check reads.
    pub(crate) fn report(&self) -> Option<&ReportSource> {
        match &self.source {
            Source::Report(r) => Some(r),
            _ => None,
        }
    }
    /// Whether the check reads a report (`monitor` or `report`): its rules may name
    /// `{{ check.* }}`.
    pub(crate) fn reads_report(&self) -> bool {
        matches!(self.source, Source::Monitor(_) | Source::Report(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RunKind {
    Pipeline,
    Build,
}

impl RunKind {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            RunKind::Pipeline => "pipeline",
            RunKind::Build => "build",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<RunKind> {
        match s {
            "pipeline" => Some(RunKind::Pipeline),
            "build" => Some(RunKind::Build),
            _ => None,
        }
    }
    /// The config section its targets are declared in (`pipelines`, `builds`).
    pub(crate) fn section(&self) -> &'static str {
        match self {
            RunKind::Pipeline => "pipelines",
            RunKind::Build => "builds",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of scheduled item: a check, an `on_schedule` rule, a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemKind {
    Check,
    Rule,
    Gate,
}

impl ItemKind {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            ItemKind::Check => "check",
            ItemKind::Rule => "rule",
            ItemKind::Gate => "gate",
        }
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Target {
    /// The config item that declares this target, as `[pipelines.NAME]`.
    pub(crate) fn config_item(&self) -> String {
        format!("[{}.{}]", self.kind.section(), self.name)
    }
}

/// `pipeline:NAME` or `build:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Target {
    pub kind: RunKind,
    pub name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// What an `on_success` / `on_failure` rule follows: a run of a pipeline or build, or a
/// deployment to an endpoint block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upstream {
    Run(Target),
    /// `endpoint:NAME`: a deployment of the `[endpoints.NAME]` block.
    Endpoint(String),
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Run(t) => t.fmt(f),
            Upstream::Endpoint(n) => write!(f, "endpoint:{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Trigger {
    Check(String),
    Schedule(Timed),
    Success(Upstream),
    Failure(Upstream),
    /// `on_event = { source, detail_type, match }`: an EventBridge event from `[events]`.
    Event(Arc<EventPattern>),
}

/// What an `on_event` rule matches: every given field must match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventPattern {
    pub source: Option<String>,
    pub detail_type: Option<String>,
    /// Dotted paths into the event (`detail.object.key`) and what each must be.
    pub matches: Vec<(String, Matcher)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matcher {
    /// Equal to this value (a string, number or boolean).
    Equals(serde_json::Value),
    /// A string that starts with this.
    Prefix(String),
    /// Equal to one of these.
    AnyOf(Vec<serde_json::Value>),
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(s) = &self.source {
            parts.push(format!("source = {s}"));
        }
        if let Some(d) = &self.detail_type {
            parts.push(format!("detail-type = {d}"));
        }
        for (p, m) in &self.matches {
            parts.push(match m {
                Matcher::Equals(v) => format!("{p} = {v}"),
                Matcher::Prefix(x) => format!("{p} starts with {x:?}"),
                Matcher::AnyOf(vs) => format!("{p} in {}", serde_json::Value::Array(vs.clone())),
            });
        }
        f.write_str(&parts.join(", "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CatchUp {
    None,
    Once,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Start {
    /// Parameters already merged: the pipeline's, overridden by the rule's.
    Pipeline { name: String, parameters: Params },
    /// Environment merged the same way; source version the rule's, else the build's.
    Build {
        name: String,
        source_version: Option<String>,
        environment: Params,
    },
}

impl Start {
    pub(crate) fn target(&self) -> Target {
        match self {
            Start::Pipeline { name, .. } => Target {
                kind: RunKind::Pipeline,
                name: name.clone(),
            },
            Start::Build { name, .. } => Target {
                kind: RunKind::Build,
                name: name.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub trigger: Trigger,
    pub start: Vec<Start>,
    pub notify: Vec<String>,
    pub cooldown: Option<Duration>,
    pub dry_run: bool,
    pub catch_up: CatchUp,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GateMetric {
    /// A key of the model package's `CustomerMetadataProperties`.
    Metadata(String),
    /// A dotted path into the evaluation report JSON in S3.
    Report(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gate {
    pub model_package_group: String,
    pub timed: Timed,
    pub metric: GateMetric,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub notify: Vec<String>,
}

/// A config that failed to load: every problem, located.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    /// `(line, column, message)`, in source order.
    pub errors: Vec<(usize, usize, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (line, col, msg)) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{line}:{col}: {msg}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn io(path: &Path, msg: String) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            errors: vec![(1, 1, msg)],
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_hash(path).map(|(c, _)| c)
}

/// Reads and validates a config file; also returns its hash (`config_hash`).
pub(crate) fn load_with_hash(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = read_text(path)?;
    parse(&text, path).map(|c| {
        let h = config_hash(&text, &c);
        (c, h)
    })
}

/// The hash of a loaded config: its text's, and with declared pipelines, their definitions'
/// too (an edit of a definition file alone is a new config).
pub(crate) fn config_hash(text: &str, cfg: &Config) -> String {
    let defs: Vec<String> = cfg
        .pipelines
        .iter()
        .filter_map(|(n, p)| {
            p.declared
                .as_ref()
                .map(|d| format!("{n}={}", d.definition.hash))
        })
        .collect();
    if defs.is_empty() {
        content_hash(text)
    } else {
        content_hash(&format!("{text}\0{}", defs.join("\0")))
    }
}

/// Whether every definition file of `cfg` still holds what `cfg` was loaded with (a reload
/// must re-read the whole config when one changed, even if the TOML did not).
pub(crate) fn definitions_unchanged(cfg: &Config) -> bool {
    cfg.pipelines.values().all(|p| match &p.declared {
        None => true,
        Some(d) => definition::read(&d.path).is_ok_and(|x| x.hash == d.definition.hash),
    })
}

/// The definition files a config reads (the daemon watches them with the config).
pub(crate) fn definition_files(cfg: &Config) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = cfg
        .pipelines
        .values()
        .filter_map(|p| p.declared.as_ref().map(|d| d.path.clone()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The directory a config file's relative paths are read from.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads a config file as UTF-8 text, with located errors.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::io(path, format!("cannot read config: {e}")))?;
    if meta.is_dir() {
        return Err(ConfigError::io(
            path,
            "cannot read config: it is a directory, not a file".into(),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::io(path, format!("cannot read config: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, col) = reader::line_col(
            &String::from_utf8_lossy(e.as_bytes()),
            e.utf8_error().valid_up_to(),
        );
        ConfigError {
            path: path.to_path_buf(),
            errors: vec![(line, col, "config is not valid UTF-8".into())],
        }
    })?;
    Ok(text)
}

/// A short content hash, for status output and reload logs.
pub fn content_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
