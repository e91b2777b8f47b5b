//! `mlopsd man`: the man page mlopsd(1), rendered from the clap definition so that it never
//! disagrees with `--help`. clap_mangen writes the title, name, synopsis and description;
//! the COMMANDS section (each subcommand with its arguments, on one page rather than one page
//! per subcommand) and the daemon's files, signals and exit codes are added here with the
//! roff builder clap_mangen re-exports.

use std::io::Write;

use clap_mangen::roff::{bold, italic, roman, Roff};

/// Writes mlopsd(1) to stdout; the exit code.
pub fn man(cmd: clap::Command) -> u8 {
    let mut out = Vec::new();
    if let Err(e) = render(cmd, &mut out) {
        eprintln!("mlopsd man: {e}");
        return crate::exit::IOERR;
    }
    match std::io::stdout().write_all(&out) {
        Ok(()) => crate::exit::OK,
        Err(e) => {
            eprintln!("mlopsd man: {e}");
            crate::exit::IOERR
        }
    }
}

/// The page as roff.
pub(super) fn render(cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone()).manual("mlopsd manual");
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]).text([roman(
        "mlopsd watches CloudWatch metrics and alarms, SageMaker Model Monitor schedules, drift reports \
         in S3 and the SageMaker model registry; it starts SageMaker Pipeline executions and CodeBuild \
         builds, follows them to the end, approves or rejects model packages, deploys approved models to \
         their endpoints, and notifies through SNS, all as declared in one TOML file. It runs as the \
         systemd service mlopsd; edits to the file are reloaded on save.",
    )]);
    r.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(&mut r, sub);
    }
    section(
        &mut r,
        "FILES",
        &[
            (
                "/etc/mlopsd/mlops.toml",
                "The configuration (a config file the packages keep on upgrade).",
            ),
            (
                "/var/lib/mlopsd",
                "The state store (daemon.state_dir): decisions, runs, the notification outbox.",
            ),
            (
                "/usr/share/doc/mlopsd",
                "README.md (every key and behaviour) and RELIABILITY.md.",
            ),
        ],
    );
    section(
        &mut r,
        "SIGNALS",
        &[
            (
                "SIGTERM, SIGINT",
                "Stop: calls in flight finish within daemon.shutdown_grace, state is flushed, exit 0.",
            ),
            (
                "SIGHUP",
                "Reload the configuration now (systemctl reload mlopsd); a bad file keeps the running one.",
            ),
        ],
    );
    section(
        &mut r,
        "EXIT STATUS",
        &[
            (
                "0",
                "Success (check: not breaching; diff: in sync; doctor: all ok).",
            ),
            (
                "1",
                "check: breaching; diff: something differs; doctor: some problem.",
            ),
            ("2", "AWS could not be read or reached."),
            ("64", "Usage error."),
            (
                "78",
                "The configuration is invalid (every error is printed with its location).",
            ),
        ],
    );
    r.control("SH", ["SEE ALSO"]).text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1); the README at /usr/share/doc/mlopsd/README.md."),
    ]);
    out.extend(r.render().into_bytes());
    page.render_version_section(out)
}

/// A section of tagged paragraphs: each term in bold, then what it is.
fn section(r: &mut Roff, title: &str, items: &[(&str, &str)]) {
    r.control("SH", [title]);
    for (term, what) in items {
        r.control("TP", []).text([bold(*term)]).text([roman(*what)]);
    }
}

/// One subcommand: `mlopsd NAME [ARGS]`, what it does, then each argument.
fn command(r: &mut Roff, sub: &clap::Command) {
    let mut usage = vec![bold(format!("mlopsd {}", sub.get_name()))];
    for a in sub.get_arguments().filter(|a| !is_help(a)) {
        usage.push(roman(" "));
        if a.is_positional() {
            usage.push(italic(value_name(a)));
        } else {
            usage.push(roman(format!("[{}]", flag(a))));
        }
    }
    r.control("TP", []).text(usage);
    let about = sub
        .get_long_about()
        .or(sub.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    r.text([roman(about)]);
    for a in sub.get_arguments().filter(|a| !is_help(a)) {
        r.control("RS", []).control("TP", []);
        let head = if a.is_positional() {
            italic(value_name(a))
        } else {
            bold(flag(a))
        };
        r.text([head]);
        let mut help = a.get_help().map(|s| s.to_string()).unwrap_or_default();
        if a.get_action().takes_values() {
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() {
                help = format!("{help} [default: {}]", defaults.join(", "));
            }
            let values: Vec<String> = a
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                help = format!("{help} One of: {}.", values.join(", "));
            }
        }
        r.text([roman(help.trim())]).control("RE", []);
    }
}

fn is_help(a: &clap::Arg) -> bool {
    matches!(a.get_id().as_str(), "help" | "version")
}

fn value_name(a: &clap::Arg) -> String {
    a.get_value_names()
        .and_then(|v| v.first())
        .map(|s| s.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
}

/// `--config <CONFIG>`, or `--json` for a switch.
fn flag(a: &clap::Arg) -> String {
    let name = a
        .get_long()
        .map(|l| format!("--{l}"))
        .or_else(|| a.get_short().map(|s| format!("-{s}")))
        .unwrap_or_else(|| a.get_id().to_string());
    if a.get_action().takes_values() {
        format!("{name} <{}>", value_name(a))
    } else {
        name
    }
}
