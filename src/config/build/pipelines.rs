//! `[pipelines.NAME]` (a SageMaker pipeline; with `definition`, declared: its file read and
//! checked) and `[builds.NAME]` (a CodeBuild project).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::common::*;
use super::Refs;
use crate::config::reader::{Diags, Sp, Table};
use crate::config::*;

pub(in crate::config) const PIPELINE_KEYS: &[&str] = &[
    "pipeline_name",
    "parameters",
    "max_concurrent",
    "definition",
    "role_arn",
    "reconcile",
    "notify",
];

/// `[pipelines.NAME]`; with `definition`, the file is read (relative to `base`) and checked,
/// and so are the block's own parameters against it.
pub(super) fn read_pipeline(
    d: &mut Diags,
    t: &mut Table<'_, '_>,
    base: &Path,
    refs: &mut Refs,
) -> Option<Pipeline> {
    let pipeline_name = t.req_string(d, "pipeline_name");
    let params = t.string_map(d, "parameters");
    let max_concurrent = positive_u32(d, t, "max_concurrent", 1);
    let definition = t.string(d, "definition");
    let role_arn = t.string(d, "role_arn");
    let reconcile = t.string(d, "reconcile");
    let notify = t.string_list(d, "notify");
    let mut ok = true;
    if let Some(n) = &notify {
        for x in &n.v {
            refs.notifiers.push(x.clone());
        }
    }
    let declared = match definition {
        None => {
            for (key, span) in [
                ("role_arn", role_arn.as_ref().map(|x| x.span.clone())),
                ("reconcile", reconcile.as_ref().map(|x| x.span.clone())),
                ("notify", notify.as_ref().map(|x| x.span.clone())),
            ] {
                if let Some(span) = span {
                    d.push(span, format!("`{key}` needs `definition` (the pipeline definition file mlopsd applies)"));
                    ok = false;
                }
            }
            None
        }
        Some(file) => {
            let role = match role_arn {
                Some(r) if r.v.starts_with("arn:") && r.v.contains(":role/") => Some(r.v),
                Some(r) => {
                    d.push(r.span.clone(), format!("`role_arn` must be an IAM role ARN such as \"arn:aws:iam::123456789012:role/SageMakerPipelineRole\", found {}", d.show(&r)));
                    None
                }
                None => {
                    let span = t.key_span("definition").unwrap_or(t.span.clone());
                    d.push(span, format!("[{}] has `definition` but no `role_arn`: the IAM role SageMaker runs the pipeline as is required", t.path));
                    None
                }
            };
            let mode = match reconcile.as_ref().map(|r| r.v.as_str()) {
                None | Some("apply") => Some(Reconcile::Apply),
                Some("report") => Some(Reconcile::Report),
                Some(other) => {
                    let span = reconcile
                        .as_ref()
                        .map(|r| r.span.clone())
                        .unwrap_or(t.span.clone());
                    d.push(
                        span,
                        format!("`reconcile` must be \"apply\" or \"report\", found \"{other}\""),
                    );
                    None
                }
            };
            let def = read_definition(d, &file, base);
            match (def, role, mode) {
                (Some((definition, path)), Some(role_arn), Some(reconcile)) => {
                    Some(Arc::new(Declared {
                        file: file.v,
                        path,
                        definition,
                        role_arn,
                        reconcile,
                        notify: notify
                            .map(|n| n.v.into_iter().map(|x| x.v).collect())
                            .unwrap_or_default(),
                    }))
                }
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    if let (Some(decl), Some(p)) = (&declared, &params) {
        if !check_declared_params(d, t, &p.v, &decl.file, &decl.definition, false) {
            ok = false;
        }
    }
    let (pipeline_name, max_concurrent) = (pipeline_name?, max_concurrent?);
    if !ok || params.is_none() && t.has("parameters") {
        return None;
    }
    Some(Pipeline {
        pipeline_name: pipeline_name.v,
        parameters: Arc::new(params.map(|x| x.v).unwrap_or_default()),
        max_concurrent,
        declared,
    })
}

/// Reads `definition = "…"` relative to `base`; every problem is reported at the key's value
/// and names the file.
fn read_definition(
    d: &mut Diags,
    file: &Sp<String>,
    base: &Path,
) -> Option<(crate::config::definition::Definition, PathBuf)> {
    if file.v.is_empty() {
        d.push(file.span.clone(), "`definition` must not be empty");
        return None;
    }
    let path = base.join(&file.v);
    match crate::config::definition::read(&path) {
        Ok(def) => Some((def, path)),
        Err(errors) => {
            for e in errors {
                let e = match e.strip_prefix("cannot be read: ") {
                    Some(why) => format!("cannot be read from {}: {why}", path.display()),
                    None => e,
                };
                // "… cannot be read", "… is not valid JSON", "… has no …": about the file;
                // anything else is about a part of it.
                let whole = ["cannot ", "is ", "has ", "must "]
                    .iter()
                    .any(|w| e.starts_with(w));
                let sep = if whole { " " } else { ": " };
                d.push(
                    file.span.clone(),
                    format!("definition \"{}\"{sep}{e}", file.v),
                );
            }
            None
        }
    }
}

/// Every parameter passed to a declared pipeline must be declared in its definition, and a
/// literal value must be of the declared type. Templates (`{{ event… }}`) are checked when
/// rendered. Each problem points at the parameter's key.
pub(super) fn check_declared_params(
    d: &mut Diags,
    t: &Table<'_, '_>,
    params: &BTreeMap<String, String>,
    file: &str,
    def: &crate::config::definition::Definition,
    templates: bool,
) -> bool {
    let spans = t.entry_spans("parameters");
    let span_of = |k: &str| {
        spans
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, s)| s.clone())
            .or_else(|| t.key_span("parameters"))
            .unwrap_or(t.span.clone())
    };
    let mut ok = true;
    for (k, v) in params {
        match def.parameter(k) {
            None => {
                d.push(
                    span_of(k),
                    format!(
                        "parameter `{k}` is not declared in definition \"{file}\" (declared: {})",
                        def.parameter_names()
                    ),
                );
                ok = false;
            }
            // A template is checked when rendered; a literal here.
            Some(ty) if !(ty.fits(v) || templates && v.contains("{{")) => {
                d.push(
                    span_of(k),
                    format!("parameter `{k}` = \"{v}\" is not of its declared type {ty} (definition \"{file}\")"),
                );
                ok = false;
            }
            Some(_) => {}
        }
    }
    ok
}

pub(super) const BUILD_KEYS: &[&str] = &[
    "project_name",
    "source_version",
    "environment",
    "max_concurrent",
];

/// `[builds.NAME]`.
pub(super) fn read_build(d: &mut Diags, t: &mut Table<'_, '_>) -> Option<Build> {
    let project_name = t.req_string(d, "project_name");
    let source_version = t.string(d, "source_version").map(|x| x.v);
    let environment = Arc::new(
        t.string_map(d, "environment")
            .map(|x| x.v)
            .unwrap_or_default(),
    );
    let max_concurrent = positive_u32(d, t, "max_concurrent", 1);
    Some(Build {
        project_name: project_name?.v,
        source_version,
        environment,
        max_concurrent: max_concurrent?,
    })
}
