//! EventBridge events as they arrive on the `[events]` SQS queue: the envelope (`id`,
//! `source`, `detail-type`, `time`, `resources`, `detail`) read from a message body, and what
//! kind of hint it is for the loop. Pure: no I/O, no clock.

use serde_json::Value;

use crate::config::{EventPattern, Matcher};

/// One EventBridge event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    pub id: String,
    pub source: String,
    pub detail_type: String,
    pub time: Option<String>,
    pub resources: Vec<String>,
    pub detail: Value,
    /// The whole event, for `on_event` patterns and templates (`event.detail.…`).
    pub raw: Value,
}

/// A message as received: its SQS ids and the event in its body (or why there is none).
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub message_id: String,
    pub receipt: String,
    pub event: Result<Envelope, String>,
}

/// Reads a message body as an EventBridge event; the error says why it is not one (never
/// quoting the body, which may hold anything).
pub(crate) fn parse(body: &str) -> Result<Envelope, String> {
    let raw: Value = serde_json::from_str(body).map_err(|e| {
        format!(
            "the body is not JSON ({} at line {} column {})",
            kind(&e),
            e.line(),
            e.column()
        )
    })?;
    let obj = raw
        .as_object()
        .ok_or("the body is JSON but not an object")?;
    let text = |k: &str| -> Result<String, String> {
        match obj.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(format!("`{k}` is not a non-empty string")),
            None => Err(format!("`{k}` is missing: not an EventBridge event")),
        }
    };
    let id = text("id")?;
    let source = text("source")?;
    let detail_type = text("detail-type")?;
    let detail = match obj.get("detail") {
        Some(d @ Value::Object(_)) => d.clone(),
        Some(_) => return Err("`detail` is not an object".into()),
        None => return Err("`detail` is missing: not an EventBridge event".into()),
    };
    let time = obj.get("time").and_then(Value::as_str).map(str::to_string);
    let resources = obj
        .get("resources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Envelope {
        id,
        source,
        detail_type,
        time,
        resources,
        detail,
        raw,
    })
}

fn kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "cut short",
    }
}

/// What an AWS event asks the loop to look at now. The event is only a hint: what is decided
/// rests on AWS's own answer to the read that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hint {
    /// `aws.cloudwatch` / `CloudWatch Alarm State Change`: evaluate the checks on this alarm.
    Alarm(String),
    /// `aws.sagemaker` pipeline execution status change: describe this followed execution.
    PipelineRun(String),
    /// `aws.codebuild` build state change: read this followed build (its id, `project:uuid`).
    Build(String),
    /// `aws.sagemaker` model package state change: run the gates on this group, and read what
    /// its endpoint blocks want.
    Packages(String),
    /// `aws.sagemaker` endpoint (deployment) state change: describe this endpoint now.
    Endpoint(String),
    /// `aws.s3` / `Object Created`: evaluate the report checks whose prefix holds the key.
    Object { bucket: String, key: String },
    /// Any other event (only `on_event` rules may care).
    None,
}

pub(crate) fn hint(e: &Envelope) -> Hint {
    let s = |k: &str| e.detail.get(k).and_then(Value::as_str).map(str::to_string);
    match (e.source.as_str(), e.detail_type.as_str()) {
        ("aws.cloudwatch", "CloudWatch Alarm State Change") => s("alarmName").map(Hint::Alarm),
        ("aws.sagemaker", "SageMaker Model Building Pipeline Execution Status Change") => {
            s("pipelineExecutionArn").map(Hint::PipelineRun)
        }
        ("aws.codebuild", "CodeBuild Build State Change") => {
            s("build-id").map(|id| Hint::Build(build_id(&id)))
        }
        ("aws.sagemaker", "SageMaker Model Package State Change") => {
            s("ModelPackageGroupName").map(Hint::Packages)
        }
        (
            "aws.sagemaker",
            "SageMaker Endpoint State Change" | "SageMaker Endpoint Deployment State Change",
        ) => s("EndpointName").map(Hint::Endpoint),
        ("aws.s3", "Object Created") => {
            let at = |a: &str, b: &str| {
                e.detail
                    .get(a)
                    .and_then(|x| x.get(b))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            at("bucket", "name")
                .zip(at("object", "key"))
                .map(|(bucket, key)| Hint::Object { bucket, key })
        }
        _ => None,
    }
    .unwrap_or(Hint::None)
}

/// A build's id as `StartBuild` returns it (`project:uuid`), from the ARN an event carries.
pub(crate) fn build_id(id_or_arn: &str) -> String {
    match id_or_arn.split_once(":build/") {
        Some((_, id)) => id.to_string(),
        None => id_or_arn.to_string(),
    }
}

/// The value at a dotted path into the event (`detail.object.key`; an array index is a number).
pub(crate) fn lookup<'a>(raw: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(raw, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Whether an `on_event` rule's pattern matches: every given field must.
pub(crate) fn matches(p: &EventPattern, e: &Envelope) -> bool {
    p.source.as_ref().is_none_or(|s| *s == e.source)
        && p.detail_type.as_ref().is_none_or(|d| *d == e.detail_type)
        && p.matches.iter().all(|(path, m)| {
            let Some(v) = lookup(&e.raw, path) else {
                return false;
            };
            match m {
                Matcher::Equals(x) => same(v, x),
                Matcher::Prefix(x) => v.as_str().is_some_and(|s| s.starts_with(x.as_str())),
                Matcher::AnyOf(xs) => xs.iter().any(|x| same(v, x)),
            }
        })
}

/// Renders a template over `ctx` (strict: a name it lacks is an error); `on` says what for
/// the message.
pub(crate) fn render_in(template: &str, ctx: minijinja::Value, on: &str) -> Result<String, String> {
    if !template.contains("{{") && !template.contains("{%") {
        return Ok(template.to_string());
    }
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let t = env
        .template_from_str(template)
        .map_err(|x| format!("template {template:?} does not parse: {x}"))?;
    t.render(ctx)
        .map_err(|x| format!("template {template:?} failed on {on}: {x}"))
}

/// Equal as JSON values, numbers by value (`1` matches `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Renders a parameter value over the event. Strict: a field the event does not have is an
/// error (not ""), and so is a value that renders empty.
pub(crate) fn render(template: &str, e: &Envelope) -> Result<String, String> {
    if !template.contains("{{") && !template.contains("{%") {
        return Ok(template.to_string());
    }
    let ctx = minijinja::context! { event => minijinja::Value::from_serialize(&e.raw) };
    let out = render_in(template, ctx, &format!("event {}", e.id))?;
    if out.trim().is_empty() {
        return Err(format!(
            "template {template:?} rendered empty on event {}",
            e.id
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: &str, dt: &str, detail: &str) -> String {
        format!(
            r#"{{"version":"0","id":"e-1","source":"{source}","detail-type":"{dt}","account":"1","time":"2026-12-01T00:00:00Z","region":"us-east-1","resources":["arn:x"],"detail":{detail}}}"#
        )
    }

    #[test]
    fn the_four_aws_kinds_and_others() {
        let h = |b: String| hint(&parse(&b).unwrap());
        assert_eq!(
            h(ev(
                "aws.cloudwatch",
                "CloudWatch Alarm State Change",
                r#"{"alarmName":"a5xx","state":{"value":"ALARM"}}"#
            )),
            Hint::Alarm("a5xx".into())
        );
        assert_eq!(
            h(ev(
                "aws.sagemaker",
                "SageMaker Model Building Pipeline Execution Status Change",
                r#"{"pipelineExecutionArn":"arn:p/e","currentPipelineExecutionStatus":"Succeeded"}"#
            )),
            Hint::PipelineRun("arn:p/e".into())
        );
        assert_eq!(
            h(ev(
                "aws.codebuild",
                "CodeBuild Build State Change",
                r#"{"build-id":"arn:aws:codebuild:us-east-1:1:build/proj:0a1b","build-status":"SUCCEEDED"}"#
            )),
            Hint::Build("proj:0a1b".into())
        );
        assert_eq!(
            h(ev(
                "aws.sagemaker",
                "SageMaker Model Package State Change",
                r#"{"ModelPackageGroupName":"g"}"#
            )),
            Hint::Packages("g".into())
        );
        assert_eq!(
            h(ev("aws.s3", "Object Created", r#"{"bucket":{"name":"b"}}"#)),
            Hint::None
        );
        assert_eq!(
            h(ev(
                "aws.cloudwatch",
                "CloudWatch Alarm State Change",
                r#"{}"#
            )),
            Hint::None,
            "no alarm name: nothing to wake"
        );
        let e = parse(&ev(
            "aws.s3",
            "Object Created",
            r#"{"bucket":{"name":"b"}}"#,
        ))
        .unwrap();
        assert_eq!(
            (e.id.as_str(), e.resources.len(), e.time.as_deref()),
            ("e-1", 1, Some("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_body_that_is_not_an_event_says_why_without_quoting_it() {
        let secret = "hunter2-secret";
        let e = parse(&format!("not json {secret}")).unwrap_err();
        assert!(e.contains("not JSON") && !e.contains(secret), "{e}");
        assert!(parse("[1,2]").unwrap_err().contains("not an object"));
        assert!(parse(r#"{"id":"x","source":"s","detail-type":"d"}"#)
            .unwrap_err()
            .contains("`detail` is missing"));
        assert!(
            parse(r#"{"id":"","source":"s","detail-type":"d","detail":{}}"#)
                .unwrap_err()
                .contains("`id` is not a non-empty string")
        );
        assert!(parse(r#"{"source":"s","detail-type":"d","detail":{}}"#)
            .unwrap_err()
            .contains("`id` is missing"));
        assert!(
            parse(r#"{"id":"x","source":"s","detail-type":"d","detail":3}"#)
                .unwrap_err()
                .contains("not an object")
        );
    }

    fn s3(key: &str) -> Envelope {
        parse(&ev(
            "aws.s3",
            "Object Created",
            &format!(r#"{{"bucket":{{"name":"ml-bucket"}},"object":{{"key":"{key}","size":7}}}}"#),
        ))
        .unwrap()
    }

    #[test]
    fn patterns_match_every_given_field() {
        use serde_json::json;
        let p = |matches: Vec<(&str, Matcher)>| EventPattern {
            source: Some("aws.s3".into()),
            detail_type: Some("Object Created".into()),
            matches: matches
                .into_iter()
                .map(|(k, m)| (k.to_string(), m))
                .collect(),
        };
        let e = s3("input-data/2026/x.csv");
        assert!(matches(
            &p(vec![
                ("detail.bucket.name", Matcher::Equals(json!("ml-bucket"))),
                ("detail.object.key", Matcher::Prefix("input-data/".into()))
            ]),
            &e
        ));
        assert!(!matches(
            &p(vec![(
                "detail.object.key",
                Matcher::Prefix("other/".into())
            )]),
            &e
        ));
        assert!(
            matches(
                &p(vec![("detail.object.size", Matcher::Equals(json!(7.0)))]),
                &e
            ),
            "numbers by value"
        );
        assert!(matches(
            &p(vec![(
                "detail.bucket.name",
                Matcher::AnyOf(vec![json!("a"), json!("ml-bucket")])
            )]),
            &e
        ));
        assert!(
            !matches(&p(vec![("detail.nope", Matcher::Equals(json!("x")))]), &e),
            "a missing path does not match"
        );
        let mut q = p(vec![]);
        q.source = Some("aws.codebuild".into());
        assert!(!matches(&q, &e));
    }

    #[test]
    fn templates_render_strictly_over_the_event() {
        let e = s3("input-data/x.csv");
        assert_eq!(
            render(
                "s3://{{ event.detail.bucket.name }}/{{ event.detail.object.key }}",
                &e
            )
            .unwrap(),
            "s3://ml-bucket/input-data/x.csv"
        );
        assert_eq!(render("plain", &e).unwrap(), "plain");
        assert!(
            render("{{ event.detail.missing }}", &e)
                .unwrap_err()
                .contains("failed on event e-1"),
            "a missing field is an error, not \"\""
        );
        assert!(render(
            "{{ event.detail.bucket.name | replace('ml-bucket', '') }}",
            &e
        )
        .unwrap_err()
        .contains("rendered empty"));
    }
}
