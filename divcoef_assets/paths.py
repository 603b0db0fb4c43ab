"""Where the project keeps its files by default, and the environment variables that move them.

One place decides, for the API, the command line and the Dagster resource alike:

    DIVCOEF_DATA_DIR   artifacts, probes built here and the results database (default: data/ of the
                       checkout; ~/.cache/divcoef_assets for an installed package)
    DIVCOEF_CACHE      the content-addressed embedding cache (default: <data dir>/artifacts/cache/embeddings)
    DIVCOEF_DB         the DuckDB results file (default: <data dir>/divcoef.duckdb)

The embedding cache is addressed by content, so one cache can safely serve every audit.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV = "DIVCOEF_DATA_DIR"
CACHE_ENV = "DIVCOEF_CACHE"
DB_ENV = "DIVCOEF_DB"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder: explicit, else $DIVCOEF_DATA_DIR, else the checkout's data/ (or, for an
    installed package without a checkout around it, ~/.cache/divcoef_assets)."""
    default = REPO_ROOT / "data" if (REPO_ROOT / "data" / "registry.yaml").is_file() else Path.home() / ".cache" / "divcoef_assets"
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or default).expanduser().resolve()


def artifacts_dir(explicit_data_dir: str | os.PathLike | None = None) -> Path:
    return data_dir(explicit_data_dir) / "artifacts"


def cache_dir(explicit: str | os.PathLike | None = None, *, data: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get(CACHE_ENV) or artifacts_dir(data) / "cache" / "embeddings").expanduser().resolve()


def db_path(explicit: str | os.PathLike | None = None, *, data: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get(DB_ENV) or data_dir(data) / "divcoef.duckdb").expanduser().resolve()
