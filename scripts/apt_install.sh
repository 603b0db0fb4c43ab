#!/usr/bin/env bash
# Install Debian packages that some tests need: `apt_install.sh WHO WHAT PACKAGE...`, where WHO names
# the calling script in messages and WHAT the tests that need the packages. Needs root (or
# password-less sudo) and apt-get; where it cannot install, it says why and exits 1, and the tests
# are skipped with that reason (the callers, scripts/browser.sh and scripts/postgres.sh, never fail).
set -uo pipefail
who=$1 what=$2
shift 2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "$who: $* is not installed and installing it needs root; $what will be skipped" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: $* is not installed and there is no apt-get; $what will be skipped" >&2
    exit 1
fi
log=$(mktemp)
echo "$who: installing Debian's $* for $what (log: $log)" >&2
if $SUDO apt-get update >"$log" 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "$@" >>"$log" 2>&1; then
    exit 0
fi
echo "$who: installing $* failed (see $log); $what will be skipped" >&2
exit 1
