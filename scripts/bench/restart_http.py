"""HTTP benchmarks of the steward daemon, loopback only.

For each workload (the sim provider's default latencies: a 250 ms cycle, about what a Docker
cycle takes on this machine; and a stress run with 60 ms cycles, where nearly every request
finds its workspace idle and starts a cycle), starts the release binary on 127.0.0.1 with a
fresh data dir, creates N sim workspaces, then measures with wrk, in the same run:
  - GET /healthz                       (baseline: the HTTP stack alone)
  - POST /v1/workspaces/{id}/restart   (intent through registry, actor, durable SQLite commit)
and then, with oha at a fixed rate (BENCH_RATE, default 5 000 requests/s, latency corrected
for coordinated omission), the latency of GET /healthz (a lower bound from the HTTP stack alone
on this machine, measured on the same daemon before the restart load) and of POST /restart over
the same 1 000 workspaces, right after the restart load.
Prints three tables; the second also gives the size of the SQLite write-ahead log file after all
the loads (it must stay bounded), the third the store's stages during the fixed-rate run (means
of steward_store_{commit,queue,batch,sync}_seconds over that run alone, from /metrics).
Bounded: every load runs BENCH_SECONDS against 127.0.0.1 and stops.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "steward")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WORKSPACES = int(os.environ.get("BENCH_WORKSPACES", "1000"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))

CONFIG = """
default_provider = "sim"
[providers.sim]
start_delay = "{start}ms"
stop_delay = "{stop}ms"
"""

# (name, sim start ms, sim stop ms)
WORKLOADS = [("default sim (250 ms cycle)", 200, 50), ("stress (60 ms cycle)", 50, 10)]


def start(start_ms, stop_ms):
    tmp = tempfile.mkdtemp(prefix="steward-bench-")
    config = os.path.join(tmp, "steward.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(start=start_ms, stop=stop_ms))
    data = os.path.join(tmp, "data")
    log = open(os.path.join(tmp, "steward.log"), "w")
    proc = subprocess.Popen(
        [BIN, "serve", "--config", config, "--data-dir", data, "--listen", "127.0.0.1:0"],
        stdout=log, stderr=log, env={**os.environ, "RUST_LOG": os.environ.get("BENCH_LOG", "warn")},
    )
    addr_file = os.path.join(data, "listen.addr")
    for _ in range(1000):
        if os.path.exists(addr_file):
            break
        time.sleep(0.01)
    addr = open(addr_file).read().strip()
    token = open(os.path.join(data, "admin.token")).read().strip()
    return proc, tmp, addr, token


def request(addr, token, method, path, body=None):
    req = urllib.request.Request(
        f"http://{addr}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read() or b"null")


def wrk(args, env=None):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat.get("50"), lat.get("99"), int(errors.group(1)) if errors else 0


def oha_fixed_rate(args):
    """Latency at a fixed rate (BENCH_RATE), corrected for coordinated omission."""
    rate = int(os.environ.get("BENCH_RATE", "5000"))
    out = subprocess.run(
        ["oha", "--no-tui", "--output-format", "json", "-q", str(rate), "-z", f"{SECONDS}s",
         "-c", str(CONNECTIONS), "--latency-correction", *args],
        capture_output=True, text=True, check=True,
    ).stdout
    report = json.loads(out)
    pct = report["latencyPercentiles"]
    statuses = report.get("statusCodeDistribution", {})
    non_2xx = sum(v for k, v in statuses.items() if not k.startswith("2"))
    if os.environ.get("BENCH_VERBOSE"):
        print({k: round(v * 1000, 2) for k, v in pct.items()}, file=sys.stderr)
    return rate, report["summary"]["requestsPerSec"], pct["p50"], pct["p99"], non_2xx


STORE_STAGES = ["commit", "queue", "batch", "sync"]


def store_totals(addr):
    """Sum and count of the store's commit, queue, batch and sync histograms, from /metrics."""
    with urllib.request.urlopen(f"http://{addr}/metrics") as resp:
        text = resp.read().decode()
    totals = {}
    for stage in STORE_STAGES:
        name = f"steward_store_{stage}_seconds"
        found = dict(re.findall(rf"^{name}_(sum|count) (\S+)$", text, re.M))
        totals[stage] = (float(found.get("sum", 0)), float(found.get("count", 0)))
    return totals


def store_means(before, after):
    """Mean milliseconds of each store stage between two `store_totals` readings."""
    means = {}
    for stage in STORE_STAGES:
        (s0, c0), (s1, c1) = before[stage], after[stage]
        means[stage] = (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else 0.0
    return means


def restart_fixed_rate(addr, token, ids):
    """POST /restart at a fixed rate, spread over the workspaces."""
    host = addr.replace(".", "[.]")
    url = f"http://{host}/v1/workspaces/({'|'.join(ids)})/restart"
    return oha_fixed_rate(["-m", "POST", "-H", f"Authorization: Bearer {token}",
                           "--rand-regex-url", url])


def run(start_ms, stop_ms):
    proc, tmp, addr, token = start(start_ms, stop_ms)
    try:
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(
                lambda i: request(addr, token, "POST", "/v1/workspaces", {"name": f"bench-{i}"})["id"],
                range(WORKSPACES)))
        ids_file = os.path.join(tmp, "ids.txt")
        with open(ids_file, "w") as f:
            f.write("\n".join(ids) + "\n")
        base = wrk([f"http://{addr}/healthz"])
        # The floor of the fixed-rate figure on this machine: the HTTP stack alone, same rate.
        floor = oha_fixed_rate([f"http://{addr}/healthz"])
        restart = wrk(["-s", os.path.join(ROOT, "scripts", "bench", "restart.lua"), f"http://{addr}/"],
                      env={"IDS_FILE": ids_file, "TOKEN": token})
        before = store_totals(addr)
        fixed = restart_fixed_rate(addr, token, ids)
        store = store_means(before, store_totals(addr))
        # The write-ahead log starts over after each checkpoint: it stays bounded under load.
        log = os.path.join(tmp, "data", "steward.db-wal")
        log_mb = os.path.getsize(log) / 2**20 if os.path.exists(log) else 0.0
        return base, restart, floor, fixed, log_mb, store
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    print(f"{WORKSPACES} sim workspaces, {CONNECTIONS} connections, {SECONDS}s per load, wrk -t2, "
          f"{os.cpu_count()} cores")
    rows = [(name, run(start_ms, stop_ms)) for name, start_ms, stop_ms in WORKLOADS]
    print(f"{'workload':>28} | {'healthz req/s':>13} | {'restart req/s':>13} | ratio | "
          f"restart p50 | restart p99 | non-2xx  (target ratio >= 0.25)")
    for name, ((b_rps, _, _, _), (r_rps, p50, p99, errors), _, _, _, _) in rows:
        print(f"{name:>28} | {b_rps:>13.0f} | {r_rps:>13.0f} | {r_rps / b_rps:5.2f} | "
              f"{p50:>11} | {p99:>11} | {errors}")
    print()
    print(f"{'workload':>28} | fixed rate | achieved req/s | p50 ms | p99 ms | non-2xx | log file MiB | "
          f"healthz p50 | healthz p99  (compare builds with BENCH_BASELINE_BIN)")
    for name, (_, _, (_, _, h50, h99, _), (rate, achieved, p50, p99, errors), log_mb, _) in rows:
        print(f"{name:>28} | {rate:>10} | {achieved:>14.0f} | {p50 * 1000:6.2f} | {p99 * 1000:6.2f} | "
              f"{errors:>7} | {log_mb:>12.0f} | {h50 * 1000:11.2f} | {h99 * 1000:11.2f}")
    print()
    # Where the store's part of the fixed-rate answers went: means over that run alone (the
    # stages are per commit, per batch and per sync, so they do not add up to the commit).
    print(f"{'workload':>28} | commit ms | queue ms | batch ms | sync ms  (the store during the "
          f"fixed rate, means: a commit from its queue to its answer, and its stages)")
    for name, (*_, store) in rows:
        print(f"{name:>28} | {store['commit']:9.2f} | {store['queue']:8.2f} | "
              f"{store['batch']:8.2f} | {store['sync']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
