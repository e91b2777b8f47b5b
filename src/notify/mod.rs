//! Notification content: the subject from the notifier's template (≤ 100 ASCII characters,
//! as SNS requires), a body carrying every field (text, JSON, or the chat custom notification
//! of `chat.rs`), and the message attributes.
//! Pure: the daemon stores rendered messages in the outbox and `aws` publishes them.

use std::collections::BTreeMap;

use crate::config::{MessageFormat, Notifier};

mod chat;

/// SNS subjects must be under 100 characters; we keep to 99.
pub(crate) const MAX_SUBJECT: usize = 99;

/// What a notification tells (its `event` attribute and field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    CheckBreached,
    CheckRecovered,
    /// A report check's monitor execution failed or was stopped.
    CheckFailed,
    RunStarted,
    RunSucceeded,
    RunFailed,
    RuleSuppressed,
    /// A notify-only rule on a schedule fired.
    ScheduleFired,
    /// A notify-only `on_event` rule matched an event.
    EventReceived,
    GateApproved,
    GateRejected,
    PipelineCreated,
    PipelineUpdated,
    PipelineDrifted,
    PipelineApplyFailed,
    LeaderChanged,
    DeployStarted,
    DeploySucceeded,
    DeployBaked,
    DeployRolledBack,
    DeployFailed,
    DeploySkipped,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::CheckBreached => "check_breached",
            Kind::CheckRecovered => "check_recovered",
            Kind::CheckFailed => "check_failed",
            Kind::RunStarted => "run_started",
            Kind::RunSucceeded => "run_succeeded",
            Kind::RunFailed => "run_failed",
            Kind::RuleSuppressed => "rule_suppressed",
            Kind::ScheduleFired => "schedule_fired",
            Kind::EventReceived => "event_received",
            Kind::GateApproved => "gate_approved",
            Kind::GateRejected => "gate_rejected",
            Kind::PipelineCreated => "pipeline_created",
            Kind::PipelineUpdated => "pipeline_updated",
            Kind::PipelineDrifted => "pipeline_drifted",
            Kind::PipelineApplyFailed => "pipeline_apply_failed",
            Kind::LeaderChanged => "leader_changed",
            Kind::DeployStarted => "deploy_started",
            Kind::DeploySucceeded => "deploy_succeeded",
            Kind::DeployBaked => "deploy_baked",
            Kind::DeployRolledBack => "deploy_rolled_back",
            Kind::DeployFailed => "deploy_failed",
            Kind::DeploySkipped => "deploy_skipped",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub kind: Kind,
    pub rule: String,
    pub check: Option<String>,
    pub correlation_id: String,
    /// Everything else worth telling: value, threshold, target, arn, status, reason, …
    pub fields: BTreeMap<String, String>,
}

impl Message {
    pub(crate) fn new(
        kind: Kind,
        rule: &str,
        check: Option<&str>,
        correlation_id: &str,
    ) -> Message {
        Message {
            kind,
            rule: rule.into(),
            check: check.map(str::to_string),
            correlation_id: correlation_id.into(),
            fields: BTreeMap::new(),
        }
    }

    pub(crate) fn with(mut self, k: &str, v: impl ToString) -> Message {
        self.fields.insert(k.into(), v.to_string());
        self
    }

    fn all_fields(&self) -> BTreeMap<String, String> {
        let mut m = self.fields.clone();
        m.insert("event".into(), self.kind.as_str().into());
        m.insert("rule".into(), self.rule.clone());
        m.insert("check".into(), self.check.clone().unwrap_or_default());
        m.insert("correlation_id".into(), self.correlation_id.clone());
        m
    }
}

/// Renders (subject, body). A template that fails at render time (it compiled at load time)
/// falls back to the default subject rather than losing the notification.
pub(crate) fn render(n: &Notifier, m: &Message) -> (String, String) {
    let fields = m.all_fields();
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    let subject = env
        .render_str(&n.subject, &fields)
        .or_else(|_| env.render_str(crate::config::DEFAULT_SUBJECT, &fields))
        .unwrap_or_else(|_| format!("[mlops] {}: {}", m.rule, m.kind));
    let subject = sanitize_subject(&subject);
    let body = match n.format {
        MessageFormat::Chat => chat::body(m, &n.topic_arn),
        MessageFormat::Json => serde_json::to_string(&fields).unwrap_or_default(),
        MessageFormat::Text => {
            let mut s = format!("mlopsd: {} for rule {}\n\n", m.kind, m.rule);
            let order = ["event", "rule", "check", "correlation_id"];
            for k in order {
                if let Some(v) = fields.get(k).filter(|v| !v.is_empty()) {
                    s.push_str(&format!("{k}: {v}\n"));
                }
            }
            for (k, v) in &fields {
                if !order.contains(&k.as_str()) {
                    s.push_str(&format!("{k}: {v}\n"));
                }
            }
            s
        }
    };
    (subject, body)
}

/// SNS subject rules: printable ASCII, no line breaks, under 100 characters.
pub(crate) fn sanitize_subject(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c == '\n' || c == '\r' || c == '\t' {
                ' '
            } else if (' '..='~').contains(&c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    out = out.trim().to_string();
    if out.len() > MAX_SUBJECT {
        out.truncate(MAX_SUBJECT - 3);
        out.push_str("...");
    }
    if out.is_empty() {
        out = "mlopsd notification".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn notifier(subject: &str, format: MessageFormat) -> Notifier {
        Notifier {
            topic_arn: "arn:aws:sns:us-east-1:1:t".into(),
            repeat_interval: Duration::from_secs(1),
            subject: subject.into(),
            format,
        }
    }

    #[test]
    fn default_subject_and_text_body_carry_every_field() {
        let m = Message::new(Kind::CheckBreached, "retrain", Some("drift"), "c-1")
            .with("value", 0.3)
            .with("threshold", "> 0.1");
        let (s, b) = render(
            &notifier(crate::config::DEFAULT_SUBJECT, MessageFormat::Text),
            &m,
        );
        assert_eq!(s, "[mlops] retrain: check_breached");
        for needle in [
            "event: check_breached",
            "rule: retrain",
            "check: drift",
            "correlation_id: c-1",
            "value: 0.3",
            "threshold: > 0.1",
        ] {
            assert!(b.contains(needle), "{needle} in {b}");
        }
    }

    #[test]
    fn json_body() {
        let m = Message::new(Kind::RunStarted, "r", None, "c-2").with("arn", "arn:x");
        let (_, b) = render(&notifier("{{ event }}", MessageFormat::Json), &m);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["arn"], "arn:x");
        assert_eq!(v["correlation_id"], "c-2");
    }

    #[test]
    fn subject_is_ascii_single_line_and_short() {
        let m = Message::new(Kind::RunFailed, &"x".repeat(300), None, "c");
        let (s, _) = render(&notifier("Ümlaut\n{{ rule }}", MessageFormat::Text), &m);
        assert!(s.len() <= 100);
        assert!(s.is_ascii() && !s.contains('\n'));
        assert!(s.starts_with("?mlaut x"));
        assert!(s.ends_with("..."));
    }
}
