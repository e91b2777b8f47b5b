"""mlopsd benchmark: report checks (SPEC "Drift reports as a check source").

N report checks (default 1,000), one S3 prefix each, against a minimal S3 stub (below) that
answers ListObjectsV2 (one report per prefix, its ETag the current generation) and GetObject
(a small JSON report), and counts requests by API. Checks look every 30 s. Measured over whole
cycles: one cycle with no new report (goal: one ListObjectsV2 per prefix, no GetObject, no
evaluation) and one with a new report under every prefix (goal: one ListObjectsV2 per prefix and
one GetObject per new report, one evaluation each); RSS after start, after the cycles and its
peak (VmHWM), beside the 10,000-metric-check figures in BENCHMARKS.md.

  python3 scripts/bench_reports.py [N]
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MLOPSD_BENCH_BIN") or os.path.join(ROOT, "target", "release", "mlopsd")
PERIOD = 30  # seconds between looks

COUNTS = {}
LOCK = threading.Lock()
GEN = [1]
STAMP = ["2026-12-04T00:00:00.000Z"]


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        if ctype == "application/json":
            self.send_header("etag", f'"{GEN[0]}"')
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        parts = u.path.lstrip("/").split("/", 1)
        if "list-type" in q:
            op = "ListObjectsV2"
        elif len(parts) == 2 and parts[1]:
            op = "GetObject"
        else:
            op = "GET " + u.path
        with LOCK:
            COUNTS[op] = COUNTS.get(op, 0) + 1
        if op == "ListObjectsV2":
            prefix = q.get("prefix", [""])[0]
            key = f"{prefix}{GEN[0]:06d}/drift.json"
            body = (
                '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>{parts[0]}</Name><Prefix>{prefix}</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>"
                f"<IsTruncated>false</IsTruncated><Contents><Key>{key}</Key><LastModified>{STAMP[0]}</LastModified>"
                f'<ETag>"{GEN[0]}"</ETag><Size>96</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>'
            ).encode()
            self._send(200, body, "application/xml")
        elif op == "GetObject":
            share = 0.1 if GEN[0] % 2 else 0.05
            body = json.dumps({"metrics": [{"result": {"share_of_drifted_columns": share}}]}).encode()
            self._send(200, body, "application/json")
        else:
            self._send(404, b"", "application/xml")

    def log_message(self, *a):
        pass


def config(n, state, endpoint):
    out = [
        f'[daemon]\nstate_dir = "{state}"\nlisten = "127.0.0.1:0"\n\n'
        f'[aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\nmax_attempts = 2\n\n'
        '[pipelines.train]\npipeline_name = "train"\n'
    ]
    for i in range(n):
        out.append(
            f'\n[checks.r{i}]\nreport = "s3://bench-reports/p{i:05d}/"\nfile = "drift.json"\n'
            f'value = "metrics.0.result.share_of_drifted_columns"\nabove = 0.3\nschedule = "every {PERIOD}s"\n'
        )
    out.append('\n[rules.retrain]\non_check = "r0"\nstart_pipeline = "train"\n')
    return "".join(out)


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k = line.split(":")[0]
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(line.split()[1]) / 1024
    return out


def snapshot():
    with LOCK:
        return dict(COUNTS)


def diff(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b) if b.get(k, 0) - a.get(k, 0)}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    tmp = tempfile.mkdtemp(prefix="mlopsd-bench-reports-")
    cfg = os.path.join(tmp, "mlops.toml")
    with open(cfg, "w") as f:
        f.write(config(n, os.path.join(tmp, "state"), endpoint))
    evals = [0]

    def read(p):
        for line in p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "check_evaluated":
                evals[0] += 1

    env = dict(os.environ, MLOPSD_LOG_FORMAT="json", MLOPSD_LOG="info", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    p = subprocess.Popen([BIN, "run", "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    threading.Thread(target=read, args=(p,), daemon=True).start()
    try:
        # The look at start reads every prefix's report once.
        t0 = time.time()
        while snapshot().get("GetObject", 0) < n:
            if time.time() - t0 > 120:
                sys.exit(f"the startup look did not finish: {snapshot()}")
            time.sleep(0.2)
        time.sleep(2)
        start_mem = mem(p.pid)

        def one_cycle(new):
            # From the middle of one 30-s window to the middle of the next: exactly one look.
            now = time.time()
            mid = (now // PERIOD) * PERIOD + PERIOD / 2
            if mid <= now:
                mid += PERIOD
            time.sleep(mid - now)
            if new:
                GEN[0] += 1
                STAMP[0] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            a, e0 = snapshot(), evals[0]
            time.sleep(PERIOD)
            return diff(a, snapshot()), evals[0] - e0

        unchanged, ev_unchanged = one_cycle(False)
        changed, ev_changed = one_cycle(True)
        after = mem(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=30)
    print(f"report checks: {n}, one prefix each, a look every {PERIOD} s (S3 stub, requests counted by API)")
    print(f"  cycle with no new report:      ListObjectsV2 {unchanged.get('ListObjectsV2', 0)}, GetObject {unchanged.get('GetObject', 0)}, "
          f"evaluations {ev_unchanged}  (goal: {n}, 0, 0)")
    print(f"  cycle with a new report each:  ListObjectsV2 {changed.get('ListObjectsV2', 0)}, GetObject {changed.get('GetObject', 0)}, "
          f"evaluations {ev_changed}  (goal: {n}, {n}, {n})")
    other = {k: v for k, v in {**unchanged, **changed}.items() if k not in ("ListObjectsV2", "GetObject")}
    if other:
        print(f"  other requests: {other}")
    print(f"  RSS after start {start_mem['VmRSS']:.1f} MiB, after the cycles {after['VmRSS']:.1f} MiB, peak (VmHWM) {after['VmHWM']:.1f} MiB")


if __name__ == "__main__":
    main()
