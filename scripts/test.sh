#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh  # chromium for the browser check (skipped, with the reason, where it cannot be installed)
bash scripts/postgres.sh install  # PostgreSQL for the team set-up's tests (skipped, with the reason, where it cannot be installed)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
