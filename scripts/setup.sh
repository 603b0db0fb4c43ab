#!/usr/bin/env bash
# Create .venv (if needed) and install the project with its test extras, the Ray extra (the tests
# run a real local Ray cluster) and the PostgreSQL extra (the tests run Dagster on a real server).
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.divcoef-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch first, pinned: this exact version installs a CPU build from the local package cache.
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    .venv/bin/python -m pip install --quiet -e ".[dev,ray,postgres]"
    echo "$want" > "$stamp"
fi
