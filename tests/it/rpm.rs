//! The RPM (Amazon Linux 2023, RHEL, Fedora): built with cargo-generate-rpm from the binary the
//! tests were built with, inspected with `rpm -qp` (files, config flags, scriptlets, requires),
//! installed into a scratch root without scriptlets, then into this machine's / with them:
//! the system user is made, the packaged config validates, an upgrade keeps an edited config,
//! and erasing removes the files and the user and keeps the edited config as .rpmsave.
//! (`rpm` is Debian's package of it; .ci/run installs it.)

use std::path::Path;
use std::process::Command;

use crate::support::{make_assets, run};

/// Builds the package with `release`, uncompressed (the debug binary is large; zstd would
/// take a minute and test nothing of ours).
fn build(dir: &Path, release: &str) -> String {
    let rpm = dir.join(format!("mlopsd-{release}.rpm"));
    let out = Command::new("cargo")
        .args([
            "generate-rpm",
            "--profile",
            "dev",
            "--payload-compress",
            "none",
            "-s",
            &format!("release = \"{release}\""),
            "-o",
        ])
        .arg(&rpm)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo generate-rpm");
    assert!(
        out.status.success(),
        "cargo generate-rpm failed (install it with `cargo install cargo-generate-rpm --locked`; .ci/run does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rpm.to_str().unwrap().to_string()
}

const FILES: [&str; 11] = [
    "/etc/mlopsd/mlops.toml",
    "/usr/bin/mlopsd",
    "/usr/lib/systemd/system/mlopsd.service",
    "/usr/lib/systemd/system/mlopsd@.service",
    "/usr/share/bash-completion/completions/mlopsd",
    "/usr/share/doc/mlopsd/README.md",
    "/usr/share/doc/mlopsd/RELIABILITY.md",
    "/usr/share/fish/vendor_completions.d/mlopsd.fish",
    "/usr/share/licenses/mlopsd/LICENSE",
    "/usr/share/man/man1/mlopsd.1.gz",
    "/usr/share/zsh/site-functions/_mlopsd",
];

#[test]
fn rpm_carries_the_debs_files_and_scriptlets() {
    make_assets();
    let dir = tempfile::tempdir().unwrap();
    let rpm = build(dir.path(), "1");

    let (code, info) = run("rpm", &["-qpi", &rpm]);
    assert_eq!(code, 0, "{info}");
    assert!(info.contains("Name        : mlopsd"), "{info}");
    assert!(info.contains("Release     : 1"), "{info}");
    let (code, list) = run("rpm", &["-qpl", &rpm]);
    assert_eq!(code, 0, "{list}");
    let listed: Vec<&str> = list.lines().collect();
    assert_eq!(listed, FILES, "rpm -qpl");
    // The config is %config(noreplace): an edited file survives upgrades.
    let (_, flags) = run(
        "rpm",
        &["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", &rpm],
    );
    assert!(flags.contains("/etc/mlopsd/mlops.toml cn"), "{flags}");
    assert!(
        flags.contains("/usr/share/man/man1/mlopsd.1.gz d"),
        "{flags}"
    );
    let (_, modes) = run(
        "rpm",
        &["-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", &rpm],
    );
    assert!(modes.contains("-rwxr-xr-x /usr/bin/mlopsd"), "{modes}");
    let (code, scripts) = run("rpm", &["-qp", "--scripts", &rpm]);
    assert_eq!(code, 0, "{scripts}");
    for needle in [
        "preinstall scriptlet",
        "useradd --system",
        "postinstall scriptlet",
        "systemctl daemon-reload",
        "preuninstall scriptlet",
        "systemctl stop mlopsd.service",
        "postuninstall scriptlet",
        "userdel mlopsd",
    ] {
        assert!(
            scripts.contains(needle),
            "{needle} in the scriptlets:\n{scripts}"
        );
    }
    let (_, requires) = run("rpm", &["-qpR", &rpm]);
    assert!(requires.contains("shadow-utils"), "{requires}");

    // A scratch root: the files land where the list says (scriptlets need a shell in the root,
    // which a scratch root has not).
    let root = dir.path().join("root");
    let root_s = root.to_str().unwrap();
    let (code, out) = run("rpm", &["--root", root_s, "--initdb"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        "rpm",
        &[
            "--root",
            root_s,
            "-i",
            "--nodeps",
            "--noscripts",
            "--nosignature",
            &rpm,
        ],
    );
    assert_eq!(code, 0, "rpm -i into a scratch root: {out}");
    for f in FILES {
        assert!(root.join(&f[1..]).is_file(), "{f} installed under {root_s}");
    }
    let (code, out) = run(
        &format!("{root_s}/usr/bin/mlopsd"),
        &[
            "validate",
            "--config",
            &format!("{root_s}/etc/mlopsd/mlops.toml"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        "systemd-analyze",
        &[
            "verify",
            &format!("{root_s}/usr/lib/systemd/system/mlopsd.service"),
        ],
    );
    // verify reads ExecStart=/usr/bin/mlopsd of the host; the deb test removed it, so only
    // the unit's syntax is judged here: no "Unknown key" or "Invalid" lines.
    assert!(
        !out.contains("Unknown") && !out.contains("nvalid"),
        "systemd-analyze verify ({code}): {out}"
    );
}

#[test]
fn rpm_installs_upgrades_and_erases_with_its_scriptlets() {
    make_assets();
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (build(dir.path(), "1"), build(dir.path(), "2"));
    let _ = run("rpm", &["-e", "--nodeps", "mlopsd"]);
    let _ = std::fs::remove_dir_all("/etc/mlopsd");
    // --nodeps: this Debian machine's libraries are not in the rpm database.
    let (code, out) = run("rpm", &["-i", "--nodeps", "--nosignature", &v1]);
    assert_eq!(code, 0, "rpm -i: {out}");
    let (code, out) = run("getent", &["passwd", "mlopsd"]);
    assert_eq!(
        code, 0,
        "the preinstall scriptlet made the system user: {out}"
    );
    assert!(out.contains(":/var/lib/mlopsd:"), "{out}");
    let (code, out) = run(
        "/usr/bin/mlopsd",
        &["validate", "--config", "/etc/mlopsd/mlops.toml"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/mlopsd && complete -p mlopsd",
        ],
    );
    assert_eq!(code, 0, "{out}");

    // An operator's edit survives an upgrade (noreplace).
    let edited = std::fs::read_to_string("/etc/mlopsd/mlops.toml").unwrap() + "\n# edited by ops\n";
    std::fs::write("/etc/mlopsd/mlops.toml", &edited).unwrap();
    let (code, out) = run("rpm", &["-U", "--nodeps", "--nosignature", &v2]);
    assert_eq!(code, 0, "rpm -U: {out}");
    let (_, q) = run("rpm", &["-q", "mlopsd"]);
    assert!(q.trim().starts_with("mlopsd-0.1.0-2"), "{q}");
    assert_eq!(
        std::fs::read_to_string("/etc/mlopsd/mlops.toml").unwrap(),
        edited
    );
    assert_eq!(
        run("getent", &["passwd", "mlopsd"]).0,
        0,
        "an upgrade keeps the user"
    );
    assert!(
        Path::new("/usr/bin/mlopsd").exists(),
        "an upgrade keeps the binary"
    );

    let (code, out) = run("rpm", &["-e", "mlopsd"]);
    assert_eq!(code, 0, "rpm -e: {out}");
    assert!(!Path::new("/usr/bin/mlopsd").exists());
    assert!(!Path::new("/usr/lib/systemd/system/mlopsd.service").exists());
    assert_ne!(
        run("getent", &["passwd", "mlopsd"]).0,
        0,
        "erase removes the user"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/mlopsd/mlops.toml.rpmsave").unwrap_or_default(),
        edited,
        "erase keeps the edited config as .rpmsave"
    );
    let _ = std::fs::remove_dir_all("/etc/mlopsd");
}
