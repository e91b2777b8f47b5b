//! `[daemon]` (state, HTTP, time zone, intervals; its HA keys in `ha`), `[aws]` and
//! `[notifiers.NAME]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use super::common::*;
use super::Refs;
use crate::config::reader::{Diags, Sp, Table};
use crate::config::*;

const DAEMON_KEYS: &[&str] = &[
    "state_dir",
    "listen",
    "allow_remote_listen",
    "timezone",
    "shutdown_grace",
    "poll_interval",
    "reconcile_interval",
    "ha_table",
    "ha_lease",
    "ha_notify",
];

/// `[daemon]`, every key defaulted; `None` on a problem.
pub(super) fn read_daemon(
    d: &mut Diags,
    top: &mut Table<'_, '_>,
    refs: &mut Refs,
) -> Option<DaemonConfig> {
    let mut cfg = DaemonConfig {
        state_dir: PathBuf::from("/var/lib/mlopsd"),
        listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        allow_remote_listen: false,
        timezone: Tz::UTC,
        shutdown_grace: Duration::from_secs(30),
        poll_interval: Duration::from_secs(15),
        reconcile_interval: Duration::from_secs(600),
        ha_table: None,
        ha_lease: Duration::from_secs(15),
        ha_notify: None,
    };
    let Some(mut t) = top.table(d, "daemon") else {
        return if top.has("daemon") { None } else { Some(cfg) };
    };
    let mut ok = state_dir(d, &mut t, &mut cfg);
    ok &= listen(d, &mut t, &mut cfg);
    if let Some(z) = t.string(d, "timezone") {
        match zone(d, &z) {
            Some(z) => cfg.timezone = z,
            None => ok = false,
        }
    }
    ok &= intervals(d, &mut t, &mut cfg);
    ok &= super::ha::read_ha(d, &mut t, &mut cfg, refs);
    t.finish(d, DAEMON_KEYS);
    ok.then_some(cfg)
}

/// `state_dir`: a directory, not empty.
fn state_dir(d: &mut Diags, t: &mut Table<'_, '_>, cfg: &mut DaemonConfig) -> bool {
    let Some(s) = t.string(d, "state_dir") else {
        return true;
    };
    if s.v.is_empty() {
        d.push(s.span, "`state_dir` must not be empty");
        return false;
    }
    cfg.state_dir = PathBuf::from(s.v);
    true
}

/// `listen`: an address and port, on loopback unless `allow_remote_listen`.
fn listen(d: &mut Diags, t: &mut Table<'_, '_>, cfg: &mut DaemonConfig) -> bool {
    let allow = t
        .boolean(d, "allow_remote_listen")
        .map(|x| x.v)
        .unwrap_or(false);
    cfg.allow_remote_listen = allow;
    let Some(s) = t.string(d, "listen") else {
        return true;
    };
    match s.v.parse::<SocketAddr>() {
        Ok(a) if !a.ip().is_loopback() && !allow => {
            d.push(
                s.span.clone(),
                format!("`listen` = {} is not a loopback address; the status server shows internal state, so set `allow_remote_listen = true` to serve it beyond this host", d.show(&s)),
            );
            false
        }
        Ok(a) => {
            cfg.listen = a;
            true
        }
        Err(_) => {
            d.push(
                s.span.clone(),
                format!(
                    "`listen` must be an address and port such as \"127.0.0.1:9464\", found {}",
                    d.show(&s)
                ),
            );
            false
        }
    }
}

/// A duration key that must be at least `min`: its value, `Ok(None)` when absent, `Err` (the
/// problem reported) otherwise.
pub(super) fn bounded(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    key: &'static str,
    min: Duration,
    max: Duration,
    why: &str,
) -> Result<Option<Duration>, ()> {
    if !t.has(key) {
        return Ok(None);
    }
    let v: Option<Sp<String>> = t.duration_text(d, key);
    let span = v.as_ref().map(|x| x.span.clone());
    match duration(d, v, key, !min.is_zero()) {
        Some(g) if g < min || g > max => {
            d.push(span.unwrap_or(t.span.clone()), why.to_string());
            Err(())
        }
        Some(g) => Ok(Some(g)),
        None => Err(()),
    }
}

/// `shutdown_grace`, `poll_interval`, `reconcile_interval`.
fn intervals(d: &mut Diags, t: &mut Table<'_, '_>, cfg: &mut DaemonConfig) -> bool {
    let mut ok = true;
    match bounded(d, t, "shutdown_grace", Duration::ZERO, Duration::MAX, "") {
        Ok(Some(g)) => cfg.shutdown_grace = g,
        Ok(None) => {}
        Err(()) => ok = false,
    }
    match bounded(
        d,
        t,
        "poll_interval",
        Duration::from_millis(1),
        Duration::MAX,
        "",
    ) {
        Ok(Some(g)) => cfg.poll_interval = g,
        Ok(None) => {}
        Err(()) => ok = false,
    }
    // Each reconcile reads every declared pipeline: not a rate to hammer AWS at.
    match bounded(
        d,
        t,
        "reconcile_interval",
        Duration::from_secs(1),
        Duration::MAX,
        "`reconcile_interval` must be at least 1s (each reconcile makes a DescribePipeline call per declared pipeline)",
    ) {
        Ok(Some(g)) => cfg.reconcile_interval = g,
        Ok(None) => {}
        Err(()) => ok = false,
    }
    ok
}

const AWS_KEYS: &[&str] = &[
    "region",
    "profile",
    "endpoint_url",
    "max_attempts",
    "attempt_timeout",
];

/// `[aws]`; without it the region comes from the environment, like any AWS tool.
pub(super) fn read_aws(d: &mut Diags, top: &mut Table<'_, '_>) -> Option<AwsConfig> {
    let mut cfg = AwsConfig {
        region: String::new(),
        profile: None,
        endpoint_url: None,
        max_attempts: 5,
        attempt_timeout: Duration::from_secs(20),
    };
    let Some(mut t) = top.table(d, "aws") else {
        return if top.has("aws") { None } else { Some(cfg) };
    };
    let mut ok = true;
    if let Some(r) = t.string(d, "region") {
        if r.v.is_empty() || !r.v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            d.push(
                r.span.clone(),
                format!(
                    "`region` must be an AWS region name such as \"us-east-1\", found {}",
                    d.show(&r)
                ),
            );
            ok = false;
        } else {
            cfg.region = r.v;
        }
    }
    cfg.profile = t.string(d, "profile").map(|x| x.v);
    if let Some(u) = t.string(d, "endpoint_url") {
        if !(u.v.starts_with("http://") || u.v.starts_with("https://")) || u.v.len() < 10 {
            d.push(
                u.span.clone(),
                format!(
                    "`endpoint_url` must be an http:// or https:// URL, found {}",
                    d.show(&u)
                ),
            );
            ok = false;
        } else {
            cfg.endpoint_url = Some(u.v);
        }
    }
    match t.int_in(d, "max_attempts", 1, 20) {
        Some(v) => cfg.max_attempts = v.v as u32,
        None if t.has("max_attempts") => ok = false,
        None => {}
    }
    match bounded(
        d,
        &mut t,
        "attempt_timeout",
        Duration::from_millis(1),
        Duration::MAX,
        "",
    ) {
        Ok(Some(x)) => cfg.attempt_timeout = x,
        Ok(None) => {}
        Err(()) => ok = false,
    }
    t.finish(d, AWS_KEYS);
    ok.then_some(cfg)
}

pub(super) const NOTIFIER_KEYS: &[&str] = &["topic_arn", "repeat_interval", "subject", "format"];

/// `[notifiers.NAME]`: an SNS topic, how often the same event is repeated, the subject
/// template, the body format.
pub(super) fn read_notifier(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<Notifier> {
    let topic = t.req_string(d, "topic_arn");
    if let Some(a) = &topic {
        if !a.v.starts_with("arn:") || a.v.split(':').count() < 6 || !a.v.contains(":sns:") {
            d.push(a.span.clone(), format!("`topic_arn` must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), found {}", d.show(a)));
        }
    }
    let repeat = match bounded(d, t, "repeat_interval", Duration::ZERO, Duration::MAX, "") {
        Ok(r) => Some(r.unwrap_or(Duration::from_secs(4 * 3600))),
        Err(()) => None,
    };
    let subject = match t.string(d, "subject") {
        Some(s) => match check_template(&s.v) {
            Ok(()) => Some(s.v),
            Err(m) => {
                d.push(s.span, format!("`subject` is not a valid template: {m}"));
                None
            }
        },
        None => Some(DEFAULT_SUBJECT.to_string()),
    };
    let format = match t.string(d, "format") {
        Some(f) => match f.v.as_str() {
            "text" => Some(MessageFormat::Text),
            "json" => Some(MessageFormat::Json),
            "chat" => Some(MessageFormat::Chat),
            other => {
                d.push(
                    f.span,
                    format!("`format` must be \"text\", \"json\" or \"chat\", found \"{other}\""),
                );
                None
            }
        },
        None => Some(MessageFormat::Text),
    };
    let topic = topic?;
    if !topic.v.starts_with("arn:") {
        return None;
    }
    Some(Notifier {
        topic_arn: topic.v,
        repeat_interval: repeat?,
        subject: subject?,
        format: format?,
    })
}
