#!/usr/bin/env bash
# Make Debian's Chromium available for the browser check of the Dagster UI
# (divcoef_assets_tests/test_browser.py): installs the `chromium` package with apt when no
# chromium is on PATH. Needs root (or password-less sudo); where it cannot install, it says why
# and exits 0, and the browser check is skipped with that reason. Never fails the caller.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "browser.sh: chromium is not installed and installing it needs root; the browser check will be skipped" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser.sh: chromium is not installed and there is no apt-get; the browser check will be skipped" >&2
    exit 0
fi
log=$(mktemp)
echo "browser.sh: installing Debian's chromium for the browser check (log: $log)" >&2
if $SUDO apt-get update >"$log" 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium >>"$log" 2>&1; then
    echo "browser.sh: $(chromium --version 2>/dev/null)" >&2
else
    echo "browser.sh: installing chromium failed (see $log); the browser check will be skipped" >&2
fi
exit 0
