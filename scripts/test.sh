#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, offline, on every core (at most 4 pytest-xdist
# workers; DIVCOEF_TEST_WORKERS overrides), printing the 25 slowest tests. Each worker gets its
# share of the cores as torch threads; the modules that start servers, Ray heads or audit
# subprocesses run on one worker, one at a time (divcoef_assets_tests/conftest.py schedules them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/browser.sh  # chromium for the browser check (skipped, with the reason, where it cannot be installed)
bash scripts/postgres.sh install  # PostgreSQL for the team set-up's tests (skipped, with the reason, where it cannot be installed)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
cores=$(nproc 2>/dev/null || echo 1)
workers=${DIVCOEF_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
exec .venv/bin/python -m pytest -q -n "$workers" --durations=25 "$@"
