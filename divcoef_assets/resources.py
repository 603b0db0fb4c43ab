"""Dagster resources: where the registry, the artifacts, the embedding cache and the results live.

One resource whose fields default to empty, meaning "ask `paths`" at run time: the environment
variables `DIVCOEF_REGISTRY`, `DIVCOEF_DATA_DIR`, `DIVCOEF_CACHE` and `DIVCOEF_DB`, else the
project's `data/` folder. Nothing is read from the environment when the definitions load, so a
deployment sets the fields (or the variables) and tests point the whole graph elsewhere.

When a run starts, the resource also sizes torch's thread pool to the free cores (once per
process, see `divcoef_assets.threads`), so runs launched side by side do not oversubscribe them.
"""

from __future__ import annotations

import dagster as dg

from divcoef_assets import paths, threads
from divcoef_assets.pipeline import Layout
from divcoef_assets.registry import Registry, load_registry
from divcoef_assets.storage import ResultsStore


class DivcoefResource(dg.ConfigurableResource):
    """Registry file, artifact folder, embedding cache and DuckDB results file of the audit."""

    registry_path: str = ""  # empty: $DIVCOEF_REGISTRY or data/registry.yaml
    data_dir: str = ""  # empty: $DIVCOEF_DATA_DIR or data/
    cache_dir: str = ""  # empty: $DIVCOEF_CACHE or <data_dir>/artifacts/cache/embeddings
    db_path: str = ""  # empty: $DIVCOEF_DB or <data_dir>/divcoef.duckdb
    lock_timeout_s: float = 120.0  # how long a writer waits for the DuckDB file lock
    # Plots, formatted tables, per-batch triage and baselines attached to the materializations
    # (and the `baselines` / `batch_outliers` rows). Off: the numbers only, to measure what
    # these cost (benchmarks/reports_overhead.py) or to save the time on a very large audit.
    reports: bool = True

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.dagster_run is not None:  # a run, not a sensor or schedule evaluation
            threads.ensure_torch_threads()

    def registry(self) -> Registry:
        return load_registry(self.registry_path or None)

    def layout(self) -> Layout:
        data = self.data_dir or None
        return Layout(paths.artifacts_dir(data), cache_root=paths.cache_dir(self.cache_dir or None, data=data))

    def store(self) -> ResultsStore:
        return ResultsStore(paths.db_path(self.db_path or None, data=self.data_dir or None), lock_timeout_s=self.lock_timeout_s)
