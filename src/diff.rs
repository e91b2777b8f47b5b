//! `mlopsd diff`: what an apply of the declared pipelines would do, read from AWS with
//! `DescribePipeline` only; changes nothing. Like `terraform plan`, for CI before a merge.

use serde_json::{json, Value};

use crate::aws::{Aws, AwsError, RemotePipeline};
use crate::config::definition::{self, Change};
use crate::config::{Config, Declared};

/// At most this many `DescribePipeline` calls at once.
const CONCURRENCY: usize = 8;

/// What an apply would do to one pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Create,
    Update(Vec<Change>),
    InSync,
    Unreadable(AwsError),
}

/// Compares one declared pipeline with what AWS holds: every changed JSON path, and
/// `RoleArn` when the role differs.
pub fn compare(remote: Option<&RemotePipeline>, decl: &Declared) -> Verdict {
    let Some(r) = remote else {
        return Verdict::Create;
    };
    let file: Value = serde_json::from_str(&decl.definition.json).unwrap_or_default();
    let mut changes = Vec::new();
    if r.role_arn != decl.role_arn {
        changes.push(Change {
            path: "RoleArn".into(),
            aws: Some(Value::String(r.role_arn.clone())),
            file: Some(Value::String(decl.role_arn.clone())),
        });
    }
    match serde_json::from_str::<Value>(&r.definition) {
        Ok(aws) => changes.extend(definition::changes(&aws, &file)),
        Err(_) => changes.push(Change {
            path: "(whole)".into(),
            aws: Some(Value::String(r.definition.clone())),
            file: Some(file),
        }),
    }
    if changes.is_empty() {
        Verdict::InSync
    } else {
        Verdict::Update(changes)
    }
}

/// Runs the diff and prints it; returns the exit code: 0 all in sync, 1 something differs,
/// 2 AWS could not be read for some pipeline.
pub async fn run(cfg: &Config, as_json: bool) -> u8 {
    let declared: Vec<(String, String, std::sync::Arc<Declared>)> = cfg
        .pipelines
        .iter()
        .filter_map(|(n, p)| {
            p.declared
                .as_ref()
                .map(|d| (n.clone(), p.pipeline_name.clone(), d.clone()))
        })
        .collect();
    let aws = Aws::new(&cfg.aws).await;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, aws_name, _)) in declared.iter().enumerate() {
        let (aws, sem, aws_name) = (aws.clone(), sem.clone(), aws_name.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, aws.describe_pipeline(&aws_name).await)
        });
    }
    let mut answers: Vec<Option<Result<Option<RemotePipeline>, AwsError>>> =
        vec![None; declared.len()];
    while let Some(r) = tasks.join_next().await {
        if let Ok((i, a)) = r {
            answers[i] = Some(a);
        }
    }
    let verdicts: Vec<Verdict> = declared
        .iter()
        .zip(answers)
        .map(|((_, _, decl), a)| match a {
            Some(Ok(remote)) => compare(remote.as_ref(), decl),
            Some(Err(e)) => Verdict::Unreadable(e),
            None => Verdict::Unreadable(AwsError {
                service: "sagemaker",
                operation: "DescribePipeline",
                code: "Internal".into(),
                message: "the call did not complete".into(),
                transient: true,
            }),
        })
        .collect();
    let code = if verdicts.iter().any(|v| matches!(v, Verdict::Unreadable(_))) {
        2
    } else if verdicts.iter().all(|v| *v == Verdict::InSync) {
        0
    } else {
        1
    };
    if as_json {
        let items: Vec<Value> = declared
            .iter()
            .zip(&verdicts)
            .map(|((name, aws_name, decl), v)| {
                let (action, changes, error) = match v {
                    Verdict::Create => ("create", vec![], None),
                    Verdict::InSync => ("in_sync", vec![], None),
                    Verdict::Update(c) => (
                        "update",
                        c.iter()
                            .map(|c| json!({"path": c.path, "aws": c.aws, "file": c.file}))
                            .collect(),
                        None,
                    ),
                    Verdict::Unreadable(e) => ("error", vec![], Some(e.to_string())),
                };
                json!({
                    "name": name,
                    "pipeline_name": aws_name,
                    "definition": decl.file,
                    "action": action,
                    "changes": changes,
                    "error": error,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "pipelines": items })).unwrap_or_default()
        );
        return code;
    }
    if declared.is_empty() {
        println!("no pipeline has a `definition`: nothing to compare");
        return 0;
    }
    let (mut differ, mut same, mut failed) = (0, 0, 0);
    for ((name, aws_name, decl), v) in declared.iter().zip(&verdicts) {
        let head = format!("[pipelines.{name}] {aws_name} ({})", decl.file);
        match v {
            Verdict::InSync => {
                same += 1;
                println!("{head}: in sync");
            }
            Verdict::Create => {
                differ += 1;
                println!("{head}: create (absent in SageMaker)");
            }
            Verdict::Update(changes) => {
                differ += 1;
                println!("{head}: update, {} change(s):", changes.len());
                for c in changes {
                    println!("    {c}");
                }
            }
            Verdict::Unreadable(e) => {
                failed += 1;
                println!("{head}: cannot compare: {e}");
            }
        }
    }
    println!(
        "{} pipeline(s): {differ} to change, {same} in sync{}",
        declared.len(),
        if failed > 0 {
            format!(", {failed} could not be read")
        } else {
            String::new()
        }
    );
    code
}
