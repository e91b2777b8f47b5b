"""Demo and test helper: creates the AWS resources config/demo.toml names on an AWS-compatible
endpoint (moto server), and prints what mlopsd published to SNS (read from a subscribed SQS
queue). Uses boto3, which moto server installs.

  demo_aws.py setup ENDPOINT        create pipeline, build project, topic+queue, packages, drift metric
  demo_aws.py watch ENDPOINT SECS   print notifications as they arrive, set the alarm off once a run started;
                                    approve two more versions as the first deploys bake, set the rollback
                                    alarm off while the third deploys; drop an Evidently report into S3
                                    once a run succeeded; exit 0 once the drift loop, the gate, the
                                    event-driven page, the report-driven retrain (its DriftedFeatures
                                    read back from SageMaker), two deployments and a rollback were seen
"""
import datetime
import json
import sys
import time

import boto3

REGION = "us-east-1"


def clients(endpoint):
    kw = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    return {n: boto3.client(n, **kw) for n in ["sagemaker", "codebuild", "sns", "sqs", "cloudwatch", "s3"]}


def setup(endpoint):
    c = clients(endpoint)
    role = "arn:aws:iam::123456789012:role/mlops-demo"
    # The pipeline is not created here: it is declared (examples/pipelines/churn-training.json)
    # and mlopsd creates it at start.
    c["s3"].create_bucket(Bucket="ml-bucket")
    c["codebuild"].create_project(
        name="mlops-project-build",
        source={"type": "S3", "location": "ml-bucket/source.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"},
        serviceRole=role,
    )
    topic = c["sns"].create_topic(Name="mlops-alerts")["TopicArn"]
    q = c["sqs"].create_queue(QueueName="mlops-alerts-inbox")["QueueUrl"]
    qarn = c["sqs"].get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    c["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)
    chat = c["sns"].create_topic(Name="mlops-chat")["TopicArn"]
    cq = c["sqs"].create_queue(QueueName="mlops-chat-inbox")["QueueUrl"]
    cqarn = c["sqs"].get_queue_attributes(QueueUrl=cq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    c["sns"].subscribe(TopicArn=chat, Protocol="sqs", Endpoint=cqarn)
    c["sagemaker"].create_model_package_group(ModelPackageGroupName="ml-model-package-group")
    for acc in ["0.91", "0.62"]:
        c["sagemaker"].create_model_package(
            ModelPackageGroupName="ml-model-package-group",
            ModelApprovalStatus="PendingManualApproval",
            CustomerMetadataProperties={"accuracy": acc},
            InferenceSpecification={"Containers": [{"Image": "demo"}], "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
        )
    now = datetime.datetime.now(datetime.timezone.utc)
    c["cloudwatch"].put_metric_data(
        Namespace="aws/sagemaker/Endpoints/data-metrics",
        MetricData=[
            {
                "MetricName": "feature_baseline_drift_distance",
                "Dimensions": [{"Name": "Endpoint", "Value": "ml-production-endpoint"}, {"Name": "MonitoringSchedule", "Value": "ml-production-endpoint-monitor"}],
                "Value": 0.27,
                "Timestamp": now,
            }
        ],
    )
    c["sqs"].create_queue(QueueName="mlopsd-events")
    c["cloudwatch"].put_metric_alarm(
        AlarmName="ml-production-endpoint-5xx", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    c["cloudwatch"].set_alarm_state(AlarmName="ml-production-endpoint-5xx", StateValue="OK", StateReason="demo start")
    c["cloudwatch"].put_metric_alarm(
        AlarmName="churn-endpoint-5xx", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    c["cloudwatch"].set_alarm_state(AlarmName="churn-endpoint-5xx", StateValue="OK", StateReason="demo start")
    print("         events queue mlopsd-events, alarm ml-production-endpoint-5xx (OK)")
    print(f"created: build project mlops-project-build, topic {topic} -> queue mlops-alerts-inbox,")
    print("         2 model packages pending approval (accuracy 0.91 and 0.62), drift metric = 0.27 (threshold 0.1)")


def alarm_goes_off(c):
    """The alarm fires; EventBridge would deliver its state change to the queue (moto emits no
    events, so the demo sends the envelope itself)."""
    c["cloudwatch"].set_alarm_state(AlarmName="ml-production-endpoint-5xx", StateValue="ALARM", StateReason="demo: 5xx errors")
    q = c["sqs"].get_queue_url(QueueName="mlopsd-events")["QueueUrl"]
    event = {"version": "0", "id": f"demo-{time.time()}", "source": "aws.cloudwatch", "detail-type": "CloudWatch Alarm State Change",
             "account": "123456789012", "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), "region": REGION, "resources": [],
             "detail": {"alarmName": "ml-production-endpoint-5xx", "state": {"value": "ALARM"}}}
    c["sqs"].send_message(QueueUrl=q, MessageBody=json.dumps(event))
    print("\n=== the alarm ml-production-endpoint-5xx went to ALARM; its EventBridge event is on the queue")
    sys.stdout.flush()
    return time.time()


EVIDENTLY = {
    "version": "0.4.33",
    "metrics": [
        {"metric": "DatasetDriftMetric", "result": {"drift_share": 0.5, "number_of_columns": 4, "number_of_drifted_columns": 2,
                                                    "share_of_drifted_columns": 0.5, "dataset_drift": True}},
        {"metric": "DataDriftTable", "result": {"number_of_columns": 4, "number_of_drifted_columns": 2, "share_of_drifted_columns": 0.5,
                                                "dataset_drift": True, "drift_by_columns": {
            "tenure": {"column_name": "tenure", "column_type": "num", "stattest_name": "K-S p_value", "stattest_threshold": 0.05,
                       "drift_score": 0.0004, "drift_detected": True},
            "monthly_charges": {"column_name": "monthly_charges", "column_type": "num", "stattest_name": "K-S p_value",
                                "stattest_threshold": 0.05, "drift_score": 0.0121, "drift_detected": True},
            "contract": {"column_name": "contract", "column_type": "cat", "stattest_name": "chi-square p_value",
                         "stattest_threshold": 0.05, "drift_score": 0.61, "drift_detected": False},
            "payment_method": {"column_name": "payment_method", "column_type": "cat", "stattest_name": "chi-square p_value",
                               "stattest_threshold": 0.05, "drift_score": 0.33, "drift_detected": False}}}},
    ],
}


def drift_report_lands(c):
    """A scheduled Evidently job writes its report to S3; the bucket's EventBridge notification
    would deliver the Object Created event to the queue (moto emits none, so the demo sends it)."""
    key = f"monitoring/churn/{datetime.date.today().isoformat()}/drift.json"
    c["s3"].put_object(Bucket="ml-bucket", Key=key, Body=json.dumps(EVIDENTLY).encode())
    q = c["sqs"].get_queue_url(QueueName="mlopsd-events")["QueueUrl"]
    event = {"version": "0", "id": f"demo-s3-{time.time()}", "source": "aws.s3", "detail-type": "Object Created",
             "account": "123456789012", "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), "region": REGION,
             "resources": ["arn:aws:s3:::ml-bucket"], "detail": {"bucket": {"name": "ml-bucket"}, "object": {"key": key, "size": 1024}}}
    c["sqs"].send_message(QueueUrl=q, MessageBody=json.dumps(event))
    print(f"\n=== an Evidently drift report landed at s3://ml-bucket/{key} (2 of 4 columns drifted); its event is on the queue")
    sys.stdout.flush()


def show_parameters(c, arn):
    """The parameters the pipeline execution was started with (as SageMaker holds them)."""
    ps = c["sagemaker"].list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    print("=== the retraining execution's parameters: " + ", ".join(f"{p['Name']}={p['Value']}" for p in ps))
    sys.stdout.flush()
    return any(p["Name"] == "DriftedFeatures" and p["Value"] for p in ps)


def new_version(c, accuracy):
    """A data scientist registers a new model version; the gate approves it (accuracy ≥ 0.8)."""
    c["sagemaker"].create_model_package(
        ModelPackageGroupName="ml-model-package-group",
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={"accuracy": accuracy},
        InferenceSpecification={"Containers": [{"Image": "demo"}], "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    )
    print(f"\n=== a new model version (accuracy {accuracy}) is registered, pending approval")
    sys.stdout.flush()


def watch(endpoint, secs):
    c = clients(endpoint)
    q = c["sqs"].get_queue_url(QueueName="mlops-alerts-inbox")["QueueUrl"]
    cq = c["sqs"].get_queue_url(QueueName="mlops-chat-inbox")["QueueUrl"]
    chat_shown = False
    deadline = time.time() + secs
    seen = set()
    paged = False
    alarm_at = None
    baked = 0
    started = 0
    rolled_back = False
    report_sent = False
    report_run = False
    while time.time() < deadline:
        if alarm_at is None and "run_started" in seen:
            alarm_at = alarm_goes_off(c)
        if not report_sent and "run_succeeded" in seen:
            drift_report_lands(c)
            report_sent = True
        if not chat_shown:
            chat_shown = show_chat(c, cq)
        msgs = c["sqs"].receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for m in msgs:
            body = json.loads(m["Body"])
            attrs = {k: v.get("Value") for k, v in body.get("MessageAttributes", {}).items()}
            ev = attrs.get("event", "?")
            seen.add(ev)
            if ev == "deploy_baked":
                baked += 1
                if baked < 3:
                    new_version(c, "0.93" if baked == 1 else "0.95")
            if ev == "deploy_started":
                started += 1
                if started == 3:
                    c["cloudwatch"].set_alarm_state(AlarmName="churn-endpoint-5xx", StateValue="ALARM", StateReason="demo: the new version errors")
                    print("\n=== the rollback alarm churn-endpoint-5xx went to ALARM while the third version deploys")
            if ev == "deploy_rolled_back":
                rolled_back = True
            if ev == "run_started" and attrs.get("rule") == "retrain-on-drift-report":
                arn = next((l.split(": ", 1)[1] for l in body.get("Message", "").splitlines() if l.startswith("arn: ")), None)
                report_run = bool(arn) and show_parameters(c, arn)
            if ev == "check_breached" and attrs.get("rule") == "page-on-endpoint-errors" and alarm_at is not None:
                paged = True
                print(f"\n=== paged {time.time() - alarm_at:.2f} s after the alarm went off (event-driven, no polling)")
            print(f"\n>>> SNS notification: {body.get('Subject')}")
            print(f"    attributes: event={ev} rule={attrs.get('rule')} check={attrs.get('check')} correlation_id={attrs.get('correlation_id')}")
            for line in body.get("Message", "").splitlines()[2:]:
                print(f"    | {line}")
            sys.stdout.flush()
            c["sqs"].delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])
        if {"pipeline_created", "check_breached", "run_started", "run_succeeded"} <= seen and {"gate_approved", "gate_rejected"} <= seen and paged \
                and baked >= 2 and rolled_back and report_run and chat_shown:
            return 0
    print(f"\nnotifications seen: {sorted(seen)}; a chat notification shown: {chat_shown}")
    return 1


def show_chat(c, q):
    """Prints the first message of the chat notifier (format = "chat") as a Slack or Teams
    channel mapped to its topic receives it; True once one was shown."""
    msgs = c["sqs"].receive_message(QueueUrl=q, MaxNumberOfMessages=1, WaitTimeSeconds=0).get("Messages", [])
    for m in msgs:
        note = json.loads(json.loads(m["Body"])["Message"])
        print("\n>>> chat notification (Amazon Q Developer custom notification, thread = correlation id):")
        for line in json.dumps(note, indent=2, ensure_ascii=False).splitlines():
            print(f"    | {line}")
        sys.stdout.flush()
        return True
    return False


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "setup":
        setup(sys.argv[2])
    elif cmd == "watch":
        sys.exit(watch(sys.argv[2], float(sys.argv[3])))
    else:
        sys.exit(f"unknown command {cmd}")
