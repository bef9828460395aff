#!/usr/bin/env bash
# The whole test suite: unit, property, store (SQLite and PostgreSQL), actor and
# end-to-end tests. Installs and starts what it needs (PostgreSQL via with-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# End-to-end tests drive the real binary: build it first.
cargo build --workspace --bins
exec scripts/with-postgres.sh cargo test --workspace --no-fail-fast
