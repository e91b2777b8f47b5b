//! `format = "chat"` end to end: a drift incident (breach → run started → run succeeded →
//! cooldown → recovery) published by the daemon to SNS on moto, read back through the SQS
//! subscription, each message held to the custom-notification schema with Python's
//! jsonschema (tests/schemas/chat_notification.schema.json), and the incident one thread.

use crate::support as common;

use std::time::Duration;

use common::aws::{Note, TestAws};
use common::{venv_bin, Running};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

/// Every message against the schema, by Python's jsonschema (Draft 2020-12): the errors, one
/// line each, or nothing.
fn schema_errors(bodies: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bodies.json");
    std::fs::write(&file, serde_json::to_string(bodies).unwrap()).unwrap();
    let schema = format!(
        "{}/tests/schemas/chat_notification.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for i, body in enumerate(json.load(open(sys.argv[2]))):
    for e in v.iter_errors(json.loads(body)):
        print(f"message {i}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
"#;
    let out = std::process::Command::new(venv_bin("python"))
        .args(["-c", script, &schema])
        .arg(&file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "jsonschema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn chat(n: &Note) -> Value {
    serde_json::from_str(&n.body).unwrap_or_else(|e| panic!("{e}: {}", n.body))
}

#[test]
fn a_drift_incident_is_one_chat_thread_of_valid_custom_notifications() {
    let mut aws = TestAws::new("chat");
    let pipeline = aws.create_pipeline("train");
    let topic = aws.create_topic("chat");
    let ns = format!("{}/drift", aws.prefix);
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon_head(&dir.path().join("state"), &aws.endpoint)
        + &format!(
            r#"[notifiers.slack]
topic_arn = "{topic}"
format = "chat"
repeat_interval = "0s"

[pipelines.train]
pipeline_name = "{pipeline}"
max_concurrent = 1

[checks.drift]
schedule = "every 1s"
namespace = "{ns}"
metric = "distance"
dimensions = {{ Endpoint = "{ns}" }}
statistic = "Minimum"
period = "1m"
above = 0.1

[rules.retrain]
on_check = "drift"
start_pipeline = "train"
cooldown = "1h"
notify = ["slack"]
"#
        );
    aws.put_metric(&ns, "distance", &[("Endpoint", ns.as_str())], 0.3);
    let r = Running::start(dir.path(), &text, common::aws_env());
    r.wait_event("run_succeeded", 1, T);
    r.wait_event("rule_suppressed", 1, T);
    aws.put_metric(&ns, "distance", &[("Endpoint", ns.as_str())], 0.01);
    r.wait_event("check_recovered", 1, T);
    let kinds = [
        "check_breached",
        "run_started",
        "run_succeeded",
        "rule_suppressed",
        "check_recovered",
    ];
    let notes = aws.notes_until(T, |n| {
        kinds.iter().all(|k| n.iter().any(|x| x.event() == *k))
    });
    let bodies: Vec<&str> = notes.iter().map(|n| n.body.as_str()).collect();
    assert_eq!(
        schema_errors(&bodies),
        "",
        "every message is a valid custom notification"
    );

    let of = |k: &str| {
        chat(
            notes
                .iter()
                .find(|n| n.event() == k)
                .unwrap_or_else(|| panic!("{k}")),
        )
    };
    let corr = notes[0].attrs["correlation_id"].clone();
    for k in kinds {
        let v = of(k);
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["source"], "custom");
        assert_eq!(v["metadata"]["eventType"], k);
        // One incident, one thread.
        assert_eq!(v["metadata"]["threadId"], corr.as_str(), "{k}: {v}");
    }
    let breach = of("check_breached");
    assert_eq!(
        breach["content"]["title"],
        ":rotating_light: drift breached: 0.3 (threshold > 0.1)"
    );
    assert!(breach["content"]["description"]
        .as_str()
        .unwrap()
        .contains("it read *0.3* against the threshold *> 0.1*"));
    let started = r.events("run_started")[0].clone();
    let arn = started["arn"].as_str().unwrap();
    let ok = of("run_succeeded");
    assert_eq!(ok["metadata"]["relatedResources"][0], arn);
    assert_eq!(ok["metadata"]["additionalContext"]["arn"], arn);
    assert!(ok["content"]["title"]
        .as_str()
        .unwrap()
        .ends_with("succeeded"));
    assert!(ok["content"]["nextSteps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s.as_str().unwrap().contains(arn)));
    assert!(ok["content"]["description"]
        .as_str()
        .unwrap()
        .contains("• duration: "));
    let held = of("rule_suppressed");
    assert!(held["content"]["description"]
        .as_str()
        .unwrap()
        .contains("in cooldown until"));
    assert_eq!(
        of("check_recovered")["content"]["title"],
        ":white_check_mark: drift recovered: 0.01 (threshold > 0.1)"
    );
    // SNS's side is unchanged: the subject and the attributes a subscription filters on.
    for n in &notes {
        assert!(n.subject.len() <= 100);
        assert_eq!(n.attrs["rule"], "retrain");
    }
}
