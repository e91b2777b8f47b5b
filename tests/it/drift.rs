//! Drift reports as a check source (issue 22, in progress): what the tests' moto needs. moto
//! has no monitoring schedules; scripts/moto_server.py adds them to moto's SageMaker backend
//! (`CreateMonitoringSchedule`, `DescribeMonitoringSchedule` with its last execution,
//! `ListMonitoringExecutions`), and a test records an execution as AWS's scheduler would with
//! `POST /mlopsd/monitoring-execution`. The processing job is moto's own.

use crate::support as common;

use std::io::{Read, Write};

use common::aws::TestAws;

/// Records an execution of `schedule` on the launcher (not an AWS call); its HTTP status.
pub fn record_execution(endpoint: &str, schedule: &str, status: &str, job_arn: &str) -> u16 {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let body = serde_json::json!({
        "MonitoringScheduleName": schedule,
        "MonitoringExecutionStatus": status,
        "ProcessingJobArn": job_arn,
    })
    .to_string();
    let mut s = std::net::TcpStream::connect(host).expect("connect to moto");
    write!(
        s,
        "POST /mlopsd/monitoring-execution HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_test_moto_serves_monitoring_schedules_and_their_executions() {
    use aws_sdk_sagemaker::types::*;
    let aws = TestAws::new("drift-moto");
    let name = aws.name("monitor");
    let config = MonitoringScheduleConfig::builder()
        .schedule_config(
            ScheduleConfig::builder()
                .schedule_expression("cron(0 * ? * * *)")
                .build(),
        )
        .monitoring_job_definition_name("job-definition")
        .monitoring_type(MonitoringType::DataQuality)
        .build();
    aws.rt
        .block_on(
            aws.sm
                .create_monitoring_schedule()
                .monitoring_schedule_name(&name)
                .monitoring_schedule_config(config)
                .send(),
        )
        .expect("create schedule");
    let d = aws
        .rt
        .block_on(
            aws.sm
                .describe_monitoring_schedule()
                .monitoring_schedule_name(&name)
                .send(),
        )
        .expect("describe");
    assert_eq!(
        d.monitoring_schedule_status(),
        Some(&ScheduleStatus::Scheduled)
    );
    assert!(
        d.last_monitoring_execution_summary().is_none(),
        "no execution yet"
    );

    // A processing job (moto's own) writes the report under its output.
    let job = aws.name("job");
    let out = ProcessingOutput::builder()
        .output_name("result")
        .s3_output(
            ProcessingS3Output::builder()
                .s3_uri(format!("s3://{}/monitor/out", aws.name("bucket")))
                .local_path("/opt/ml/processing/output")
                .s3_upload_mode(ProcessingS3UploadMode::EndOfJob)
                .build(),
        )
        .build();
    let job_arn = aws
        .rt
        .block_on(
            aws.sm
                .create_processing_job()
                .processing_job_name(&job)
                .role_arn(common::aws::ROLE)
                .app_specification(AppSpecification::builder().image_uri("monitor").build())
                .processing_resources(
                    ProcessingResources::builder()
                        .cluster_config(
                            ProcessingClusterConfig::builder()
                                .instance_count(1)
                                .instance_type(ProcessingInstanceType::MlM5Large)
                                .volume_size_in_gb(1)
                                .build(),
                        )
                        .build(),
                )
                .processing_output_config(ProcessingOutputConfig::builder().outputs(out).build())
                .send(),
        )
        .expect("create processing job")
        .processing_job_arn()
        .unwrap()
        .to_string();

    assert_eq!(
        record_execution(&aws.endpoint, &name, "CompletedWithViolations", &job_arn),
        200
    );
    let d = aws
        .rt
        .block_on(
            aws.sm
                .describe_monitoring_schedule()
                .monitoring_schedule_name(&name)
                .send(),
        )
        .expect("describe");
    let last = d
        .last_monitoring_execution_summary()
        .expect("the execution");
    assert_eq!(
        last.monitoring_execution_status(),
        Some(&ExecutionStatus::CompletedWithViolations)
    );
    assert_eq!(last.processing_job_arn(), Some(job_arn.as_str()));
    let runs = aws
        .rt
        .block_on(
            aws.sm
                .list_monitoring_executions()
                .monitoring_schedule_name(&name)
                .send(),
        )
        .expect("list");
    assert_eq!(runs.monitoring_execution_summaries().len(), 1);
    let pj = aws
        .rt
        .block_on(
            aws.sm
                .describe_processing_job()
                .processing_job_name(&job)
                .send(),
        )
        .expect("describe job");
    let uri = pj.processing_output_config().unwrap().outputs()[0]
        .s3_output()
        .unwrap()
        .s3_uri()
        .unwrap_or_default()
        .to_string();
    assert!(uri.ends_with("/monitor/out"), "{uri}");
    assert_eq!(
        record_execution(&aws.endpoint, "no-such-schedule", "Completed", &job_arn),
        404
    );
    let missing = aws.rt.block_on(
        aws.sm
            .describe_monitoring_schedule()
            .monitoring_schedule_name("no-such-schedule")
            .send(),
    );
    assert!(missing.is_err(), "a missing schedule is an error");
}
