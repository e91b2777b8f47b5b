"""mlopsd benchmark: footprint and efficiency at 100, 1,000 and 10,000 checks.

Runs the release binary against a minimal CloudWatch stub (below) that answers GetMetricData
and counts requests by API. moto is not used here: at 10,000 checks moto itself would be the
bottleneck and its timing would be measured instead of mlopsd's. Prints, for each size:
validate and plan time, start to READY=1, reload time (1 item and all items changed), RSS idle
and peak, CPU per evaluation cycle and idle CPU, GetMetricData calls per cycle against the
ceil(N/500) limit, and scheduling lateness (p50, p99, max).

  python3 scripts/bench.py [SIZES...]      (default: 100 1000 10000)
  python3 scripts/bench.py --config N FILE  (only write the N-check config, for profiling)
"""
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MLOPSD_BENCH_BIN") or os.path.join(ROOT, "target", "release", "mlopsd")
TICKS = os.sysconf("SC_CLK_TCK")

COUNTS = {}
LOCK = threading.Lock()


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = self.rfile.read(n).decode()
        q = parse_qs(body)
        op = q.get("Action", [None])[0] or (self.headers.get("x-amz-target") or "?").split(".")[-1]
        with LOCK:
            COUNTS[op] = COUNTS.get(op, 0) + 1
        if op != "GetMetricData":
            out = json.dumps({"__type": "UnknownOperationException", "message": op}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/x-amz-json-1.1")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        ids = [v[0] for k, v in q.items() if re.match(r"MetricDataQueries\.member\.\d+\.Id$", k)]
        ts = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime())
        members = "".join(
            f"<member><Id>{i}</Id><Label>m</Label><Timestamps><member>{ts}</member></Timestamps>"
            f"<Values><member>0.01</member></Values><StatusCode>Complete</StatusCode></member>"
            for i in ids
        )
        out = (
            '<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult>'
            f"<MetricDataResults>{members}</MetricDataResults><Messages/></GetMetricDataResult>"
            "<ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata></GetMetricDataResponse>"
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/xml")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "Asia/Kolkata"]
SCHEDULES = ["every 1m", "rate(1 minute)", "* * * * *", "cron(* * * * ? *)", "0 * * * * *"]


def config(n, state, endpoint, threshold=0.5):
    out = [
        f'[daemon]\nstate_dir = "{state}"\nlisten = "127.0.0.1:0"\npoll_interval = "15s"\n',
        f'[aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\nmax_attempts = 3\n',
        '[notifiers.ops]\ntopic_arn = "arn:aws:sns:us-east-1:123456789012:ops"\nrepeat_interval = "4h"\n',
        '[notifiers.oncall]\ntopic_arn = "arn:aws:sns:us-east-1:123456789012:oncall"\n',
    ]
    for p in range(10):
        out.append(f'[pipelines.p{p}]\npipeline_name = "training-{p}"\nparameters = {{ InputData = "s3://b/{p}/" }}\nmax_concurrent = 1\n')
    for i in range(n):
        sched = SCHEDULES[i % len(SCHEDULES)]
        zone = ZONES[i % len(ZONES)]
        period = "5m" if i % 3 == 0 else "1m"
        out.append(
            f'[checks.c{i}]\nschedule = "{sched}"\ntimezone = "{zone}"\nnamespace = "bench/ns{i % 50}"\n'
            f'metric = "drift_{i}"\ndimensions = {{ Endpoint = "ep-{i % 100}" }}\nstatistic = "Average"\nperiod = "{period}"\n'
            f"above = {threshold}\nfor = {1 + i % 3}\n"
        )
        out.append(
            f'[rules.r{i}]\non_check = "c{i}"\nstart_pipeline = "p{i % 10}"\ncooldown = "6h"\nnotify = ["ops"]\n'
        )
    return "\n".join(out)


def timed(cmd, runs=5):
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ts.append(time.perf_counter() - t)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {r.stderr.decode()[:500]}")
    return statistics.median(ts)


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICKS


def proc_mem(pid):
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


class Daemon:
    def __init__(self, cfg_path, tmp):
        self.sock_path = os.path.join(tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, MLOPSD_LOG_FORMAT="json",
                   MLOPSD_LOG="info,mlopsd::daemon=debug", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        self.events = []
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen([BIN, "run", "--config", cfg_path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sock.settimeout(30)
        while True:
            msg = self.sock.recv(4096).decode()
            if "READY=1" in msg:
                self.ready = time.perf_counter() - self.t0
                break
        # Keep reading, as systemd does (every reload sends RELOADING=1 and READY=1).
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        self.sock.settimeout(None)
        while True:
            try:
                self.sock.recv(4096)
            except OSError:
                return

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["_t"] = time.perf_counter()
            if ev.get("event") in ("metrics_fetched", "schedule_batch", "config_reload_accepted", "config_reload_rejected", "daemon_ready"):
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
            time.sleep(0.05)
        sys.exit(f"timed out waiting for {count} x {name}")

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)
        self.sock.close()


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))
    return v[k]


def bench(n, endpoint):
    tmp = tempfile.mkdtemp(prefix=f"mlopsd-bench-{n}-")
    cfg_path = os.path.join(tmp, "mlops.toml")
    text = config(n, os.path.join(tmp, "state"), endpoint)
    with open(cfg_path, "w") as f:
        f.write(text)
    r = {"checks": n, "config_kib": len(text) / 1024}
    r["validate_ms"] = timed([BIN, "validate", "--config", cfg_path]) * 1000
    r["plan_ms"] = timed([BIN, "plan", "--config", cfg_path, "--count", "5"]) * 1000
    with LOCK:
        COUNTS.clear()
    d = Daemon(cfg_path, tmp)
    r["ready_ms"] = d.ready * 1000
    pid = d.p.pid
    r["rss_start_mib"] = proc_mem(pid)[0]
    # Two full evaluation cycles (all checks are due at the top of each minute).
    cycles = 2
    cpu0 = proc_cpu(pid)
    fetched = []
    while True:
        fe = d.named("metrics_fetched")
        total = sum(e["checks"] for e in fe)
        if total >= n * cycles:
            fetched = fe
            break
        if time.perf_counter() - d.t0 > 60 * (cycles + 2) + 30:
            sys.exit(f"only {total} check evaluations seen")
        time.sleep(0.2)
    time.sleep(3)  # let the cycle's state writes finish
    cpu1 = proc_cpu(pid)
    # Calls per cycle: group metrics_fetched events by the minute they happened in.
    per_cycle = {}
    for e in fetched:
        key = e["timestamp"][:16]
        c = per_cycle.setdefault(key, [0, 0])
        c[0] += e["checks"]
        c[1] += e["calls"]
    full = [v for v in per_cycle.values() if v[0] >= n]
    r["getmetricdata_per_cycle"] = max(v[1] for v in full) if full else float("nan")
    r["getmetricdata_limit"] = math.ceil(n / 500)
    r["cpu_s_per_cycle"] = (cpu1 - cpu0) / max(1, len(full))
    # Idle: a 20 s window between cycles.
    now = time.time()
    to_next_min = 60 - (now % 60)
    if to_next_min < 25:
        time.sleep(to_next_min + 8)
    c0, t0 = proc_cpu(pid), time.perf_counter()
    time.sleep(20)
    r["idle_cpu_pct"] = (proc_cpu(pid) - c0) / (time.perf_counter() - t0) * 100
    r["rss_idle_mib"], r["rss_peak_mib"] = proc_mem(pid)
    lat = []
    for e in d.named("schedule_batch"):
        lat += [e["lateness_ms_max"]] * int(e.get("checks", 0) or 0)
    r["lateness_p50_ms"], r["lateness_p99_ms"], r["lateness_max_ms"] = pct(lat, 50), pct(lat, 99), max(lat or [float("nan")])
    # Reloads, the file written in place: one check's threshold changed (5 times, a new value
    # each time; median and max), then every threshold changed.
    def reload(new):
        before = len(d.named("config_reload_accepted"))
        t = time.perf_counter()
        with open(cfg_path, "w") as f:
            f.write(new)
        ev = d.wait("config_reload_accepted", before + 1, 60)[-1]
        time.sleep(0.5)
        return (ev["_t"] - t) * 1000, ev.get("took_ms", float("nan")), ev.get("changed")
    ones = [reload(text.replace("above = 0.5\nfor = 1\n", f"above = 0.6{i}\nfor = 1\n", 1)) for i in range(5)]
    r["reload_one_ms"] = statistics.median(o[0] for o in ones)
    r["reload_one_max_ms"] = max(o[0] for o in ones)
    r["reload_one_work_ms"] = statistics.median(o[1] for o in ones)
    r["reload_one_changed"] = ones[-1][2]
    all_ms, all_work, all_changed = reload(text.replace("above = 0.5", "above = 0.7"))
    r["reload_all_ms"], r["reload_all_work_ms"], r["reload_all_changed"] = all_ms, all_work, all_changed
    r["rss_after_reload_mib"], r["rss_peak_with_reloads_mib"] = proc_mem(pid)
    d.stop()
    with LOCK:
        r["requests"] = dict(COUNTS)
    return r


TARGETS = {
    "rss_peak_mib": ("<", 64),
    "rss_peak_with_reloads_mib": ("<", 64),
    "idle_cpu_pct": ("<", 1),
    "reload_one_ms": ("<", 50),
    "reload_all_ms": ("<", 500),
    "ready_ms": ("<", 300),
    "lateness_p99_ms": ("<", 100),
}


def main():
    if sys.argv[1:2] == ["--config"]:
        if len(sys.argv) != 4:
            sys.exit("usage: bench.py --config N FILE")
        path = os.path.abspath(sys.argv[3])
        with open(path, "w") as f:
            f.write(config(int(sys.argv[2]), os.path.join(os.path.dirname(path), "state"), "http://127.0.0.1:9"))
        print(f"wrote a {sys.argv[2]}-check config to {path}")
        return
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 10000]
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: run `cargo build --release` first (scripts/bench does)")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    print(f"mlopsd benchmark: release binary {BIN}, CloudWatch stub at {endpoint}, {os.cpu_count()} cores")
    results = [bench(n, endpoint) for n in sizes]
    rows = [
        ("config size (KiB)", "config_kib", "{:.0f}"),
        ("validate (ms, median of 5)", "validate_ms", "{:.1f}"),
        ("plan --count 5 (ms, median of 5)", "plan_ms", "{:.1f}"),
        ("start → READY=1 (ms)", "ready_ms", "{:.1f}"),
        ("reload, 1 item changed: file written → applied (ms, median of 5)", "reload_one_ms", "{:.1f}"),
        ("  max of the 5 (ms)", "reload_one_max_ms", "{:.1f}"),
        ("  of which reload work (ms)", "reload_one_work_ms", "{:.1f}"),
        ("reload, all changed: file written → applied (ms)", "reload_all_ms", "{:.1f}"),
        ("  of which reload work (ms)", "reload_all_work_ms", "{:.1f}"),
        ("RSS after start (MiB)", "rss_start_mib", "{:.1f}"),
        ("RSS idle (MiB)", "rss_idle_mib", "{:.1f}"),
        ("RSS peak before reloads (MiB)", "rss_peak_mib", "{:.1f}"),
        ("RSS after the reloads (MiB)", "rss_after_reload_mib", "{:.1f}"),
        ("RSS peak with the reloads (MiB)", "rss_peak_with_reloads_mib", "{:.1f}"),
        ("CPU per evaluation cycle (s)", "cpu_s_per_cycle", "{:.3f}"),
        ("idle CPU (% of a core)", "idle_cpu_pct", "{:.2f}"),
        ("GetMetricData calls per cycle", "getmetricdata_per_cycle", "{}"),
        ("  limit ceil(N/500)", "getmetricdata_limit", "{}"),
        ("scheduling lateness p50 (ms)", "lateness_p50_ms", "{:.1f}"),
        ("scheduling lateness p99 (ms)", "lateness_p99_ms", "{:.1f}"),
        ("scheduling lateness max (ms)", "lateness_max_ms", "{:.1f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print()
    print(f"{'checks':<{w}}  " + "  ".join(f"{r['checks']:>10}" for r in results))
    for label, key, fmt in rows:
        cells = []
        for r in results:
            v = r.get(key)
            s = fmt.format(v) if v is not None else "-"
            t = TARGETS.get(key)
            if t and r["checks"] == 10000:
                ok = v < t[1] if t[0] == "<" else v > t[1]
                s += " ✓" if ok else " ✗"
            cells.append(f"{s:>10}")
        print(f"{label:<{w}}  " + "  ".join(cells))
    print()
    for r in results:
        print(f"AWS requests during the {r['checks']}-check run, by API: {r['requests']}")
    print("targets at 10,000 checks (✓/✗ above): RSS < 64 MiB, idle CPU < 1%, reload 1 item < 50 ms, all < 500 ms, READY < 300 ms, lateness p99 < 100 ms, GetMetricData = ceil(N/500)")
    print("JSON: " + json.dumps(results))


if __name__ == "__main__":
    main()
