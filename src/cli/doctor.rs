//! `mlopsd doctor`: the preflight (`doctor::check`) against AWS, printed for a person or as
//! JSON; changes nothing.

use serde_json::{json, Value};

use crate::aws::{Aws, HaTable};
use crate::cloud::{ErrorKind, Identity as _};
use crate::config::Config;
use crate::doctor::{check, ha_finding, Scope, Status};
use crate::exit;

/// The caller, from STS `GetCallerIdentity`.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    arn: String,
    account: String,
    region: String,
    endpoint: String,
}

/// Prints the identity and one line per resource; returns the exit code (0 all ok, 1 some
/// problem, 2 AWS could not be reached at all).
pub(crate) async fn run(cfg: &Config, as_json: bool) -> u8 {
    let aws = Aws::new(&cfg.aws).await;
    let endpoint = cfg
        .aws
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("AWS ({})", aws.region()));
    let identity = aws.caller_identity().await;
    let (identity, findings) = match identity {
        Err(e) if matches!(e.kind, ErrorKind::Unreachable | ErrorKind::Credentials) => {
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"identity": null, "error": e.to_string(), "resources": []})
                    )
                    .unwrap_or_default()
                );
            } else {
                println!("AWS could not be reached: {e}");
            }
            return exit::NO_ANSWER;
        }
        Err(e) => (Err(e), check(&aws, cfg, &Scope::all()).await),
        Ok((arn, account)) => (
            Ok(Identity {
                arn,
                account,
                region: aws.region().to_string(),
                endpoint: endpoint.clone(),
            }),
            check(&aws, cfg, &Scope::all()).await,
        ),
    };
    let mut findings = findings;
    if let Some(t) = &cfg.daemon.ha_table {
        findings.push(ha_finding(&HaTable::new(&cfg.aws, t).await).await);
    }
    let all_unreachable =
        !findings.is_empty() && findings.iter().all(|f| f.status == Status::Unreachable);
    let code = if all_unreachable {
        exit::NO_ANSWER
    } else if findings.iter().all(|f| f.status == Status::Ok) && identity.is_ok() {
        exit::OK
    } else {
        exit::FOUND
    };
    if as_json {
        let id = match &identity {
            Ok(i) => {
                json!({"arn": i.arn, "account": i.account, "region": i.region, "endpoint": i.endpoint})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        let res: Vec<Value> = findings
            .iter()
            .map(|f| json!({"kind": f.kind.as_str(), "name": f.name, "resource": f.resource, "status": f.status.as_str(), "detail": f.detail}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"identity": id, "resources": res}))
                .unwrap_or_default()
        );
        return code;
    }
    match &identity {
        Ok(i) => println!(
            "identity: {} (account {}), region {}, endpoint {}",
            i.arn, i.account, i.region, i.endpoint
        ),
        Err(e) => println!("identity: unknown ({e})"),
    }
    let w = findings
        .iter()
        .map(|f| f.config_item().chars().count())
        .max()
        .unwrap_or(0);
    for f in &findings {
        println!(
            "{:<11} {:<w$}  {}: {}",
            f.status.as_str(),
            f.config_item(),
            f.resource,
            f.detail
        );
    }
    let problems = findings.iter().filter(|f| f.status != Status::Ok).count();
    println!(
        "{} resource(s): {} ok, {problems} with a problem",
        findings.len(),
        findings.len() - problems
    );
    code
}
