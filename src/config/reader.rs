//! Stage 1 of config loading: a typed reader over the spanned TOML tree.
//!
//! serde's derive stops at the first error; SPEC wants every error at once, each with its
//! location. So each table is read key by key: a wrong type, a missing key or an unknown key
//! is recorded as a `Diag` with the byte span of the offending text, and reading goes on.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem found in the config, located by byte span in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Diag {
    pub span: Range<usize>,
    pub message: String,
}

/// The diagnostics collected while loading one file.
#[derive(Debug, Default)]
pub(crate) struct Diags(pub Vec<Diag>, Vec<Range<usize>>);

impl Diags {
    pub(crate) fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.0.push(Diag {
            span,
            message: message.into(),
        });
    }

    /// Remembers that the string at `span` came from `${ENV}` expansion.
    fn mark_env(&mut self, span: Range<usize>) {
        self.1.push(span);
    }

    /// How to show a value in a message: quoted, unless it came from the environment (it may
    /// be a secret), in which case it is not shown.
    pub(crate) fn show(&self, v: &Sp<String>) -> String {
        if self.1.contains(&v.span) {
            "a value from the environment (not shown)".to_string()
        } else {
            format!("\"{}\"", v.v)
        }
    }
}

/// A value with the span of its source text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sp<T> {
    pub v: T,
    pub span: Range<usize>,
}

pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn int_value(v: &DeValue<'_>) -> Option<i64> {
    if let DeValue::Integer(i) = v {
        let s = i.as_str().replace('_', "");
        let s = s.trim_start_matches('+');
        let (neg, digits) = match s.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, s),
        };
        let n = i64::from_str_radix(digits, i.radix()).ok()?;
        return Some(if neg { -n } else { n });
    }
    None
}

fn float_value(v: &DeValue<'_>) -> Option<f64> {
    match v {
        DeValue::Float(f) => {
            let s = f.as_str().replace('_', "");
            match s.as_str() {
                "inf" | "+inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                "nan" | "+nan" | "-nan" => Some(f64::NAN),
                _ => s.parse().ok(),
            }
        }
        DeValue::Integer(_) => int_value(v).map(|i| i as f64),
        _ => None,
    }
}

/// A table being read: remembers which keys were taken so the rest can be reported.
pub(crate) struct Table<'a, 'i> {
    /// Dotted path for messages, e.g. `checks.feature-drift`.
    pub path: String,
    pub span: Range<usize>,
    tbl: &'a DeTable<'i>,
    taken: Vec<&'a str>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn new(path: impl Into<String>, tbl: &'a DeTable<'i>, span: Range<usize>) -> Self {
        Table {
            path: path.into(),
            span,
            tbl,
            taken: Vec::new(),
        }
    }

    /// The header span for "missing key" messages.
    fn where_(&self) -> Range<usize> {
        self.span.clone()
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.tbl.get(key).is_some()
    }

    pub(crate) fn raw(&mut self, key: &'a str) -> Option<&'a Spanned<DeValue<'i>>> {
        let v = self.tbl.get(key)?;
        self.taken.push(key);
        Some(v)
    }

    pub(crate) fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.tbl
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| k.span())
    }

    fn expect<T>(
        &mut self,
        d: &mut Diags,
        key: &'a str,
        what: &str,
        f: impl Fn(&DeValue<'i>) -> Option<T>,
    ) -> Option<Sp<T>> {
        let v = self.raw(key)?;
        match f(v.get_ref()) {
            Some(x) => Some(Sp {
                v: x,
                span: v.span(),
            }),
            None => {
                d.push(
                    v.span(),
                    format!("`{key}` must be {what}, found {}", type_name(v.get_ref())),
                );
                None
            }
        }
    }

    /// A string value; `${NAME}` in it is replaced by the environment variable NAME.
    pub(crate) fn string(&mut self, d: &mut Diags, key: &'a str) -> Option<Sp<String>> {
        let r = self.expect(d, key, "a string", |v| match v {
            DeValue::String(s) => Some(s.to_string()),
            _ => None,
        })?;
        match expand_env(&r.v) {
            Ok(v) => {
                if v != r.v {
                    d.mark_env(r.span.clone());
                }
                Some(Sp { v, span: r.span })
            }
            Err(m) => {
                d.push(r.span, format!("`{key}`: {m}"));
                None
            }
        }
    }

    /// A duration written as a string (`"30s"`); the type message says so.
    pub(crate) fn duration_text(&mut self, d: &mut Diags, key: &'a str) -> Option<Sp<String>> {
        self.expect(
            d,
            key,
            "a duration string such as \"30s\" or \"1h30m\"",
            |v| match v {
                DeValue::String(s) => Some(s.to_string()),
                _ => None,
            },
        )
    }

    pub(crate) fn req_string(&mut self, d: &mut Diags, key: &'a str) -> Option<Sp<String>> {
        if !self.has(key) {
            d.push(
                self.where_(),
                format!("[{}] is missing required key `{key}`", self.path),
            );
            return None;
        }
        let s = self.string(d, key)?;
        if s.v.trim().is_empty() {
            d.push(s.span.clone(), format!("`{key}` must not be empty"));
            return None;
        }
        Some(s)
    }

    pub(crate) fn float(&mut self, d: &mut Diags, key: &'a str) -> Option<Sp<f64>> {
        let r = self.expect(d, key, "a number", float_value)?;
        if !r.v.is_finite() {
            d.push(r.span.clone(), format!("`{key}` must be a finite number"));
            return None;
        }
        Some(r)
    }

    pub(crate) fn int(&mut self, d: &mut Diags, key: &'a str) -> Option<Sp<i64>> {
        self.expect(d, key, "an integer", int_value)
    }

    /// An integer in `min..=max`.
    pub(crate) fn int_in(
        &mut self,
        d: &mut Diags,
        key: &'a str,
        min: i64,
        max: i64,
    ) -> Option<Sp<i64>> {
        let r = self.int(d, key)?;
        if r.v < min && max >= u32::MAX as i64 {
            d.push(
                r.span.clone(),
                format!("`{key}` must be at least {min}, found {}", r.v),
            );
            return None;
        }
        if r.v < min || r.v > max {
            d.push(
                r.span.clone(),
                format!("`{key}` must be between {min} and {max}, found {}", r.v),
            );
            return None;
        }
        Some(r)
    }

    pub(crate) fn boolean(&mut self, d: &mut Diags, key: &'a str) -> Option<Sp<bool>> {
        self.expect(d, key, "true or false", |v| match v {
            DeValue::Boolean(b) => Some(*b),
            _ => None,
        })
    }

    /// The span of each entry's key in the table `key` (without taking it), for messages
    /// about one entry: `parameters = { Epochs = "ten" }` points at `Epochs`.
    pub(crate) fn entry_spans(&self, key: &str) -> Vec<(String, Range<usize>)> {
        match self.tbl.get(key).map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => t
                .iter()
                .map(|(k, _)| (k.get_ref().to_string(), k.span()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A table of string values (`{ K = "v" }`); numbers and booleans are taken as their text,
    /// since SageMaker parameters and CodeBuild environment values are strings on the wire.
    pub(crate) fn string_map(
        &mut self,
        d: &mut Diags,
        key: &'a str,
    ) -> Option<Sp<BTreeMap<String, String>>> {
        let v = self.raw(key)?;
        let DeValue::Table(t) = v.get_ref() else {
            d.push(
                v.span(),
                format!(
                    "`{key}` must be a table of strings, e.g. {{ Name = \"value\" }}, found {}",
                    type_name(v.get_ref())
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, val) in t.iter() {
            let text = match val.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                DeValue::Integer(i) => Some(i.as_str().to_string()),
                DeValue::Float(f) => Some(f.as_str().to_string()),
                DeValue::Boolean(b) => Some(b.to_string()),
                _ => None,
            };
            match text {
                Some(s) => {
                    out.insert(k.get_ref().to_string(), s);
                }
                None => {
                    ok = false;
                    d.push(
                        val.span(),
                        format!(
                            "`{key}.{}` must be a string, found {}",
                            k.get_ref(),
                            type_name(val.get_ref())
                        ),
                    );
                }
            }
        }
        ok.then_some(Sp {
            v: out,
            span: v.span(),
        })
    }

    /// An array of strings, or a single string taken as a one-element list.
    pub(crate) fn string_list(
        &mut self,
        d: &mut Diags,
        key: &'a str,
    ) -> Option<Sp<Vec<Sp<String>>>> {
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Sp {
                v: vec![Sp {
                    v: s.to_string(),
                    span: v.span(),
                }],
                span: v.span(),
            }),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for it in items.iter() {
                    match it.get_ref() {
                        DeValue::String(s) => out.push(Sp {
                            v: s.to_string(),
                            span: it.span(),
                        }),
                        other => d.push(
                            it.span(),
                            format!("`{key}` items must be strings, found {}", type_name(other)),
                        ),
                    }
                }
                Some(Sp {
                    v: out,
                    span: v.span(),
                })
            }
            other => {
                d.push(
                    v.span(),
                    format!(
                        "`{key}` must be an array of strings, found {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    }

    /// A sub-table (`[daemon]`), or `None` with a diagnostic if the key holds something else.
    pub(crate) fn table(&mut self, d: &mut Diags, key: &'a str) -> Option<Table<'a, 'i>> {
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::Table(t) => {
                let path = if self.path.is_empty() {
                    key.to_string()
                } else {
                    format!("{}.{key}", self.path)
                };
                let span = self.key_span(key).unwrap_or_else(|| v.span());
                Some(Table::new(path, t, span))
            }
            other => {
                d.push(
                    v.span(),
                    format!("`{key}` must be a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The named entries of a section such as `[checks.NAME]`, each as a table.
    pub(crate) fn named_tables(
        &mut self,
        d: &mut Diags,
        key: &'a str,
    ) -> Vec<(Sp<String>, Table<'a, 'i>)> {
        let Some(section) = self.table(d, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in section.tbl.iter() {
            let name = k.get_ref().to_string();
            match v.get_ref() {
                DeValue::Table(t) => {
                    if !valid_name(&name) {
                        d.push(k.span(), format!("name \"{name}\" in [{key}] may only hold letters, digits, '-', '_' and '.'"));
                    }
                    out.push((
                        Sp {
                            v: name.clone(),
                            span: k.span(),
                        },
                        Table::new(format!("{key}.{name}"), t, k.span()),
                    ));
                }
                other => d.push(
                    v.span(),
                    format!(
                        "`{key}.{name}` must be a table ([{key}.{name}]), found {}",
                        type_name(other)
                    ),
                ),
            }
        }
        out
    }

    /// Reports every key that was not taken, with a suggestion when one is close.
    pub(crate) fn finish(self, d: &mut Diags, allowed: &[&str]) {
        for (k, _) in self.tbl.iter() {
            let key = k.get_ref().as_ref();
            if self.taken.contains(&key) {
                continue;
            }
            let where_ = if self.path.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{}]", self.path)
            };
            let hint = match closest(key, allowed) {
                Some(c) => format!("; did you mean `{c}`?"),
                None => format!("; expected one of: {}", allowed.join(", ")),
            };
            d.push(k.span(), format!("unknown key `{key}` {where_}{hint}"));
        }
    }
}

/// Replaces `${NAME}` with the value of environment variable NAME (`$${` is a literal `${`).
/// Messages name the variable, never its value.
pub(crate) fn expand_env(s: &str) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` (write `${NAME}`, or `$${` for a literal)".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        let val = std::env::var(name).map_err(|_| {
            format!("environment variable {name} is not set (referenced as ${{{name}}})")
        })?;
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn closest<'x>(key: &str, allowed: &[&'x str]) -> Option<&'x str> {
    allowed
        .iter()
        .map(|a| (levenshtein(key, a), *a))
        .filter(|(dist, a)| *dist <= 2.max(a.len() / 4))
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, a)| a)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let s = "a = 1\nbé = 2\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 6), (2, 1));
        assert_eq!(line_col(s, 9), (2, 3));
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("MLOPSD_TEST_EXPAND", "http://127.0.0.1:5000");
        assert_eq!(
            expand_env("${MLOPSD_TEST_EXPAND}/x").unwrap(),
            "http://127.0.0.1:5000/x"
        );
        assert_eq!(expand_env("a $${LITERAL} b").unwrap(), "a ${LITERAL} b");
        assert!(expand_env("${MLOPSD_TEST_SURELY_UNSET}")
            .unwrap_err()
            .contains("MLOPSD_TEST_SURELY_UNSET is not set"));
        assert!(expand_env("${oops").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn suggestion_for_typo() {
        assert_eq!(
            closest("shedule", &["schedule", "metric"]),
            Some("schedule")
        );
        assert_eq!(closest("zzz", &["schedule", "metric"]), None);
    }
}
