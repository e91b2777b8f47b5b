//! The commands behind `mlopsd`'s subcommands: each takes what the command line gave and
//! returns the process's exit code (`exit`). `main.rs` only parses and dispatches.

mod check;
mod diff;
mod doctor;
mod man;
mod plan;
pub mod status;

pub use man::man;

use std::future::Future;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::exit;

/// The config at `path`, or every error printed and `exit::CONFIG`.
fn load(path: &Path) -> Result<Config, u8> {
    config::load(path).map_err(|e| {
        eprintln!("{e}");
        exit::CONFIG
    })
}

/// Runs `f` on a single-threaded runtime (the one-shot commands that read AWS once).
fn block_on(f: impl Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            exit::NO_ANSWER
        }
    }
}

/// `mlopsd validate`: 0 when valid; otherwise every error as `PATH:LINE:COL: message`, 78.
pub fn validate(path: &Path) -> u8 {
    match config::load(path) {
        Ok(c) => {
            println!(
                "{}: valid ({} checks, {} rules, {} gates, {} pipelines, {} builds, {} notifiers{})",
                path.display(),
                c.checks.len(),
                c.rules.len(),
                c.gates.len(),
                c.pipelines.len(),
                c.builds.len(),
                c.notifiers.len(),
                match c.endpoints.len() {
                    0 => String::new(),
                    n => format!(", {n} endpoints"),
                }
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: {} error(s)", path.display(), e.errors.len());
            exit::CONFIG
        }
    }
}

/// `mlopsd plan`: no AWS calls.
pub fn plan(path: &Path, count: usize, from: Option<&str>, json: bool) -> u8 {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let from = match from {
        None => Utc::now(),
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                eprintln!("--from {s:?} is not an RFC 3339 time such as 2026-03-08T00:00:00Z: {e}");
                return exit::USAGE;
            }
        },
    };
    let p = plan::plan(&cfg, from, count);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan::to_json(&cfg, &p)).unwrap_or_default()
        );
    } else {
        print!("{}", plan::to_text(&cfg, &p, from, count));
    }
    exit::OK
}

/// `mlopsd check NAME`: 0 not breaching, 1 breaching, 2 could not evaluate.
pub fn check(path: &Path, name: &str) -> u8 {
    match load(path) {
        Ok(cfg) => block_on(async move { check::run(&cfg, name).await }),
        Err(code) => code,
    }
}

/// `mlopsd doctor`: 0 all ok, 1 some problem, 2 AWS unreachable.
pub fn doctor(path: &Path, json: bool) -> u8 {
    match load(path) {
        Ok(cfg) => block_on(async move { doctor::run(&cfg, json).await }),
        Err(code) => code,
    }
}

/// `mlopsd diff`: 0 all in sync, 1 something differs, 2 AWS could not be read.
pub fn diff(path: &Path, json: bool) -> u8 {
    match load(path) {
        Ok(cfg) => block_on(async move { diff::run(&cfg, json).await }),
        Err(code) => code,
    }
}

/// `mlopsd iam-policy`: the least-privilege policy (JSON) for this config.
pub fn iam_policy(path: &Path, account_id: Option<&str>, report_buckets: &[String]) -> u8 {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (account, region) = match account_id {
        Some(a) if a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()) => {
            (a.to_string(), cfg.aws.region.clone())
        }
        Some(a) => {
            eprintln!("--account-id {a:?} is not a 12-digit AWS account id");
            return exit::USAGE;
        }
        None => {
            let mut found = None;
            let code = block_on(async {
                match crate::aws::caller_account(&cfg.aws).await {
                    Ok(r) => {
                        found = Some(r);
                        exit::OK
                    }
                    Err(e) => {
                        eprintln!("cannot find the account id (pass --account-id): {e}");
                        exit::NO_ANSWER
                    }
                }
            });
            let Some((a, r)) = found else { return code };
            let region = if cfg.aws.region.is_empty() {
                r
            } else {
                cfg.aws.region.clone()
            };
            (a, region)
        }
    };
    if region.is_empty() {
        eprintln!("no region: set [aws] region in the config or AWS_REGION");
        return exit::CONFIG;
    }
    match crate::iam::policy(&cfg, &region, &account, report_buckets) {
        Ok(p) => {
            println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            exit::USAGE
        }
    }
}

/// `mlopsd status`: asks the running daemon (69 when it does not answer).
pub fn status(addr: Option<String>, config: Option<&Path>, json: bool) -> u8 {
    let addr = match (addr, config) {
        (Some(a), _) => a,
        (None, Some(p)) => match load(p) {
            Ok(c) => c.daemon.listen.to_string(),
            Err(code) => return code,
        },
        (None, None) => "127.0.0.1:9464".to_string(),
    };
    status::run(&addr, json)
}

/// `mlopsd run`: the daemon, until SIGTERM/SIGINT.
pub fn run(path: PathBuf, listen: Option<std::net::SocketAddr>, state_dir: Option<PathBuf>) -> u8 {
    crate::logging::init(crate::logging::LogFormat::from_env());
    config::set_overrides(config::Overrides { listen, state_dir });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return exit::OSERR;
        }
    };
    match rt.block_on(crate::daemon::run(path, CancellationToken::new())) {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(event = "daemon_failed", error = %e, "mlopsd cannot run");
            eprintln!("mlopsd: {e}");
            e.exit_code()
        }
    }
}
