//! `[events]` (the SQS queue EventBridge delivers to) and an `on_event` rule's pattern.

use crate::config::reader::{Diags, Table};
use crate::config::*;

/// `[events]`: `Some(None)` when absent, `None` on a problem.
pub(super) fn read_events(d: &mut Diags, top: &mut Table<'_, '_>) -> Option<Option<Events>> {
    let Some(mut t) = top.table(d, "events") else {
        return if top.has("events") { None } else { Some(None) };
    };
    let url = t.req_string(d, "queue_url");
    let ok = match &url {
        Some(u) if !(u.v.starts_with("https://") || u.v.starts_with("http://")) => {
            d.push(u.span.clone(), format!("`queue_url` must be an SQS queue URL such as \"https://sqs.us-east-1.amazonaws.com/123456789012/mlopsd-events\", found {}", d.show(u)));
            false
        }
        Some(_) => true,
        None => false,
    };
    t.finish(d, &["queue_url"]);
    (ok).then(|| url.map(|u| Events { queue_url: u.v }))
}

/// `on_event = { source = "…", detail_type = "…", match = { "detail.a.b" = V | { prefix = "…" } | { any_of = [ … ] } } }`
pub(super) fn read_event_pattern(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<EventPattern> {
    let mut p = t.table(d, "on_event")?;
    let source = p.string(d, "source").map(|s| s.v);
    let detail_type = p.string(d, "detail_type").map(|s| s.v);
    let mut ok = true;
    let mut matches = Vec::new();
    if let Some(m) = p.raw("match") {
        match m.get_ref() {
            toml::de::DeValue::Table(mt) => {
                for (k, v) in mt.iter() {
                    let path = k.get_ref().to_string();
                    if path.is_empty() || path.split('.').any(str::is_empty) {
                        d.push(k.span(), format!("`match` path \"{path}\" must be dotted names such as \"detail.bucket.name\""));
                        ok = false;
                        continue;
                    }
                    match matcher(v.get_ref()) {
                        Ok(x) => matches.push((path, x)),
                        Err(e) => {
                            d.push(v.span(), format!("`match.\"{path}\"`: {e}"));
                            ok = false;
                        }
                    }
                }
            }
            other => {
                d.push(
                    m.span(),
                    format!(
                        "`match` must be a table of dotted paths, found {}",
                        crate::config::reader::type_name(other)
                    ),
                );
                ok = false;
            }
        }
    }
    if source.is_none() && detail_type.is_none() && matches.is_empty() && ok {
        d.push(p.span.clone(), "`on_event` needs at least one of `source`, `detail_type`, `match` (an empty pattern would match every event)");
        ok = false;
    }
    let pattern_ok = !p.has("source") || source.is_some();
    let dt_ok = !p.has("detail_type") || detail_type.is_some();
    p.finish(d, &["source", "detail_type", "match"]);
    (ok && pattern_ok && dt_ok).then_some(EventPattern {
        source,
        detail_type,
        matches,
    })
}

fn scalar(v: &toml::de::DeValue<'_>) -> Option<serde_json::Value> {
    use toml::de::DeValue as V;
    match v {
        V::String(s) => Some(serde_json::Value::String(s.to_string())),
        V::Integer(i) => i.as_str().parse::<i64>().ok().map(serde_json::Value::from),
        V::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number),
        V::Boolean(b) => Some(serde_json::Value::Bool(*b)),
        _ => None,
    }
}

fn matcher(v: &toml::de::DeValue<'_>) -> Result<Matcher, String> {
    use toml::de::DeValue as V;
    if let Some(x) = scalar(v) {
        return Ok(Matcher::Equals(x));
    }
    let V::Table(t) = v else {
        return Err(format!(
            "must be a value, {{ prefix = \"…\" }} or {{ any_of = [ … ] }}, found {}",
            crate::config::reader::type_name(v)
        ));
    };
    let keys: Vec<String> = t.iter().map(|(k, _)| k.get_ref().to_string()).collect();
    match (
        t.get("prefix").map(|x| x.get_ref()),
        t.get("any_of").map(|x| x.get_ref()),
        keys.len(),
    ) {
        (Some(V::String(s)), None, 1) => Ok(Matcher::Prefix(s.to_string())),
        (Some(_), None, 1) => Err("`prefix` must be a string".into()),
        (None, Some(V::Array(items)), 1) => {
            let vals: Option<Vec<_>> = items.iter().map(|i| scalar(i.get_ref())).collect();
            match vals {
                Some(v) if !v.is_empty() => Ok(Matcher::AnyOf(v)),
                Some(_) => Err("`any_of` must not be empty".into()),
                None => Err("`any_of` items must be strings, numbers or booleans".into()),
            }
        }
        (None, Some(_), 1) => Err("`any_of` must be an array".into()),
        _ => Err(format!(
            "must be {{ prefix = \"…\" }} or {{ any_of = [ … ] }}, found keys {}",
            keys.join(", ")
        )),
    }
}
