#!/usr/bin/env bash
# Benchmarks against a release build of the daemon on 127.0.0.1 only. Installs wrk (Debian)
# if missing. Results are printed; docs/PERFORMANCE.md records them with the method.
#
#   scripts/bench.sh            # everything
#   BENCH_SECONDS=20 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -p steward
exec python3 scripts/bench/restart_http.py
