//! The `mlopsd` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use mlopsd::config::{self, EX_CONFIG};
use mlopsd::{daemon, logging, plan};

#[derive(Parser)]
#[command(
    name = "mlopsd",
    version,
    about = "Closes the MLOps loop on AWS from one declarative file"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
        /// Serve HTTP here instead of `daemon.listen` (one config file for several replicas).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Keep state here instead of `daemon.state_dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Validate a config: exit 0 when valid, 78 with every error otherwise.
    Validate {
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
    },
    /// Evaluate one check now against AWS and print value vs threshold; changes nothing.
    /// Exit 0 not breaching, 1 breaching, 2 could not evaluate.
    Check {
        /// The check's name ([checks.NAME]).
        name: String,
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
    },
    /// Compare every declared pipeline (`definition`) with SageMaker; changes nothing.
    /// Exit 0 all in sync, 1 something differs, 2 AWS could not be read.
    Diff {
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Preflight against AWS, changes nothing: the caller identity, then every AWS resource
    /// the config names (ok, missing, forbidden, no_data, unreachable).
    /// Exit 0 all ok, 1 some problem, 2 AWS could not be reached.
    Doctor {
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the least-privilege IAM policy (JSON) this config needs.
    IamPolicy {
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
        /// The AWS account id for the ARNs; default: the caller's, from STS GetCallerIdentity.
        #[arg(long)]
        account_id: Option<String>,
        /// S3 bucket(s) holding evaluation reports (needed when a gate uses `report_path`).
        #[arg(long = "report-bucket")]
        report_buckets: Vec<String>,
    },
    /// Ask the running daemon what it is doing (its /status), as tables or JSON.
    Status {
        /// The daemon's HTTP address; default: `daemon.listen` of --config, else 127.0.0.1:9464.
        #[arg(long)]
        addr: Option<String>,
        /// Read the address from this config's `daemon.listen`.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show every schedule's next fire times and what each rule would do (no AWS calls).
    Plan {
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
        /// How many fire times per schedule.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Start instant (RFC 3339); default now. Times listed are strictly after it.
        #[arg(long)]
        from: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Validate { config } => match config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} checks, {} rules, {} gates, {} pipelines, {} builds, {} notifiers)",
                    config.display(),
                    c.checks.len(),
                    c.rules.len(),
                    c.gates.len(),
                    c.pipelines.len(),
                    c.builds.len(),
                    c.notifiers.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!("{}: {} error(s)", config.display(), e.errors.len());
                ExitCode::from(EX_CONFIG as u8)
            }
        },
        Cmd::Plan {
            config,
            count,
            from,
            json,
        } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG as u8);
                }
            };
            let from = match from {
                None => Utc::now(),
                Some(s) => match DateTime::parse_from_rfc3339(&s) {
                    Ok(t) => t.with_timezone(&Utc),
                    Err(e) => {
                        eprintln!("--from {s:?} is not an RFC 3339 time such as 2026-03-08T00:00:00Z: {e}");
                        return ExitCode::from(64);
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
            ExitCode::SUCCESS
        }
        Cmd::Check { name, config } => against_aws(&config, |cfg| async move {
            mlopsd::check::run(&cfg, &name).await
        }),
        Cmd::Doctor { config, json } => against_aws(&config, |cfg| async move {
            mlopsd::doctor::run(&cfg, json).await
        }),
        Cmd::Diff { config, json } => {
            against_aws(
                &config,
                |cfg| async move { mlopsd::diff::run(&cfg, json).await },
            )
        }
        Cmd::IamPolicy {
            config,
            account_id,
            report_buckets,
        } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG as u8);
                }
            };
            let (account, region) = match account_id {
                Some(a) if a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()) => {
                    (a, cfg.aws.region.clone())
                }
                Some(a) => {
                    eprintln!("--account-id {a:?} is not a 12-digit AWS account id");
                    return ExitCode::from(64);
                }
                None => {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            eprintln!("cannot start the async runtime: {e}");
                            return ExitCode::from(2);
                        }
                    };
                    match rt.block_on(mlopsd::aws::caller_account(&cfg.aws)) {
                        Ok((a, r)) => (
                            a,
                            if cfg.aws.region.is_empty() {
                                r
                            } else {
                                cfg.aws.region.clone()
                            },
                        ),
                        Err(e) => {
                            eprintln!("cannot find the account id (pass --account-id): {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
            };
            if region.is_empty() {
                eprintln!("no region: set [aws] region in the config or AWS_REGION");
                return ExitCode::from(EX_CONFIG as u8);
            }
            match mlopsd::iam::policy(&cfg, &region, &account, &report_buckets) {
                Ok(p) => {
                    println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(64)
                }
            }
        }
        Cmd::Status { addr, config, json } => {
            let addr = match (addr, config) {
                (Some(a), _) => a,
                (None, Some(p)) => match config::load(&p) {
                    Ok(c) => c.daemon.listen.to_string(),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(EX_CONFIG as u8);
                    }
                },
                (None, None) => "127.0.0.1:9464".to_string(),
            };
            match mlopsd::status::fetch(&addr) {
                Ok(v) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    } else {
                        print!("{}", mlopsd::status::render(&addr, &v));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mlopsd status: {e}");
                    ExitCode::from(69)
                }
            }
        }
        Cmd::Run {
            config,
            listen,
            state_dir,
        } => {
            logging::init(logging::LogFormat::from_env());
            mlopsd::config::set_overrides(mlopsd::config::Overrides { listen, state_dir });
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(71);
                }
            };
            match rt.block_on(daemon::run(config, CancellationToken::new())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(event = "daemon_failed", error = %e, "mlopsd cannot run");
                    eprintln!("mlopsd: {e}");
                    ExitCode::from(e.exit_code() as u8)
                }
            }
        }
    }
}

/// A command that reads AWS once (`check`, `doctor`, `diff`): loads the config (exit 78 when
/// invalid), runs `f` on a single-threaded runtime, exits with its code (2 when the runtime
/// cannot start: AWS could not be asked).
fn against_aws<F, Fut>(config: &std::path::Path, f: F) -> ExitCode
where
    F: FnOnce(config::Config) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    let cfg = match config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => ExitCode::from(rt.block_on(f(cfg))),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}
