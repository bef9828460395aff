#!/usr/bin/env bash
# Checks that the API's description matches its behaviour: Schemathesis (every check, the
# stateful phase included) against the /openapi.json a real daemon serves, on 127.0.0.1.
# Part of `make test`; 0 failures or it fails, with a report.
#
#   scripts/schemathesis.sh            # builds target/debug/steward if needed
#   STEWARD_BIN=path scripts/schemathesis.sh
#
# Schemathesis comes from PyPI, pinned, into a virtual environment under target/ (created
# on first use). Seed and example counts are fixed, so a run is repeatable and bounded (two
# minutes or so on two cores). Two passes, each against a fresh daemon in a temporary
# directory:
#   1. every route but the agent's, with the admin token, on the sim provider only (so no
#      generated command is ever run);
#   2. the agent routes, with the agent token of one workspace whose instance (a local
#      process: a shell that writes its token for this script, then sleeps) is up.
# Hypothesis' "data generation is too slow" health check is off: it times Schemathesis' own
# generation (an operation with a body and a query, on two shared cores), not the API.
# A failure prints Schemathesis' report (each failure with a curl command to reproduce it)
# and the daemon's log tail. A new route is covered by being in the description; if it
# answers something the description does not say, this fails and says where.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
SEED="${SCHEMATHESIS_SEED:-20261207}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-25}"
# Hard bound of each pass, in seconds.
PASS_TIMEOUT=600
HERE="scripts/schemathesis"
VENV="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"

if [ -z "${STEWARD_BIN:-}" ]; then
    cargo build -q -p steward
    STEWARD_BIN=target/debug/steward
fi

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        # Debian ships venv apart (python3-venv), as with-postgres.sh installs PostgreSQL.
        if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK="$(mktemp -d -t steward-schemathesis.XXXXXX)"
DAEMON_PID=""
stop_daemon() {
    if [ -n "$DAEMON_PID" ]; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$DAEMON_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
        DAEMON_PID=""
    fi
}
trap 'stop_daemon; rm -rf "$WORK"' EXIT

# start_daemon NAME CONFIG: a daemon on a free port of 127.0.0.1 in $WORK/NAME; sets ADDR,
# SCHEMATHESIS_ADMIN_TOKEN and LOG.
start_daemon() {
    local dir="$WORK/$1"
    mkdir -p "$dir"
    printf '%s\n' "$2" >"$dir/config.toml"
    LOG="$dir/steward.log"
    # The caller's STEWARD_* variables would configure the daemon under test: not passed on.
    local unset=()
    for name in $(compgen -e | grep '^STEWARD_' || true); do unset+=(-u "$name"); done
    env "${unset[@]}" "$STEWARD_BIN" serve --config "$dir/config.toml" --data-dir "$dir/data" \
        --listen 127.0.0.1:0 >"$LOG" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 300); do
        [ -s "$dir/data/listen.addr" ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$LOG" >&2; echo "steward exited" >&2; exit 1; }
        sleep 0.1
    done
    ADDR="$(cat "$dir/data/listen.addr")"
    SCHEMATHESIS_ADMIN_TOKEN="$(cat "$dir/data/admin.token")"
    export SCHEMATHESIS_ADMIN_TOKEN
}

# run_pass NAME ARGS...: Schemathesis against the running daemon; on failure, says so and
# shows the daemon's log tail.
run_pass() {
    local name="$1"
    shift
    echo "== schemathesis: $name (seed $SEED, at most $EXAMPLES examples per operation)"
    local status=0
    SCHEMATHESIS_HOOKS="$HERE/hooks.py" timeout "$PASS_TIMEOUT" \
        "$VENV/bin/schemathesis" --config-file "$HERE/config.toml" --no-color \
        run "http://$ADDR/openapi.json" \
        --checks all --seed "$SEED" --max-examples "$EXAMPLES" \
        --suppress-health-check=too_slow \
        --generation-database none --output-truncate true \
        --report junit --report-dir "$WORK/report-$name" \
        "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        echo >&2
        echo "error: schemathesis ($name) failed (exit $status): the API's answers and its description differ; see the failures above (each with a curl command to reproduce it)." >&2
        echo "---- last 40 lines of the daemon's log ($LOG) ----" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

# Pass 1: everything but the agent routes, sim provider only, instant instances.
start_daemon api '
default_provider = "sim"
[providers.sim]
start_delay = "0s"
stop_delay = "0s"
[providers.process]
enabled = false
[http]
# Generated waits (?wait=, GET …/wait?timeout=) stay short: the description bounds them
# (a generated create may ask for an agent the sim never starts, and then waits it all out).
wait_max = "250ms"
'
export SCHEMATHESIS_AGENT_TOKEN="unused"
run_pass api --exclude-path-regex '^/v1/agent/'
stop_daemon

# Pass 2: the agent routes, with a live agent token.
start_daemon agent '
default_provider = "process"
[providers.sim]
enabled = false
[providers.process]
stop_grace = "1s"
'
TOKEN_FILE="$WORK/agent.token"
curl -fsS -o /dev/null -X POST "http://$ADDR/v1/workspaces" \
    -H "Authorization: Bearer $SCHEMATHESIS_ADMIN_TOKEN" -H "Content-Type: application/json" \
    -d "{\"name\": \"agent\", \"ready_when\": \"instance\", \"command\": [\"/bin/sh\", \"-c\", \"printf %s \\\"\$STEWARD_AGENT_TOKEN\\\" > \\\"\$0\\\"; exec sleep 3600\", \"$TOKEN_FILE\"]}"
for _ in $(seq 100); do
    [ -s "$TOKEN_FILE" ] && break
    sleep 0.1
done
[ -s "$TOKEN_FILE" ] || { echo "error: the agent workspace never wrote its token" >&2; tail -n 40 "$LOG" >&2; exit 1; }
SCHEMATHESIS_AGENT_TOKEN="$(cat "$TOKEN_FILE")"
export SCHEMATHESIS_AGENT_TOKEN
# No stateful phase: the two calls have no state to link.
run_pass agent --include-path-regex '^/v1/agent/' --phases examples,coverage,fuzzing
stop_daemon
echo "schemathesis: 0 failures"
