"""mlopsd benchmark: an event burst (a data drop of thousands of S3 events on the [events] queue).

Runs the release binary against examples/burst_stub.rs (SQS + SageMaker over AWS's JSON
protocol on axum, each call answered after 15 ms, an in-region round trip; the stub is not the
bottleneck) and, for comparison, a plain boto3 loop against the same stub (receive 10, start
the matches, delete_message_batch). Prints, for a backlog of N events (default 5,000) of which
1 in 100 matches an on_event rule: the time to drain it, events/s, requests per event by
operation, whether every matching start was made exactly once; then the reaction time of
single events (p50/p99) and how many long polls are in flight at once when the queue is empty.

  python3 scripts/bench_events_burst.py [N]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MLOPSD_BENCH_BIN") or os.path.join(ROOT, "target", "release", "mlopsd")
STUB = os.path.join(ROOT, "target", "release", "examples", "burst_stub")
EVERY = 100


def call(url, method="GET"):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else None


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def drain(base, n, timeout=600):
    """Loads n events and waits until none is left and every match started; (seconds, stats)."""
    call(f"{base}/stub/reset", "POST")
    call(f"{base}/stub/load?n={n}&every={EVERY}", "POST")
    want = n // EVERY
    t0 = time.time()
    while True:
        st = call(f"{base}/stub/stats")
        if st["visible"] == 0 and st["in_flight"] == 0 and st["keys_started"] >= want:
            end = max(st["last_delete_ms"] or 0, st["last_start_ms"] or 0)
            return (end - st["loaded_ms"]) / 1000, st
        if time.time() - t0 > timeout:
            sys.exit(f"not drained within {timeout} s: {st}")
        time.sleep(0.05)


def report(name, n, secs, st):
    reqs = sum(st["counts"].values())
    ops = ", ".join(f"{v:,} {k}" for k, v in sorted(st["counts"].items()))
    print(f"  {name}: drained {n:,} events in {secs:.2f} s = {n / secs:,.0f} events/s; "
          f"{reqs / n:.3f} requests per event ({ops}); starts {st['starts']} for {n // EVERY} matches, "
          f"{st['keys_started_twice']} started twice")


def boto3_loop(base, queue_url, n):
    import boto3
    from botocore.config import Config

    kw = dict(endpoint_url=base, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench",
              config=Config(retries={"max_attempts": 1}))
    sqs, sm = boto3.client("sqs", **kw), boto3.client("sagemaker", **kw)
    done = [False]

    def loop():
        while not done[0]:
            msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            for m in msgs:
                ev = json.loads(m["Body"])
                key = ev["detail"]["object"]["key"]
                if key.startswith("match/"):
                    sm.start_pipeline_execution(PipelineName="p", ClientRequestToken=f"{ev['id']:0>32}",
                                                PipelineParameters=[{"Name": "Key", "Value": key}])
            if msgs:
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])

    import threading
    def guarded():
        try:
            loop()
        except Exception as e:  # the comparison is void: say why and stop
            print(f"the boto3 loop failed: {e}", file=sys.stderr)
            os._exit(1)

    t = threading.Thread(target=guarded, daemon=True)
    t.start()
    try:
        return drain(base, n)
    finally:
        done[0] = True
        t.join(5)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    stub = subprocess.Popen([STUB, "0", "15"], stdout=subprocess.PIPE, text=True)
    port = int(stub.stdout.readline())
    base = f"http://127.0.0.1:{port}"
    queue_url = f"{base}/123456789012/burst"
    tmp = tempfile.mkdtemp(prefix="mlopsd-bench-burst-")
    cfg = os.path.join(tmp, "mlops.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[daemon]\nstate_dir = "{tmp}/state"\nlisten = "127.0.0.1:0"\npoll_interval = "1h"\n\n'
            f'[aws]\nregion = "us-east-1"\nendpoint_url = "{base}"\nmax_attempts = 2\n\n'
            f'[events]\nqueue_url = "{queue_url}"\n\n'
            '[pipelines.p]\npipeline_name = "p"\nmax_concurrent = 1000000\n\n'
            '[rules.on-new-data]\non_event = { source = "aws.s3", detail_type = "Object Created", match = { "detail.object.key" = { prefix = "match/" } } }\n'
            'start_pipeline = "p"\nparameters = { Key = "{{ event.detail.object.key }}" }\n'
        )
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", MLOPSD_LOG="warn")
    d = subprocess.Popen([BIN, "run", "--config", cfg], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2)
        print(f"event burst: {n:,} S3 events, 1 in {EVERY} matching an on_event rule; stub answers each call after 15 ms")
        secs, st = drain(base, n)
        report("mlopsd", n, secs, st)
        # One event at a time: its reaction time (load → StartPipelineExecution at the stub).
        call(f"{base}/stub/reset", "POST")
        lat = []
        for i in range(40):
            call(f"{base}/stub/load?n=1&every=1", "POST")
            t0 = time.time()
            while True:
                st = call(f"{base}/stub/stats")
                if st["latency_ms"]:
                    lat.append(st["latency_ms"][-1])
                    break
                if time.time() - t0 > 10:
                    sys.exit("a single event led to no start within 10 s")
                time.sleep(0.01)
            call(f"{base}/stub/reset", "POST")
            time.sleep(0.2)
        print(f"  single events: reaction p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms over {len(lat)} (goal p99 < 1000)")
        time.sleep(1)
        call(f"{base}/stub/reset", "POST")
        time.sleep(25)
        st = call(f"{base}/stub/stats")
        print(f"  idle 25 s: at most {st['most_polls']} long poll(s) in flight at once; {st['counts'].get('ReceiveMessage', 0)} ReceiveMessage")
    finally:
        d.terminate()
        try:
            d.wait(10)
        except subprocess.TimeoutExpired:
            d.kill()
    try:
        secs, st = boto3_loop(base, queue_url, n)
        report("plain boto3 loop (receive 10, start the matches, delete_message_batch)", n, secs, st)
    finally:
        stub.terminate()


if __name__ == "__main__":
    main()
