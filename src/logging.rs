//! Log setup: JSON lines on stdout by default (journald-friendly), a human format for
//! terminals; filter with `MLOPSD_LOG` (env-filter syntax, default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// `MLOPSD_LOG_FORMAT=json|text` wins; otherwise text on a terminal, JSON elsewhere.
    pub(crate) fn from_env() -> LogFormat {
        match std::env::var("MLOPSD_LOG_FORMAT").ok().as_deref() {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            _ if std::io::stdout().is_terminal() => LogFormat::Text,
            _ => LogFormat::Json,
        }
    }
}

/// Installs the global subscriber. A bad `MLOPSD_LOG` falls back to `info` with a warning.
pub(crate) fn init(format: LogFormat) {
    let (filter, bad) = match std::env::var("MLOPSD_LOG") {
        Ok(s) => match EnvFilter::try_new(&s) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new("info"),
                Some(format!(
                    "MLOPSD_LOG={s:?} is not a valid filter ({e}); using \"info\""
                )),
            ),
        },
        Err(_) => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let res = match format {
        LogFormat::Json => builder
            .json()
            .with_target(false)
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    if res.is_ok() {
        if let Some(msg) = bad {
            tracing::warn!("{msg}");
        }
    }
}
