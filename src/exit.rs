//! Exit codes: sysexits(3) for why the process could not do its job, and the documented
//! answers of the one-shot commands (SPEC "Command line").

/// Success; for `check`: not breaching; for `doctor`/`diff`: all ok / all in sync.
pub(crate) const OK: u8 = 0;
/// `check`: breaching; `doctor`: some resource has a problem; `diff`: something differs.
pub(crate) const FOUND: u8 = 1;
/// `check`: could not evaluate; `doctor`/`diff`: AWS could not be reached or read.
pub(crate) const NO_ANSWER: u8 = 2;

/// The daemon could not go on for a reason none of the codes below names.
pub(crate) const FAILED: u8 = 1;

/// EX_USAGE: a command-line argument is wrong.
pub(crate) const USAGE: u8 = 64;
/// EX_DATAERR: the state store is corrupt or of a newer schema.
pub(crate) const DATAERR: u8 = 65;
/// EX_UNAVAILABLE: a service the daemon needs is not there (the HTTP port, the HA table, the
/// daemon asked by `status`).
pub(crate) const UNAVAILABLE: u8 = 69;
/// EX_OSERR: the operating system refused (the async runtime could not start).
pub(crate) const OSERR: u8 = 71;
/// EX_IOERR: the state store could not be read or written.
pub(crate) const IOERR: u8 = 74;
/// EX_TEMPFAIL: try again later (another daemon holds the state store).
pub(crate) const TEMPFAIL: u8 = 75;
/// EX_CONFIG: the config is invalid.
pub(crate) const CONFIG: u8 = 78;
