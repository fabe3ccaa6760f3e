#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/browser), if it is missing.
#
# Idempotent and silent when /usr/bin/chromium already exists. Needs root (CI runs as
# root on a fresh Debian 12 machine) or passwordless sudo. The browser tests drive this
# binary through Playwright's `executable_path`, so `playwright install` is never needed.
# Exit status: 0 when chromium is present afterwards; 1 when it could not be installed
# (outside CI the browser tests then skip, saying so; in CI they fail).
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install-chromium.sh: $CHROMIUM is missing and this user cannot run apt-get" \
         "(not root, no passwordless sudo); the browser tests will be skipped." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium.sh: $CHROMIUM is missing and there is no apt-get here;" \
         "install Chromium by hand (the browser tests expect $CHROMIUM)." >&2
    exit 1
fi

# fonts: without recommends a bare machine has none, and screenshots would show boxes
echo "install-chromium.sh: installing Debian's chromium (about 110 MB download)..." >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${SUDO[@]}" apt-get update -q && \
       "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
           chromium fonts-liberation fonts-dejavu-core; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "install-chromium.sh: apt-get could not install chromium (see above)." >&2
    exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "install-chromium.sh: apt-get finished but $CHROMIUM is still missing." >&2
    exit 1
fi
echo "install-chromium.sh: installed $("$CHROMIUM" --version 2>/dev/null | head -n 1)" >&2
