//! An in-memory `Cloud` for running the real control loop on paused time: it records every
//! call at the simulated instant it was made and answers from test-given functions.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use mlopsd::clock::{ts, Clock};
use mlopsd::cloud::{
    Acting, AlarmState, AwsError, Builds, EndpointView, Endpoints, ErrorKind, Identity,
    MetricQuery, Metrics, MonitorView, Monitoring, Notifier, ObjectRef, Objects, PackageVersion,
    PendingPackage, Pipelines, Queue, QueueMessage, Registry, RemotePipeline, RunStatus,
};
use mlopsd::config::{Capacity, Strategy};

/// A start call: (instant, pipeline, parameters, token).
pub type StartCall = (DateTime<Utc>, String, BTreeMap<String, String>, String);

/// What the fake AWS saw.
#[derive(Default)]
pub struct Seen {
    pub starts: Vec<StartCall>,
    /// (instant, event attribute, subject)
    pub published: Vec<(DateTime<Utc>, String, String)>,
    pub metric_reads: usize,
    /// Messages waiting in the fake events queue, and the receipts deleted from it.
    pub queue: std::collections::VecDeque<QueueMessage>,
    pub deleted: Vec<String>,
    /// (instant, execution ARN) of each DescribePipelineExecution.
    pub described: Vec<(DateTime<Utc>, String)>,
    /// Alarm name → state (`ALARM`, `OK`, `INSUFFICIENT_DATA`).
    pub alarms: HashMap<String, String>,
    /// Pipelines held by the fake SageMaker: name → (definition, role).
    pub pipelines: HashMap<String, (String, String)>,
    /// (instant, operation, pipeline) of each Create/UpdatePipeline.
    pub pipeline_writes: Vec<(DateTime<Utc>, &'static str, String)>,
    /// DescribePipeline calls.
    pub pipeline_reads: usize,
    /// The registry's Approved versions, and the one endpoint of the fake SageMaker hosting
    /// (an update leaves it `Updating` for good: a deployment that never ends).
    pub approved: Vec<PackageVersion>,
    pub endpoint: Option<EndpointView>,
    pub models: std::collections::HashSet<String>,
    pub configs: std::collections::HashSet<String>,
    /// (instant, operation, name) of each hosting write.
    pub hosting_writes: Vec<(DateTime<Utc>, &'static str, String)>,
}

pub type ValueFn = dyn Fn(DateTime<Utc>) -> Option<f64> + Send + Sync;

#[derive(Clone)]
pub struct Fake {
    pub clock: Clock,
    pub seen: Arc<Mutex<Seen>>,
    /// metric name → value at an instant
    pub values: Arc<HashMap<String, Box<ValueFn>>>,
    /// Answer to every StartPipelineExecution: Ok, or this error.
    pub start_error: Option<AwsError>,
}

impl Fake {
    pub fn new(clock: Clock, values: Vec<(&str, Box<ValueFn>)>) -> Fake {
        Fake {
            clock,
            seen: Arc::default(),
            values: Arc::new(
                values
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            start_error: None,
        }
    }
    pub fn starts(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .starts
            .iter()
            .map(|s| ts(&secs(s.0)))
            .collect()
    }
    pub fn published(&self, event: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .published
            .iter()
            .filter(|p| p.1 == event)
            .map(|p| ts(&secs(p.0)))
            .collect()
    }
}

/// The instant without its fraction (a timer fires within a millisecond of its due time).
pub fn secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(t.timestamp(), 0).unwrap()
}

fn unsupported(op: &'static str) -> AwsError {
    AwsError::new(
        "fake",
        op,
        ErrorKind::Refused,
        "NotUsed",
        "not used by this test",
    )
}

impl Identity for Fake {
    fn region(&self) -> &str {
        "us-east-1"
    }
    async fn role_exists(&self, _role_arn: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
    async fn caller_identity(&self) -> Result<(String, String), AwsError> {
        Ok((
            "arn:aws:iam::123456789012:user/fake".into(),
            "123456789012".into(),
        ))
    }
}

impl Metrics for Fake {
    fn latest_values(
        &self,
        queries: &[MetricQuery<'_>],
        now: DateTime<Utc>,
    ) -> impl Future<Output = (Vec<Result<Option<f64>, AwsError>>, usize)> + Send {
        let out: Vec<_> = queries
            .iter()
            .map(|q| Ok(self.values.get(q.metric).and_then(|f| f(now))))
            .collect();
        self.seen.lock().unwrap().metric_reads += 1;
        async move { (out, 1) }
    }
    async fn alarm_states(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, AlarmState>, AwsError> {
        let s = self.seen.lock().unwrap();
        // A state the real adapter does not know is read as INSUFFICIENT_DATA, as here.
        Ok(names
            .iter()
            .filter_map(|n| {
                let st = s.alarms.get(n)?;
                Some((
                    n.clone(),
                    AlarmState::parse(st).unwrap_or(AlarmState::InsufficientData),
                ))
            })
            .collect())
    }
    async fn metric_dimension_sets(
        &self,
        _namespace: &str,
        _metric: &str,
    ) -> Result<Vec<Vec<(String, String)>>, AwsError> {
        Ok(vec![])
    }
}

impl Pipelines for Fake {
    async fn start_pipeline(
        &self,
        _act: &Acting<'_>,
        pipeline_name: &str,
        params: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<String, AwsError> {
        if let Some(e) = &self.start_error {
            return Err(e.clone());
        }
        let mut s = self.seen.lock().unwrap();
        s.starts.push((
            self.clock.now(),
            pipeline_name.to_string(),
            params.clone(),
            token.to_string(),
        ));
        Ok(format!(
            "arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline_name}/execution/{}",
            s.starts.len()
        ))
    }
    async fn find_pipeline_execution(
        &self,
        _pipeline_name: &str,
        token: &str,
    ) -> Result<Option<String>, AwsError> {
        let s = self.seen.lock().unwrap();
        Ok(s.starts
            .iter()
            .position(|x| x.3 == token)
            .map(|i| format!("arn:fake:execution/{}", i + 1)))
    }
    async fn pipeline_status(&self, arn: &str) -> Result<RunStatus, AwsError> {
        self.seen
            .lock()
            .unwrap()
            .described
            .push((self.clock.now(), arn.to_string()));
        Ok(RunStatus::Succeeded)
    }
    async fn describe_pipeline(&self, name: &str) -> Result<Option<RemotePipeline>, AwsError> {
        let mut s = self.seen.lock().unwrap();
        s.pipeline_reads += 1;
        Ok(s.pipelines.get(name).map(|(d, r)| RemotePipeline {
            arn: format!("arn:aws:sagemaker:us-east-1:123456789012:pipeline/{name}"),
            definition: d.clone(),
            role_arn: r.clone(),
        }))
    }
    async fn create_pipeline(
        &self,
        _act: &Acting<'_>,
        name: &str,
        definition: &str,
        role_arn: &str,
        _token: &str,
    ) -> Result<String, AwsError> {
        let mut s = self.seen.lock().unwrap();
        s.pipelines
            .insert(name.into(), (definition.into(), role_arn.into()));
        s.pipeline_writes
            .push((self.clock.now(), "CreatePipeline", name.into()));
        Ok(format!(
            "arn:aws:sagemaker:us-east-1:123456789012:pipeline/{name}"
        ))
    }
    async fn update_pipeline(
        &self,
        _act: &Acting<'_>,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> Result<String, AwsError> {
        let mut s = self.seen.lock().unwrap();
        s.pipelines
            .insert(name.into(), (definition.into(), role_arn.into()));
        s.pipeline_writes
            .push((self.clock.now(), "UpdatePipeline", name.into()));
        Ok(format!(
            "arn:aws:sagemaker:us-east-1:123456789012:pipeline/{name}"
        ))
    }
}

impl Builds for Fake {
    async fn start_build(
        &self,
        _act: &Acting<'_>,
        _p: &str,
        _s: Option<&str>,
        _e: &BTreeMap<String, String>,
        _t: &str,
    ) -> Result<String, AwsError> {
        Err(unsupported("StartBuild"))
    }
    async fn find_build(&self, _p: &str, _t: &str) -> Result<Option<String>, AwsError> {
        Ok(None)
    }
    async fn build_statuses(
        &self,
        _ids: &[String],
    ) -> Result<HashMap<String, RunStatus>, AwsError> {
        Ok(HashMap::new())
    }
    async fn missing_projects(&self, _names: &[String]) -> Result<Vec<String>, AwsError> {
        Ok(vec![])
    }
}

impl Registry for Fake {
    async fn pending_packages(&self, _group: &str) -> Result<Vec<PendingPackage>, AwsError> {
        Ok(vec![])
    }
    async fn set_approval(
        &self,
        _act: &Acting<'_>,
        _arn: &str,
        _approve: bool,
        _d: &str,
    ) -> Result<(), AwsError> {
        Ok(())
    }
    async fn package_group_exists(&self, _name: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
}

/// SageMaker hosting in memory: the registry's Approved versions, models and configs by
/// name, and one endpoint that a create makes `InService` at once and an update leaves
/// `Updating` for good (a deployment that never ends, for the deadline).
impl Endpoints for Fake {
    async fn approved_versions(&self, _group: &str) -> Result<Vec<PackageVersion>, AwsError> {
        Ok(self.seen.lock().unwrap().approved.clone())
    }
    async fn package_tags(&self, _arn: &str) -> Result<Vec<(String, String)>, AwsError> {
        Ok(vec![])
    }
    async fn describe_endpoint(&self, _name: &str) -> Result<Option<EndpointView>, AwsError> {
        Ok(self.seen.lock().unwrap().endpoint.clone())
    }
    async fn model_exists(&self, name: &str) -> Result<bool, AwsError> {
        Ok(self.seen.lock().unwrap().models.contains(name))
    }
    async fn endpoint_config_exists(&self, name: &str) -> Result<bool, AwsError> {
        Ok(self.seen.lock().unwrap().configs.contains(name))
    }
    async fn create_model(
        &self,
        _act: &Acting<'_>,
        name: &str,
        _package_arn: &str,
        _role_arn: &str,
    ) -> Result<(), AwsError> {
        let mut s = self.seen.lock().unwrap();
        s.models.insert(name.to_string());
        s.hosting_writes
            .push((self.clock.now(), "CreateModel", name.to_string()));
        Ok(())
    }
    async fn create_endpoint_config(
        &self,
        _act: &Acting<'_>,
        name: &str,
        _model: &str,
        _capacity: &Capacity,
    ) -> Result<(), AwsError> {
        let mut s = self.seen.lock().unwrap();
        s.configs.insert(name.to_string());
        s.hosting_writes
            .push((self.clock.now(), "CreateEndpointConfig", name.to_string()));
        Ok(())
    }
    async fn create_endpoint(
        &self,
        _act: &Acting<'_>,
        _name: &str,
        config: &str,
    ) -> Result<(), AwsError> {
        let now = self.clock.now();
        let mut s = self.seen.lock().unwrap();
        s.endpoint = Some(EndpointView {
            status: "InService".into(),
            config_name: config.to_string(),
            pending_config: None,
            failure_reason: None,
            last_modified: Some(now),
        });
        s.hosting_writes
            .push((now, "CreateEndpoint", config.to_string()));
        Ok(())
    }
    async fn update_endpoint(
        &self,
        _act: &Acting<'_>,
        _name: &str,
        config: &str,
        _strategy: &Strategy,
        _alarms: &[String],
    ) -> Result<(), AwsError> {
        let now = self.clock.now();
        let mut s = self.seen.lock().unwrap();
        if let Some(e) = s.endpoint.as_mut() {
            e.status = "Updating".into();
            e.pending_config = Some(config.to_string());
            e.last_modified = Some(now);
        }
        s.hosting_writes
            .push((now, "UpdateEndpoint", config.to_string()));
        Ok(())
    }
    async fn delete_model(&self, _act: &Acting<'_>, name: &str) -> Result<bool, AwsError> {
        Ok(self.seen.lock().unwrap().models.remove(name))
    }
    async fn delete_endpoint_config(
        &self,
        _act: &Acting<'_>,
        name: &str,
    ) -> Result<bool, AwsError> {
        Ok(self.seen.lock().unwrap().configs.remove(name))
    }
}

impl Objects for Fake {
    async fn read_s3(&self, _uri: &str) -> Result<String, AwsError> {
        Err(unsupported("GetObject"))
    }
    async fn newest_object(
        &self,
        _bucket: &str,
        _prefix: &str,
        _suffix: Option<&str>,
    ) -> Result<Option<ObjectRef>, AwsError> {
        Err(unsupported("ListObjectsV2"))
    }
    async fn read_object(
        &self,
        _bucket: &str,
        _key: &str,
        _max: usize,
    ) -> Result<String, AwsError> {
        Err(unsupported("GetObject"))
    }
}

impl Monitoring for Fake {
    async fn monitoring_schedule(&self, _name: &str) -> Result<Option<MonitorView>, AwsError> {
        Err(unsupported("DescribeMonitoringSchedule"))
    }
    async fn processing_output(&self, _job: &str) -> Result<Option<String>, AwsError> {
        Err(unsupported("DescribeProcessingJob"))
    }
}

impl Notifier for Fake {
    async fn publish(
        &self,
        _act: &Acting<'_>,
        _topic: &str,
        subject: &str,
        _body: &str,
        attrs: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        let event = attrs
            .iter()
            .find(|a| a.0 == "event")
            .map(|a| a.1.to_string())
            .unwrap_or_default();
        let mut s = self.seen.lock().unwrap();
        s.published
            .push((self.clock.now(), event, subject.to_string()));
        Ok(format!("m-{}", s.published.len()))
    }
    async fn topic_exists(&self, _arn: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
}

impl Queue for Fake {
    async fn receive_events(&self, _queue_url: &str) -> Result<Vec<QueueMessage>, AwsError> {
        // A long poll: what is queued now, or nothing after the wait.
        for _ in 0..20 {
            let batch: Vec<QueueMessage> = {
                let mut s = self.seen.lock().unwrap();
                let n = s.queue.len().min(10);
                s.queue.drain(..n).collect()
            };
            if !batch.is_empty() {
                return Ok(batch);
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        Ok(vec![])
    }
    async fn delete_events(
        &self,
        _act: &Acting<'_>,
        _queue_url: &str,
        receipts: &[String],
    ) -> Result<usize, AwsError> {
        self.seen
            .lock()
            .unwrap()
            .deleted
            .extend(receipts.iter().cloned());
        Ok(0)
    }
    async fn queue_exists(&self, _url: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
}
