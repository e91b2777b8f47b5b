//! The status page (`/`): server-rendered from the `/status` document with a minijinja
//! template (`page.html`, HTML-escaped) and inline SVG sparklines; no JavaScript or assets.

use std::fmt::Write as _;

use super::status::{StatusDoc, ThresholdOp};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.001) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An inline SVG sparkline of a check's values with its threshold line and breach markers.
pub(super) fn sparkline(values: &[(Option<f64>, bool)], threshold: f64, label: &str) -> String {
    let (w, h, pad) = (240.0f64, 48.0f64, 4.0f64);
    let nums: Vec<f64> = values
        .iter()
        .filter_map(|(v, _)| *v)
        .chain(std::iter::once(threshold))
        .collect();
    let (mut lo, mut hi) = nums
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    if (hi - lo).abs() < f64::EPSILON {
        lo -= 1.0;
        hi += 1.0;
    }
    let y = |v: f64| pad + (h - 2.0 * pad) * (1.0 - (v - lo) / (hi - lo));
    let n = values.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * (i as f64) / (n - 1.0);
    let mut s = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(label),
        esc(label)
    );
    let _ = write!(
        s,
        "<line class=\"threshold\" x1=\"0\" x2=\"{w}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/>",
        ty = y(threshold)
    );
    // The value line, broken where there was no data.
    let mut seg: Vec<String> = Vec::new();
    let flush = |seg: &mut Vec<String>, s: &mut String| {
        if seg.len() > 1 {
            let _ = write!(
                s,
                "<polyline class=\"values\" points=\"{}\"/>",
                seg.join(" ")
            );
        } else if seg.len() == 1 {
            let p: Vec<&str> = seg[0].split(',').collect();
            let _ = write!(
                s,
                "<circle class=\"point\" cx=\"{}\" cy=\"{}\" r=\"1.5\"/>",
                p[0], p[1]
            );
        }
        seg.clear();
    };
    for (i, (v, _)) in values.iter().enumerate() {
        match v {
            Some(v) => seg.push(format!("{:.1},{:.1}", x(i), y(*v))),
            None => flush(&mut seg, &mut s),
        }
    }
    flush(&mut seg, &mut s);
    for (i, (v, b)) in values.iter().enumerate() {
        if *b {
            let cy = v.map(y).unwrap_or(pad);
            let _ = write!(
                s,
                "<circle class=\"breach\" cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"2.5\"/>",
                x(i)
            );
        }
    }
    s.push_str("</svg>");
    s
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:1rem;color:#1b1f24;background:#f6f8fa}\
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}\
.meta{color:#57606a;font-size:.9rem;margin:.2rem 0}.wrap{overflow-x:auto;background:#fff;border:1px solid #d0d7de;border-radius:6px}\
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #eaeef2;vertical-align:middle;white-space:nowrap}\
th{background:#f6f8fa;font-weight:600}td small{color:#57606a}.num{font-variant-numeric:tabular-nums}\
.badge{display:inline-block;padding:.1rem .45rem;border-radius:1rem;font-size:.8rem;font-weight:600}\
.ok,.succeeded,.approved,.in_sync,.baked{background:#dafbe1;color:#116329}.breaching,.failed,.start_failed,.rejected,.drifted,.missing,.forbidden,.unreachable,.rolled_back{background:#ffebe9;color:#a40e26}\
.pending,.started,.decided,.no_metric,.applying,.no_data,.deploying,.baking,.rolling_back{background:#fff8c5;color:#7d4e00}.none{background:#eaeef2;color:#57606a}\
svg.spark{display:block}svg .threshold{stroke:#cf222e;stroke-width:1;stroke-dasharray:4 3}svg .values{fill:none;stroke:#0969da;stroke-width:1.6}\
svg .point{fill:#0969da}svg .breach{fill:#cf222e}code{font-size:.8rem}\
@media (max-width:640px){body{padding:.5rem}th,td{padding:.35rem .4rem}}";

fn badge(s: &str) -> String {
    let class = s.split_whitespace().next().unwrap_or("").to_string();
    let class = if [
        "ok",
        "succeeded",
        "approved",
        "breaching",
        "failed",
        "start_failed",
        "rejected",
        "pending",
        "started",
        "decided",
        "no_metric",
        "in_sync",
        "drifted",
        "applying",
        "missing",
        "forbidden",
        "no_data",
        "unreachable",
        "deploying",
        "baking",
        "rolling_back",
        "baked",
        "rolled_back",
    ]
    .contains(&class.as_str())
    {
        class
    } else {
        "none".into()
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(s))
}

fn short_arn(a: &str) -> String {
    let tail = a.rsplit(['/', ':']).next().unwrap_or(a);
    format!("<code title=\"{}\">…{}</code>", esc(a), esc(tail))
}

/// The status page's template (`src/page.html`), HTML-escaped by minijinja; the helpers it
/// calls return markup they have escaped themselves.
fn page_env() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        use minijinja::Value as V;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        // A template that does not parse is a build-time mistake, caught by the page tests.
        if let Err(e) = env.add_template("page.html", include_str!("page.html")) {
            tracing::error!(event = "http_failed", error = %e, "status page template does not parse");
        }
        env.add_function("badge", |s: String| V::from_safe_string(badge(&s)));
        env.add_function("num", |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "–".into()));
        env.add_function("arn", |a: Option<String>| V::from_safe_string(a.as_deref().map(short_arn).unwrap_or_else(|| "–".into())));
        env
    })
}

/// `/`: the status page, from the same document as `/status`.
pub(crate) fn render_page(st: &StatusDoc) -> String {
    let sparks: Vec<minijinja::Value> = st
        .checks
        .iter()
        .map(|ch| {
            let vals: Vec<(Option<f64>, bool)> =
                ch.values.iter().map(|v| (v.value, v.breached)).collect();
            let th = ch.threshold.value;
            let op = match ch.threshold.op {
                ThresholdOp::Below => "<",
                ThresholdOp::Above => ">",
            };
            let label = format!(
                "{}: {} values, threshold {op} {}",
                ch.name,
                vals.len(),
                fmt_num(th)
            );
            minijinja::Value::from_safe_string(sparkline(&vals, th, &label))
        })
        .collect();
    let ctx = minijinja::context! { st => minijinja::Value::from_serialize(st), sparks => sparks, css => minijinja::Value::from_safe_string(CSS.to_string()) };
    match page_env()
        .get_template("page.html")
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(event = "http_failed", error = %e, "cannot render the status page");
            format!("<!doctype html><title>mlopsd status</title><p>cannot render the status page: {}</p>", esc(&e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A document from JSON, as `mlopsd status` reads one.
    fn doc(v: serde_json::Value) -> StatusDoc {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sparkline_has_threshold_values_and_breach_markers() {
        let svg = sparkline(
            &[
                (Some(0.05), false),
                (Some(0.2), true),
                (None, false),
                (Some(0.3), true),
            ],
            0.1,
            "drift",
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("class=\"threshold\""));
        assert_eq!(svg.matches("class=\"breach\"").count(), 2);
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "the gap splits the line: {svg}"
        );
        assert!(svg.contains("<title>drift</title>"));
    }

    #[test]
    fn page_escapes_text() {
        let st = json!({"config": {"path": "<x>", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now"});
        let p = render_page(&doc(st));
        assert!(p.contains("&lt;x&gt;") && !p.contains("<x>"));
        assert!(p.contains("no runs yet"));
    }

    #[test]
    fn page_shows_the_events_queue_state() {
        let st = json!({"config": {"path": "p", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now",
                        "events": {"queue_url": "https://sqs.x/1/q", "state": "unreachable", "last_error": "sqs ReceiveMessage failed: <boom>"}});
        let p = render_page(&doc(st));
        assert!(
            p.contains("events queue <code>https:&#x2f;&#x2f;sqs.x&#x2f;1&#x2f;q</code>"),
            "escaped like all text: {p}"
        );
        assert!(
            p.contains("badge unreachable\">unreachable") && p.contains("&lt;boom&gt;"),
            "{p}"
        );
    }

    #[test]
    fn page_shows_a_checks_read_error() {
        let st = json!({"config": {"path": "p", "hash": "h", "loaded_at": "t"}, "rules": [], "runs": [], "gates": [], "generated_at": "now",
                        "checks": [{"name": "evidently", "metric": "report s3://b/p/", "state": "breaching", "threshold": {"op": "above", "value": 0.3},
                                    "error": {"error": "s3://b/p/x.json: the report is not JSON: <eof>", "since": "2026-12-04T00:00:00Z", "count": 3}}]});
        let p = render_page(&doc(st));
        assert!(
            p.contains("the report is not JSON: &lt;eof&gt;") && p.contains("3 read(s)"),
            "{p}"
        );
        assert!(p.contains("badge failed"), "{p}");
    }

    #[test]
    fn page_shows_the_ha_role_and_a_cut_off() {
        let st = json!({"config": {"path": "p", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now",
                        "ha": {"role": "standby", "replica": "b", "table": "t1", "leader": "a", "fencing": 2, "lease_age_ms": 900, "applied_seq": 41,
                               "config_differs": true, "table_reachable": false, "table_error": "connection refused"}});
        let p = render_page(&doc(st));
        assert!(p.contains("standby</span> replica <code>b</code>"), "{p}");
        assert!(p.contains("leader <code>a</code>, fencing 2"), "{p}");
        assert!(
            p.contains("config differs") && p.contains("connection refused"),
            "{p}"
        );
        let single = json!({"config": {"path": "p", "hash": "h", "loaded_at": "t"}, "checks": [], "rules": [], "runs": [], "gates": [], "generated_at": "now"});
        assert!(!render_page(&doc(single)).contains("replica"));
    }

    #[test]
    fn badge_class_is_the_state_word() {
        assert_eq!(
            badge("breaching 2/2"),
            "<span class=\"badge breaching\">breaching 2/2</span>"
        );
        assert_eq!(
            badge("weird<"),
            "<span class=\"badge none\">weird&lt;</span>"
        );
    }
}
