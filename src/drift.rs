//! Drift reports (pure): reading a monitoring report — SageMaker Model Monitor's
//! `constraint_violations.json` (data quality, model quality, bias, explainability) or a JSON
//! report such as Evidently writes — into violations or a number, the `check_types` /
//! `features` filters, and the feature list a rule's parameter carries (SPEC "Drift reports as
//! a check source"). No I/O: the daemon reads the object and hands over its text.
//!

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// A report larger than this is an error of its check, never read.
pub(crate) const MAX_REPORT: usize = 1 << 20;

/// The most characters a SageMaker pipeline parameter value may hold.
pub(crate) const MAX_PARAMETER: usize = 1024;

/// One violation, as the four Model Monitor report kinds (and list entries of other JSON
/// reports) name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Violation {
    /// `feature_name` (data quality), `metric_name` (model quality, bias, explainability),
    /// or `column_name` / `feature` (other reports); `None` when the entry names none.
    pub name: Option<String>,
    /// `constraint_check_type` (`baseline_drift_check`, `LessThanThreshold`, …).
    pub check_type: Option<String>,
    pub description: String,
    /// A bias violation's facet (`Age = 40`), or an explainability violation's label.
    pub facet: Option<String>,
}

/// Why a report gives no answer: an error of its check, never "ok".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReportError {
    TooLarge(usize),
    NotJson(String),
    PathAbsent(String),
    NotANumber(String),
    NotAList(String),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::TooLarge(n) => write!(
                f,
                "the report is {n} bytes, over the {MAX_REPORT}-byte limit"
            ),
            ReportError::NotJson(e) => write!(f, "the report is not JSON: {e}"),
            ReportError::PathAbsent(p) => write!(f, "the report has nothing at \"{p}\""),
            ReportError::NotANumber(p) => write!(f, "the value at \"{p}\" is not a number"),
            ReportError::NotAList(p) => write!(
                f,
                "the value at \"{p}\" is not a list (or a table of entries)"
            ),
        }
    }
}

fn parse(text: &str) -> Result<Value, ReportError> {
    if text.len() > MAX_REPORT {
        return Err(ReportError::TooLarge(text.len()));
    }
    serde_json::from_str(text).map_err(|e| ReportError::NotJson(e.to_string()))
}

/// The value at a dotted path (`metrics.0.result.share_of_drifted_columns`: a number segment
/// indexes a list).
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// `value = PATH`: the number at that path.
pub(crate) fn value_at(text: &str, path: &str) -> Result<f64, ReportError> {
    let v = parse(text)?;
    let x = at(&v, path).ok_or_else(|| ReportError::PathAbsent(path.to_string()))?;
    match x {
        Value::Number(n) => n.as_f64(),
        // Reports written by Python sometimes quote numbers.
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
    .filter(|x| x.is_finite())
    .ok_or_else(|| ReportError::NotANumber(path.to_string()))
}

/// The violations listed at `path` (`violations` for Model Monitor's reports). A table of
/// entries counts as its values, in key order, with an entry whose `drift_detected` is
/// `false` left out: Evidently's `DataDriftTable` (`drift_by_columns`) reads as its drifted
/// columns.
pub(crate) fn violations(text: &str, path: &str) -> Result<Vec<Violation>, ReportError> {
    let v = parse(text)?;
    let list = at(&v, path).ok_or_else(|| ReportError::PathAbsent(path.to_string()))?;
    match list {
        Value::Array(items) => Ok(items.iter().map(violation).collect()),
        Value::Object(m) if m.values().all(Value::is_object) => Ok(m
            .iter()
            .filter(|(_, e)| e.get("drift_detected") != Some(&Value::Bool(false)))
            .map(|(k, e)| {
                let mut x = violation(e);
                if x.name.is_none() {
                    x.name = Some(k.clone());
                }
                x
            })
            .collect()),
        _ => Err(ReportError::NotAList(path.to_string())),
    }
}

fn violation(v: &Value) -> Violation {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let facet = match (s("facet"), s("facet_value"), s("label")) {
        (Some(f), Some(x), _) => Some(format!("{f} = {x}")),
        (Some(f), None, _) => Some(f),
        (None, _, label) => label,
    };
    // Evidently's column entry: the statistical test and its score stand for a description.
    let test = match (
        s("stattest_name"),
        v.get("drift_score").and_then(Value::as_f64),
    ) {
        (Some(t), Some(x)) => Some(format!("drift score {x} ({t})")),
        (None, Some(x)) => Some(format!("drift score {x}")),
        _ => None,
    };
    Violation {
        name: s("feature_name")
            .or_else(|| s("metric_name"))
            .or_else(|| s("column_name"))
            .or_else(|| s("feature")),
        check_type: s("constraint_check_type"),
        description: s("description")
            .or_else(|| v.as_str().map(str::to_string))
            .or(test)
            .unwrap_or_default(),
        facet,
    }
}

/// The violations that count: of one of `check_types` (all when empty) and naming one of
/// `features` (all when empty; an entry that names no feature counts only without the filter).
pub(crate) fn filtered(
    all: Vec<Violation>,
    check_types: &[String],
    features: &[String],
) -> Vec<Violation> {
    all.into_iter()
        .filter(|v| {
            check_types.is_empty()
                || v.check_type
                    .as_ref()
                    .is_some_and(|t| check_types.contains(t))
        })
        .filter(|v| features.is_empty() || v.name.as_ref().is_some_and(|n| features.contains(n)))
        .collect()
}

/// `{{ check.features }}`: the names the violations carry, sorted and comma-joined, shortened
/// to `max` characters with "…+N" (N names left out) — a start is never refused for it.
pub(crate) fn features_text(vs: &[Violation], max: usize) -> String {
    let names: BTreeSet<&str> = vs.iter().filter_map(|v| v.name.as_deref()).collect();
    let names: Vec<&str> = names.into_iter().collect();
    let whole = names.join(",");
    if whole.chars().count() <= max {
        return whole;
    }
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        let rest = names.len() - i;
        let tail = format!("…+{rest}");
        let sep = if out.is_empty() { "" } else { "," };
        let next = out.chars().count() + sep.chars().count() + n.chars().count();
        // Room for this name and, if more follow, the marker after it.
        let marker = if rest > 1 {
            format!("…+{}", rest - 1).chars().count()
        } else {
            0
        };
        if next + marker > max {
            let cut = tail.chars().count();
            if out.chars().count() + cut > max {
                // Not even the count fits: an ellipsis alone (a cut count would mislead).
                return "…".chars().take(max).collect();
            }
            out.push_str(&tail);
            return out;
        }
        out.push_str(sep);
        out.push_str(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shapes of AWS's documentation (Model Monitor's "Schema for Violations", Clarify's
    // bias drift and feature attribution drift violations) and of a model quality report.
    const DATA_QUALITY: &str = r#"{"violations": [
        {"feature_name": "fare_amount", "constraint_check_type": "baseline_drift_check",
         "description": "Baseline drift distance: 0.31 exceeds threshold: 0.1"},
        {"feature_name": "trip_distance", "constraint_check_type": "completeness_check",
         "description": "Data completeness 0.82 is below the threshold 1.0"},
        {"feature_name": "tip", "constraint_check_type": "baseline_drift_check",
         "description": "Baseline drift distance: 0.2 exceeds threshold: 0.1"}]}"#;
    const MODEL_QUALITY: &str = r#"{"violations": [{"constraint_check_type": "LessThanThreshold",
        "description": "Metric weightedF2 with 0.69 was LessThanThreshold 0.9", "metric_name": "weightedF2"}]}"#;
    const BIAS: &str = r#"{"version": "1.0", "violations": [
        {"facet": "Age", "facet_value": "40", "metric_name": "CI", "constraint_check_type": "bias_drift_check",
         "description": "Value 0.0751544567666083 does not meet the constraint requirement"},
        {"facet": "Age", "facet_value": "40", "metric_name": "DPPL", "constraint_check_type": "bias_drift_check",
         "description": "Value -0.0791244970125596 does not meet the constraint requirement"}]}"#;
    const EXPLAINABILITY: &str = r#"{"version": "1.0", "violations": [
        {"label": "label0", "metric_name": "shap", "constraint_check_type": "feature_attribution_drift_check",
         "description": "Feature attribution drift 0.7639720923277322 exceeds threshold 0.9"}]}"#;
    const EVIDENTLY: &str = r#"{"metrics": [{"metric": "DatasetDriftMetric",
        "result": {"drift_share": 0.5, "number_of_columns": 10, "number_of_drifted_columns": 4,
                   "share_of_drifted_columns": 0.4, "dataset_drift": false}}]}"#;

    fn names(v: &[Violation]) -> Vec<&str> {
        v.iter().filter_map(|x| x.name.as_deref()).collect()
    }

    #[test]
    fn the_four_monitor_kinds_name_their_features_and_metrics() {
        let dq = violations(DATA_QUALITY, "violations").unwrap();
        assert_eq!(names(&dq), ["fare_amount", "trip_distance", "tip"]);
        assert_eq!(dq[0].check_type.as_deref(), Some("baseline_drift_check"));
        let mq = violations(MODEL_QUALITY, "violations").unwrap();
        assert_eq!(names(&mq), ["weightedF2"]);
        let bias = violations(BIAS, "violations").unwrap();
        assert_eq!(names(&bias), ["CI", "DPPL"]);
        assert_eq!(bias[0].facet.as_deref(), Some("Age = 40"));
        let ex = violations(EXPLAINABILITY, "violations").unwrap();
        assert_eq!(names(&ex), ["shap"]);
        assert_eq!(ex[0].facet.as_deref(), Some("label0"));
    }

    #[test]
    fn filters_by_check_type_and_feature() {
        let all = violations(DATA_QUALITY, "violations").unwrap();
        let drift = filtered(all.clone(), &["baseline_drift_check".into()], &[]);
        assert_eq!(names(&drift), ["fare_amount", "tip"]);
        let one = filtered(
            all.clone(),
            &["baseline_drift_check".into()],
            &["fare_amount".into(), "trip_distance".into()],
        );
        assert_eq!(names(&one), ["fare_amount"]);
        assert!(filtered(all, &["data_type_check".into()], &[]).is_empty());
        // An entry naming no feature counts only without a feature filter.
        let bare = violations(r#"{"v": ["column x drifted"]}"#, "v").unwrap();
        assert_eq!(bare[0].description, "column x drifted");
        assert_eq!(filtered(bare.clone(), &[], &[]).len(), 1);
        assert!(filtered(bare, &[], &["x".into()]).is_empty());
    }

    #[test]
    fn evidentlys_drift_table_reads_as_its_drifted_columns() {
        let r = r#"{"metrics": [{"metric": "DatasetDriftMetric", "result": {"share_of_drifted_columns": 0.4}},
            {"metric": "DataDriftTable", "result": {"number_of_drifted_columns": 2, "drift_by_columns": {
              "tenure": {"column_name": "tenure", "column_type": "num", "stattest_name": "K-S p_value", "drift_score": 0.001, "drift_detected": true},
              "monthly_charges": {"column_name": "monthly_charges", "stattest_name": "K-S p_value", "drift_score": 0.4, "drift_detected": false},
              "contract": {"stattest_name": "chi-square p_value", "drift_score": 0.02, "drift_detected": true}}}}]}"#;
        let v = violations(r, "metrics.1.result.drift_by_columns").unwrap();
        assert_eq!(
            names(&v),
            ["contract", "tenure"],
            "key order; undrifted left out"
        );
        assert_eq!(v[1].description, "drift score 0.001 (K-S p_value)");
        assert_eq!(features_text(&v, MAX_PARAMETER), "contract,tenure");
        assert_eq!(
            violations(r, "metrics.0.result").unwrap_err(),
            ReportError::NotAList("metrics.0.result".into()),
            "a table of numbers is no list of entries"
        );
    }

    #[test]
    fn a_value_at_a_dotted_path() {
        let v = value_at(EVIDENTLY, "metrics.0.result.share_of_drifted_columns").unwrap();
        assert_eq!(v, 0.4);
        assert_eq!(
            value_at(EVIDENTLY, "metrics.0.result.dataset_drift").unwrap(),
            0.0
        );
        assert_eq!(value_at(r#"{"a": "0.25"}"#, "a").unwrap(), 0.25);
    }

    #[test]
    fn every_unreadable_report_is_an_error_never_ok() {
        assert_eq!(
            value_at(EVIDENTLY, "metrics.1.result").unwrap_err(),
            ReportError::PathAbsent("metrics.1.result".into())
        );
        assert_eq!(
            value_at(EVIDENTLY, "metrics.0.result").unwrap_err(),
            ReportError::NotANumber("metrics.0.result".into())
        );
        assert!(matches!(
            violations("{not json", "violations"),
            Err(ReportError::NotJson(_))
        ));
        assert_eq!(
            violations(EVIDENTLY, "metrics.0.result").unwrap_err(),
            ReportError::NotAList("metrics.0.result".into())
        );
        let big = format!("{{\"a\": \"{}\"}}", "x".repeat(MAX_REPORT));
        assert!(matches!(value_at(&big, "a"), Err(ReportError::TooLarge(_))));
        assert!(ReportError::TooLarge(2_000_000)
            .to_string()
            .contains("over the 1048576-byte limit"));
        let nan = value_at(r#"{"a": "NaN"}"#, "a").unwrap_err();
        assert_eq!(nan, ReportError::NotANumber("a".into()));
    }

    #[test]
    fn the_feature_list_is_sorted_and_shortened_to_fit_a_parameter() {
        let dq = violations(DATA_QUALITY, "violations").unwrap();
        assert_eq!(
            features_text(&dq, MAX_PARAMETER),
            "fare_amount,tip,trip_distance"
        );
        let many: Vec<Violation> = (0..500)
            .map(|i| Violation {
                name: Some(format!("feature_{i:03}")),
                check_type: None,
                description: String::new(),
                facet: None,
            })
            .collect();
        let t = features_text(&many, MAX_PARAMETER);
        assert!(t.chars().count() <= MAX_PARAMETER, "{}", t.len());
        let (shown, rest) = t.rsplit_once("…+").unwrap();
        let kept = shown.split(',').count();
        assert_eq!(kept + rest.parse::<usize>().unwrap(), 500, "{t}");
        assert!(shown.starts_with("feature_000,feature_001"));
        // Duplicates count once; a tiny limit still gives a marker, never a failure.
        assert_eq!(
            features_text(&[many[0].clone(), many[0].clone()], 100),
            "feature_000"
        );
        assert_eq!(features_text(&many, 4), "…");
    }
}
