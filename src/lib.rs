//! mlopsd closes the MLOps loop on AWS from one declarative file: watch → decide → act →
//! follow → tell.
//!
//! # Layout
//! The binary (`main.rs`) parses the command line and calls [`cli`]. Every module:
//!
//! Config and pure decisions (no I/O, no clock):
//! - [`config`]: the config model, loaded in two stages (`reader`: the spanned TOML tree;
//!   `build`: validated types, one file per section) with every error located; `blocks`
//!   (block-wise loading and fast reloads), `definition` (declared pipelines' files),
//!   [`config::diff`] (the pure reload diff).
//! - [`schedule`]: cron / EventBridge / rate / every parsing and the pure next-fire search.
//! - `duration`: `1h30m`-style durations. [`clock`]: the clock the loop reads, instant math.
//! - `engine`: check evaluation, rule firing, gate verdicts, idempotency tokens.
//! - `reconcile`: what an apply of a declared pipeline does. `inbox`: EventBridge envelopes.
//! - `deploy`: a deployment's names, the version an endpoint wants, the verdict on an endpoint.
//! - `drift`: drift reports (Model Monitor violations, JSON reports): violations, filters,
//!   a number at a path, the feature list for a parameter.
//! - `notify`: notification kinds and rendering. [`iam`]: the least-privilege policy.
//! - [`lease`]: the HA lease state machine and its driver.
//!
//! AWS, behind a port:
//! - [`cloud`]: the port — narrow traits per service, `AwsError` with its `ErrorKind`, the
//!   leader gate (`Gated`, `Acting`), the HA table's traits.
//! - [`aws`]: the adapter, the only module that names `aws_sdk_*`: one file per service.
//! - `doctor`: the preflight, through the port.
//!
//! The process:
//! - [`daemon`]: the process (`run`), the control loop (`event_loop`: `next_event` and
//!   `handle`), one reload for both roles, the loop's rooms, the HA supervisor and standby.
//! - [`state`]: the embedded SQLite store, one file per table, its replication log.
//! - `http`: `/metrics`, `/healthz`, the typed `/status` document, the status page.
//! - `health`: what `/healthz` and `/status` show beyond the store. `events`: every operator
//!   event (log line and metrics), one file per domain. `metrics`: the Prometheus registry.
//!   `logging`: JSON / text logs. `failpoint`: crash hooks for the crash tests.
//! - [`cli`]: the one-shot commands (`validate`, `plan`, `check`, `doctor`, `diff`,
//!   `iam-policy`, `status`) and `run`. `exit`: the exit codes (sysexits).
//!
//! Items are `pub(crate)` unless the binary, a test or an example needs them
//! (`unreachable_pub` is warned, so the compiler reports dead code).

#![warn(unreachable_pub)]

pub mod aws;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod daemon;
pub(crate) mod deploy;
pub(crate) mod doctor;
pub(crate) mod drift;
pub(crate) mod duration;
pub(crate) mod engine;
pub(crate) mod events;
pub(crate) mod exit;
pub(crate) mod failpoint;
pub(crate) mod health;
pub(crate) mod http;
pub mod iam;
pub(crate) mod inbox;
pub mod lease;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod reconcile;
pub mod schedule;
pub mod state;
