//! mlopsd closes the MLOps loop on AWS from one declarative file: watch → decide → act →
//! follow → tell.
//!
//! # Layout
//! - [`config`]: the config model, loaded in two stages (spanned TOML reader → validated
//!   types) with every error located; [`config::diff`] is the pure reload diff.
//! - [`schedule`]: cron / EventBridge / rate / every parsing and the pure next-fire function.
//! - [`duration`]: `1h30m`-style durations.
//! - [`plan`]: `mlopsd plan` (next fire times, what rules do), no AWS calls.
//! - [`state`]: the embedded SQLite store (WAL, schema version, migrations, lock).
//! - [`daemon`]: the control loop (`run`), its timer, the file watcher, systemd notify.
//! - [`events`]: the typed operator events every log line comes from.
//! - [`logging`]: JSON / text log setup.
//!
//! `main.rs` only parses the command line and calls into these.

pub mod aws;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod duration;
pub mod engine;
pub mod events;
pub mod exit;
pub mod failpoint;
pub mod health;
pub mod http;
pub mod iam;
pub mod inbox;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reconcile;
pub mod schedule;
pub mod state;
