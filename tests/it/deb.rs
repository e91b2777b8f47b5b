//! The Debian package: built with cargo-deb, installed with `dpkg -i` on this machine (tests
//! and CI run as root), then `mlopsd validate` accepts the packaged config, the system user
//! exists, the config is a conffile, `systemd-analyze verify` accepts the unit, and the
//! package removes and purges cleanly. The test packages the debug binary it was built with;
//! `scripts/package` makes the release package.

use std::path::Path;
use std::process::Command;

use crate::support::{make_assets, run};

#[test]
fn deb_installs_validates_and_removes_cleanly() {
    let root = env!("CARGO_MANIFEST_DIR");
    // The binary cargo-deb packages is the one `cargo test` just built.
    assert!(Path::new(env!("CARGO_BIN_EXE_mlopsd")).exists());
    make_assets();
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("mlopsd.deb");
    let out = Command::new("cargo")
        .args(["deb", "--profile", "dev", "--no-build", "-o"])
        .arg(&deb)
        .current_dir(root)
        .output()
        .expect("run cargo deb");
    assert!(
        out.status.success(),
        "cargo deb failed (install it with `cargo install cargo-deb --locked`; .ci/run does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = deb.to_str().unwrap();
    let (code, info) = run("dpkg-deb", &["-I", deb]);
    assert_eq!(code, 0, "{info}");
    assert!(
        info.contains("Package: mlopsd") && info.contains("conffiles"),
        "{info}"
    );

    let (code, files) = run("dpkg-deb", &["-c", deb]);
    assert_eq!(code, 0, "{files}");
    for f in [
        "./usr/bin/mlopsd",
        "./lib/systemd/system/mlopsd.service",
        "./lib/systemd/system/mlopsd@.service",
        "./usr/share/bash-completion/completions/mlopsd",
        "./usr/share/zsh/vendor-completions/_mlopsd",
        "./usr/share/fish/vendor_completions.d/mlopsd.fish",
        "./usr/share/man/man1/mlopsd.1.gz",
        "./usr/share/doc/mlopsd/README.md",
    ] {
        assert!(files.contains(f), "{f} in the .deb:\n{files}");
    }

    let _ = run("dpkg", &["-P", "mlopsd"]);
    let (code, out) = run("dpkg", &["-i", deb]);
    assert_eq!(code, 0, "dpkg -i: {out}");
    let (code, out) = run(
        "/usr/bin/mlopsd",
        &["validate", "--config", "/etc/mlopsd/mlops.toml"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run("getent", &["passwd", "mlopsd"]);
    assert_eq!(code, 0, "the system user exists: {out}");
    let (_, conf) = run("dpkg-query", &["-W", "-f=${Conffiles}", "mlopsd"]);
    assert!(conf.contains("/etc/mlopsd/mlops.toml"), "{conf}");
    let (code, out) = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/mlopsd.service"],
    );
    assert_eq!(code, 0, "systemd-analyze verify: {out}");
    let (code, page) = run("zcat", &["/usr/share/man/man1/mlopsd.1.gz"]);
    assert_eq!(code, 0, "{page}");
    assert!(
        page.contains(".SH COMMANDS"),
        "the installed man page: {page}"
    );

    let (code, out) = run("dpkg", &["-r", "mlopsd"]);
    assert_eq!(code, 0, "{out}");
    assert!(!Path::new("/usr/bin/mlopsd").exists());
    assert!(
        Path::new("/etc/mlopsd/mlops.toml").exists(),
        "remove keeps the conffile"
    );
    let (code, out) = run("dpkg", &["-P", "mlopsd"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !Path::new("/etc/mlopsd").exists(),
        "purge removes the config"
    );
    assert_ne!(
        run("getent", &["passwd", "mlopsd"]).0,
        0,
        "purge removes the user"
    );
}
