"""Fixed-rate latency of durable restarts: this build against a baseline binary, loopback only.

Set BENCH_BASELINE_BIN to another build of the daemon (e.g. the commit before a change, built
with `cargo build --release -p steward` in a worktree of its own). Each run starts a fresh
daemon of one build (fresh data dir, SQLite, the sim provider's default 250 ms cycle), creates
BENCH_WORKSPACES (default 1 000) workspaces, drives a restart storm with wrk for BENCH_SECONDS
(as the HTTP bench does before its fixed-rate run), then measures POST /restart with oha at
BENCH_RATE (default 5 000) requests/s for BENCH_SECONDS, latency corrected for coordinated
omission. The two builds take turns, BENCH_RUNS (default 5) runs each, who goes first
alternating. Prints every run, then each build's median p50 and p99 and the ratios new / old
(targets: both <= 1.2).
"""

import os
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import restart_http  # noqa: E402  (the daemon's start, requests and load generators, shared)

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def one_run(binary):
    restart_http.BIN = binary
    proc, tmp, addr, token = restart_http.start(200, 50)
    try:
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(
                lambda i: restart_http.request(addr, token, "POST", "/v1/workspaces",
                                               {"name": f"bench-{i}"})["id"],
                range(restart_http.WORKSPACES)))
        ids_file = os.path.join(tmp, "ids.txt")
        with open(ids_file, "w") as f:
            f.write("\n".join(ids) + "\n")
        restart_http.wrk(["-s", os.path.join(restart_http.ROOT, "scripts", "bench", "restart.lua"),
                          f"http://{addr}/"], env={"IDS_FILE": ids_file, "TOKEN": token})
        _, achieved, p50, p99, errors = restart_http.restart_fixed_rate(addr, token, ids)
        return achieved, p50 * 1000, p99 * 1000, errors
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    baseline = os.environ.get("BENCH_BASELINE_BIN")
    if not baseline:
        print("set BENCH_BASELINE_BIN to the baseline build of the daemon", file=sys.stderr)
        return 2
    builds = {"new": restart_http.BIN, "old": baseline}
    results = {"new": [], "old": []}
    print(f"fixed rate {os.environ.get('BENCH_RATE', '5000')}/s, {restart_http.WORKSPACES} "
          f"workspaces, {restart_http.SECONDS}s per load, {RUNS} runs each, alternating")
    print(f"new: {builds['new']}\nold: {builds['old']}")
    print(f"{'run':>4} | build | achieved req/s | p50 ms | p99 ms | non-2xx")
    for run in range(RUNS):
        order = ["new", "old"] if run % 2 == 0 else ["old", "new"]
        for name in order:
            achieved, p50, p99, errors = one_run(builds[name])
            results[name].append((p50, p99))
            print(f"{run + 1:>4} | {name:>5} | {achieved:>14.0f} | {p50:6.2f} | {p99:6.2f} | {errors}",
                  flush=True)
    medians = {name: (statistics.median(p for p, _ in runs), statistics.median(p for _, p in runs))
               for name, runs in results.items()}
    for name, (p50, p99) in medians.items():
        print(f"{name}: median p50 {p50:.2f} ms, median p99 {p99:.2f} ms")
    p50_ratio = medians["new"][0] / medians["old"][0]
    p99_ratio = medians["new"][1] / medians["old"][1]
    print(f"ratio new/old: p50 {p50_ratio:.2f}, p99 {p99_ratio:.2f} (targets <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
