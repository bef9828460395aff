#!/usr/bin/env bash
# The web console in a real browser (tests/browser/console.py): Debian's chromium and
# chromium-driver, driven by selenium.
#
#   scripts/console-test.sh                        the test (make test runs it)
#   scripts/console-test.sh --screenshots docs/img  regenerate the README's screenshots
#
# Installs chromium and chromium-driver with apt-get when they are missing, and selenium from
# PyPI into a virtualenv under target/. Runs target/debug/steward ($STEWARD_BIN to choose
# another), building it if it is not there. Without a browser: under CI=true a failure,
# otherwise a warning and the test is reported skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

have_browser() {
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
}

if ! have_browser; then
    echo "console-test: installing chromium and chromium-driver (apt-get)" >&2
    if [ "$(id -u)" = 0 ]; then
        SUDO=()
    else
        SUDO=(sudo -n)
    fi
    if command -v apt-get >/dev/null; then
        "${SUDO[@]}" apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq \
            --no-install-recommends chromium chromium-driver >&2 || true
    fi
fi
# A part that cannot be had: under CI a failure, otherwise the test is skipped, loudly.
missing() {
    if [ "${CI:-}" = "true" ]; then
        echo "error: $1; the console's browser test needs it (CI=true)" >&2
        exit 1
    fi
    echo "warning: $1: the console's browser test is SKIPPED" >&2
    exit 0
}

have_browser || missing "chromium and chromium-driver are missing and could not be installed"

VENV=target/console-venv
if ! "$VENV/bin/python" -c 'import selenium' 2>/dev/null; then
    echo "console-test: installing selenium into $VENV" >&2
    python3 -m venv "$VENV" >&2 || missing "python3 cannot create a virtualenv (python3-venv)"
    "$VENV/bin/pip" install -q 'selenium>=4.20,<5' >&2 || missing "selenium could not be installed from PyPI"
fi

BIN=${STEWARD_BIN:-target/debug/steward}
if [ ! -x "$BIN" ]; then
    cargo build -p steward
fi
# Selenium must not look for drivers or browsers on the internet: both are given.
export SE_OFFLINE=true
exec "$VENV/bin/python" tests/browser/console.py --bin "$BIN" "$@"
