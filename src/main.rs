//! The `mlopsd` command line: parses arguments and dispatches to `mlopsd::cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use mlopsd::cli;

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
        /// The configuration file.
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
        /// The configuration file.
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
    },
    /// Evaluate one check now against AWS and print value vs threshold; changes nothing.
    /// Exit 0 not breaching, 1 breaching, 2 could not evaluate.
    Check {
        /// The check's name ([checks.NAME]).
        name: String,
        /// The configuration file.
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
    },
    /// Compare every declared pipeline (`definition`) with SageMaker; changes nothing.
    /// Exit 0 all in sync, 1 something differs, 2 AWS could not be read.
    Diff {
        /// The configuration file.
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
        /// The configuration file.
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the least-privilege IAM policy (JSON) this config needs.
    IamPolicy {
        /// The configuration file.
        #[arg(long, default_value = "/etc/mlopsd/mlops.toml")]
        config: PathBuf,
        /// The AWS account id for the ARNs; default: the caller's, from STS GetCallerIdentity.
        #[arg(long)]
        account_id: Option<String>,
        /// S3 bucket(s) holding evaluation reports (needed when a gate uses `report_path`) or the
        /// reports of a `monitor` check.
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
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show every schedule's next fire times and what each rule would do (no AWS calls).
    Plan {
        /// The configuration file.
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    /// The packages install bash's, zsh's and fish's in the standard places.
    Completions { shell: clap_complete::Shell },
    /// Print the man page, mlopsd(1), as roff to stdout (`mlopsd man | man -l -`).
    Man,
}

fn main() -> ExitCode {
    let code = match Cli::parse().cmd {
        Cmd::Run {
            config,
            listen,
            state_dir,
        } => cli::run(config, listen, state_dir),
        Cmd::Validate { config } => cli::validate(&config),
        Cmd::Plan {
            config,
            count,
            from,
            json,
        } => cli::plan(&config, count, from.as_deref(), json),
        Cmd::Check { name, config } => cli::check(&config, &name),
        Cmd::Doctor { config, json } => cli::doctor(&config, json),
        Cmd::Diff { config, json } => cli::diff(&config, json),
        Cmd::IamPolicy {
            config,
            account_id,
            report_buckets,
        } => cli::iam_policy(&config, account_id.as_deref(), &report_buckets),
        Cmd::Status { addr, config, json } => cli::status(addr, config.as_deref(), json),
        Cmd::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "mlopsd", &mut std::io::stdout());
            0
        }
        Cmd::Man => cli::man(Cli::command()),
    };
    ExitCode::from(code)
}
