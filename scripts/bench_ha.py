"""mlopsd HA benchmark: failover time, DynamoDB requests per minute (and what they cost), and a
standby's memory.

Runs the release binary as two replicas on one DynamoDB table served by moto server (from
.venv), behind a counting front: DynamoDB requests are forwarded to moto and counted per
operation with the request units DynamoDB would charge (from the item sizes in the requests
and answers); CloudWatch GetMetricData is answered by scripts/bench.py's stub (no breach).

  python3 scripts/bench_ha.py [FAILOVERS] [SIZES...]   (default: 20 failovers; 0 1000 10000 checks)

Figures:
  - failover: kill -9 of the leader → the other replica's `ha_leading` (logged when it has
    caught up with the table and starts acting), p50 / p99 / max, at ha_lease = 3s and 15s;
  - handover: the same after SIGTERM (a planned restart: the leader gives the lease up), at
    ha_lease = 15s, sent at a random moment of the standby's 5 s look cycle;
  - requests per minute by operation, leader + one standby, at each size, over 2 minutes;
  - the write and read request units per minute and the month they imply at on-demand prices;
  - RSS of the standby and of the leader.
"""
import base64
import http.client
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (the CloudWatch stub and the N-check config)

ROOT = B.ROOT
BIN = B.BIN
VENV = os.environ.get("MLOPSD_VENV") or os.path.join(ROOT, ".venv")
# DynamoDB on-demand, us-east-1, as published when this was written (check the current page):
PRICE_WRU = 0.625 / 1e6  # $ per write request unit
PRICE_RRU = 0.125 / 1e6  # $ per read request unit
MINUTES_PER_MONTH = 30 * 24 * 60

MOTO = None
DDB = {}  # op -> [requests, write units, read units]
LOCK = threading.Lock()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def attr_size(v):
    (t, x), = v.items()
    if t == "S":
        return len(x.encode())
    if t == "N":
        return (len(x) + 1) // 2 + 1
    if t == "B":
        return len(base64.b64decode(x))
    return len(json.dumps(x))


def item_size(item):
    return sum(len(k.encode()) + attr_size(v) for k, v in (item or {}).items())


def units(op, req, resp):
    """(write units, read units) DynamoDB charges for this request (on-demand)."""
    kb = lambda n: max(1, math.ceil(n / 1024))  # noqa: E731
    if op == "PutItem":
        return kb(item_size(req.get("Item"))), 0
    if op == "TransactWriteItems":
        w = 0
        for it in req.get("TransactItems", []):
            if "Put" in it:
                w += 2 * kb(item_size(it["Put"]["Item"]))
            else:
                w += 2  # a ConditionCheck of the (small) lease item
        return w, 0
    if op == "BatchWriteItem":
        return sum(len(v) for v in req.get("RequestItems", {}).values()), 0
    if op == "GetItem":
        return 0, max(1, math.ceil(item_size(resp.get("Item")) / 4096))
    if op == "Query":
        return 0, max(1, math.ceil(sum(item_size(i) for i in resp.get("Items", [])) / 4096))
    return 0, 1 if op == "DescribeTable" else 0


class Front(B.Stub):
    def do_POST(self):
        target = self.headers.get("x-amz-target") or ""
        if not target.startswith("DynamoDB_"):
            return B.Stub.do_POST(self)
        n = int(self.headers.get("content-length", 0))
        body = self.rfile.read(n)
        op = target.split(".")[-1]
        c = http.client.HTTPConnection("127.0.0.1", MOTO, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request("POST", self.path, body=body, headers=headers)
        r = c.getresponse()
        out = r.read()
        try:
            w, rd = units(op, json.loads(body or b"{}"), json.loads(out or b"{}"))
        except ValueError:
            w, rd = 0, 0
        with LOCK:
            e = DDB.setdefault(op, [0, 0, 0])
            e[0] += 1
            e[1] += w
            e[2] += rd
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(k, v)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def moto_request(port, target, payload):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/", body=json.dumps(payload), headers={
        "x-amz-target": f"DynamoDB_20120810.{target}",
        "content-type": "application/x-amz-json-1.0",
        "authorization": "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x",
    })
    r = c.getresponse()
    out = r.read()
    if r.status != 200:
        sys.exit(f"{target}: {out[:300]}")


def create_table(name):
    moto_request(MOTO, "CreateTable", {
        "TableName": name, "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
    })


class Replica:
    def __init__(self, name, cfg, tmp):
        state = os.path.join(tmp, name)
        env = dict(os.environ, MLOPSD_LOG_FORMAT="json", MLOPSD_LOG="info", MLOPSD_REPLICA_ID=name,
                   AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        env.pop("NOTIFY_SOCKET", None)
        self.name = name
        self.events = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen([BIN, "run", "--config", cfg, "--state-dir", state],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if str(ev.get("event", "")).startswith(("ha_", "daemon_")):
                ev["_t"] = time.time()
                with self.lock:
                    self.events.append(ev)

    def named(self, name):
        with self.lock:
            return [e for e in self.events if e.get("event") == name]

    def wait(self, name, count, timeout):
        end = time.time() + timeout
        while time.time() < end:
            evs = self.named(name)
            if len(evs) >= count:
                return evs
            time.sleep(0.02)
        sys.exit(f"{self.name}: timed out waiting for {count} x {name}")

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(timeout=60)


def ha_config(n, tmp, endpoint, table, lease):
    text = B.config(n, os.path.join(tmp, "unused"), endpoint)
    # Nobody to tell of leader changes here (the stub serves no SNS).
    return text.replace(
        '[daemon]\n',
        f'[daemon]\nha_table = "{table}"\nha_lease = "{lease}s"\nha_notify = []\n', 1)


def stamp(ev):
    return datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()


def failovers(count, lease, endpoint, planned=False):
    tmp = tempfile.mkdtemp(prefix="mlopsd-bench-ha-")
    table = f"bench-failover-{lease}-{int(planned)}-{os.getpid()}"
    create_table(table)
    cfg = os.path.join(tmp, "mlops.toml")
    with open(cfg, "w") as f:
        f.write(ha_config(10, tmp, endpoint, table, lease))
    reps = {"a": Replica("a", cfg, tmp)}
    reps["a"].wait("ha_leading", 1, 60)
    reps["b"] = Replica("b", cfg, tmp)
    reps["b"].wait("ha_following", 1, 60)
    leader, other = "a", "b"
    took = []
    for _ in range(count):
        before = len(reps[other].named("ha_leading"))
        if planned:
            # A restart comes at any moment of the standby's look cycle (every 5 s here).
            time.sleep(random.uniform(0, 5))
        t0 = time.time()
        if planned:
            reps[leader].stop()
        else:
            reps[leader].kill()
        ev = reps[other].wait("ha_leading", before + 1, 10 * lease + 30)[-1]
        took.append(stamp(ev) - t0)
        # The killed one comes back as a standby of the new leader.
        reps[leader] = Replica(leader, cfg, tmp)
        reps[leader].wait("ha_following", 1, 60)
        leader, other = other, leader
    for r in reps.values():
        r.stop()
    return took


def load(n, endpoint, window):
    tmp = tempfile.mkdtemp(prefix=f"mlopsd-bench-ha-{n}-")
    table = f"bench-load-{n}-{os.getpid()}"
    create_table(table)
    cfg = os.path.join(tmp, "mlops.toml")
    with open(cfg, "w") as f:
        f.write(ha_config(n, tmp, endpoint, table, 15))
    a = Replica("a", cfg, tmp)
    a.wait("ha_leading", 1, 120)
    b = Replica("b", cfg, tmp)
    b.wait("ha_following", 1, 120)
    # Let the first evaluations (and their state) settle, then count over whole minutes.
    time.sleep(70)
    with LOCK:
        start = {k: list(v) for k, v in DDB.items()}
    time.sleep(window)
    with LOCK:
        end = {k: list(v) for k, v in DDB.items()}
    mins = window / 60
    per = {}
    for op, v in end.items():
        s = start.get(op, [0, 0, 0])
        per[op] = [(v[i] - s[i]) / mins for i in range(3)]
    rss = {}
    for name, r in (("leader", a), ("standby", b)):
        rss[name] = B.proc_mem(r.p.pid)[0]
    a.stop()
    b.stop()
    return per, rss


def main():
    global MOTO
    args = [int(a) for a in sys.argv[1:]]
    count = args[0] if args else 20
    sizes = args[1:] or [0, 1000, 10000]
    MOTO = free_port()
    moto = subprocess.Popen([os.path.join(VENV, "bin", "python"), os.path.join(ROOT, "scripts", "moto_server.py"),
                             "-H", "127.0.0.1", "-p", str(MOTO)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", MOTO), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        front = ThreadingHTTPServer(("127.0.0.1", 0), Front)
        threading.Thread(target=front.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{front.server_address[1]}"
        print(f"mlopsd HA benchmark ({BIN}); DynamoDB = moto server behind a counting front")
        for lease, n in ((3, count), (15, max(3, count // 4))):
            took = failovers(n, lease, endpoint)
            print(f"failover at ha_lease = {lease}s over {n}: p50 {B.pct(took, 50):.2f} s, p99 {B.pct(took, 99):.2f} s, "
                  f"max {max(took):.2f} s (goal < {lease + 2} s)")
        n = count
        took = failovers(n, 15, endpoint, planned=True)
        print(f"handover (SIGTERM of the leader) at ha_lease = 15s over {n}: p50 {B.pct(took, 50):.2f} s, "
              f"p99 {B.pct(took, 99):.2f} s, max {max(took):.2f} s (a standby looks every 5 s)")
        for n in sizes:
            per, rss = load(n, endpoint, 120)
            total = sum(v[0] for v in per.values())
            wru = sum(v[1] for v in per.values())
            rru = sum(v[2] for v in per.values())
            month = (wru * PRICE_WRU + rru * PRICE_RRU) * MINUTES_PER_MONTH
            ops = ", ".join(f"{op} {v[0]:.1f}" for op, v in sorted(per.items()) if v[0] > 0)
            print(f"{n} checks: {total:.1f} DynamoDB requests/min ({ops}); {wru:.0f} WRU/min + {rru:.0f} RRU/min "
                  f"= ${month:.2f}/month on demand; RSS leader {rss['leader']:.1f} MiB, standby {rss['standby']:.1f} MiB")
    finally:
        moto.terminate()


if __name__ == "__main__":
    main()
