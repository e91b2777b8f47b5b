#!/usr/bin/env python3
"""moto server, with the AWS behaviour mlopsd's tests need that moto leaves out.

SPEC "Testing against AWS without AWS": the tests and the demo talk to moto server, a real AWS
wire-protocol endpoint. Where moto's own backends differ from AWS in a way that decides whether
a test proves anything, this launcher changes them at start, inside moto's own backends (the
SDK still speaks the real wire protocol to a real HTTP server), then runs moto's own `main`:

    python scripts/moto_server.py -H 127.0.0.1 -p PORT      # the same flags as moto_server

Additions (each as AWS documents it):
- CodeBuild `StartBuild` keeps `environmentVariablesOverride`: `BatchGetBuilds` returns the
  build's environment with them (moto drops them), so a lookup by a variable can find a build.
- CodeBuild `StartBuild` honours `idempotencyToken`: the same token within 5 minutes returns
  the same build; with another parameter it is an `InvalidInputException` (parameter mismatch).
- SageMaker `StartPipelineExecution` honours `ClientRequestToken`: the same token returns the
  same execution; with another parameter it is a `ValidationException`.
- SageMaker endpoints (moto makes them `InService` at once and has no `UpdateEndpoint`):
  `CreateEndpoint` is `Creating` for a while, then `InService`; `UpdateEndpoint` (new) is
  `Updating` with a `PendingDeploymentSummary` for a while, then `InService` on the new config;
  while it is `Updating`, a rollback alarm of its `DeploymentConfig` that is `ALARM` in moto's
  own CloudWatch makes it `RollingBack`, then `InService` on the old config with a
  `FailureReason`; `UpdateEndpoint` of an endpoint that is not `InService` is a
  `ValidationException` "Cannot update in-progress endpoint"; a config or endpoint that does
  not exist is a `ValidationException` "Could not find …".
- SageMaker `CreateModel`, `CreateEndpointConfig`, `CreateEndpoint` of a name that exists are a
  `ValidationException` "Cannot create already existing …" (moto overwrites).
- SageMaker `ListTags` / `AddTags` on a model package ARN (moto cannot parse its ARN).
- SageMaker monitoring schedules (moto has none): `CreateMonitoringSchedule`,
  `DescribeMonitoringSchedule` (with `LastMonitoringExecutionSummary`),
  `ListMonitoringExecutions` (newest first by default). AWS runs the executions; here a test
  records one with `POST /mlopsd/monitoring-execution` (not an AWS call; a JSON body with
  `MonitoringScheduleName`, `MonitoringExecutionStatus`, `ProcessingJobArn`, optional
  `FailureReason`, `Region` default us-east-1, `Account` default 123456789012); the
  processing job itself is moto's own (`CreateProcessingJob`, `DescribeProcessingJob`).
`MLOPSD_MOTO_TOKEN_WINDOW_SECS` shortens how long a token is remembered (both services), for a
test of what protects a start after the window. `MLOPSD_MOTO_ENDPOINT_SECS` (default 2) is how
long a create or update takes, `MLOPSD_MOTO_ROLLBACK_SECS` (default 1) a rollback. State lives
on moto's backends, so `POST /moto-api/reset` clears it with everything else.
"""

import hashlib
import json
import os
import sys
import threading
import time

from moto import server
from moto.codebuild.exceptions import InvalidInputException
from moto.codebuild.responses import CodeBuildResponse
from moto.core.responses import ActionResult
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.responses import SageMakerResponse
from moto.core.utils import utcnow

_LOCK = threading.Lock()
CODEBUILD_TOKEN_WINDOW = 300.0  # "The token ... is valid for 5 minutes" (StartBuild)


def _window(default):
    v = os.environ.get("MLOPSD_MOTO_TOKEN_WINDOW_SECS")
    return float(v) if v else default


def _fingerprint(params):
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _remembered(backend, token, fingerprint, window, mismatch):
    """The result a token already had (None: new or expired); raises `mismatch` when the
    token comes back with other parameters."""
    tokens = backend.__dict__.setdefault("_mlopsd_tokens", {})
    seen = tokens.get(token)
    if seen is None:
        return None, tokens
    at, fp, result = seen
    if window is not None and time.monotonic() - at > window:
        del tokens[token]
        return None, tokens
    if fp != fingerprint:
        raise mismatch
    return result, tokens


_moto_start_build = CodeBuildResponse.start_build


def start_build(self):
    backend = self.codebuild_backend
    project = self._get_param("projectName")
    overrides = self._get_param("environmentVariablesOverride") or []
    token = self._get_param("idempotencyToken")
    fp = _fingerprint(
        [project, self._get_param("sourceVersion"), overrides, self._get_param("artifactsOverride")]
    )
    with _LOCK:
        if token:
            build_id, tokens = _remembered(
                backend,
                token,
                fp,
                _window(CODEBUILD_TOKEN_WINDOW),
                InvalidInputException(
                    f"Idempotency token {token} was used with different parameters (parameter mismatch)"
                ),
            )
            if build_id is not None:
                builds = backend.batch_get_builds([build_id])
                if builds:
                    return ActionResult({"build": builds[0]})
        result = _moto_start_build(self)
        build_id = backend.build_metadata[project].build_metadata["id"]
        # AWS shows the overrides in the build's environment; moto keeps none.
        for meta in backend.build_metadata_history[project]:
            if meta["id"] == build_id:
                meta["environment"]["environmentVariables"] = [
                    {"name": v.get("name"), "value": v.get("value"), "type": v.get("type", "PLAINTEXT")}
                    for v in overrides
                ]
        if token:
            tokens[token] = (time.monotonic(), fp, build_id)
        return result


_moto_start_execution = SageMakerResponse.start_pipeline_execution


def start_pipeline_execution(self):
    backend = self.sagemaker_backend
    token = self._get_param("ClientRequestToken")
    fp = _fingerprint(
        [
            self._get_param("PipelineName"),
            self._get_param("PipelineParameters"),
            self._get_param("PipelineExecutionDisplayName"),
        ]
    )
    with _LOCK:
        if token:
            arn, tokens = _remembered(
                backend,
                token,
                fp,
                _window(None),
                ValidationError(
                    f"ClientRequestToken {token} was used with different parameters"
                ),
            )
            if arn is not None:
                return ActionResult({"PipelineExecutionArn": arn})
        result = _moto_start_execution(self)
        if token:
            arn = result.result["PipelineExecutionArn"]
            tokens[token] = (time.monotonic(), fp, arn)
        return result


def _secs(name, default):
    v = os.environ.get(name)
    return float(v) if v else default


def _endpoint_state(backend):
    """Per endpoint name: what is in flight (creating or updating), kept on the backend."""
    return backend.__dict__.setdefault("_mlopsd_endpoints", {})


def _arn(backend, kind, name):
    return f"arn:aws:sagemaker:{backend.region_name}:{backend.account_id}:{kind}/{name}"


def _alarm_in_alarm(backend, names):
    from moto.cloudwatch.models import cloudwatch_backends

    cw = cloudwatch_backends[backend.account_id][backend.region_name]
    for n in names:
        a = cw.alarms.get(n)
        if a is not None and a.state_value == "ALARM":
            return n
    return None


def _advance(backend, name):
    """Moves an endpoint along by the time that passed (called before every describe)."""
    ep = backend.endpoints.get(name)
    flight = _endpoint_state(backend).get(name)
    if ep is None or flight is None:
        return
    now = time.monotonic()
    if flight["kind"] == "create":
        if now - flight["at"] >= _secs("MLOPSD_MOTO_ENDPOINT_SECS", 2.0):
            ep.endpoint_status = "InService"
            ep.last_modified_time = utcnow()
            del _endpoint_state(backend)[name]
        return
    if flight["kind"] == "update":
        firing = _alarm_in_alarm(backend, flight["alarms"])
        if firing is not None:
            ep.endpoint_status = "RollingBack"
            ep.last_modified_time = utcnow()
            flight.update(kind="rollback", at=now, alarm=firing)
            return
        if now - flight["at"] >= _secs("MLOPSD_MOTO_ENDPOINT_SECS", 2.0):
            config = backend.endpoint_configs[flight["config"]]
            ep.endpoint_config_name = flight["config"]
            ep.production_variants = ep._process_production_variants(config.production_variants)
            ep.endpoint_status = "InService"
            ep.failure_reason = None
            ep.last_modified_time = utcnow()
            del _endpoint_state(backend)[name]
        return
    if flight["kind"] == "rollback":
        if now - flight["at"] >= _secs("MLOPSD_MOTO_ROLLBACK_SECS", 1.0):
            ep.endpoint_status = "InService"
            ep.failure_reason = (
                f"Rolled back to the previous configuration: CloudWatch alarm "
                f"{flight['alarm']} went into ALARM during the deployment."
            )
            ep.last_modified_time = utcnow()
            del _endpoint_state(backend)[name]


_moto_describe_endpoint = SageMakerResponse.describe_endpoint


def describe_endpoint(self):
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    with _LOCK:
        _advance(backend, name)
        result = _moto_describe_endpoint(self)
        flight = _endpoint_state(backend).get(name)
        if flight is not None and flight["kind"] in ("update", "rollback"):
            result.result["PendingDeploymentSummary"] = {
                "EndpointConfigName": flight["config"],
                "StartTime": flight["started"],
            }
        return result


def _exists(kind, label, lookup):
    def wrap(original, param):
        def call(self):
            backend = self.sagemaker_backend
            name = self._get_param(param)
            with _LOCK:
                if name in lookup(backend):
                    raise ValidationError(
                        f'Cannot create already existing {label} "{_arn(backend, kind, name)}".'
                    )
                return original(self)

        return call

    return wrap


_moto_create_endpoint = SageMakerResponse.create_endpoint


def create_endpoint(self):
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    config = self._get_param("EndpointConfigName")
    with _LOCK:
        if name in backend.endpoints:
            raise ValidationError(
                f'Cannot create already existing endpoint "{_arn(backend, "endpoint", name)}".'
            )
        if config not in backend.endpoint_configs:
            raise ValidationError(
                f"Could not find endpoint configuration \"{_arn(backend, 'endpoint-config', config)}\"."
            )
        result = _moto_create_endpoint(self)
        backend.endpoints[name].endpoint_status = "Creating"
        _endpoint_state(backend)[name] = {"kind": "create", "at": time.monotonic()}
        return result


def update_endpoint(self):
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    config = self._get_param("EndpointConfigName")
    deployment = self._get_param("DeploymentConfig") or {}
    alarms = [
        a.get("AlarmName")
        for a in (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms") or []
    ]
    with _LOCK:
        _advance(backend, name)
        ep = backend.endpoints.get(name)
        if ep is None:
            raise ValidationError(
                f'Could not find endpoint "{_arn(backend, "endpoint", name)}".'
            )
        if config not in backend.endpoint_configs:
            raise ValidationError(
                f'Could not find endpoint configuration "{_arn(backend, "endpoint-config", config)}".'
            )
        if ep.endpoint_status != "InService":
            raise ValidationError(f'Cannot update in-progress endpoint "{ep.arn}".')
        ep.endpoint_status = "Updating"
        ep.last_modified_time = utcnow()
        _endpoint_state(backend)[name] = {
            "kind": "update",
            "at": time.monotonic(),
            "started": utcnow(),
            "config": config,
            "alarms": alarms,
            "deployment": deployment,
        }
        return ActionResult({"EndpointArn": ep.arn})


def _package_tags(original):
    def call(self, arn, *args, **kwargs):
        if ":model-package/" in arn:
            pkg = self.model_packages.get(arn)
            if pkg is None:
                raise ValidationError(f"Model package {arn} not found")
            if pkg.tags is None:
                pkg.tags = []
            if args:  # add_tags(arn, tags)
                pkg.tags.extend(args[0])
            return pkg.tags
        return original(self, arn, *args, **kwargs)

    return call


def _schedules(backend):
    return backend.__dict__.setdefault("_mlopsd_schedules", {})


def _not_found_schedule(backend, name):
    return ValidationError(
        f"Monitoring schedule '{_arn(backend, 'monitoring-schedule', name)}' does not exist."
    )


def create_monitoring_schedule(self):
    backend = self.sagemaker_backend
    name = self._get_param("MonitoringScheduleName")
    with _LOCK:
        if name in _schedules(backend):
            raise ValidationError(
                f'Cannot create already existing monitoring schedule "{_arn(backend, "monitoring-schedule", name)}".'
            )
        config = self._get_param("MonitoringScheduleConfig") or {}
        now = utcnow()
        _schedules(backend)[name] = {
            "MonitoringScheduleArn": _arn(backend, "monitoring-schedule", name),
            "MonitoringScheduleName": name,
            "MonitoringScheduleStatus": "Scheduled",
            "MonitoringType": config.get("MonitoringType", "DataQuality"),
            "CreationTime": now,
            "LastModifiedTime": now,
            "MonitoringScheduleConfig": config,
            "executions": [],
        }
        return ActionResult({"MonitoringScheduleArn": _arn(backend, "monitoring-schedule", name)})


def describe_monitoring_schedule(self):
    backend = self.sagemaker_backend
    name = self._get_param("MonitoringScheduleName")
    with _LOCK:
        s = _schedules(backend).get(name)
        if s is None:
            raise _not_found_schedule(backend, name)
        out = {k: v for k, v in s.items() if k != "executions"}
        if s["executions"]:
            out["LastMonitoringExecutionSummary"] = s["executions"][-1]
        return ActionResult(out)


def list_monitoring_executions(self):
    backend = self.sagemaker_backend
    name = self._get_param("MonitoringScheduleName")
    with _LOCK:
        runs = []
        for s in _schedules(backend).values():
            if name is None or s["MonitoringScheduleName"] == name:
                runs.extend(s["executions"])
        runs.sort(key=lambda e: e["ScheduledTime"], reverse=self._get_param("SortOrder") != "Ascending")
        limit = self._get_param("MaxResults") or 100
        return ActionResult({"MonitoringExecutionSummaries": runs[:limit]})


def record_monitoring_execution(body):
    """Records an execution of a schedule, as AWS's scheduler would (not an AWS call)."""
    from moto.sagemaker.models import sagemaker_backends

    backend = sagemaker_backends[body.get("Account", "123456789012")][body.get("Region", "us-east-1")]
    name = body.get("MonitoringScheduleName")
    with _LOCK:
        s = _schedules(backend).get(name)
        if s is None:
            return 404, {"message": f"no monitoring schedule {name}"}
        now = utcnow()
        e = {
            "MonitoringScheduleName": name,
            "ScheduledTime": now,
            "CreationTime": now,
            "LastModifiedTime": now,
            "MonitoringExecutionStatus": body.get("MonitoringExecutionStatus") or "Completed",
            "MonitoringType": s["MonitoringType"],
        }
        for k in ("ProcessingJobArn", "FailureReason", "EndpointName"):
            if body.get(k):
                e[k] = body[k]
        s["executions"].append(e)
        return 200, {"recorded": len(s["executions"])}


def _with_test_routes(app):
    """The launcher's own routes in front of moto's app."""

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO") == "/mlopsd/monitoring-execution" and environ.get("REQUEST_METHOD") == "POST":
            n = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                body = json.loads(environ["wsgi.input"].read(n) or b"{}")
                status, out = record_monitoring_execution(body)
            except Exception as e:  # a bad test request: say so
                status, out = 400, {"message": str(e)}
            data = json.dumps(out).encode()
            start_response(f"{status} {'OK' if status == 200 else 'ERROR'}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]
        return app(environ, start_response)

    return wsgi


def install():
    from moto.sagemaker.models import SageMakerModelBackend

    CodeBuildResponse.start_build = start_build
    SageMakerResponse.start_pipeline_execution = start_pipeline_execution
    SageMakerResponse.describe_endpoint = describe_endpoint
    SageMakerResponse.create_endpoint = create_endpoint
    SageMakerResponse.update_endpoint = update_endpoint
    SageMakerResponse.create_monitoring_schedule = create_monitoring_schedule
    SageMakerResponse.describe_monitoring_schedule = describe_monitoring_schedule
    SageMakerResponse.list_monitoring_executions = list_monitoring_executions
    SageMakerResponse.create_model = _exists("model", "model", lambda b: b._models)(
        SageMakerResponse.create_model, "ModelName"
    )
    SageMakerResponse.create_endpoint_config = _exists(
        "endpoint-config", "endpoint configuration", lambda b: b.endpoint_configs
    )(SageMakerResponse.create_endpoint_config, "EndpointConfigName")
    # list_tags is paginated by a decorator around the backend method: unwrap to the
    # model-package case before it.
    SageMakerModelBackend.add_tags = _package_tags(SageMakerModelBackend.add_tags)
    _list = SageMakerResponse.list_tags

    def list_tags(self):
        arn = self._get_param("ResourceArn")
        if ":model-package/" in arn:
            tags = _package_tags(None)(self.sagemaker_backend, arn)
            return ActionResult({"Tags": list(tags)})
        return _list(self)

    SageMakerResponse.list_tags = list_tags


if __name__ == "__main__":
    install()
    _dispatcher = server.DomainDispatcherApplication
    server.DomainDispatcherApplication = lambda *a, **kw: _with_test_routes(_dispatcher(*a, **kw))
    server.main(sys.argv[1:])
