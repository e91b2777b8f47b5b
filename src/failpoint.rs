//! Crash hooks for the crash tests: `MLOPSD_FAILPOINT=NAME` makes the process kill itself
//! with SIGKILL when it reaches that point. Unset (always, in production) it does nothing.
//!
//! Points: `after_decision` (firing stored, start not sent), `after_start_sent` (AWS answered,
//! answer not stored), `while_following` (run ended on AWS, end not stored), `after_publish`
//! (SNS accepted a message, not yet marked sent), `after_event_stored` (an events batch's
//! effects and ids stored, its messages not yet deleted), `after_apply_decided` (a declared
//! pipeline's create or update stored, not sent), `after_apply_sent` (AWS took it, not stored),
//! `after_run_end` (a run's end stored, its chain not yet considered), `after_chain` (its
//! chained rules decided, the run not yet marked chained).

use std::sync::OnceLock;

pub fn hit(name: &str) {
    static FP: OnceLock<Option<String>> = OnceLock::new();
    if FP
        .get_or_init(|| std::env::var("MLOPSD_FAILPOINT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("mlopsd: failpoint {name} reached; killing self (MLOPSD_FAILPOINT)");
        // SAFETY: sending SIGKILL to our own process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
