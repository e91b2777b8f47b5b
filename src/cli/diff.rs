//! `mlopsd diff`: what an apply of the declared pipelines would do, read from AWS with
//! `DescribePipeline` only; changes nothing. Like `terraform plan`, for CI before a merge.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::aws::Aws;
use crate::cloud::{AwsError, Endpoints as _, ErrorKind, Pipelines as _};
use crate::config::{Config, Declared};
use crate::exit;
use crate::reconcile::{compare, Verdict};

/// At most this many `DescribePipeline` calls at once.
const CONCURRENCY: usize = 8;

/// A declared pipeline: its config name, its SageMaker name, its declaration.
type Item = (String, String, Arc<Declared>);

/// Runs the diff and prints it; returns the exit code: 0 all in sync, 1 something differs,
/// 2 AWS could not be read for some pipeline or endpoint.
pub(crate) async fn run(cfg: &Config, as_json: bool) -> u8 {
    let eps = endpoints(cfg).await;
    let ep_code = if eps.iter().any(|e| matches!(e.1, EpVerdict::Unreadable(_))) {
        exit::NO_ANSWER
    } else if eps.iter().any(|e| matches!(e.1, EpVerdict::Deploy { .. })) {
        exit::FOUND
    } else {
        exit::OK
    };
    let code = pipelines(cfg, as_json, &eps).await;
    code.max(ep_code)
}

/// An endpoint block's verdict: the version it wants against what it serves.
#[derive(Debug)]
enum EpVerdict {
    InSync {
        version: u32,
    },
    Deploy {
        wanted: u32,
        served: Option<u32>,
        config: Option<String>,
    },
    /// No version to deploy (why), nothing to do.
    Nothing(String),
    Unreadable(AwsError),
}

/// Each endpoint block read as the daemon reads it (a `promote_from` block takes the
/// version live on its source endpoint as baked: `diff` has no state store).
async fn endpoints(cfg: &Config) -> Vec<(String, EpVerdict)> {
    if cfg.endpoints.is_empty() {
        return Vec::new();
    }
    let aws = Aws::new(&cfg.aws).await;
    let mut out = Vec::new();
    for (name, e) in &cfg.endpoints {
        let v = async {
            let baked = match &e.promote_from {
                Some(from) => {
                    let src = &cfg.endpoints[from];
                    let live = aws.describe_endpoint(&src.endpoint_name).await?;
                    Some(
                        live.and_then(|v| crate::deploy::version_of(&v.config_name))
                            .into_iter()
                            .collect(),
                    )
                }
                None => None,
            };
            let r = crate::daemon::deploys::read(&aws, e, baked.as_ref()).await?;
            let served = r.view.as_ref().map(|v| v.config_name.clone());
            Ok::<_, AwsError>(match r.wanted {
                Err(why) => EpVerdict::Nothing(why),
                Ok(w) => {
                    let want =
                        crate::deploy::resource_name(&e.endpoint_name, w.version, &e.spec_hash());
                    if served.as_deref() == Some(want.as_str()) {
                        EpVerdict::InSync { version: w.version }
                    } else {
                        EpVerdict::Deploy {
                            wanted: w.version,
                            served: served.as_deref().and_then(crate::deploy::version_of),
                            config: served,
                        }
                    }
                }
            })
        }
        .await;
        out.push((name.clone(), v.unwrap_or_else(EpVerdict::Unreadable)));
    }
    out
}

fn endpoint_json(eps: &[(String, EpVerdict)]) -> Vec<Value> {
    eps.iter()
        .map(|(name, v)| match v {
            EpVerdict::InSync { version } => json!({"name": name, "action": "in_sync", "served": version, "wanted": version}),
            EpVerdict::Deploy { wanted, served, config } => json!({"name": name, "action": "deploy", "served": served, "config": config, "wanted": wanted}),
            EpVerdict::Nothing(why) => json!({"name": name, "action": "nothing", "reason": why}),
            EpVerdict::Unreadable(e) => json!({"name": name, "action": "error", "error": e.to_string()}),
        })
        .collect()
}

fn endpoint_text(eps: &[(String, EpVerdict)]) {
    for (name, v) in eps {
        match v {
            EpVerdict::InSync { version } => {
                println!("[endpoints.{name}]: in sync (serves v{version})")
            }
            EpVerdict::Deploy {
                wanted,
                served,
                config,
            } => println!(
                "[endpoints.{name}]: deploy v{wanted} (serves {})",
                match (served, config) {
                    (Some(s), _) => format!("v{s}"),
                    (None, Some(c)) => format!("config {c}, not mlopsd's"),
                    (None, None) => "nothing: the endpoint is created".into(),
                }
            ),
            EpVerdict::Nothing(why) => println!("[endpoints.{name}]: nothing to deploy ({why})"),
            EpVerdict::Unreadable(e) => println!("[endpoints.{name}]: cannot compare: {e}"),
        }
    }
}

/// The declared pipelines' part (and the printing of both).
async fn pipelines(cfg: &Config, as_json: bool, eps: &[(String, EpVerdict)]) -> u8 {
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
        print_json(&declared, &verdicts, endpoint_json(eps));
    } else {
        if !declared.is_empty() || eps.is_empty() {
            print_text(&declared, &verdicts);
        }
        endpoint_text(eps);
    }
    code
}

/// Each pipeline's verdict, from one `DescribePipeline` each (a few at a time).
async fn verdicts(cfg: &Config, declared: &[Item]) -> Vec<Verdict> {
    if declared.is_empty() {
        return Vec::new();
    }
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

fn print_json(declared: &[Item], verdicts: &[Verdict], endpoints: Vec<Value>) {
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
        serde_json::to_string_pretty(&json!({ "pipelines": items, "endpoints": endpoints }))
            .unwrap_or_default()
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
