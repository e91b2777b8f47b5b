//! The command line as a user runs it: validate, plan.

use crate::support as common;
use common::mlopsd;

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn reference_config_validates() {
    let (code, out, err) = mlopsd(&["validate", "--config", &repo("config/mlops.toml")]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("valid (1 checks, 4 rules, 1 gates"), "{out}");
}

#[test]
fn reference_config_is_specs() {
    // config/mlops.toml must hold SPEC's reference config verbatim.
    let spec_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/SPEC.md");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", spec_path.display()));
    let start = spec.find("```toml\n").expect("toml block") + "```toml\n".len();
    let block = &spec[start..start + spec[start..].find("```").expect("end of block")];
    let ours = std::fs::read_to_string(repo("config/mlops.toml")).expect("read config");
    assert_eq!(
        ours, block,
        "config/mlops.toml differs from SPEC.md's reference config"
    );
}

#[test]
fn invalid_config_exits_78_with_every_error_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[checks.c]\nschedule = \"61 * * * *\"\nnamespace = \"ns\"\nmetric = \"m\"\nabove = 1\nbelow = 2\n\n[rules.r]\non_check = \"nope\"\nnotify = [\"ops\"]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = mlopsd(&["validate", "--config", p]);
    assert_eq!(code, 78, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{p}:2:12: bad schedule in `schedule`: minutes field: 61 is out of range 0-59")
                .as_str(),
            format!("{p}:6:9: set either `above` or `below`, not both (use two checks for a band)")
                .as_str(),
            format!("{p}:9:12: unknown check \"nope\" (defined: c)").as_str(),
            format!("{p}:10:11: unknown notifier \"ops\" (no [notifiers.*] is defined)").as_str(),
            format!("{p}: 4 error(s)").as_str(),
        ]
    );
}

#[test]
fn missing_file_and_directory_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let (code, _, err) = mlopsd(&["validate", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(
        err.contains(":1:1: cannot read config: No such file or directory"),
        "{err}"
    );
    let (code, _, err) = mlopsd(&["validate", "--config", dir.path().to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(err.contains("it is a directory"), "{err}");
}

#[test]
fn plan_json_has_specs_shape_and_local_times() {
    let (code, out, err) = mlopsd(&[
        "plan",
        "--config",
        &repo("config/mlops.toml"),
        "--count",
        "2",
        "--from",
        "2026-03-07T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let s = v["schedules"].as_array().expect("schedules");
    assert_eq!(s.len(), 3);
    let by = |n: &str| s.iter().find(|x| x["name"] == n).expect(n).clone();
    let drift = by("feature-drift");
    assert_eq!(drift["kind"], "check");
    assert_eq!(drift["expression"], "cron(0 * * * ? *)");
    assert_eq!(drift["timezone"], "UTC");
    assert_eq!(
        drift["next"],
        serde_json::json!(["2026-03-07T01:00:00Z", "2026-03-07T02:00:00Z"])
    );
    let nightly = by("nightly-build");
    assert_eq!(nightly["kind"], "rule");
    assert_eq!(nightly["timezone"], "Asia/Tokyo");
    assert_eq!(
        nightly["next"],
        serde_json::json!(["2026-03-07T17:00:00Z", "2026-03-08T17:00:00Z"])
    );
    assert_eq!(nightly["next_local"][0], "2026-03-08T02:00:00+09:00");
    let gate = by("churn-approval");
    assert_eq!(gate["kind"], "gate");
    assert_eq!(
        gate["next"],
        serde_json::json!(["2026-03-07T00:05:00Z", "2026-03-07T00:10:00Z"])
    );
    let rules = v["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 4);
    let retrain = rules
        .iter()
        .find(|r| r["name"] == "retrain-on-drift")
        .unwrap();
    assert_eq!(retrain["trigger"]["on_check"], "feature-drift");
    assert_eq!(
        retrain["actions"][0]["parameters"]["InputData"],
        "s3://ml-bucket/retrain-data/"
    );
    assert_eq!(
        retrain["actions"][0]["parameters"]["AccuracyThreshold"],
        "0.85"
    );
    assert_eq!(retrain["cooldown"], "6h");
}

#[test]
fn plan_text_shows_utc_and_local_and_what_rules_do() {
    let (code, out, _) = mlopsd(&[
        "plan",
        "--config",
        &repo("config/mlops.toml"),
        "--count",
        "1",
        "--from",
        "2026-03-07T00:00:00Z",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2026-03-07T17:00:00Z   2026-03-08 02:00:00 JST"),
        "{out}"
    );
    assert!(out.contains("retrain-on-drift: when check feature-drift breaches (Average feature_baseline_drift_distance > 0.1) 2 consecutive evaluations: start pipeline churn-training"), "{out}");
}

#[test]
fn plan_lists_fewer_times_where_fewer_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[rules.past]\non_schedule = \"cron(0 0 1 1 ? 2020)\"\nnotify = [\"n\"]\n[rules.two]\non_schedule = \"cron(0 0 1 1 ? 2027-2028)\"\nnotify = [\"n\"]\n[notifiers.n]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n",
    )
    .unwrap();
    let (code, out, _) = mlopsd(&[
        "plan",
        "--config",
        path.to_str().unwrap(),
        "--count",
        "5",
        "--from",
        "2026-01-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let next = |n: &str| {
        v["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["next"]
            .clone()
    };
    assert_eq!(next("past"), serde_json::json!([]));
    assert_eq!(
        next("two"),
        serde_json::json!(["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"])
    );
}

/// A schedule's next fire is found however far ahead it is (SPEC: up to EventBridge's 2199):
/// the search gave up about 12 years ahead, so these listed nothing (or stopped early).
#[test]
fn plan_finds_fires_decades_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let rule = |name: &str, expr: &str| {
        format!("[rules.{name}]\non_schedule = \"{expr}\"\nnotify = [\"n\"]\n")
    };
    let text = [
        rule("y2038", "cron(0 0 2 1 ? 2038)"),
        rule("leap-sunday", "0 0 29 2 */7"),
        rule("fifth-thursday", "cron(0 0 ? 2 5#5 2026-2060)"),
    ]
    .concat()
        + "[notifiers.n]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n";
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = mlopsd(&[
        "plan",
        "--config",
        path.to_str().unwrap(),
        "--count",
        "3",
        "--from",
        "2026-01-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let next = |n: &str| {
        v["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["next"]
            .clone()
    };
    assert_eq!(next("y2038"), serde_json::json!(["2038-01-02T00:00:00Z"]));
    assert_eq!(
        next("leap-sunday"),
        serde_json::json!([
            "2032-02-29T00:00:00Z",
            "2060-02-29T00:00:00Z",
            "2088-02-29T00:00:00Z"
        ])
    );
    assert_eq!(
        next("fifth-thursday"),
        serde_json::json!(["2052-02-29T00:00:00Z"])
    );
}

#[test]
fn plan_prints_sub_second_instants_with_their_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[rules.fast]\non_schedule = \"every 1500ms\"\nnotify = [\"n\"]\n[notifiers.n]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n").unwrap();
    let from = "2026-01-01T00:00:00.250Z";
    let (code, out, err) = mlopsd(&[
        "plan",
        "--config",
        path.to_str().unwrap(),
        "--count",
        "3",
        "--from",
        from,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["schedules"][0]["next"],
        serde_json::json!([
            "2026-01-01T00:00:01.500Z",
            "2026-01-01T00:00:03Z",
            "2026-01-01T00:00:04.500Z"
        ])
    );
    let (code, out, _) = mlopsd(&[
        "plan",
        "--config",
        path.to_str().unwrap(),
        "--count",
        "2",
        "--from",
        from,
    ]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Next 2 fire times after 2026-01-01T00:00:00.250Z:"),
        "--from is echoed with its fraction: {out}"
    );
    assert!(
        out.contains("2026-01-01T00:00:01.500Z   2026-01-01 00:00:01.500 UTC"),
        "{out}"
    );
    assert!(
        out.contains("2026-01-01T00:00:03Z   2026-01-01 00:00:03 UTC"),
        "{out}"
    );
}

#[test]
fn plan_rejects_bad_from() {
    let (code, _, err) = mlopsd(&[
        "plan",
        "--config",
        &repo("config/mlops.toml"),
        "--from",
        "yesterday",
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("not an RFC 3339 time"), "{err}");
}

#[test]
fn env_references_expand_without_echoing_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[aws]\nendpoint_url = \"${MLOPSD_T_ENDPOINT}\"\n[notifiers.ops]\ntopic_arn = \"${MLOPSD_T_TOPIC}\"\n[rules.r]\non_schedule = \"every 1h\"\nnotify = [\"ops\"]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["validate", "--config", p])
        .env("MLOPSD_T_ENDPOINT", "http://127.0.0.1:4566")
        .env(
            "MLOPSD_T_TOPIC",
            "arn:aws:sns:us-east-1:123456789012:secret-topic-name",
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Unset: a located error that names the variable, not a value.
    let out = std::process::Command::new(common::bin())
        .args(["validate", "--config", p])
        .env_remove("MLOPSD_T_ENDPOINT")
        .env("MLOPSD_T_TOPIC", "not-an-arn-secret-value")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(err.contains(":2:16: `endpoint_url`: environment variable MLOPSD_T_ENDPOINT is not set (referenced as ${MLOPSD_T_ENDPOINT})"), "{err}");
    assert!(err.contains(":4:13: `topic_arn` must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), found a value from the environment (not shown)"), "{err}");
    assert!(!err.contains("secret-value"), "{err}");
}

/// The subcommands `mlopsd --help` lists (its "Commands:" section), but `help` itself.
fn subcommands() -> Vec<String> {
    let (code, out, err) = mlopsd(&["--help"]);
    assert_eq!(code, 0, "{err}");
    let cmds: Vec<String> = out
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line is indented two spaces; a wrapped description more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(cmds.len() >= 10, "{out}");
    cmds
}

#[test]
fn man_page_lists_every_subcommand_with_its_options() {
    let (code, page, err) = mlopsd(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.starts_with(".ie") || page.contains(".TH mlopsd 1"),
        "{page}"
    );
    // roff escapes hyphens; read it as a person would.
    let text = page.replace("\\-", "-");
    let commands = &text[text.find(".SH COMMANDS").expect("a COMMANDS section")..];
    for c in subcommands() {
        assert!(
            commands.contains(&format!("\\fBmlopsd {c}\\fR")),
            "`mlopsd {c}` missing from the man page:\n{commands}"
        );
    }
    for needle in [
        "--config <CONFIG>",
        "[default: /etc/mlopsd/mlops.toml]",
        "--report-bucket",
        "/etc/mlopsd/mlops.toml",
        "EXIT STATUS",
        ".SH SIGNALS",
    ] {
        assert!(text.contains(needle), "{needle} in the man page");
    }
    // groff renders the page without a warning (.ci/run installs groff-base where missing).
    let mut child = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("groff (Debian's groff-base) renders man pages; install it");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
}

/// Runs the completion function as bash would for `line` (the word being completed last).
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let list = words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let cmd = format!(
        "source '{}' && COMP_WORDS=({list}) && COMP_CWORD={cword} && _mlopsd mlopsd '{}' '{prev}' && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words[cword],
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &cmd])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    let (code, script, err) = mlopsd(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlopsd.bash");
    std::fs::write(&path, &script).unwrap();
    assert_eq!(bash_complete(&path, &["mlopsd", "d"]), ["diff", "doctor"]);
    let all = bash_complete(&path, &["mlopsd", ""]);
    for c in subcommands() {
        assert!(all.contains(&c), "{c} in {all:?}");
    }
    assert_eq!(
        bash_complete(&path, &["mlopsd", "doctor", "--c"]),
        ["--config"]
    );
    assert_eq!(
        bash_complete(&path, &["mlopsd", "completions", "f"]),
        ["fish"]
    );
    for shell in ["zsh", "fish"] {
        let (code, s, err) = mlopsd(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(
            s.contains("iam-policy") && s.contains("doctor"),
            "{shell}: {s}"
        );
    }
    let (code, _, err) = mlopsd(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error");
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}
