#!/usr/bin/env bash
# Set up (if needed), then every benchmark and the less-work study, one after the other (about
# 40 minutes on a 2-core machine; run nothing else meanwhile, it would slow every row). Each
# script rewrites only its own sections of BENCHMARKS.md. Arguments go to benchmarks/run.py
# (e.g. --quick, which writes benchmarks/out/BENCHMARKS-quick.md instead).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python benchmarks/run.py "$@"
if [ "$#" -eq 0 ]; then
    .venv/bin/python benchmarks/options.py
    .venv/bin/python benchmarks/corpus_scale.py
    .venv/bin/python benchmarks/ray_overhead.py
    .venv/bin/python studies/less_work.py
fi
