"""Dagster resources: where the registry, the artifacts and the results database live.

One resource, configured once in `definitions.py` (environment variables `DIVCOEF_REGISTRY`,
`DIVCOEF_DATA_DIR`, `DIVCOEF_DB`), so tests and deployments point the whole graph elsewhere by
changing three strings.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from divcoef_assets.pipeline import Layout
from divcoef_assets.registry import REPO_ROOT, Registry, load_registry
from divcoef_assets.storage import ResultsStore


class DivcoefResource(dg.ConfigurableResource):
    """Registry file, artifact folder and DuckDB results file of the audit."""

    registry_path: str = ""  # empty: $DIVCOEF_REGISTRY or data/registry.yaml
    data_dir: str = ""  # empty: $DIVCOEF_DATA_DIR or data/
    db_path: str = ""  # empty: $DIVCOEF_DB or <data_dir>/divcoef.duckdb
    lock_timeout_s: float = 120.0  # how long a writer waits for the DuckDB file lock

    def registry(self) -> Registry:
        return load_registry(self.registry_path or None)

    def root(self) -> Path:
        return Path(self.data_dir or os.environ.get("DIVCOEF_DATA_DIR") or REPO_ROOT / "data").resolve()

    def layout(self) -> Layout:
        return Layout(self.root() / "artifacts")

    def store(self) -> ResultsStore:
        path = self.db_path or os.environ.get("DIVCOEF_DB") or str(self.root() / "divcoef.duckdb")
        return ResultsStore(path, lock_timeout_s=self.lock_timeout_s)
