//! The shipped unit file: Type=notify, validate before start and reload, watchdog, state
//! directory, hardening; and systemd's own offline security assessment rates it "OK" or better.

use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/mlopsd.service"
    ))
    .expect("read unit")
}

#[test]
fn unit_has_the_contracted_directives() {
    let u = unit();
    let lines: Vec<&str> = u.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "ExecStartPre=/usr/bin/mlopsd validate --config /etc/mlopsd/mlops.toml",
        "ExecStart=/usr/bin/mlopsd run --config /etc/mlopsd/mlops.toml",
        "ExecReload=/usr/bin/mlopsd validate --config /etc/mlopsd/mlops.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=mlopsd",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(
            lines.contains(&want),
            "missing `{want}` in systemd/mlopsd.service"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("WatchdogSec=")),
        "WatchdogSec"
    );
    // The stop timeout leaves room for the default shutdown_grace (30s).
    let stop = lines
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    assert!(stop.trim_end_matches('s').parse::<u32>().unwrap() > 30);
}

#[test]
fn offline_security_assessment_is_ok_or_better() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/mlopsd.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", path])
        .output()
        .expect(
            "systemd-analyze is needed for this test (Debian package systemd; .ci/run installs it)",
        );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no verdict in: {text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("score");
    println!("systemd-analyze security: {line}");
    assert!(score <= 4.0, "exposure {score} is worse than OK: {line}");
    assert!(line.contains("OK") || line.contains("SAFE"), "{line}");
}

/// The template for several replicas on one host (`mlopsd@9464`, `mlopsd@9465`): the same
/// config file, its own port, replica id and local state; as hardened as the main unit.
#[test]
fn replica_template_differs_only_in_port_state_and_id() {
    let t = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/mlopsd@.service"
    ))
    .expect("read template");
    let lines: Vec<&str> = t.lines().map(str::trim).collect();
    for want in [
        "ExecStart=/usr/bin/mlopsd run --config /etc/mlopsd/mlops.toml --listen 127.0.0.1:%i --state-dir /var/lib/mlopsd/replica-%i",
        "Environment=MLOPSD_REPLICA_ID=%H-%i",
        "StateDirectory=mlopsd/replica-%i",
    ] {
        assert!(lines.contains(&want), "missing `{want}` in systemd/mlopsd@.service");
    }
    let main = unit();
    let directives = |u: &str| -> Vec<String> {
        u.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter(|l| {
                !l.starts_with("Description=")
                    && !l.starts_with("ExecStart=")
                    && !l.starts_with("StateDirectory=")
                    && !l.starts_with("Environment=MLOPSD_REPLICA_ID")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        directives(&t),
        directives(&main),
        "the rest is the main unit's"
    );
}
