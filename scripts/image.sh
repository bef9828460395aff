#!/usr/bin/env bash
# Builds the local image steward-agent:dev (FROM scratch + a statically linked steward-agent).
# No registry is involved: nothing is pulled or pushed.
#
#   scripts/image.sh            # builds steward-agent:dev
#   IMAGE=name:tag scripts/image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

image="${IMAGE:-steward-agent:dev}"
target="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release -p steward-agent --target "$target"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp images/agent/Dockerfile "$context/"
cp "${CARGO_TARGET_DIR:-target}/$target/release/steward-agent" "$context/steward-agent"
strip "$context/steward-agent" 2>/dev/null || true
docker build --quiet --tag "$image" "$context" >/dev/null
echo "built $image ($(du -h "$context/steward-agent" | cut -f1) agent)"
