//! SageMaker Model Monitor: a schedule's last execution, and where its processing job wrote
//! its report.

use super::endpoints::{absent, time};
use super::{Aws, Observed};
use crate::cloud::{AwsError, MonitorExecution, MonitorView, Monitoring};

impl Monitoring for Aws {
    async fn monitoring_schedule(&self, name: &str) -> Result<Option<MonitorView>, AwsError> {
        let r = match self
            .sagemaker
            .describe_monitoring_schedule()
            .monitoring_schedule_name(name)
            .send()
            .observed("sagemaker", "DescribeMonitoringSchedule")
            .await
        {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let last = r.last_monitoring_execution_summary().and_then(|x| {
            Some(MonitorExecution {
                scheduled: time(x.scheduled_time())?,
                status: x.monitoring_execution_status()?.as_str().to_string(),
                processing_job_arn: x.processing_job_arn().map(str::to_string),
                failure_reason: x.failure_reason().map(str::to_string),
            })
        });
        Ok(Some(MonitorView {
            status: r
                .monitoring_schedule_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            last,
        }))
    }

    async fn processing_output(&self, job: &str) -> Result<Option<String>, AwsError> {
        // An ARN's name is after "processing-job/".
        let name = job.rsplit_once("processing-job/").map_or(job, |(_, n)| n);
        let r = match self
            .sagemaker
            .describe_processing_job()
            .processing_job_name(name)
            .send()
            .observed("sagemaker", "DescribeProcessingJob")
            .await
        {
            Ok(r) => r,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(r.processing_output_config().and_then(|c| {
            c.outputs()
                .iter()
                .find_map(|o| o.s3_output().and_then(|s| s.s3_uri()).map(str::to_string))
        }))
    }
}
