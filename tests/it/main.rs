//! The integration tests, one binary (the AWS SDK is linked once): each scenario group is a
//! module; `support` is the harness (the real binary in a temp dir, moto and the fault
//! proxy, an in-memory AWS for the loop on paused time). `scripts/test` runs them with
//! cargo-nextest (each test its own process) and prints each group's time.

mod support;

mod aws_loop;
mod chat;
mod cli;
mod config_cases;
mod daemon;
mod deb;
mod declared;
mod deploy;
mod doctor;
mod drift;
mod events;
mod fuzz_config;
mod fuzz_decisions;
mod ha;
mod http;
mod iam;
mod lease;
mod loop_time;
mod reliability;
mod rpm;
mod schedules_dst;
mod state_crash;
mod systemd_unit;
