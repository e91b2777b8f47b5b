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
`MLOPSD_MOTO_TOKEN_WINDOW_SECS` shortens how long a token is remembered (both services), for a
test of what protects a start after the window. State lives on moto's backends, so
`POST /moto-api/reset` clears it with everything else.
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


def install():
    CodeBuildResponse.start_build = start_build
    SageMakerResponse.start_pipeline_execution = start_pipeline_execution


if __name__ == "__main__":
    install()
    server.main(sys.argv[1:])
