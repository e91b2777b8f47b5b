//! `format = "chat"`: a notification as the custom notification of Amazon Q Developer in chat
//! applications (formerly AWS Chatbot), which renders it in the Slack, Microsoft Teams or Chime
//! channel its topic is mapped to. One incident is one thread: `threadId` is the correlation
//! id that a breach, the run it started, the run's end and the recovery share (a deployment
//! and its rollback share one too).
//!
//! Bounded under the channels' limits (SNS allows 256 KB): the title to `MAX_TITLE`, the
//! markdown description to `MAX_DESCRIPTION` (Slack's limit for one text section), a list
//! field to `MAX_LIST` lines and "… and N more", any one value to `MAX_VALUE`.

use serde_json::{json, Map};

use super::{Kind, Message};

pub(crate) const MAX_TITLE: usize = 250;
pub(crate) const MAX_SUMMARY: usize = 250;
pub(crate) const MAX_DESCRIPTION: usize = 3000;
pub(crate) const MAX_NEXT_STEPS: usize = 5;
pub(crate) const MAX_STEP: usize = 500;
pub(crate) const MAX_RESOURCES: usize = 10;
pub(crate) const MAX_CONTEXT_VALUE: usize = 1024;
const MAX_VALUE: usize = 500;
const MAX_LIST: usize = 20;

/// The notification's JSON.
pub(super) fn body(m: &Message, topic_arn: &str) -> String {
    let place = Place::of(topic_arn);
    let t = telling(m, &place);
    let mut description = t.sentence.clone();
    let shown: Vec<&str> = t.order.to_vec();
    let mut rest: Vec<(&String, &String)> = m
        .fields
        .iter()
        .filter(|(k, v)| !shown.contains(&k.as_str()) && !v.is_empty())
        .collect();
    rest.sort_by_key(|(k, _)| k.as_str());
    let ordered = shown
        .iter()
        .filter_map(|k| m.fields.get_key_value(*k))
        .filter(|(_, v)| !v.is_empty())
        .chain(rest);
    let mut lines = Vec::new();
    if let Some(c) = &m.check {
        lines.push(format!("• check: `{c}`"));
    }
    for (k, v) in ordered {
        lines.push(field_line(k, v));
    }
    if let Some(d) = run_duration(m) {
        lines.push(format!("• duration: {d}"));
    }
    if !lines.is_empty() {
        description.push_str("\n\n");
        description.push_str(&lines.join("\n"));
    }
    description = shorten_text(&description, MAX_DESCRIPTION);

    let mut resources: Vec<String> = Vec::new();
    for arn in m.fields.values().flat_map(|v| v.lines()).map(str::trim) {
        if arn.starts_with("arn:") && !resources.iter().any(|r| r == arn) {
            resources.push(arn.to_string());
        }
    }
    resources.truncate(MAX_RESOURCES);

    let mut context = Map::new();
    context.insert("rule".into(), m.rule.clone().into());
    if let Some(c) = &m.check {
        context.insert("check".into(), c.clone().into());
    }
    context.insert("correlation_id".into(), m.correlation_id.clone().into());
    for (k, v) in &m.fields {
        context.insert(k.clone(), shorten_chars(v, MAX_CONTEXT_VALUE).into());
    }

    let mut keywords = vec!["mlopsd".to_string(), m.kind.as_str().to_string()];
    keywords.push(shorten_chars(&m.rule, 256));
    if let Some(c) = &m.check {
        keywords.push(shorten_chars(c, 256));
    }
    keywords.dedup();
    let next: Vec<String> = t
        .next
        .into_iter()
        .take(MAX_NEXT_STEPS)
        .map(|s| shorten_chars(&s, MAX_STEP))
        .collect();
    let v = json!({
        "version": "1.0",
        "source": "custom",
        "id": event_id(m),
        "content": {
            "textType": "client-markdown",
            "title": shorten_chars(&format!("{} {}", t.emoji, t.title), MAX_TITLE),
            "description": description,
            "nextSteps": next,
            "keywords": keywords,
        },
        "metadata": {
            "threadId": thread_id(m),
            "summary": shorten_chars(&t.summary, MAX_SUMMARY),
            "eventType": m.kind.as_str(),
            "relatedResources": resources,
            "additionalContext": context,
        }
    });
    v.to_string()
}

/// What one kind of notification says: its title, the sentence that opens the description,
/// the fields it lists first, the channel preview and what to do next.
struct Telling {
    emoji: &'static str,
    title: String,
    sentence: String,
    summary: String,
    order: &'static [&'static str],
    next: Vec<String>,
}

/// The title, opening sentence and first fields of a kind.
type Said = (&'static str, String, String, &'static [&'static str]);

fn telling(m: &Message, place: &Place) -> Telling {
    let mut next = Vec::new();
    let (emoji, title, sentence, order) = match m.kind {
        Kind::CheckBreached | Kind::CheckRecovered | Kind::CheckFailed => {
            about_checks(m, &mut next)
        }
        Kind::RunStarted
        | Kind::RunSucceeded
        | Kind::RunFailed
        | Kind::RuleSuppressed
        | Kind::ScheduleFired
        | Kind::EventReceived => about_runs(m, place, &mut next),
        Kind::GateApproved
        | Kind::GateRejected
        | Kind::PipelineCreated
        | Kind::PipelineUpdated
        | Kind::PipelineDrifted
        | Kind::PipelineApplyFailed
        | Kind::LeaderChanged => about_registry(m, &mut next),
        Kind::DeployStarted
        | Kind::DeploySucceeded
        | Kind::DeployBaked
        | Kind::DeployRolledBack
        | Kind::DeployFailed
        | Kind::DeploySkipped => about_deploys(m, place, &mut next),
    };
    Telling {
        emoji,
        summary: title.clone(),
        title,
        sentence: sentence.trim().to_string(),
        order,
        next,
    }
}

/// A kind the dispatch in `telling` sends elsewhere: said plainly rather than panicking.
fn unreachable_kind(m: &Message) -> Said {
    (
        ":bell:",
        format!("{}: {}", m.rule, m.kind),
        String::new(),
        &[],
    )
}

/// A check entered or left breach, or its monitoring execution failed.
fn about_checks(m: &Message, next: &mut Vec<String>) -> Said {
    let f = |k: &str| m.fields.get(k).map(String::as_str).unwrap_or("");
    let rule = m.rule.as_str();
    let check = m.check.as_deref().unwrap_or("");
    let status_of =
        format!("`mlopsd status` on the mlopsd host shows what rule `{rule}` does next");
    match m.kind {
        Kind::CheckBreached => {
            next.push(format!(
                "`mlopsd check {check}` on the mlopsd host reads it again"
            ));
            if let Some(uri) = m.fields.get("report_uri") {
                next.push(format!("Read the report: `aws s3 cp {uri} -`"));
            }
            next.push(status_of.clone());
            (
                ":rotating_light:",
                format!("{check} breached: {} (threshold {})", f("value"), f("threshold")),
                format!(
                    "Check `{check}` is in breach: it read *{}* against the threshold *{}*. Rule `{rule}` acts on it.",
                    f("value"),
                    f("threshold")
                ),
                &["value", "threshold", "metric", "features", "report_uri", "violations"],
            )
        }
        Kind::CheckRecovered => {
            next.push(format!(
                "`mlopsd check {check}` on the mlopsd host reads it again"
            ));
            (
                ":white_check_mark:",
                format!(
                    "{check} recovered: {} (threshold {})",
                    f("value"),
                    f("threshold")
                ),
                format!(
                    "Check `{check}` is back within its threshold: it read *{}* (threshold *{}*).",
                    f("value"),
                    f("threshold")
                ),
                &["value", "threshold"],
            )
        }
        Kind::CheckFailed => {
            next.push(format!(
                "`mlopsd doctor` on the mlopsd host checks the monitoring schedule of `{check}`"
            ));
            (
                ":warning:",
                format!("{check}: the monitoring execution did not complete"),
                format!(
                    "Check `{check}` has no new report to read: its monitoring execution did not complete. {}",
                    f("reason")
                ),
                &["reason"],
            )
        }
        _ => unreachable_kind(m),
    }
}

/// A run started or ended, a rule was held back, a schedule or an event fired a rule.
fn about_runs(m: &Message, place: &Place, next: &mut Vec<String>) -> Said {
    let f = |k: &str| m.fields.get(k).map(String::as_str).unwrap_or("");
    let rule = m.rule.as_str();
    let status_of =
        format!("`mlopsd status` on the mlopsd host shows what rule `{rule}` does next");
    match m.kind {
        Kind::RunStarted | Kind::RunSucceeded | Kind::RunFailed => {
            run_steps(f("arn"), place, next);
            next.push(status_of.clone());
            let target = f("target");
            match m.kind {
                Kind::RunStarted => (
                    ":arrow_forward:",
                    format!("{rule} started {target}"),
                    format!("Rule `{rule}` started {target}; mlopsd follows it to its end."),
                    &["target", "arn", "started", "token"],
                ),
                Kind::RunSucceeded => (
                    ":white_check_mark:",
                    format!("{rule}: {target} succeeded"),
                    format!("The run rule `{rule}` started succeeded: {target}."),
                    &["target", "arn", "status", "started", "ended"],
                ),
                _ => (
                    ":x:",
                    format!("{rule}: {target} failed"),
                    format!(
                        "The run rule `{rule}` started failed: {target}. {}",
                        f("status")
                    ),
                    &["target", "arn", "status", "started", "ended"],
                ),
            }
        }
        Kind::RuleSuppressed => {
            next.push(status_of.clone());
            (
                ":pause_button:",
                format!("{rule} held back"),
                format!("Rule `{rule}` did not fire: {}.", f("reason")),
                &["reason"],
            )
        }
        Kind::ScheduleFired => (
            ":alarm_clock:",
            format!("{rule} fired on its schedule"),
            format!("Rule `{rule}` fired on its schedule."),
            &[],
        ),
        Kind::EventReceived => (
            ":incoming_envelope:",
            format!("{rule}: {} from {}", f("detail_type"), f("source")),
            format!(
                "Rule `{rule}` matched the event *{}* from `{}`.",
                f("detail_type"),
                f("source")
            ),
            &["detail_type", "source", "event_id"],
        ),
        _ => unreachable_kind(m),
    }
}

/// Gates, declared pipelines, leadership.
fn about_registry(m: &Message, next: &mut Vec<String>) -> Said {
    let f = |k: &str| m.fields.get(k).map(String::as_str).unwrap_or("");
    let rule = m.rule.as_str();
    match m.kind {
        Kind::GateApproved | Kind::GateRejected => {
            let arn = f("arn");
            if !arn.is_empty() {
                next.push(format!(
                    "`aws sagemaker describe-model-package --model-package-name {arn}`"
                ));
            }
            let (emoji, verb) = if m.kind == Kind::GateApproved {
                (":white_check_mark:", "approved")
            } else {
                (":no_entry:", "rejected")
            };
            (
                emoji,
                format!(
                    "Gate {rule} {verb} {}",
                    package_version(arn).unwrap_or_else(|| f("model_package_group").to_string())
                ),
                format!(
                    "Gate `{rule}` {verb} a model package of `{}` (value *{}*): {}.",
                    f("model_package_group"),
                    f("value"),
                    f("reason")
                ),
                &["value", "reason", "model_package_group", "arn"],
            )
        }
        Kind::PipelineCreated | Kind::PipelineUpdated | Kind::PipelineDrifted => {
            next.push(format!(
                "`mlopsd diff` on the mlopsd host compares `{}` with its definition",
                f("pipeline")
            ));
            let (emoji, what) = match m.kind {
                Kind::PipelineCreated => (":hammer_and_wrench:", "created"),
                Kind::PipelineUpdated => (":hammer_and_wrench:", "updated"),
                _ => (":warning:", "drifted from its definition"),
            };
            (
                emoji,
                format!("Pipeline {} {what}", f("pipeline")),
                format!(
                    "SageMaker pipeline `{}` (declared as `{rule}`, from `{}`) {what}. {}",
                    f("pipeline"),
                    f("definition"),
                    f("reason")
                ),
                &[
                    "pipeline",
                    "definition",
                    "action",
                    "reason",
                    "arn",
                    "changes",
                ],
            )
        }
        Kind::PipelineApplyFailed => {
            next.push(
                "`mlopsd doctor` on the mlopsd host checks the role and the permissions".into(),
            );
            (
                ":x:",
                format!("Pipeline {}: {} failed", f("pipeline"), f("operation")),
                format!(
                    "mlopsd could not apply the definition of `{}`: {} {}. It tries again {}.",
                    f("pipeline"),
                    f("code"),
                    f("error"),
                    f("next_try")
                ),
                &[
                    "pipeline",
                    "definition",
                    "operation",
                    "code",
                    "error",
                    "next_try",
                ],
            )
        }
        Kind::LeaderChanged => {
            next.push("`mlopsd status` on each replica shows its role".into());
            (
                ":crown:",
                format!("mlopsd leader is now {}", f("leader")),
                format!(
                    "Replica `{}` leads now (fencing token {}); before it: `{}`.",
                    f("leader"),
                    f("fencing"),
                    f("previous")
                ),
                &["leader", "previous", "fencing", "table"],
            )
        }
        _ => unreachable_kind(m),
    }
}

/// A deployment step.
fn about_deploys(m: &Message, place: &Place, next: &mut Vec<String>) -> Said {
    let f = |k: &str| m.fields.get(k).map(String::as_str).unwrap_or("");
    let rule = m.rule.as_str();
    match m.kind {
        Kind::DeployStarted
        | Kind::DeploySucceeded
        | Kind::DeployBaked
        | Kind::DeployRolledBack
        | Kind::DeployFailed
        | Kind::DeploySkipped => {
            let ep = f("endpoint");
            if let Some(url) = place.endpoint_url(ep) {
                next.push(format!("The endpoint in the SageMaker console: {url}"));
            }
            next.push(format!(
                "`aws sagemaker describe-endpoint --endpoint-name {ep}`"
            ));
            next.push(format!(
                "`mlopsd status` on the mlopsd host shows endpoint `{rule}`"
            ));
            let v = f("version");
            let (emoji, title, sentence) = match m.kind {
                Kind::DeployStarted => (
                    ":rocket:",
                    format!("{ep}: deploying version {v}"),
                    format!(
                        "mlopsd is deploying version {v} of `{}` to endpoint `{ep}`.",
                        f("model_package_group")
                    ),
                ),
                Kind::DeploySucceeded => (
                    ":white_check_mark:",
                    format!("{ep}: version {v} in service"),
                    format!("Endpoint `{ep}` serves version {v}."),
                ),
                Kind::DeployBaked => (
                    ":white_check_mark:",
                    format!("{ep}: version {v} baked"),
                    format!("Version {v} on `{ep}` passed its bake: no rollback alarm went off."),
                ),
                Kind::DeployRolledBack => (
                    ":rewind:",
                    format!("{ep}: version {v} rolled back"),
                    format!(
                        "Version {v} on `{ep}` was rolled back (by {}): {}",
                        or(f("by"), "SageMaker"),
                        f("reason")
                    ),
                ),
                Kind::DeployFailed => (
                    ":x:",
                    format!("{ep}: version {v} failed"),
                    format!("Deploying version {v} to `{ep}` failed: {}", f("reason")),
                ),
                _ => (
                    ":fast_forward:",
                    format!("{ep}: version {v} skipped"),
                    format!("Version {v} is not deployed to `{ep}`: {}", f("reason")),
                ),
            };
            (
                emoji,
                title,
                sentence,
                &[
                    "endpoint",
                    "version",
                    "previous_version",
                    "from_version",
                    "to_version",
                    "by",
                    "reason",
                    "bake_until",
                    "config",
                    "package_arn",
                ],
            )
        }
        _ => unreachable_kind(m),
    }
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

/// What to look at for a run: the CodeBuild console page of a build, the steps of a
/// pipeline execution.
fn run_steps(arn: &str, place: &Place, next: &mut Vec<String>) {
    let Some(a) = Arn::parse(arn) else {
        return;
    };
    match a.service {
        "codebuild" => {
            let id = a.resource.strip_prefix("build/").unwrap_or(a.resource);
            if let Some((project, _)) = id.split_once(':') {
                if let Some(host) = place.console(a.partition, a.region) {
                    next.push(format!(
                        "The build in the CodeBuild console: {host}/codesuite/codebuild/projects/{project}/build/{}/?region={}",
                        id.replace(':', "%3A"),
                        a.region
                    ));
                }
            }
            next.push(format!("`aws codebuild batch-get-builds --ids {id}`"));
        }
        "sagemaker" => {
            next.push(format!(
                "`aws sagemaker list-pipeline-execution-steps --pipeline-execution-arn {arn}` shows each step"
            ));
        }
        _ => {}
    }
}

/// "v3" from a model package ARN (`…:model-package/group/3`).
fn package_version(arn: &str) -> Option<String> {
    let a = Arn::parse(arn)?;
    let v = a.resource.rsplit('/').next()?;
    v.parse::<u32>().ok().map(|n| format!("version {n}"))
}

/// A run's duration from its `started` and `ended` fields.
fn run_duration(m: &Message) -> Option<String> {
    let p = |k: &str| {
        m.fields
            .get(k)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    let secs = (p("ended")? - p("started")?).num_seconds();
    if secs < 0 {
        return None;
    }
    Some(match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    })
}

/// `• key: value`; a value of several lines (violations, changes) as an indented list of at
/// most `MAX_LIST` lines.
fn field_line(k: &str, v: &str) -> String {
    let lines: Vec<&str> = v.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 1 {
        return format!("• {k}: {}", code(&shorten_chars(v.trim(), MAX_VALUE)));
    }
    let mut out = format!("• {k}:");
    for l in lines.iter().take(MAX_LIST) {
        let l = l.trim().trim_start_matches("- ");
        out.push_str(&format!("\n    ◦ {}", shorten_chars(l, MAX_VALUE)));
    }
    if lines.len() > MAX_LIST {
        out.push_str(&format!("\n    ◦ … and {} more", lines.len() - MAX_LIST));
    }
    out
}

/// A value in backticks, unless it holds one (markdown has no escape inside code spans).
fn code(v: &str) -> String {
    if v.contains('`') {
        v.to_string()
    } else {
        format!("`{v}`")
    }
}

/// At most `max` characters, the cut marked with "…".
pub(crate) fn shorten_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// At most `max` characters, cut at a line where one is near, saying how much was left out.
fn shorten_text(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let note = "\n… (shortened; `mlopsd status` and the log have it all)";
    let keep = max - note.chars().count();
    let head: String = s.chars().take(keep).collect();
    let head = match head.rfind('\n') {
        Some(i) if i > keep / 2 => head[..i].to_string(),
        _ => head,
    };
    head + note
}

/// The correlation id; a message without one (none is expected) threads by its rule.
fn thread_id(m: &Message) -> String {
    if m.correlation_id.is_empty() {
        format!("mlopsd-{}", shorten_chars(&m.rule, 200))
    } else {
        shorten_chars(&m.correlation_id, 256)
    }
}

/// A stable id of this notification: the same message rendered twice (a retried publish) has
/// the same id; two different ones do not.
fn event_id(m: &Message) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(m.kind.as_str());
    h.update([0]);
    h.update(&m.rule);
    h.update([0]);
    h.update(m.check.as_deref().unwrap_or(""));
    h.update([0]);
    h.update(&m.correlation_id);
    for (k, v) in &m.fields {
        h.update([0]);
        h.update(k);
        h.update([1]);
        h.update(v);
    }
    let d = h.finalize();
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("mlopsd-{}-{hex}", m.kind.as_str())
}

/// The parts of an ARN a link needs.
struct Arn<'a> {
    partition: &'a str,
    service: &'a str,
    region: &'a str,
    resource: &'a str,
}

impl<'a> Arn<'a> {
    fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut p = s.splitn(6, ':');
        if p.next()? != "arn" {
            return None;
        }
        Some(Arn {
            partition: p.next()?,
            service: p.next()?,
            region: p.next()?,
            resource: {
                p.next()?;
                p.next()?
            },
        })
    }
}

/// Where the notifier's topic is: the console links are for its partition and region.
struct Place {
    partition: String,
    region: String,
}

impl Place {
    fn of(topic_arn: &str) -> Place {
        let a = Arn::parse(topic_arn);
        Place {
            partition: a.as_ref().map(|a| a.partition).unwrap_or("aws").into(),
            region: a.as_ref().map(|a| a.region).unwrap_or("").into(),
        }
    }

    /// The console's address in a region: only the commercial partition's is known here.
    fn console(&self, partition: &str, region: &str) -> Option<String> {
        (partition == "aws" && !region.is_empty())
            .then(|| format!("https://{region}.console.aws.amazon.com"))
    }

    fn endpoint_url(&self, name: &str) -> Option<String> {
        if name.is_empty() {
            return None;
        }
        let host = self.console(&self.partition, &self.region)?;
        Some(format!(
            "{host}/sagemaker/home?region={}#/endpoints/{name}",
            self.region
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Kind;
    use serde_json::Value;

    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:ml-alerts";
    const EXEC: &str =
        "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/churn/execution/abc123def";
    const BUILD: &str = "arn:aws:codebuild:eu-west-1:123456789012:build/ci:0f9e-11";
    const PACKAGE: &str = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/churn/7";

    /// mlopsd's copy of the documented schema (tests/schemas), also the one the integration
    /// test holds real SNS messages to with Python's jsonschema.
    fn schema() -> Value {
        serde_json::from_str(include_str!(
            "../../tests/schemas/chat_notification.schema.json"
        ))
        .unwrap()
    }

    /// The subset of JSON Schema the file uses: type, const, enum, required, properties,
    /// additionalProperties, items, min/maxLength, maxItems. Every violation, with its path.
    fn violations(s: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
        let ty = s["type"].as_str().unwrap_or("");
        let ok = match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            _ => true,
        };
        if !ok {
            out.push(format!("{path}: not a {ty}: {v}"));
            return;
        }
        if let Some(c) = s.get("const") {
            if c != v {
                out.push(format!("{path}: {v} is not {c}"));
            }
        }
        if let Some(e) = s["enum"].as_array() {
            if !e.contains(v) {
                out.push(format!("{path}: {v} not in {e:?}"));
            }
        }
        if let Some(t) = v.as_str() {
            let n = t.chars().count() as u64;
            if n < s["minLength"].as_u64().unwrap_or(0) {
                out.push(format!("{path}: empty"));
            }
            if n > s["maxLength"].as_u64().unwrap_or(u64::MAX) {
                out.push(format!("{path}: {n} characters"));
            }
        }
        if let Some(a) = v.as_array() {
            if a.len() as u64 > s["maxItems"].as_u64().unwrap_or(u64::MAX) {
                out.push(format!("{path}: {} items", a.len()));
            }
            for (i, x) in a.iter().enumerate() {
                violations(&s["items"], x, &format!("{path}[{i}]"), out);
            }
        }
        if let Some(o) = v.as_object() {
            for r in s["required"].as_array().into_iter().flatten() {
                if !o.contains_key(r.as_str().unwrap()) {
                    out.push(format!("{path}: {r} missing"));
                }
            }
            for (k, x) in o {
                match (s["properties"].get(k), &s["additionalProperties"]) {
                    (Some(p), _) => violations(p, x, &format!("{path}.{k}"), out),
                    (None, Value::Bool(false)) => out.push(format!("{path}: unknown key {k}")),
                    (None, Value::Object(_)) => {
                        violations(&s["additionalProperties"], x, &format!("{path}.{k}"), out)
                    }
                    _ => {}
                }
            }
        }
    }

    fn valid(body: &str) -> Value {
        let v: Value = serde_json::from_str(body).expect("JSON");
        let mut out = Vec::new();
        violations(&schema(), &v, "$", &mut out);
        assert!(out.is_empty(), "{out:#?}\n{body}");
        assert!(body.len() < 64 * 1024, "{} bytes", body.len());
        v
    }

    /// One message of each kind, with the fields the daemon gives it.
    fn every_kind() -> Vec<Message> {
        let run = |k| {
            Message::new(k, "retrain", Some("drift"), "c-1")
                .with("target", "pipeline churn")
                .with("arn", EXEC)
                .with("token", "t-1")
                .with("status", "Failed: step Train failed")
                .with("started", "2026-12-04T10:00:00Z")
                .with("ended", "2026-12-04T10:42:05Z")
        };
        let deploy = |k| {
            Message::new(k, "churn-prod", None, "d-1")
                .with("endpoint", "churn-prod")
                .with("version", 7)
                .with("package_arn", PACKAGE)
                .with("config", "churn-prod-v7-abc")
                .with("previous_version", 6)
                .with("reason", "alarm churn-5xx went off")
        };
        let pipeline = |k| {
            Message::new(k, "churn", None, "p-1")
                .with("pipeline", "churn-training")
                .with("definition", "pipelines/churn.json")
                .with("reason", "definition changed")
                .with("changes", "Steps[0].Arguments: 1 → 2\nRoleArn: a → b")
                .with("action", "restored")
        };
        vec![
            Message::new(Kind::CheckBreached, "retrain", Some("drift"), "c-1")
                .with("value", 0.31)
                .with("threshold", "> 0.1")
                .with("metric", "ml/drift distance Average"),
            Message::new(Kind::CheckRecovered, "retrain", Some("drift"), "c-1")
                .with("value", 0.01)
                .with("threshold", "> 0.1"),
            Message::new(Kind::CheckFailed, "retrain", Some("monitor"), "c-2")
                .with("reason", "Failed: AlgorithmError"),
            run(Kind::RunStarted),
            run(Kind::RunSucceeded)
                .with("arn", BUILD)
                .with("target", "build ci"),
            run(Kind::RunFailed),
            Message::new(Kind::RuleSuppressed, "retrain", Some("drift"), "c-1")
                .with("reason", "in cooldown until 2026-12-04T11:00:00Z"),
            Message::new(Kind::ScheduleFired, "nightly", None, "s-1"),
            Message::new(Kind::EventReceived, "on-fail", None, "e-1")
                .with("source", "aws.sagemaker")
                .with(
                    "detail_type",
                    "SageMaker Model Building Pipeline Execution Status Change",
                )
                .with("event_id", "9d1e"),
            Message::new(Kind::GateApproved, "quality", None, "g-1")
                .with("arn", PACKAGE)
                .with("value", 0.91)
                .with("reason", "auc 0.91 >= 0.85")
                .with("model_package_group", "churn"),
            Message::new(Kind::GateRejected, "quality", None, "g-2")
                .with("arn", PACKAGE)
                .with("value", 0.71)
                .with("reason", "auc 0.71 < 0.85")
                .with("model_package_group", "churn"),
            pipeline(Kind::PipelineCreated),
            pipeline(Kind::PipelineUpdated),
            pipeline(Kind::PipelineDrifted),
            Message::new(Kind::PipelineApplyFailed, "churn", None, "p-2")
                .with("pipeline", "churn-training")
                .with("operation", "UpdatePipeline")
                .with("code", "AccessDeniedException")
                .with("error", "not authorized")
                .with("next_try", "in 300s (reconcile_interval)"),
            Message::new(Kind::LeaderChanged, "ha", None, "ha-4")
                .with("leader", "host-b")
                .with("fencing", 4)
                .with("previous", "host-a")
                .with("table", "mlopsd-ha"),
            deploy(Kind::DeployStarted),
            deploy(Kind::DeploySucceeded).with("bake_until", "2026-12-04T11:00:00Z"),
            deploy(Kind::DeployBaked),
            deploy(Kind::DeployRolledBack)
                .with("by", "mlopsd")
                .with("from_version", 7)
                .with("to_version", 6),
            deploy(Kind::DeployFailed),
            deploy(Kind::DeploySkipped),
        ]
    }

    #[test]
    fn every_kind_is_a_valid_custom_notification_threaded_by_correlation_id() {
        let msgs = every_kind();
        let kinds: std::collections::HashSet<_> = msgs.iter().map(|m| m.kind).collect();
        assert_eq!(kinds.len(), 22, "every Kind has a sample");
        for m in &msgs {
            let v = valid(&body(m, TOPIC));
            assert_eq!(v["metadata"]["threadId"], m.correlation_id.as_str());
            assert_eq!(v["metadata"]["eventType"], m.kind.as_str());
            assert_eq!(v["content"]["textType"], "client-markdown");
            let title = v["content"]["title"].as_str().unwrap();
            assert!(title.starts_with(':'), "an emoji first: {title}");
            assert!(!title.contains('`'), "titles are not markdown: {title}");
            assert!(
                !v["content"]["nextSteps"].as_array().unwrap().is_empty()
                    || matches!(m.kind, Kind::ScheduleFired | Kind::EventReceived),
                "{}: what to do next",
                m.kind
            );
            // Every field reaches the reader: in the description and in additionalContext.
            let d = v["content"]["description"].as_str().unwrap();
            for (k, val) in &m.fields {
                let first = val.lines().next().unwrap_or("");
                assert!(
                    d.contains(first.trim_start_matches("- ")),
                    "{k}={val} in {d}"
                );
                assert_eq!(v["metadata"]["additionalContext"][k], val.as_str());
            }
        }
    }

    #[test]
    fn the_figures_a_person_needs_are_in_title_and_description() {
        let m = &every_kind()[0];
        let v = valid(&body(m, TOPIC));
        assert_eq!(
            v["content"]["title"],
            ":rotating_light: drift breached: 0.31 (threshold > 0.1)"
        );
        let d = v["content"]["description"].as_str().unwrap();
        assert!(
            d.contains("read *0.31* against the threshold *> 0.1*"),
            "{d}"
        );
        assert!(d.contains("• metric: `ml/drift distance Average`"), "{d}");
        assert_eq!(
            v["content"]["nextSteps"][0],
            "`mlopsd check drift` on the mlopsd host reads it again"
        );

        let failed = every_kind().remove(5);
        let v = valid(&body(&failed, TOPIC));
        assert_eq!(v["content"]["title"], ":x: retrain: pipeline churn failed");
        let d = v["content"]["description"].as_str().unwrap();
        assert!(d.contains("• duration: 42m 5s"), "{d}");
        assert!(d.contains("Failed: step Train failed"), "{d}");
        assert_eq!(v["metadata"]["relatedResources"], json!([EXEC]));
        assert!(v["content"]["nextSteps"][0]
            .as_str()
            .unwrap()
            .contains(&format!("--pipeline-execution-arn {EXEC}")));

        let build = every_kind().remove(4);
        let v = valid(&body(&build, TOPIC));
        assert_eq!(
            v["content"]["nextSteps"][0],
            "The build in the CodeBuild console: https://eu-west-1.console.aws.amazon.com/codesuite/codebuild/projects/ci/build/ci%3A0f9e-11/?region=eu-west-1"
        );

        let rolled = every_kind().remove(19);
        let v = valid(&body(&rolled, TOPIC));
        assert_eq!(
            v["content"]["title"],
            ":rewind: churn-prod: version 7 rolled back"
        );
        assert!(v["content"]["nextSteps"][0].as_str().unwrap().ends_with(
            "console.aws.amazon.com/sagemaker/home?region=eu-west-1#/endpoints/churn-prod"
        ));
        assert_eq!(v["metadata"]["relatedResources"], json!([PACKAGE]));
        // Outside the commercial partition, no console link is guessed.
        let v = valid(&body(&rolled, "arn:aws-cn:sns:cn-north-1:1:t"));
        assert!(!v.to_string().contains("console.aws.amazon.com"));
    }

    #[test]
    fn long_lists_and_values_are_shortened_under_the_limits() {
        let listing: Vec<String> = (0..5000)
            .map(|i| format!("- feature_{i}: baseline_drift_check ({})", "x".repeat(40)))
            .collect();
        let m = Message::new(Kind::CheckBreached, &"r".repeat(400), Some("drift"), "c-9")
            .with("value", 12)
            .with("threshold", "> 0")
            .with("violations", listing.join("\n"))
            .with("features", "f".repeat(100_000))
            .with(
                "report_uri",
                "s3://b/reports/2026/12/04/constraint_violations.json",
            );
        let b = body(&m, TOPIC);
        let v = valid(&b);
        let d = v["content"]["description"].as_str().unwrap();
        assert!(d.contains("◦ feature_0: baseline_drift_check"), "{d}");
        assert!(d.contains("◦ … and 4980 more"), "{d}");
        assert!(v["content"]["title"].as_str().unwrap().chars().count() <= MAX_TITLE);
        let ctx = v["metadata"]["additionalContext"]["features"]
            .as_str()
            .unwrap();
        assert_eq!(ctx.chars().count(), MAX_CONTEXT_VALUE);
        assert!(ctx.ends_with('…'));

        // Many long fields: the description is cut at a line, and says so.
        let mut m = Message::new(Kind::PipelineApplyFailed, "p", None, "p-8");
        for i in 0..12 {
            m = m.with(&format!("field_{i:02}"), "y".repeat(800));
        }
        let d = valid(&body(&m, TOPIC))["content"]["description"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            d.ends_with("…`\n… (shortened; `mlopsd status` and the log have it all)"),
            "{d}"
        );
        assert!(d.chars().count() <= MAX_DESCRIPTION);

        // A list alone, under the description's limit, says how many it left out.
        let m = Message::new(Kind::PipelineDrifted, "p", None, "p-9").with(
            "changes",
            (0..30)
                .map(|i| format!("Steps[{i}]: a → b"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let d = valid(&body(&m, TOPIC))["content"]["description"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(d.contains("◦ Steps[19]: a → b\n    ◦ … and 10 more"), "{d}");
    }

    #[test]
    fn a_message_without_a_correlation_id_still_has_a_thread() {
        let m = Message::new(Kind::RuleSuppressed, "retrain", None, "").with("reason", "x");
        let v = valid(&body(&m, TOPIC));
        assert_eq!(v["metadata"]["threadId"], "mlopsd-retrain");
    }

    #[test]
    fn the_id_is_stable_for_one_message_and_differs_between_two() {
        let a = Message::new(Kind::RunStarted, "r", None, "c").with("arn", EXEC);
        let b = a.clone().with("arn", BUILD);
        assert_eq!(event_id(&a), event_id(&a.clone()));
        assert_ne!(event_id(&a), event_id(&b));
    }
}
