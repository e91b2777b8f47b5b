"""mlopsd declared-pipelines benchmark: 100 pipelines, each declared from its own definition
file (the example's shape, examples/pipelines/churn-training.json).

Runs the release binary against a small SageMaker stub (below: DescribePipeline,
CreatePipeline, UpdatePipeline, holding definitions in memory) and measures:

- reload of a one-line edit: from the moment an edited definition file is renamed into place
  to the moment its UpdatePipeline request reaches the stub (file watch, validation of the
  whole config with its 100 definitions, the diff, DescribePipeline, the stored decision and
  the update are all inside); p50/p99/max over R edits of random pipelines;
- the AWS calls reconcile makes: counted over several intervals of a short
  `reconcile_interval`, then given per hour at the default (10m).

  python3 scripts/bench_pipelines.py [PIPELINES] [EDITS]      (default 100 30)
"""
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MLOPSD_BENCH_BIN") or os.path.join(ROOT, "target", "release", "mlopsd")
EXAMPLE = os.path.join(ROOT, "examples", "pipelines", "churn-training.json")

COND = threading.Condition()
PIPELINES = {}  # name -> (definition, role)
COUNTS = {}
UPDATES = []  # (arrival time, pipeline name)
DESCRIBES = []  # arrival times


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, obj, status=200):
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/x-amz-json-1.1")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(n) or b"{}")
        op = (self.headers.get("x-amz-target") or "?").split(".")[-1]
        name = body.get("PipelineName", "")
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{name.lower()}"
        out, status = self.answer(op, name, arn, body)
        self.reply(out, status)

    def answer(self, op, name, arn, body):
        with COND:
            COUNTS[op] = COUNTS.get(op, 0) + 1
            if op == "DescribePipeline":
                DESCRIBES.append(time.perf_counter())
                if name not in PIPELINES:
                    return {"__type": "ResourceNotFound", "Message": f"Pipeline '{arn}' does not exist."}, 400
                d, r = PIPELINES[name]
                return {"PipelineArn": arn, "PipelineName": name, "PipelineDefinition": d, "RoleArn": r, "PipelineStatus": "Active"}, 200
            if op in ("CreatePipeline", "UpdatePipeline"):
                PIPELINES[name] = (body["PipelineDefinition"], body["RoleArn"])
                if op == "UpdatePipeline":
                    UPDATES.append((time.perf_counter(), name))
                COND.notify_all()
                return {"PipelineArn": arn}, 200
        return {"__type": "UnknownOperationException", "message": op}, 400

    def log_message(self, *a):
        pass


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def definition(i, depth):
    text = open(EXAMPLE).read()
    text = text.replace('"max_depth": "5"', f'"max_depth": "{depth}"')
    return text.replace("s3://ml-bucket/churn/", f"s3://ml-bucket/churn-{i}/")


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    edits = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    interval = 5
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    work = tempfile.mkdtemp(prefix="mlopsd-bench-pipelines-")
    os.makedirs(os.path.join(work, "pipelines"))
    depth = {}
    for i in range(n):
        depth[i] = 5
        write(os.path.join(work, "pipelines", f"p{i}.json"), definition(i, 5))
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    listen = port.getsockname()[1]
    port.close()
    cfg = [
        f'[daemon]\nstate_dir = "{work}/state"\nlisten = "127.0.0.1:{listen}"\nreconcile_interval = "{interval}s"\n',
        f'[aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\nmax_attempts = 3\n',
    ]
    for i in range(n):
        cfg.append(
            f'[pipelines.p{i}]\npipeline_name = "bench-p{i}"\ndefinition = "pipelines/p{i}.json"\n'
            f'role_arn = "arn:aws:iam::123456789012:role/SageMakerPipelineRole"\n'
        )
    path = os.path.join(work, "mlops.toml")
    with open(path, "w") as f:
        f.write("\n".join(cfg))
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", MLOPSD_LOG="warn")
    proc = subprocess.Popen([BIN, "run", "--config", path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.perf_counter()
        with COND:
            while len(PIPELINES) < n:
                if not COND.wait(60):
                    sys.exit(f"only {len(PIPELINES)} of {n} pipelines created in 60 s")
        created = time.perf_counter() - t0
        print(f"{n} declared pipelines created in {created * 1000:.0f} ms after start "
              f"({COUNTS.get('DescribePipeline', 0)} DescribePipeline, {COUNTS.get('CreatePipeline', 0)} CreatePipeline)")

        # Reconcile calls in steady state (everything in sync): the DescribePipeline requests of
        # each reconcile arrive as one burst; count the bursts wholly inside the window.
        rounds = 4
        time.sleep(interval * (rounds + 1))
        with COND:
            arrivals = list(DESCRIBES)
            writes = COUNTS.get("CreatePipeline", 0) - n + COUNTS.get("UpdatePipeline", 0)
        bursts = []
        for a in arrivals:
            if bursts and a - bursts[-1][-1] < 1.0:
                bursts[-1].append(a)
            else:
                bursts.append([a])
        steady = bursts[1:-1] if len(bursts) > 2 else bursts
        per = sum(len(b) for b in steady) / max(len(steady), 1)
        spread = max((b[-1] - b[0]) * 1000 for b in steady)
        print(f"reconcile, in sync: {per:.1f} DescribePipeline per reconcile ({len(steady)} reconciles, each over "
              f"at most {spread:.0f} ms), {writes} writes; at the default reconcile_interval (10m): "
              f"{per * 6:.0f} calls/hour for {n} pipelines")

        # One-line edits of random pipelines: file renamed into place -> UpdatePipeline at the stub.
        lat = []
        rnd = random.Random(20261201)
        for k in range(edits):
            i = rnd.randrange(n)
            depth[i] += 1
            name = f"bench-p{i}"
            with COND:
                seen = len(UPDATES)
            t = time.perf_counter()
            write(os.path.join(work, "pipelines", f"p{i}.json"), definition(i, depth[i]))
            with COND:
                while not any(nm == name for _, nm in UPDATES[seen:]):
                    if not COND.wait(30):
                        sys.exit(f"edit {k} of p{i}: no UpdatePipeline within 30 s")
                at = next(a for a, nm in UPDATES[seen:] if nm == name)
            lat.append((at - t) * 1000)
            time.sleep(0.3)
        print(f"one-line edit of 1 of {n} definitions -> UpdatePipeline: p50 {pct(lat, 50):.1f} ms, "
              f"p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms over {edits} edits")
        with COND:
            stray = [nm for _, nm in UPDATES]
        print(f"updates sent in all: {len(stray)} (one per edit: {len(stray) == edits})")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        err = proc.stderr.read().decode()
        if proc.returncode not in (0, None) and err:
            print(err, file=sys.stderr)


if __name__ == "__main__":
    main()
