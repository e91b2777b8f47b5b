"""mlopsd deploy benchmark: how fast a model package approval becomes an UpdateEndpoint, and what
one deployment costs in AWS calls.

Runs the release binary against a small stub (below) that speaks SQS (the [events] queue) and
SageMaker (the registry and hosting: models, endpoint configs, endpoints; an update is
InService on its new config at the next describe). First the endpoint is created for version 1;
then, N times: a new version is Approved in the group and its `SageMaker Model Package State
Change` event is put on the queue, and the time from the event being available to the
UpdateEndpoint request reaching the stub is measured (the long poll, the registry read, the
stored decision, the model and config made after a describe each, the stored send, all
inside). Each deployment is let finish (described, baked, older resources cleaned) before the
next. Prints p50/p99/max (goal p99 < 1 s) and the AWS requests one deployment costs, by
operation.

  python3 scripts/bench_deploy.py [N]      (default 40)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MLOPSD_BENCH_BIN") or os.path.join(ROOT, "target", "release", "mlopsd")
ACCOUNT = "123456789012"
GROUP = "bench-group"

COND = threading.Condition()
QUEUE = []  # (message id, body)
COUNTS = {}
VERSIONS = [1]  # Approved versions
MODELS, CONFIGS = set(), set()
ENDPOINT = {}  # config, status
UPDATES = []  # (config, arrival)
CREATED = []


def arn(kind, name):
    return f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:{kind}/{name}"


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, obj, status=200):
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/x-amz-json-1.1")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def missing(self, what):
        return self.reply({"__type": "ValidationException", "message": f"Could not find {what}."}, 400)

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(n) or b"{}")
        op = (self.headers.get("x-amz-target") or "?").split(".")[-1]
        with COND:
            COUNTS[op] = COUNTS.get(op, 0) + 1
        if op == "ReceiveMessage":
            deadline = time.time() + min(int(body.get("WaitTimeSeconds", 0)), 20)
            with COND:
                while not QUEUE and time.time() < deadline:
                    COND.wait(deadline - time.time())
                batch, QUEUE[:] = QUEUE[:10], QUEUE[10:]
            return self.reply({"Messages": [{"MessageId": m, "ReceiptHandle": f"r-{m}", "Body": b} for m, b in batch]})
        if op in ("DeleteMessage", "DeleteMessageBatch"):
            return self.reply({})
        with COND:
            return self.sagemaker(op, body)

    def sagemaker(self, op, body):
        if op == "ListModelPackages":
            return self.reply({"ModelPackageSummaryList": [
                {"ModelPackageGroupName": GROUP, "ModelPackageVersion": v, "ModelPackageArn": arn("model-package", f"{GROUP}/{v}"),
                 "CreationTime": 1.8e9 + v, "ModelPackageStatus": "Completed", "ModelApprovalStatus": "Approved"}
                for v in reversed(VERSIONS)]})
        if op == "DescribeModelPackageGroup":
            return self.reply({"ModelPackageGroupName": GROUP, "ModelPackageGroupArn": arn("model-package-group", GROUP),
                               "CreationTime": 1.8e9, "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"})
        if op == "DescribeModel":
            name = body["ModelName"]
            if name not in MODELS:
                return self.missing(f"model '{arn('model', name)}'")
            return self.reply({"ModelName": name, "ModelArn": arn("model", name), "CreationTime": 1.8e9, "ExecutionRoleArn": "r"})
        if op == "CreateModel":
            MODELS.add(body["ModelName"])
            return self.reply({"ModelArn": arn("model", body["ModelName"])})
        if op == "DescribeEndpointConfig":
            name = body["EndpointConfigName"]
            if name not in CONFIGS:
                return self.missing(f"endpoint configuration '{arn('endpoint-config', name)}'")
            return self.reply({"EndpointConfigName": name, "EndpointConfigArn": arn("endpoint-config", name),
                               "ProductionVariants": [], "CreationTime": 1.8e9})
        if op == "CreateEndpointConfig":
            CONFIGS.add(body["EndpointConfigName"])
            return self.reply({"EndpointConfigArn": arn("endpoint-config", body["EndpointConfigName"])})
        if op == "DeleteModel":
            MODELS.discard(body["ModelName"])
            return self.reply({})
        if op == "DeleteEndpointConfig":
            CONFIGS.discard(body["EndpointConfigName"])
            return self.reply({})
        if op == "CreateEndpoint":
            ENDPOINT.update(config=body["EndpointConfigName"], status="InService", modified=time.time())
            CREATED.append(time.perf_counter())
            COND.notify_all()
            return self.reply({"EndpointArn": arn("endpoint", body["EndpointName"])})
        if op == "UpdateEndpoint":
            ENDPOINT.update(config=body["EndpointConfigName"], status="InService", modified=time.time())
            UPDATES.append((body["EndpointConfigName"], time.perf_counter()))
            COND.notify_all()
            return self.reply({"EndpointArn": arn("endpoint", body["EndpointName"])})
        if op == "DescribeEndpoint":
            if not ENDPOINT:
                return self.missing(f"endpoint '{arn('endpoint', body['EndpointName'])}'")
            return self.reply({"EndpointName": body["EndpointName"], "EndpointArn": arn("endpoint", body["EndpointName"]),
                               "EndpointConfigName": ENDPOINT["config"], "EndpointStatus": ENDPOINT["status"],
                               "CreationTime": 1.8e9, "LastModifiedTime": ENDPOINT["modified"]})
        return self.reply({"__type": "UnknownOperationException", "message": op}, 400)

    def log_message(self, *a):
        pass


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def settle(version):
    """Waits until the daemon has described the endpoint on this version's config and had time
    to bake and clean up (no requests for 300 ms)."""
    deadline = time.time() + 20
    last = -1
    while time.time() < deadline:
        with COND:
            total = sum(COUNTS.values()) - COUNTS.get("ReceiveMessage", 0)
        if total == last and f"-v{version}-" in ENDPOINT.get("config", "") and not any(f"-v{version - 2}-" in c for c in CONFIGS if version > 2):
            return
        last = total
        time.sleep(0.3)
    sys.exit(f"version {version}'s deployment did not settle within 20 s")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    tmp = tempfile.mkdtemp(prefix="mlopsd-bench-deploy-")
    cfg = os.path.join(tmp, "mlops.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[daemon]\nstate_dir = "{tmp}/state"\nlisten = "127.0.0.1:0"\npoll_interval = "200ms"\n\n'
            f'[aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\nmax_attempts = 2\n\n'
            f'[events]\nqueue_url = "{endpoint}/{ACCOUNT}/bench-events"\n\n'
            f'[endpoints.bench]\nendpoint_name = "bench-ep"\nmodel_package_group = "{GROUP}"\n'
            f'execution_role_arn = "arn:aws:iam::{ACCOUNT}:role/r"\ninstance_type = "ml.m5.large"\n'
            'strategy = { canary = "10%", wait = "5m" }\n'
        )
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", MLOPSD_LOG="warn")
    d = subprocess.Popen([BIN, "run", "--config", cfg], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lat, per = [], []
    try:
        with COND:
            while not CREATED:
                if not COND.wait(20):
                    sys.exit(f"the endpoint was not created within 20 s (daemon alive: {d.poll() is None})")
        settle(1)
        for i in range(n):
            v = i + 2
            with COND:
                before = dict(COUNTS)
                VERSIONS.append(v)
                ev = {"version": "0", "id": f"pkg-{v}", "source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change",
                      "account": ACCOUNT, "time": "2026-12-01T00:00:00Z", "region": "us-east-1", "resources": [],
                      "detail": {"ModelPackageGroupName": GROUP, "ModelPackageVersion": v, "ModelApprovalStatus": "Approved"}}
                t0 = time.perf_counter()
                QUEUE.append((f"m-{v}", json.dumps(ev)))
                COND.notify_all()
                while not any(f"-v{v}-" in c for c, _ in UPDATES):
                    if not COND.wait(10):
                        sys.exit(f"version {v}'s approval led to no UpdateEndpoint within 10 s (daemon alive: {d.poll() is None})")
                sent = next(t for c, t in UPDATES if f"-v{v}-" in c)
                lat.append((sent - t0) * 1000)
            settle(v)
            with COND:
                per.append({k: COUNTS.get(k, 0) - before.get(k, 0) for k in COUNTS if k != "ReceiveMessage"})
    finally:
        d.terminate()
        try:
            d.wait(10)
        except subprocess.TimeoutExpired:
            d.kill()
    print(f"mlopsd deploy benchmark: release binary {BIN}, stub at {endpoint}, {os.cpu_count()} cores")
    print(f"package approval event on the queue → UpdateEndpoint sent, over {n} deployments (ms):")
    print(f"  p50 {statistics.median(lat):.1f}   p99 {pct(lat, 99):.1f}   max {max(lat):.1f}   (goal: p99 < 1000)")
    ops = sorted({k for p in per for k in p})
    print("AWS requests one deployment costs (mean over the deployments; ReceiveMessage not counted):")
    for k in ops:
        print(f"  {k:<24} {statistics.mean(p.get(k, 0) for p in per):.2f}")
    print(f"  {'total':<24} {statistics.mean(sum(p.values()) for p in per):.2f}")


if __name__ == "__main__":
    main()
