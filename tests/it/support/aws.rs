//! The AWS side of integration tests: resources on moto server made and inspected with the
//! official SDK. `MLOPSD_TEST_AWS` (set by scripts/test) points at moto; without it every
//! test that needs AWS fails with a message saying how to run it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};

pub fn endpoint() -> String {
    match std::env::var("MLOPSD_TEST_AWS") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "MLOPSD_TEST_AWS is not set: these tests need a moto server. Run them with scripts/test (it installs and starts moto), \
             or start `moto_server -H 127.0.0.1 -p PORT` and set MLOPSD_TEST_AWS=http://127.0.0.1:PORT"
        ),
    }
}

/// SNS message as read from the subscribed SQS queue.
#[derive(Debug, Clone)]
pub struct Note {
    pub subject: String,
    pub body: String,
    pub attrs: HashMap<String, String>,
}

impl Note {
    pub fn event(&self) -> &str {
        self.attrs.get("event").map(String::as_str).unwrap_or("")
    }
}

pub struct TestAws {
    pub rt: tokio::runtime::Runtime,
    pub endpoint: String,
    pub sm: aws_sdk_sagemaker::Client,
    pub cb: aws_sdk_codebuild::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cw: aws_sdk_cloudwatch::Client,
    pub s3: aws_sdk_s3::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    /// The SDK config these clients were built from (its credentials), for other clients.
    pub conf: aws_types::SdkConfig,
    /// Unique prefix for this test's resources (tests share one moto server).
    pub prefix: String,
    pub queue_url: Option<String>,
}

pub const ROLE: &str = "arn:aws:iam::123456789012:role/mlopsd-test";

impl TestAws {
    pub fn new(prefix: &str) -> TestAws {
        Self::with_endpoint(prefix, &endpoint())
    }

    pub fn with_endpoint(prefix: &str, endpoint: &str) -> TestAws {
        if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        }
        Self::build(prefix, endpoint, None)
    }

    /// Clients with these keys (not the process's: tests in one process must not switch
    /// each other's credentials).
    pub fn with_credentials(prefix: &str, endpoint: &str, key: &str, secret: &str) -> TestAws {
        Self::build(prefix, endpoint, Some((key, secret)))
    }

    fn build(prefix: &str, endpoint: &str, keys: Option<(&str, &str)>) -> TestAws {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint);
        if let Some((key, secret)) = keys {
            loader = loader.credentials_provider(aws_sdk_sts::config::Credentials::new(
                key, secret, None, None, "test",
            ));
        }
        let conf = rt.block_on(loader.load());
        let s3conf = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build();
        TestAws {
            sm: aws_sdk_sagemaker::Client::new(&conf),
            cb: aws_sdk_codebuild::Client::new(&conf),
            sns: aws_sdk_sns::Client::new(&conf),
            sqs: aws_sdk_sqs::Client::new(&conf),
            cw: aws_sdk_cloudwatch::Client::new(&conf),
            s3: aws_sdk_s3::Client::from_conf(s3conf),
            ddb: aws_sdk_dynamodb::Client::new(&conf),
            conf: conf.clone(),
            rt,
            endpoint: endpoint.to_string(),
            // Unique per process too, so re-runs against one moto server do not collide.
            prefix: format!(
                "{prefix}-{:x}",
                std::process::id() as u64 * 1000
                    + (std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_millis())
                        .unwrap_or(0) as u64)
            ),
            queue_url: None,
        }
    }

    pub fn name(&self, base: &str) -> String {
        format!("{}-{base}", self.prefix)
    }

    /// A DynamoDB table with the HA key schema (`pk` S, `sk` S), on-demand.
    pub fn create_ha_table(&self, base: &str) -> String {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let name = self.name(base);
        let mut req = self
            .ddb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for (n, k) in [("pk", KeyType::Hash), ("sk", KeyType::Range)] {
            req = req
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(n)
                        .key_type(k)
                        .build()
                        .unwrap(),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(n)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .unwrap(),
                );
        }
        self.rt.block_on(req.send()).expect("create HA table");
        name
    }

    pub fn create_pipeline(&self, base: &str) -> String {
        let name = self.name(base);
        let def = r#"{"Version":"2020-12-01","Parameters":[{"Name":"InputData","Type":"String"}],"Steps":[]}"#;
        self.rt
            .block_on(
                self.sm
                    .create_pipeline()
                    .pipeline_name(&name)
                    .pipeline_definition(def)
                    .role_arn(ROLE)
                    .client_request_token(format!("{name}-create-token-0000000000000"))
                    .send(),
            )
            .expect("create pipeline");
        name
    }

    pub fn create_project(&self, base: &str) -> String {
        use aws_sdk_codebuild::types::*;
        let name = self.name(base);
        self.rt
            .block_on(
                self.cb
                    .create_project()
                    .name(&name)
                    .source(
                        ProjectSource::builder()
                            .r#type(SourceType::S3)
                            .location("bucket/src.zip")
                            .build()
                            .unwrap(),
                    )
                    .artifacts(
                        ProjectArtifacts::builder()
                            .r#type(ArtifactsType::NoArtifacts)
                            .build()
                            .unwrap(),
                    )
                    .environment(
                        ProjectEnvironment::builder()
                            .r#type(EnvironmentType::LinuxContainer)
                            .image("aws/codebuild/standard:7.0")
                            .compute_type(ComputeType::BuildGeneral1Small)
                            .build()
                            .unwrap(),
                    )
                    .service_role(ROLE)
                    .send(),
            )
            .expect("create project");
        name
    }

    /// A topic with an SQS queue subscribed, so published messages can be read back.
    pub fn create_topic(&mut self, base: &str) -> String {
        let name = self.name(base);
        let topic = self
            .rt
            .block_on(self.sns.create_topic().name(&name).send())
            .expect("create topic")
            .topic_arn()
            .unwrap()
            .to_string();
        let q = self
            .rt
            .block_on(
                self.sqs
                    .create_queue()
                    .queue_name(format!("{name}-inbox"))
                    .send(),
            )
            .expect("create queue");
        let url = q.queue_url().unwrap().to_string();
        let attrs = self
            .rt
            .block_on(
                self.sqs
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .send(),
            )
            .unwrap();
        let qarn = attrs
            .attributes()
            .unwrap()
            .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .unwrap()
            .clone();
        self.rt
            .block_on(
                self.sns
                    .subscribe()
                    .topic_arn(&topic)
                    .protocol("sqs")
                    .endpoint(qarn)
                    .send(),
            )
            .expect("subscribe");
        self.queue_url = Some(url);
        topic
    }

    /// A CloudWatch alarm (Sum of a metric in `namespace` ≥ 1 over a minute); its state is
    /// set by the test. One request.
    pub fn create_alarm(&self, name: &str, namespace: &str) {
        use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
        let req = self
            .cw
            .put_metric_alarm()
            .alarm_name(name)
            .namespace(namespace)
            .metric_name("errors")
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold);
        self.rt.block_on(req.send()).expect("put alarm");
    }

    /// A model package group. One request.
    pub fn create_group(&self, name: &str) {
        self.rt
            .block_on(
                self.sm
                    .create_model_package_group()
                    .model_package_group_name(name)
                    .send(),
            )
            .expect("create model package group");
    }

    /// A model package in `group` set `Approved` (accuracy 0.9); its ARN. Two requests.
    pub fn create_approved_package(&self, group: &str) -> String {
        let arn = self.create_pending_package(group, "0.9");
        self.rt
            .block_on(
                self.sm
                    .update_model_package()
                    .model_package_arn(&arn)
                    .model_approval_status(aws_sdk_sagemaker::types::ModelApprovalStatus::Approved)
                    .send(),
            )
            .expect("approve the model package");
        arn
    }

    /// Sets an alarm's state (`ALARM`, `OK`, `INSUFFICIENT_DATA`). One request.
    pub fn set_alarm_state(&self, name: &str, state: &str) {
        self.rt
            .block_on(
                self.cw
                    .set_alarm_state()
                    .alarm_name(name)
                    .state_value(aws_sdk_cloudwatch::types::StateValue::from(state))
                    .state_reason("test")
                    .send(),
            )
            .expect("set alarm state");
    }

    /// A model package in `group`, pending manual approval, with `accuracy` in its metadata;
    /// returns its ARN. One request.
    pub fn create_pending_package(&self, group: &str, accuracy: &str) -> String {
        use aws_sdk_sagemaker::types::*;
        let spec = InferenceSpecification::builder()
            .containers(
                ModelPackageContainerDefinition::builder()
                    .image("img")
                    .build(),
            )
            .supported_content_types("text/csv")
            .supported_response_mime_types("text/csv")
            .build();
        let r = self.rt.block_on(
            self.sm
                .create_model_package()
                .model_package_group_name(group)
                .model_approval_status(ModelApprovalStatus::PendingManualApproval)
                .customer_metadata_properties("accuracy", accuracy)
                .inference_specification(spec)
                .send(),
        );
        r.expect("create model package")
            .model_package_arn()
            .unwrap_or_default()
            .to_string()
    }

    pub fn put_metric(&self, namespace: &str, metric: &str, dims: &[(&str, &str)], value: f64) {
        let d: Vec<Dimension> = dims
            .iter()
            .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
            .collect();
        let datum = MetricDatum::builder()
            .metric_name(metric)
            .set_dimensions(Some(d))
            .value(value)
            .timestamp(aws_smithy_types::DateTime::from(
                std::time::SystemTime::now(),
            ))
            .build();
        self.rt
            .block_on(
                self.cw
                    .put_metric_data()
                    .namespace(namespace)
                    .metric_data(datum)
                    .send(),
            )
            .expect("put metric");
    }

    /// (arn, display name, status) of a pipeline's executions.
    pub fn executions(&self, pipeline: &str) -> Vec<(String, String, String)> {
        let r = self
            .rt
            .block_on(
                self.sm
                    .list_pipeline_executions()
                    .pipeline_name(pipeline)
                    .max_results(100)
                    .send(),
            )
            .expect("list executions");
        r.pipeline_execution_summaries()
            .iter()
            .map(|s| {
                (
                    s.pipeline_execution_arn().unwrap_or_default().to_string(),
                    s.pipeline_execution_display_name()
                        .unwrap_or_default()
                        .to_string(),
                    s.pipeline_execution_status()
                        .map(|x| x.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The parameters a pipeline execution was started with, as (name, value), sorted.
    pub fn execution_params(&self, arn: &str) -> Vec<(String, String)> {
        let r = self
            .rt
            .block_on(
                self.sm
                    .list_pipeline_parameters_for_execution()
                    .pipeline_execution_arn(arn)
                    .send(),
            )
            .expect("parameters");
        let mut p: Vec<(String, String)> = r
            .pipeline_parameters()
            .iter()
            .map(|x| {
                (
                    x.name().unwrap_or_default().to_string(),
                    x.value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        p.sort();
        p
    }

    pub fn builds(&self, project: &str) -> Vec<String> {
        let r = self
            .rt
            .block_on(
                self.cb
                    .list_builds_for_project()
                    .project_name(project)
                    .send(),
            )
            .expect("list builds");
        r.ids().to_vec()
    }

    /// Reads every message that arrives within `wait`, deleting them from the queue.
    pub fn drain(&self, wait: Duration) -> Vec<Note> {
        let url = self.queue_url.clone().expect("create_topic first");
        let mut out = Vec::new();
        let start = Instant::now();
        while start.elapsed() < wait {
            let r = self
                .rt
                .block_on(
                    self.sqs
                        .receive_message()
                        .queue_url(&url)
                        .max_number_of_messages(10)
                        .send(),
                )
                .expect("receive");
            let msgs = r.messages();
            if msgs.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            for m in msgs {
                let body: serde_json::Value =
                    serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or_default();
                let attrs = body["MessageAttributes"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v["Value"].as_str().unwrap_or_default().to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Note {
                    subject: body["Subject"].as_str().unwrap_or_default().into(),
                    body: body["Message"].as_str().unwrap_or_default().into(),
                    attrs,
                });
                if let Some(h) = m.receipt_handle() {
                    let _ = self.rt.block_on(
                        self.sqs
                            .delete_message()
                            .queue_url(&url)
                            .receipt_handle(h)
                            .send(),
                    );
                }
            }
        }
        out
    }

    /// Reads messages until `pred` holds over everything read, or panics after `timeout`.
    pub fn notes_until(&self, timeout: Duration, pred: impl Fn(&[Note]) -> bool) -> Vec<Note> {
        let mut all = Vec::new();
        let start = Instant::now();
        while start.elapsed() < timeout {
            all.extend(self.drain(Duration::from_millis(300)));
            if pred(&all) {
                return all;
            }
        }
        panic!("SNS messages seen within {timeout:?} do not satisfy the test: {all:#?}");
    }
}
