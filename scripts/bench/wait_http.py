"""Waiting for outcomes (`?wait=`, `GET …/wait`) on the release daemon, loopback only.

Starts the release binary on 127.0.0.1 with a fresh data dir and the sim provider's default
latencies (a 250 ms cycle: remove 50 ms, start 200 ms), creates BENCH_WORKSPACES (default
1 000) workspaces, and measures in the same run:

  1. memory and the restart load with 1 000 waiters: the resident set of the idle daemon, then
     with one `GET /v1/workspaces/{id}/wait?for=deleted` in flight on every workspace (they
     never settle: nothing deletes), and durable restarts with wrk (POST /restart over the same
     workspaces, every one of which wakes its waiter) alone and while the waiters wait: the
     ratio of the two rates (target >= 0.9);
  2. the answer time of `POST /v1/workspaces/{id}/restart?wait=30s`, one at a time over
     BENCH_WAIT_SAMPLES (default 100) idle workspaces, against the cycle's own time from its
     events (`provision_started` -> `provision_succeeded`, which is `running` on the sim
     provider): p50 of answer / cycle (target <= 1.05).

Prints one JSON line per measure. Bounded: each wrk load runs BENCH_SECONDS.
"""

import json
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import idle_daemon  # noqa: E402  (resident set)
import restart_http  # noqa: E402  (the daemon's start, requests and wrk)

WORKSPACES = int(os.environ.get("BENCH_WORKSPACES", "1000"))
SAMPLES = int(os.environ.get("BENCH_WAIT_SAMPLES", "100"))
SECONDS = restart_http.SECONDS


def at(event):
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def restart_rate(addr, token, ids_file):
    rps, p50, p99, errors = restart_http.wrk(
        ["-s", os.path.join(restart_http.ROOT, "scripts", "bench", "restart.lua"), f"http://{addr}/"],
        env={"IDS_FILE": ids_file, "TOKEN": token})
    return rps, p50, p99, errors


def waiters(addr, token, ids, seconds):
    """One waiter per workspace, each a connection held until `seconds` run out; returns the
    threads and the list their answers land in."""
    answers = []
    lock = threading.Lock()

    def wait(id_):
        req = urllib.request.Request(
            f"http://{addr}/v1/workspaces/{id_}/wait?for=deleted&timeout={seconds}s",
            headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=seconds + 30) as resp:
            answer = (resp.status, json.loads(resp.read()))
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in ids]
    for t in threads:
        t.start()
    return threads, answers


def settle(addr, token, ids):
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: restart_http.request(
            addr, token, "GET", f"/v1/workspaces/{i}/wait?for=running&timeout=30s"), ids))


def answer_times(addr, token, ids):
    ratios, answers, cycles = [], [], []
    for id_ in ids[:SAMPLES]:
        last = restart_http.request(addr, token, "GET", f"/v1/workspaces/{id_}")["generation"]
        started = time.monotonic()
        reply = restart_http.request(addr, token, "POST", f"/v1/workspaces/{id_}/restart?wait=30s")
        answered = time.monotonic() - started
        assert reply["settled"] and reply["generation"] == last + 1, reply
        events = restart_http.request(addr, token, "GET", f"/v1/workspaces/{id_}/events")["events"]
        mine = [e for e in events if e["generation"] == reply["generation"]]
        begin = next(at(e) for e in mine if e["type"] == "provision_started")
        end = next(at(e) for e in mine if e["type"] == "provision_succeeded")
        cycle = end - begin
        answers.append(answered)
        cycles.append(cycle)
        ratios.append(answered / cycle)
    return ratios, answers, cycles


def main():
    proc, tmp, addr, token = restart_http.start(200, 50)
    try:
        with ThreadPoolExecutor(32) as pool:
            ids = list(pool.map(
                lambda i: restart_http.request(
                    addr, token, "POST", "/v1/workspaces?wait=60s", {"name": f"wait-{i}"})["id"],
                range(WORKSPACES)))
        ids_file = os.path.join(tmp, "ids.txt")
        with open(ids_file, "w") as f:
            f.write("\n".join(ids) + "\n")

        alone = restart_rate(addr, token, ids_file)
        settle(addr, token, ids)
        time.sleep(2)
        rss_idle = idle_daemon.resident(proc.pid)
        hold = SECONDS + 20
        threads, answers = waiters(addr, token, ids, hold)
        time.sleep(5)
        rss_waiting = idle_daemon.resident(proc.pid)
        waiting = restart_rate(addr, token, ids_file)
        for t in threads:
            t.join(timeout=hold + 60)
        unsettled = sum(1 for status, body in answers if status == 200 and body["settled"] is False)
        settle(addr, token, ids)
        time.sleep(2)
        rss_after = idle_daemon.resident(proc.pid)
        print(json.dumps({
            "bench": "waiters",
            "workspaces": WORKSPACES,
            "waiters": len(threads),
            "waiters_answered_unsettled": unsettled,
            "rss_idle_mib": round(rss_idle / 2**20, 1),
            "rss_with_waiters_mib": round(rss_waiting / 2**20, 1),
            "rss_bytes_per_waiter": round((rss_waiting - rss_idle) / len(threads)),
            "rss_after_waiters_mib": round(rss_after / 2**20, 1),
            "restart_rps_alone": round(alone[0]),
            "restart_rps_with_waiters": round(waiting[0]),
            "restart_p99_alone": alone[2],
            "restart_p99_with_waiters": waiting[2],
            "non_2xx": alone[3] + waiting[3],
            "ratio": round(waiting[0] / alone[0], 2),
            "target": "ratio >= 0.9",
        }))

        ratios, answered, cycles = answer_times(addr, token, ids)
        print(json.dumps({
            "bench": "restart_wait_answer",
            "samples": len(ratios),
            "answer_ms_p50": round(statistics.median(answered) * 1000, 1),
            "cycle_ms_p50": round(statistics.median(cycles) * 1000, 1),
            "ratio_p50": round(statistics.median(ratios), 3),
            "ratio_p90": round(sorted(ratios)[int(len(ratios) * 0.9) - 1], 3),
            "target": "ratio_p50 <= 1.05",
        }))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
