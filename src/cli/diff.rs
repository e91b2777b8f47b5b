//! `mlopsd diff`: what an apply of the declared pipelines would do, read from AWS with
//! `DescribePipeline` only; changes nothing. Like `terraform plan`, for CI before a merge.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::aws::Aws;
use crate::cloud::{AwsError, ErrorKind, Pipelines as _};
use crate::config::{Config, Declared};
use crate::exit;
use crate::reconcile::{compare, Verdict};

/// At most this many `DescribePipeline` calls at once.
const CONCURRENCY: usize = 8;

/// A declared pipeline: its config name, its SageMaker name, its declaration.
type Item = (String, String, Arc<Declared>);

/// Runs the diff and prints it; returns the exit code: 0 all in sync, 1 something differs,
/// 2 AWS could not be read for some pipeline.
pub(crate) async fn run(cfg: &Config, as_json: bool) -> u8 {
    let declared: Vec<Item> = cfg
        .pipelines
        .iter()
        .filter_map(|(n, p)| {
            p.declared
                .as_ref()
                .map(|d| (n.clone(), p.pipeline_name.clone(), d.clone()))
        })
        .collect();
    let verdicts = verdicts(cfg, &declared).await;
    let code = if verdicts.iter().any(|v| matches!(v, Verdict::Unreadable(_))) {
        exit::NO_ANSWER
    } else if verdicts.iter().all(|v| *v == Verdict::InSync) {
        exit::OK
    } else {
        exit::FOUND
    };
    if as_json {
        print_json(&declared, &verdicts);
    } else {
        print_text(&declared, &verdicts);
    }
    code
}

/// Each pipeline's verdict, from one `DescribePipeline` each (a few at a time).
async fn verdicts(cfg: &Config, declared: &[Item]) -> Vec<Verdict> {
    let aws = Aws::new(&cfg.aws).await;
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, aws_name, _)) in declared.iter().enumerate() {
        let (aws, sem, aws_name) = (aws.clone(), sem.clone(), aws_name.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, aws.describe_pipeline(&aws_name).await)
        });
    }
    let mut answers = vec![None; declared.len()];
    while let Some(r) = tasks.join_next().await {
        if let Ok((i, a)) = r {
            answers[i] = Some(a);
        }
    }
    declared
        .iter()
        .zip(answers)
        .map(|((_, _, decl), a)| match a {
            Some(Ok(remote)) => compare(remote.as_ref(), decl),
            Some(Err(e)) => Verdict::Unreadable(e),
            None => Verdict::Unreadable(AwsError::new(
                "sagemaker",
                "DescribePipeline",
                ErrorKind::Transient,
                "Internal",
                "the call did not complete",
            )),
        })
        .collect()
}

fn print_json(declared: &[Item], verdicts: &[Verdict]) {
    let items: Vec<Value> = declared
        .iter()
        .zip(verdicts)
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
}

fn print_text(declared: &[Item], verdicts: &[Verdict]) {
    if declared.is_empty() {
        println!("no pipeline has a `definition`: nothing to compare");
        return;
    }
    let (mut differ, mut same, mut failed) = (0, 0, 0);
    for ((name, aws_name, decl), v) in declared.iter().zip(verdicts) {
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
}
