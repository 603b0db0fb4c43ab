#!/usr/bin/env bash
# Set up (if needed) and run the default audit: every registered dataset with the default probe.
# Results: data/divcoef.duckdb; run history: data/dagster_home (see `dagster dev` in the README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh audit  # only what the audit needs
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/divcoef audit "$@"
