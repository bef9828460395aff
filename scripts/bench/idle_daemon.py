"""Memory per idle workspace of the daemon itself, loopback only.

The in-process bench (`cargo bench -p steward-actors --bench actors -- idle_memory`) counts the
actor layer alone, with the system allocator. This one counts what an operator sees: the release
binary (its own allocator, the HTTP stack, the store's connections, the probes), a fresh data
dir, BENCH_IDLE (default 100 000) sim workspaces created over HTTP on 127.0.0.1, then its
resident set after BENCH_IDLE_WAIT seconds (default 30) with nothing to do but probe rounds and
timers. Prints one JSON line: the resident set before and after, and per workspace.
"""

import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import restart_http  # noqa: E402  (the daemon's start and requests, shared)

WORKSPACES = int(os.environ.get("BENCH_IDLE", "100000"))
WAIT = int(os.environ.get("BENCH_IDLE_WAIT", "30"))


def resident(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main():
    proc, tmp, addr, token = restart_http.start(200, 50)
    try:
        # Booted and idle: the baseline the workspaces add to.
        time.sleep(1)
        before = resident(proc.pid)
        started = time.time()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(
                lambda i: restart_http.request(addr, token, "POST", "/v1/workspaces", {"name": f"idle-{i}"}),
                range(WORKSPACES)))
        created = time.time() - started
        time.sleep(WAIT)
        after = resident(proc.pid)
        print(json.dumps({
            "bench": "daemon_idle_memory",
            "workspaces": WORKSPACES,
            "create_seconds": round(created, 1),
            "idle_seconds": WAIT,
            "rss_before_mib": round(before / 2**20),
            "rss_after_mib": round(after / 2**20),
            "rss_bytes_per_idle_workspace": round((after - before) / WORKSPACES),
            "target": "<= 4096",
        }))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
