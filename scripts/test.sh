#!/usr/bin/env bash
# The whole test suite: unit, property, store (SQLite and PostgreSQL), actor, Docker and
# end-to-end tests, then the API's description checked against its behaviour (Schemathesis). Installs and starts what it needs (PostgreSQL via with-postgres.sh) and
# builds the local agent image the Docker tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Docker tests must run: under CI a missing engine is a failure, never a silent skip.
if ! docker info >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
        echo "error: the Docker engine is not reachable; the Docker tests need it (CI=true)" >&2
        exit 1
    fi
    echo "warning: no Docker engine: the Docker tests will report themselves skipped" >&2
else
    scripts/image.sh
fi

# End-to-end tests drive the real binaries: build them first, with the named kill points the
# crash tests arm (never in release builds). Both commands use the same features, so the test
# run does not rebuild the binary without them.
FEATURES=(--features steward/failpoints)
cargo build --workspace --bins "${FEATURES[@]}"

# The web console in a real browser (installs chromium and selenium if missing; under CI a
# missing browser fails). Its outcome is reported after the cargo tests, which run anyway.
browser=0
scripts/console-test.sh || browser=$?
tests=0
scripts/with-postgres.sh cargo test --workspace --no-fail-fast "${FEATURES[@]}" || tests=$?

# The API's description against its behaviour: Schemathesis (from PyPI, into a virtual
# environment under target/) against the daemon just built.
description=0
STEWARD_BIN=target/debug/steward scripts/schemathesis.sh || description=$?

if [ "$browser" != 0 ]; then
    echo "error: the console's browser test failed (scripts/console-test.sh; screenshots in target/console-test)" >&2
fi
if [ "$description" != 0 ]; then
    echo "error: the API's description and its behaviour differ (scripts/schemathesis.sh; report above)" >&2
fi
[ "$tests" = 0 ] && [ "$browser" = 0 ] && [ "$description" = 0 ]
