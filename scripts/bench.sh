#!/usr/bin/env bash
# Benchmarks against a release build of the daemon on 127.0.0.1 only. Installs wrk (Debian)
# if missing. Results are printed; docs/PERFORMANCE.md records them with the method.
#
#   scripts/bench.sh            # everything
#   BENCH_SECONDS=20 scripts/bench.sh
#   BENCH_DOCKER=0 scripts/bench.sh   # without the Docker benches (1 000 containers take minutes)
#   BENCH_BASELINE_BIN=/path/to/older/steward scripts/bench.sh
#                               # also: fixed-rate latency of this build against that one
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if ! command -v oha >/dev/null 2>&1; then
    cargo install oha --locked
fi
cargo build --release -p steward

echo "== in-process: actors (restart intents vs actix round trips, 1M restarts in one cycle, idle memory)"
cargo bench -p steward-actors --bench actors
echo "== HTTP: POST /restart vs GET /healthz (wrk), fixed-rate latency (oha)"
python3 scripts/bench/restart_http.py
if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
    echo "== HTTP: fixed-rate restart latency, this build against $BENCH_BASELINE_BIN (alternating fresh daemons)"
    python3 scripts/bench/against_baseline.py
fi
echo "== daemon: memory per idle workspace (release binary, sim workspaces created over HTTP)"
python3 scripts/bench/idle_daemon.py
echo "== waits: 1 000 waiters (memory, restarts while they wait), restart?wait against its cycle"
python3 scripts/bench/wait_http.py
if [ "${BENCH_DOCKER:-1}" = "1" ]; then
    echo "== Docker: cycle, throughput, reconcile vs direct bollard"
    scripts/bench/docker.sh
fi
