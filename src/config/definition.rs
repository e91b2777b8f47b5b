//! Declared pipelines: a SageMaker pipeline definition file (as the SageMaker Python SDK's
//! `Pipeline.definition()` writes it), read and checked at validation, compared as JSON
//! values with what AWS holds. Pure, but for `read`, which reads the file.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

/// `PipelineDefinition` is at most this long inline (the API's limit).
pub(crate) const MAX_DEFINITION: usize = 1_048_576;

/// The type of a pipeline parameter, as the definition declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamType {
    String,
    Integer,
    Float,
    Boolean,
}

impl ParamType {
    fn parse(s: &str) -> Option<ParamType> {
        match s {
            "String" => Some(ParamType::String),
            "Integer" => Some(ParamType::Integer),
            "Float" => Some(ParamType::Float),
            "Boolean" => Some(ParamType::Boolean),
            _ => None,
        }
    }

    /// Whether a parameter value (a string on the wire) is of this type.
    pub(crate) fn fits(&self, v: &str) -> bool {
        match self {
            ParamType::String => true,
            ParamType::Integer => v.trim().parse::<i64>().is_ok(),
            ParamType::Float => v.trim().parse::<f64>().is_ok_and(f64::is_finite),
            ParamType::Boolean => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
        }
    }

    /// Whether a JSON `DefaultValue` is of this type.
    fn fits_json(&self, v: &Value) -> bool {
        match (self, v) {
            (ParamType::String, Value::String(_)) => true,
            (ParamType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (ParamType::Float, Value::Number(_)) => true,
            (ParamType::Boolean, Value::Bool(_)) => true,
            (t, Value::String(s)) if *t != ParamType::String => t.fits(s),
            _ => false,
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::String => "String",
            ParamType::Integer => "Integer",
            ParamType::Float => "Float",
            ParamType::Boolean => "Boolean",
        })
    }
}

/// A checked definition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Definition {
    /// The JSON in canonical form (keys sorted, no whitespace): what is sent to AWS and what
    /// is compared. Key order and whitespace in the file are not a difference.
    pub json: Arc<str>,
    /// A short hash of `json`.
    pub hash: String,
    /// The declared parameters, in the file's order.
    pub parameters: Vec<(String, ParamType)>,
}

impl Definition {
    pub(crate) fn parameter(&self, name: &str) -> Option<ParamType> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
    }

    pub(crate) fn parameter_names(&self) -> String {
        if self.parameters.is_empty() {
            return "none".into();
        }
        self.parameters
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads and checks a definition file. The errors are whole sentences without the file name
/// (the caller puts it in front); a JSON syntax error carries its line and column.
pub(crate) fn read(path: &Path) -> Result<Definition, Vec<String>> {
    let meta = std::fs::metadata(path).map_err(|e| vec![format!("cannot be read: {e}")])?;
    if meta.is_dir() {
        return Err(vec!["cannot be read: it is a directory, not a file".into()]);
    }
    let bytes = std::fs::read(path).map_err(|e| vec![format!("cannot be read: {e}")])?;
    let text = String::from_utf8(bytes).map_err(|_| vec!["is not UTF-8 text".to_string()])?;
    parse(&text)
}

/// Checks definition text (see `read`).
pub(crate) fn parse(text: &str) -> Result<Definition, Vec<String>> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        // serde_json ends its message with " at line L column C"; say it our way.
        let msg = msg
            .rsplit_once(" at line ")
            .map(|(m, _)| m.to_string())
            .unwrap_or(msg);
        vec![format!(
            "is not valid JSON: line {}, column {}: {msg}",
            e.line(),
            e.column()
        )]
    })?;
    let mut errors = Vec::new();
    let Value::Object(top) = &v else {
        return Err(vec![format!(
            "must be a JSON object with \"Version\", \"Parameters\" and \"Steps\", found {}",
            kind(&v)
        )]);
    };
    match top.get("Version") {
        Some(Value::String(_)) => {}
        Some(other) => errors.push(format!(
            "\"Version\" must be a string such as \"2020-12-01\", found {}",
            kind(other)
        )),
        None => errors.push("has no \"Version\" (a pipeline definition has \"Version\", \"Parameters\" and \"Steps\")".into()),
    }
    let parameters = parameters(top.get("Parameters"), &mut errors);
    steps(top.get("Steps"), &mut errors);
    let json = canonical(&v);
    if json.len() > MAX_DEFINITION {
        errors.push(format!(
            "is {} bytes as compact JSON; SageMaker takes at most {MAX_DEFINITION} inline",
            json.len()
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Definition {
        hash: short_hash(&json),
        json: json.into(),
        parameters,
    })
}

/// `Parameters`: each with a unique `Name`, a `Type`, and a `DefaultValue` of that type.
fn parameters(v: Option<&Value>, errors: &mut Vec<String>) -> Vec<(String, ParamType)> {
    let mut parameters: Vec<(String, ParamType)> = Vec::new();
    match v {
        Some(Value::Array(ps)) => {
            let mut first_at: Vec<(String, usize)> = Vec::new();
            for (i, p) in ps.iter().enumerate() {
                let at = format!("Parameters[{i}]");
                let Value::Object(o) = p else {
                    errors.push(format!(
                        "{at} must be an object with \"Name\" and \"Type\", found {}",
                        kind(p)
                    ));
                    continue;
                };
                let name = match o.get("Name") {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    _ => {
                        errors.push(format!("{at} has no \"Name\" (a non-empty string)"));
                        continue;
                    }
                };
                if let Some((_, j)) = first_at.iter().find(|(n, _)| *n == name) {
                    errors.push(format!(
                        "parameter \"{name}\" is declared twice (Parameters[{j}] and {at})"
                    ));
                    continue;
                }
                first_at.push((name.clone(), i));
                let ty = match o.get("Type") {
                    Some(Value::String(s)) => match ParamType::parse(s) {
                        Some(t) => t,
                        None => {
                            errors.push(format!("{at} (\"{name}\"): \"Type\" must be String, Integer, Float or Boolean, found \"{s}\""));
                            continue;
                        }
                    },
                    _ => {
                        errors.push(format!(
                            "{at} (\"{name}\") has no \"Type\" (String, Integer, Float or Boolean)"
                        ));
                        continue;
                    }
                };
                if let Some(dv) = o.get("DefaultValue") {
                    if !ty.fits_json(dv) {
                        errors.push(format!(
                            "{at} (\"{name}\"): \"DefaultValue\" {dv} is not of its type {ty}"
                        ));
                    }
                }
                parameters.push((name, ty));
            }
        }
        Some(other) => errors.push(format!(
            "\"Parameters\" must be an array, found {}",
            kind(other)
        )),
        None => errors
            .push("has no \"Parameters\" (an array, empty when the pipeline takes none)".into()),
    }
    parameters
}

/// `Steps`: at least one, each with a unique `Name` and a `Type`.
fn steps(v: Option<&Value>, errors: &mut Vec<String>) {
    match v {
        Some(Value::Array(steps)) if steps.is_empty() => {
            errors.push("\"Steps\" is empty: a pipeline has at least one step".into())
        }
        Some(Value::Array(steps)) => {
            let mut names: Vec<&str> = Vec::new();
            for (i, s) in steps.iter().enumerate() {
                let name = s.get("Name").and_then(Value::as_str);
                let ty = s.get("Type").and_then(Value::as_str);
                match (name, ty) {
                    (Some(n), Some(_)) if !n.is_empty() => {
                        if names.contains(&n) {
                            errors.push(format!("step \"{n}\" is named twice (Steps[{i}])"));
                        }
                        names.push(n);
                    }
                    _ => errors.push(format!(
                        "Steps[{i}] must be an object with a \"Name\" and a \"Type\""
                    )),
                }
            }
        }
        Some(other) => errors.push(format!("\"Steps\" must be an array, found {}", kind(other))),
        None => errors.push("has no \"Steps\"".into()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON text with object keys sorted and no whitespace: equal values, equal text.
pub(crate) fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A short content hash (16 hex digits).
pub(crate) fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A hash of what an apply makes AWS hold: a canonical definition and a role.
pub(crate) fn state_hash(canonical_json: &str, role_arn: &str) -> String {
    short_hash(&format!("{canonical_json}\0{role_arn}"))
}

/// The canonical form of a definition text from AWS (not JSON: the text itself).
pub(crate) fn canonical_text(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .map(|v| canonical(&v))
        .unwrap_or_else(|_| text.to_string())
}

/// One difference between AWS's definition and the file's, at a JSON path
/// (`Steps[1].Arguments.HyperParameters.epochs`). `None`: absent on that side.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub path: String,
    pub aws: Option<Value>,
    pub file: Option<Value>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            None => "(absent)".to_string(),
            Some(v) => {
                let s = v.to_string();
                if s.chars().count() > 80 {
                    let cut: String = s.chars().take(77).collect();
                    format!("{cut}...")
                } else {
                    s
                }
            }
        };
        write!(
            f,
            "{}: {} → {}",
            self.path,
            show(&self.aws),
            show(&self.file)
        )
    }
}

/// Every path where `aws` and `file` differ, in document order (objects by key, arrays by
/// index). Values are compared as JSON values.
pub(crate) fn changes(aws: &Value, file: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk(aws, file, String::new(), &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", Value::String(key.to_string())),
    }
}

fn walk(a: &Value, b: &Value, path: String, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = join(&path, k);
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => walk(u, v, p, out),
                    (u, v) => out.push(Change {
                        path: p,
                        aws: u.cloned(),
                        file: v.cloned(),
                    }),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(u), Some(v)) => walk(u, v, p, out),
                    (u, v) => out.push(Change {
                        path: p,
                        aws: u.cloned(),
                        file: v.cloned(),
                    }),
                }
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(Change {
            path: if path.is_empty() {
                "(whole)".into()
            } else {
                path
            },
            aws: Some(x.clone()),
            file: Some(y.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OK: &str = r#"{"Version": "2020-12-01", "Parameters": [
        {"Name": "InputData", "Type": "String", "DefaultValue": "s3://b/in/"},
        {"Name": "Epochs", "Type": "Integer", "DefaultValue": 10},
        {"Name": "AccuracyThreshold", "Type": "Float", "DefaultValue": 0.8},
        {"Name": "Deploy", "Type": "Boolean", "DefaultValue": false}],
      "Steps": [{"Name": "Train", "Type": "Training", "Arguments": {}}]}"#;

    #[test]
    fn reads_parameters_and_canonical_form() {
        let d = parse(OK).unwrap();
        assert_eq!(d.parameter("Epochs"), Some(ParamType::Integer));
        assert_eq!(d.parameter("Nope"), None);
        assert_eq!(
            d.parameter_names(),
            "InputData, Epochs, AccuracyThreshold, Deploy"
        );
        // Key order and whitespace do not change the canonical form.
        let reordered = r#"{"Steps":[{"Arguments":{},"Type":"Training","Name":"Train"}],"Parameters":[{"Type":"String","Name":"InputData","DefaultValue":"s3://b/in/"},{"Name":"Epochs","DefaultValue":10,"Type":"Integer"},{"Name":"AccuracyThreshold","Type":"Float","DefaultValue":0.8},{"Name":"Deploy","Type":"Boolean","DefaultValue":false}],"Version":"2020-12-01"}"#;
        assert_eq!(parse(reordered).unwrap().hash, d.hash);
        assert!(d
            .json
            .starts_with(r#"{"Parameters":[{"DefaultValue":"s3://b/in/""#));
    }

    #[test]
    fn types_fit() {
        assert!(ParamType::Integer.fits("12"));
        assert!(!ParamType::Integer.fits("1.5"));
        assert!(ParamType::Float.fits("0.85"));
        assert!(!ParamType::Float.fits("high"));
        assert!(!ParamType::Float.fits("NaN"));
        assert!(ParamType::Boolean.fits("True"));
        assert!(!ParamType::Boolean.fits("yes"));
        assert!(ParamType::String.fits(""));
    }

    #[test]
    fn every_problem_is_reported() {
        let e = parse(r#"{"Parameters": [{"Name": "A", "Type": "String"}, {"Name": "A", "Type": "String"}, {"Name": "B", "Type": "Str"}, {"Name": "C", "Type": "Integer", "DefaultValue": "x"}], "Steps": []}"#).unwrap_err();
        assert_eq!(
            e,
            vec![
                "has no \"Version\" (a pipeline definition has \"Version\", \"Parameters\" and \"Steps\")",
                "parameter \"A\" is declared twice (Parameters[0] and Parameters[1])",
                "Parameters[2] (\"B\"): \"Type\" must be String, Integer, Float or Boolean, found \"Str\"",
                "Parameters[3] (\"C\"): \"DefaultValue\" \"x\" is not of its type Integer",
                "\"Steps\" is empty: a pipeline has at least one step",
            ]
        );
        let e = parse("{\n  \"Version\": \"2020-12-01\",\n  \"Steps\": [,]\n}").unwrap_err();
        assert_eq!(
            e,
            vec!["is not valid JSON: line 3, column 13: expected value"]
        );
        assert_eq!(
            parse("[1]").unwrap_err(),
            vec!["must be a JSON object with \"Version\", \"Parameters\" and \"Steps\", found an array"]
        );
    }

    #[test]
    fn changes_name_each_path() {
        let a = json!({"Steps": [{"Name": "T", "Arguments": {"epochs": "10", "x.y": 1}}], "Version": "1"});
        let b = json!({"Version": "1", "Steps": [{"Name": "T", "Arguments": {"epochs": "20", "x.y": 1}}, {"Name": "E"}]});
        let c = changes(&a, &b);
        let shown: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "Steps[0].Arguments.epochs: \"10\" → \"20\"",
                "Steps[1]: (absent) → {\"Name\":\"E\"}",
            ]
        );
        assert!(changes(&a, &a).is_empty());
        let q = changes(&json!({"a b": 1}), &json!({"a b": 2}));
        assert_eq!(q[0].path, "[\"a b\"]");
    }
}
