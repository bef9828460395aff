#!/usr/bin/env bash
# Docker benchmarks: Steward measured side by side with direct engine calls (bollard) in the
# same run, on 127.0.0.1 and the local engine socket only. Builds the release daemon and
# agent, the agent image (scripts/image.sh: FROM scratch, nothing is pulled) and the bench
# binary, then runs docker-cycle, docker-throughput and docker-reconcile. Each bench removes
# its containers and stops its daemons however it ends (`steward-bench cleanup` removes what
# an interrupted run may have left). JSON lines are kept in $OUT/<bench>.out; the markdown
# rows are printed at the end.
#
#   scripts/bench/docker.sh                      # all three
#   scripts/bench/docker.sh docker-cycle         # some of them
#   BENCH_CYCLES=100 BENCH_SECONDS=30 BENCH_WORKSPACES=500 BENCH_CAP=4 scripts/bench/docker.sh
#   IMAGE=name:tag scripts/bench/docker.sh       # another agent image tag (built here too)
set -euo pipefail
cd "$(dirname "$0")/../.."

target="${CARGO_TARGET_DIR:-target}"
export IMAGE="${IMAGE:-steward-agent:dev}"
cargo build --release -p steward -p steward-agent
scripts/image.sh
cargo build --release -p steward-bench
bench="$target/release/steward-bench"
export STEWARD_BIN="$target/release/steward"
out="${OUT:-$(mktemp -d -t steward-docker-bench-XXXXXX)}"
mkdir -p "$out"
cap="${BENCH_CAP:-4}"

benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
    benches=(docker-cycle docker-throughput docker-reconcile)
fi

status=0
for b in "${benches[@]}"; do
    case "$b" in
        docker-cycle) args=(--cycles "${BENCH_CYCLES:-50}") ;;
        docker-throughput) args=(--workspaces 16 --duration "${BENCH_SECONDS:-20}s") ;;
        docker-reconcile) args=(--workspaces "${BENCH_WORKSPACES:-1000}") ;;
        *) echo "unknown bench: $b (docker-cycle, docker-throughput, docker-reconcile)" >&2; exit 2 ;;
    esac
    echo "== $b" >&2
    if ! "$bench" --max-concurrent-ops "$cap" --image "$IMAGE" "$b" "${args[@]}" | tee "$out/$b.out"; then
        echo "$b failed" >&2
        status=1
    fi
done

echo
echo "Markdown rows ($(nproc) cores, max_concurrent_ops = $cap; JSON in $out):"
for b in "${benches[@]}"; do
    if [ -f "$out/$b.out" ]; then
        grep '^|' "$out/$b.out" || true
        echo
    fi
done
exit "$status"
