//! Crash hooks for the crash tests: `MLOPSD_FAILPOINT=NAME` makes the process kill itself
//! with SIGKILL when it reaches that point; `NAME:ITEM` only when it reaches it for that rule
//! (or other item the point names). Unset (always, in production) it does nothing.
//!
//! Points: `after_decision` (firing stored, start not sent), `after_start_sent` (AWS answered,
//! answer not stored), `while_following` (run ended on AWS, end not stored), `after_publish`
//! (SNS accepted a message, not yet marked sent), `after_event_stored` (an events batch's
//! effects and ids stored, its messages not yet deleted), `after_apply_decided` (a declared
//! pipeline's create or update stored, not sent), `after_apply_sent` (AWS took it, not stored),
//! `after_run_end` (a run's end stored, its chain not yet considered), `after_chain` (its
//! chained rules decided and their starts answered by AWS, the run not yet marked chained),
//! `after_report_evaluated` (a report check's new report evaluated and stored, its rules not
//! yet considered).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn configured() -> Option<&'static str> {
    static FP: OnceLock<Option<String>> = OnceLock::new();
    FP.get_or_init(|| std::env::var("MLOPSD_FAILPOINT").ok())
        .as_deref()
}

fn kill(point: &str) {
    eprintln!("mlopsd: failpoint {point} reached; killing self (MLOPSD_FAILPOINT)");
    // SAFETY: sending SIGKILL to our own process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Kills the process at point `name` when `MLOPSD_FAILPOINT` names it.
pub(crate) fn hit(name: &str) {
    if configured() == Some(name) {
        kill(name);
    }
}

/// Kills the process at point `name` for `item` when `MLOPSD_FAILPOINT` is `NAME` or
/// `NAME:ITEM`.
pub(crate) fn hit_for(name: &str, item: &str) {
    let Some(fp) = configured() else { return };
    let matches = fp == name
        || fp
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .is_some_and(|i| i == item);
    if matches {
        kill(fp);
    }
}

/// Start calls AWS has answered (counted only while a failpoint is set).
static ANSWERED: AtomicUsize = AtomicUsize::new(0);

/// A start call came back from AWS (before its answer reaches the loop).
pub(crate) fn start_answered() {
    if configured().is_some() {
        ANSWERED.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many start calls AWS has answered so far (0 without a failpoint).
pub(crate) fn starts_answered() -> usize {
    ANSWERED.load(Ordering::SeqCst)
}

/// Kills the process at point `name` once AWS has answered `total` start calls (waiting up
/// to 10 s on this thread, which holds the loop where it is): the starts decided before the
/// point got out, nothing after it happened.
pub(crate) fn hit_once_answered(name: &str, total: usize) {
    if configured() != Some(name) {
        return;
    }
    let t0 = Instant::now();
    while starts_answered() < total && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(name);
}
