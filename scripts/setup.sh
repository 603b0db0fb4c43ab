#!/usr/bin/env bash
# Create .venv (if needed) and install the pinned versions of requirements/<profile>.lock, then the
# project itself. Profiles: `test` (the default: the project with its test extras, the Ray extra
# and the PostgreSQL extra, since the tests run a real local Ray cluster and Dagster on a real
# PostgreSQL server) and `audit` (only what `divcoef audit`
# needs: no browser driver, Ray or Hypothesis). The locks come from scripts/lock.sh (README,
# "Installs").
# Re-running is cheap: the install is skipped while pyproject.toml and the locks are unchanged
# (and a test install serves an audit too: audit.lock holds the same versions, fewer of them).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-test}
case "$profile" in
    test|audit) ;;
    *) echo "setup.sh: unknown profile '$profile' (expected test or audit)" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.divcoef-installed
inputs=$(cat pyproject.toml requirements/audit.lock requirements/test.lock | sha256sum | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" = "$profile $inputs" ] || [ "$have" = "test $inputs" ]; then
    exit 0
fi
# Exact versions, no resolution. torch==2.13.0 (in the lock) picks the CPU build from the local
# package cache; the project goes in last, editable, built with the locked setuptools.
.venv/bin/python -m pip install --quiet --no-deps -r "requirements/$profile.lock"
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check >&2; echo "setup.sh: requirements/$profile.lock is inconsistent with pyproject.toml: run scripts/lock.sh" >&2; exit 1; }
echo "$profile $inputs" > "$stamp"
