#!/usr/bin/env bash
# Make Debian's Chromium available for the browser check of the Dagster UI
# (divcoef_assets_tests/test_browser.py): installs the `chromium` package with apt when no
# chromium is on PATH (scripts/apt_install.sh). Needs root (or password-less sudo); where it cannot
# install, it says why and exits 0, and the browser check is skipped with that reason. Never fails
# the caller.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if bash "$(dirname "$0")/apt_install.sh" browser.sh "the browser check" chromium; then
    echo "browser.sh: $(chromium --version 2>/dev/null)" >&2
fi
exit 0
