"""The DuckDB results store: coefficient records with their history, and views for SQL users.

Heavy arrays (embeddings, distance matrices) live in Parquet; this database holds one row per
measurement and views over those Parquet files, so an analyst can `duckdb data/divcoef.duckdb`
and query everything. Tables:

    datasets            dataset PK, source_type, description, spec_json, registered_at, updated_at
    probes              probe PK, fingerprint, config_json, registered_at, updated_at
    coefficients        one row per (dataset, probe, snapshot_fingerprint, probe_fingerprint)
    cross_coefficients  one row per (dataset_a, dataset_b, probe, snapshot_a, snapshot_b, probe_fingerprint)

    baselines           one row per (dataset, probe, snapshot_fingerprint, probe_fingerprint, metric)
    batch_outliers      one row per (dataset, probe, snapshot_fingerprint, probe_fingerprint, batch_index)

and views `latest_coefficients` / `latest_cross_coefficients` (newest `computed_at` per dataset
and probe, or per pair and probe), `latest_baselines` / `latest_batch_outliers` (the rows of each
newest coefficient), `baseline_ranks` (datasets ranked by every measure) and
`baseline_correlations` (Spearman's rank correlation of each baseline with the coefficient across
datasets measured with the same probe fingerprint). The coefficient keys include the probe fingerprint: a probe
key whose config changed measures something else, and replacing the old row would erase history.
Re-computing the same measurement replaces its row in one transaction; other snapshots and
configs stay as history, so re-runs never duplicate and never delete other results.
`record_coefficient` writes a measurement with its dataset and probe rows in one transaction,
so a failure part way leaves none of them.

DuckDB has a single writer per file, held for a connection's lifetime. The store therefore opens
a connection per operation and closes it at once; when another process holds the file, it retries
with growing pauses up to `lock_timeout_s` (default 60 s) and then raises `StoreLockedError`.

Connections are opened with DuckDB's extension auto-install and auto-load off, so a path that is
not a DuckDB database (a SQLite file, a text file) never triggers a download: it raises
`StoreFileError` naming the file. So does a 0-byte file at the database path (what a crash on a
full disk can leave): it holds no data, and the error says to delete it; the store does not delete
it itself, since a file it did not write is not its to remove.

Every value reaches SQL as a parameter. The two identifiers that are formatted into SQL are
checked first: view names against `[A-Za-z_][A-Za-z0-9_]*`, and the Parquet glob of a view, which
DuckDB cannot take as a parameter in a view definition, is refused if it holds control characters
and is quoted as a SQL string literal by doubling its single quotes.
"""

from __future__ import annotations

import dataclasses
import glob as glob_module
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from divcoef_assets.core.baselines import Baseline
from divcoef_assets.core.duckdb_files import NO_EXTENSION_AUTOLOAD, not_duckdb_reason
from divcoef_assets.core.triage import BatchOutlier

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = 60.0
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_OWN_RELATIONS = frozenset(
    {
        "datasets",
        "probes",
        "coefficients",
        "cross_coefficients",
        "latest_coefficients",
        "latest_cross_coefficients",
        "baselines",
        "batch_outliers",
        "latest_baselines",
        "latest_batch_outliers",
        "baseline_ranks",
        "baseline_correlations",
    }
)


class StoreLockedError(TimeoutError):
    """Another process kept the results database locked for longer than the store waits."""


class StoreFileError(OSError):
    """The file at the results database path is not a DuckDB database (or is empty)."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _optional_float(name: str, value: float | None) -> float | None:
    """None and NaN mean unknown (stored as NULL); infinities are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {value!r}")
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_common(record: Any) -> None:
    if (
        not isinstance(record.value, (int, float))
        or isinstance(record.value, bool)
        or not math.isfinite(record.value)
    ):
        raise ValueError(f"value must be a finite number, got {record.value!r}")
    object.__setattr__(record, "value", float(record.value))
    for name in ("stderr", "ci_low", "ci_high", "noise_floor", "noise_floor_stderr", "noise_corrected"):
        if hasattr(record, name):
            object.__setattr__(record, name, _optional_float(name, getattr(record, name)))
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name.startswith("n_") and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{f.name} must be a non-negative integer, got {value!r}")
        if f.type == "str" and not isinstance(value, str):
            raise TypeError(f"{f.name} must be a string, got {value!r}")
    if not isinstance(record.computed_at, datetime) or record.computed_at.tzinfo is None:
        raise ValueError(f"computed_at must be a timezone-aware datetime, got {record.computed_at!r}")


@dataclass(frozen=True, kw_only=True)
class _Measurement:
    """What every measurement row has: the value with its interval, and where it came from."""

    value: float
    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    distance: str = "task2vec_cosine"
    code_version: str = ""
    run_id: str = ""
    computed_at: datetime = field(default_factory=_utcnow)

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True, kw_only=True)
class CoefficientRecord(_Measurement):
    """One diversity coefficient measurement (a row of `coefficients`)."""

    dataset: str
    probe: str
    snapshot_fingerprint: str
    probe_fingerprint: str
    noise_floor: float | None = None  # mean distance between embeddings of one batch
    noise_floor_stderr: float | None = None
    noise_corrected: float | None = None  # the coefficient with the noise floor accounted for
    n_batches: int
    n_pairs: int
    # What the value was computed from, so it can be recomputed exactly:
    weights_fingerprint: str = ""  # the probe's weights and special ids
    batches_fingerprint: str = ""  # the token batches' content, in order
    estimator_fingerprint: str = ""  # every estimator field and the engine version
    config_json: str = ""  # the full probe settings used


@dataclass(frozen=True, kw_only=True)
class CrossCoefficientRecord(_Measurement):
    """One cross-diversity measurement between two datasets (a row of `cross_coefficients`)."""

    dataset_a: str
    dataset_b: str
    probe: str
    snapshot_a: str
    snapshot_b: str
    probe_fingerprint: str
    n_batches_a: int
    n_batches_b: int
    n_pairs: int


_COEFFICIENT_COLUMNS = tuple(f.name for f in dataclasses.fields(CoefficientRecord))
_CROSS_COLUMNS = tuple(f.name for f in dataclasses.fields(CrossCoefficientRecord))

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS datasets (
        dataset VARCHAR PRIMARY KEY,
        source_type VARCHAR NOT NULL,
        description VARCHAR NOT NULL,
        spec_json VARCHAR NOT NULL,
        registered_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS probes (
        probe VARCHAR PRIMARY KEY,
        fingerprint VARCHAR NOT NULL,
        config_json VARCHAR NOT NULL,
        registered_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS coefficients (
        dataset VARCHAR NOT NULL,
        probe VARCHAR NOT NULL,
        snapshot_fingerprint VARCHAR NOT NULL,
        probe_fingerprint VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        stderr DOUBLE,
        ci_low DOUBLE,
        ci_high DOUBLE,
        noise_floor DOUBLE,
        noise_floor_stderr DOUBLE,
        noise_corrected DOUBLE,
        n_batches BIGINT NOT NULL,
        n_pairs BIGINT NOT NULL,
        distance VARCHAR NOT NULL,
        code_version VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        computed_at TIMESTAMPTZ NOT NULL,
        weights_fingerprint VARCHAR NOT NULL DEFAULT '',
        batches_fingerprint VARCHAR NOT NULL DEFAULT '',
        estimator_fingerprint VARCHAR NOT NULL DEFAULT '',
        config_json VARCHAR NOT NULL DEFAULT '',
        PRIMARY KEY (dataset, probe, snapshot_fingerprint, probe_fingerprint)
    )
    """,
    # Databases created before the provenance columns existed gain them (empty for old rows).
    "ALTER TABLE coefficients ADD COLUMN IF NOT EXISTS weights_fingerprint VARCHAR DEFAULT ''",
    "ALTER TABLE coefficients ADD COLUMN IF NOT EXISTS batches_fingerprint VARCHAR DEFAULT ''",
    "ALTER TABLE coefficients ADD COLUMN IF NOT EXISTS estimator_fingerprint VARCHAR DEFAULT ''",
    "ALTER TABLE coefficients ADD COLUMN IF NOT EXISTS config_json VARCHAR DEFAULT ''",
    """
    CREATE TABLE IF NOT EXISTS cross_coefficients (
        dataset_a VARCHAR NOT NULL,
        dataset_b VARCHAR NOT NULL,
        probe VARCHAR NOT NULL,
        snapshot_a VARCHAR NOT NULL,
        snapshot_b VARCHAR NOT NULL,
        probe_fingerprint VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        stderr DOUBLE,
        ci_low DOUBLE,
        ci_high DOUBLE,
        n_batches_a BIGINT NOT NULL,
        n_batches_b BIGINT NOT NULL,
        n_pairs BIGINT NOT NULL,
        distance VARCHAR NOT NULL,
        code_version VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        computed_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (dataset_a, dataset_b, probe, snapshot_a, snapshot_b, probe_fingerprint)
    )
    """,
    """
    CREATE OR REPLACE VIEW latest_coefficients AS
    SELECT * FROM coefficients
    QUALIFY row_number() OVER (
        PARTITION BY dataset, probe
        ORDER BY computed_at DESC, snapshot_fingerprint DESC, probe_fingerprint DESC
    ) = 1
    """,
    """
    CREATE OR REPLACE VIEW latest_cross_coefficients AS
    SELECT * FROM cross_coefficients
    QUALIFY row_number() OVER (
        PARTITION BY dataset_a, dataset_b, probe
        ORDER BY computed_at DESC, snapshot_a DESC, snapshot_b DESC, probe_fingerprint DESC
    ) = 1
    """,
    """
    CREATE TABLE IF NOT EXISTS baselines (
        dataset VARCHAR NOT NULL,
        probe VARCHAR NOT NULL,
        snapshot_fingerprint VARCHAR NOT NULL,
        probe_fingerprint VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        stderr DOUBLE,
        ci_low DOUBLE,
        ci_high DOUBLE,
        n_batches BIGINT NOT NULL,
        run_id VARCHAR NOT NULL,
        computed_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (dataset, probe, snapshot_fingerprint, probe_fingerprint, metric)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS batch_outliers (
        dataset VARCHAR NOT NULL,
        probe VARCHAR NOT NULL,
        snapshot_fingerprint VARCHAR NOT NULL,
        probe_fingerprint VARCHAR NOT NULL,
        batch_index BIGINT NOT NULL,
        rank BIGINT NOT NULL,
        mean_distance DOUBLE NOT NULL,
        z_score DOUBLE NOT NULL,
        source VARCHAR NOT NULL,
        doc_indices BIGINT[] NOT NULL,
        preview VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        computed_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (dataset, probe, snapshot_fingerprint, probe_fingerprint, batch_index)
    )
    """,
    # The rows behind each dataset's newest coefficient (same snapshot, probe settings and weights).
    """
    CREATE OR REPLACE VIEW latest_baselines AS
    SELECT b.* FROM baselines b
    JOIN latest_coefficients c USING (dataset, probe, snapshot_fingerprint, probe_fingerprint)
    """,
    """
    CREATE OR REPLACE VIEW latest_batch_outliers AS
    SELECT o.* FROM batch_outliers o
    JOIN latest_coefficients c USING (dataset, probe, snapshot_fingerprint, probe_fingerprint)
    """,
    # Datasets ranked by each measure (the coefficient itself as metric 'diversity_coefficient'),
    # among datasets measured with the same probe settings and weights; rank 1 = most diverse.
    """
    CREATE OR REPLACE VIEW baseline_ranks AS
    WITH measures AS (
        SELECT dataset, probe, probe_fingerprint, 'diversity_coefficient' AS metric, value, ci_low, ci_high
        FROM latest_coefficients
        UNION ALL
        SELECT dataset, probe, probe_fingerprint, metric, value, ci_low, ci_high FROM latest_baselines
    )
    SELECT *, rank() OVER (PARTITION BY probe, probe_fingerprint, metric ORDER BY value DESC) AS rank,
           count(*) OVER (PARTITION BY probe, probe_fingerprint, metric) AS n_datasets
    FROM measures
    """,
    # Spearman's rank correlation between the coefficient and each baseline across the datasets
    # measured with the same probe settings and weights: Pearson's correlation of average ranks.
    """
    CREATE OR REPLACE VIEW baseline_correlations AS
    WITH pairs AS (
        SELECT b.probe, b.probe_fingerprint, b.metric, b.dataset, c.value AS coefficient, b.value AS baseline
        FROM latest_baselines b
        JOIN latest_coefficients c USING (dataset, probe, snapshot_fingerprint, probe_fingerprint)
    ), ranked AS (
        SELECT *,
            (rank() OVER (PARTITION BY probe, probe_fingerprint, metric ORDER BY coefficient)
             + count(*) OVER (PARTITION BY probe, probe_fingerprint, metric)
             - rank() OVER (PARTITION BY probe, probe_fingerprint, metric ORDER BY coefficient DESC) + 1) / 2.0 AS rank_coefficient,
            (rank() OVER (PARTITION BY probe, probe_fingerprint, metric ORDER BY baseline)
             + count(*) OVER (PARTITION BY probe, probe_fingerprint, metric)
             - rank() OVER (PARTITION BY probe, probe_fingerprint, metric ORDER BY baseline DESC) + 1) / 2.0 AS rank_baseline
        FROM pairs
    )
    SELECT probe, probe_fingerprint, metric, count(*) AS n_datasets, corr(rank_coefficient, rank_baseline) AS spearman
    FROM ranked GROUP BY probe, probe_fingerprint, metric
    """,
)


def _check_path(path: str) -> None:
    """A Parquet path goes into a view definition as a quoted literal: no control characters."""
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise ValueError(f"the Parquet path {path!r} contains control characters; rename the file")


# How DuckDB reports a file held by another process: "IO Error: Could not set lock on file ...:
# Conflicting lock is held in ... (PID n)"; older releases and other platforms word it differently.
_LOCK_MESSAGES = ("could not set lock", "conflicting lock", "lock is held", "database is locked", "resource temporarily unavailable")


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    message = str(exc).lower()
    return any(fragment in message for fragment in _LOCK_MESSAGES)


class ResultsStore:
    """Coefficient records in one DuckDB file; every method opens and closes its own connection."""

    def __init__(self, db_path: str | Path, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        if lock_timeout_s < 0:
            raise ValueError(f"lock_timeout_s must be >= 0, got {lock_timeout_s!r}")
        self.db_path = Path(db_path)
        self.lock_timeout_s = float(lock_timeout_s)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.db_path)!r})"

    # ----------------------------------------------------------------- connections

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        pause = 0.05
        while True:
            try:
                return duckdb.connect(str(self.db_path), read_only=read_only, config=dict(NO_EXTENSION_AUTOLOAD))
            except duckdb.Error as exc:
                if not _is_lock_conflict(exc):
                    self._raise_if_not_duckdb(exc)
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreLockedError(
                        f"results store {self.db_path} is locked: another process holds it (DuckDB allows one "
                        f"writer at a time); gave up after {self.lock_timeout_s:g} s. Wait for that process to "
                        f"finish or raise lock_timeout_s. DuckDB said: {exc}"
                    ) from exc
                logger.info("results store %s is locked by another process; retrying", self.db_path)
                time.sleep(min(pause * (0.5 + random.random()), remaining))
                pause = min(pause * 2, 1.0)

    def _raise_if_not_duckdb(self, exc: duckdb.Error) -> None:
        """DuckDB refused the file: say what it is and what to do, when the file is not a database."""
        reason = not_duckdb_reason(self.db_path)
        if reason is None:
            return
        if reason.startswith("empty"):
            raise StoreFileError(
                f"results store {self.db_path} is an empty (0-byte) file, not a DuckDB database; it holds no "
                "data (a crash while the disk was full can leave one behind): delete it and run again, and the "
                "store creates a fresh database"
            ) from exc
        raise StoreFileError(
            f"results store {self.db_path} is {reason}, not a DuckDB database; point the store at a DuckDB "
            "file (or a path that does not exist yet) or move this file away"
        ) from exc

    @contextmanager
    def _connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if not read_only:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._open(read_only)
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connection() as connection:
            self._create_schema(connection)
            connection.begin()
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    @staticmethod
    def _create_schema(connection: duckdb.DuckDBPyConnection) -> None:
        for statement in _SCHEMA:
            connection.execute(statement)

    def ensure_schema(self) -> None:
        """Create the tables and views if they are missing (idempotent)."""
        with self._connection() as connection:
            self._create_schema(connection)

    # ----------------------------------------------------------------- writes

    def upsert_coefficient(self, record: CoefficientRecord) -> None:
        """Insert `record`, replacing the row of the same measurement; other rows stay."""
        self._insert_or_replace("coefficients", _COEFFICIENT_COLUMNS, record)

    def upsert_cross(self, record: CrossCoefficientRecord) -> None:
        """Insert `record`, replacing the row of the same cross measurement; other rows stay."""
        self._insert_or_replace("cross_coefficients", _CROSS_COLUMNS, record)

    def record_coefficient(
        self,
        record: CoefficientRecord,
        *,
        source_type: str,
        description: str,
        spec: Mapping[str, Any],
        probe_config: Mapping[str, Any],
        views: Mapping[str, Sequence[Path]] = MappingProxyType({}),
        baselines: Sequence[Baseline] | None = None,
        outliers: Sequence[BatchOutlier] | None = None,
    ) -> list[str]:
        """Record the dataset, the probe config and the coefficient, and refresh the Parquet
        `views`, in one transaction: a failure at any point leaves nothing changed. A view covers
        only the files whose Parquet footer reads, so one corrupt file cannot break the record
        (or the view); the skipped files are returned and logged.

        `baselines` and `outliers`, when given, replace the measurement's rows of `baselines` and
        `batch_outliers` in the same transaction; None leaves those rows as they are."""
        with self._transaction() as connection:
            skipped = [f for name, files in views.items() for f in self._create_view(connection, name, files)]
            self._upsert_dataset(connection, record.dataset, source_type, description, spec)
            self._upsert_probe(connection, record.probe, record.probe_fingerprint, probe_config)
            self._insert_or_replace_in(connection, "coefficients", _COEFFICIENT_COLUMNS, record)
            key = [record.dataset, record.probe, record.snapshot_fingerprint, record.probe_fingerprint]
            if baselines is not None:
                connection.execute(
                    "DELETE FROM baselines WHERE dataset = ? AND probe = ? AND snapshot_fingerprint = ? AND probe_fingerprint = ?", key)
                for b in baselines:
                    connection.execute(
                        "INSERT INTO baselines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [*key, b.metric, _finite("baseline value", b.value), _optional_float("stderr", b.stderr),
                         _optional_float("ci_low", b.ci_low), _optional_float("ci_high", b.ci_high), b.n_batches,
                         record.run_id, record.computed_at],
                    )
            if outliers is not None:
                connection.execute(
                    "DELETE FROM batch_outliers WHERE dataset = ? AND probe = ? AND snapshot_fingerprint = ? AND probe_fingerprint = ?", key)
                for o in outliers:
                    connection.execute(
                        "INSERT INTO batch_outliers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [*key, o.batch_index, o.rank, _finite("mean_distance", o.mean_distance), _finite("z_score", o.z_score),
                         o.label, list(o.doc_indices), o.preview, record.run_id, record.computed_at],
                    )
        return skipped

    def record_cross(self, records: Sequence[CrossCoefficientRecord], *, views: Mapping[str, Sequence[Path]] = MappingProxyType({})) -> list[str]:
        """Every cross-diversity row of one run, and the refreshed views, in one transaction."""
        with self._transaction() as connection:
            skipped = [f for name, files in views.items() for f in self._create_view(connection, name, files)]
            for record in records:
                self._insert_or_replace_in(connection, "cross_coefficients", _CROSS_COLUMNS, record)
        return skipped

    def _insert_or_replace(self, table: str, columns: Sequence[str], record: Any) -> None:
        with self._transaction() as connection:
            self._insert_or_replace_in(connection, table, columns, record)

    @staticmethod
    def _insert_or_replace_in(
        connection: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], record: Any
    ) -> None:
        # `table` and `columns` are the module's constants; every value is a parameter.
        values = [getattr(record, column) for column in columns]
        sql = (
            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        connection.execute(sql, values)
        logger.debug("stored %s row %s", table, values[:3])

    def upsert_dataset(
        self, dataset: str, *, source_type: str, description: str, spec: Mapping[str, Any]
    ) -> None:
        """Record a registered dataset; `registered_at` keeps the first registration time."""
        with self._transaction() as connection:
            self._upsert_dataset(connection, dataset, source_type, description, spec)

    @staticmethod
    def _upsert_dataset(
        connection: duckdb.DuckDBPyConnection,
        dataset: str,
        source_type: str,
        description: str,
        spec: Mapping[str, Any],
    ) -> None:
        now = _utcnow()
        spec_json = json.dumps(spec, sort_keys=True, default=str)
        connection.execute(
            """
            INSERT INTO datasets (dataset, source_type, description, spec_json, registered_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (dataset) DO UPDATE SET
                source_type = excluded.source_type, description = excluded.description,
                spec_json = excluded.spec_json, updated_at = excluded.updated_at
            """,
            [dataset, source_type, description, spec_json, now, now],
        )

    def upsert_probe(self, probe: str, *, fingerprint: str, config: Mapping[str, Any]) -> None:
        """Record a registered probe config; `registered_at` keeps the first registration time."""
        with self._transaction() as connection:
            self._upsert_probe(connection, probe, fingerprint, config)

    @staticmethod
    def _upsert_probe(
        connection: duckdb.DuckDBPyConnection, probe: str, fingerprint: str, config: Mapping[str, Any]
    ) -> None:
        now = _utcnow()
        config_json = json.dumps(config, sort_keys=True, default=str)
        connection.execute(
            """
            INSERT INTO probes (probe, fingerprint, config_json, registered_at, updated_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (probe) DO UPDATE SET
                fingerprint = excluded.fingerprint, config_json = excluded.config_json,
                updated_at = excluded.updated_at
            """,
            [probe, fingerprint, config_json, now, now],
        )

    def register_parquet_view(self, name: str, files: str | Path | Sequence[Path], *, hive_partitioning: bool = False) -> list[str]:
        """Create or replace view `name` over Parquet `files` (a list, or a glob to expand now).

        Only files whose footer reads are included (the others are returned and logged), so a
        corrupt file never breaks the view for the rest; at least one must read. Paths are made
        absolute, so the view works from any working directory.
        """
        if isinstance(files, (str, Path)):
            pattern = os.path.abspath(os.path.expanduser(str(files)))
            _check_path(pattern)
            files, what = [Path(p) for p in sorted(glob_module.glob(pattern))], pattern
        else:
            what = f"the {len(files)} file(s) given"
        with self._transaction() as connection:
            skipped = self._create_view(connection, name, files, hive_partitioning=hive_partitioning)
            if len(skipped) == len(files):
                raise FileNotFoundError(f"cannot create view {name!r}: no readable Parquet files match {what}")
        return skipped

    @staticmethod
    def _create_view(connection, name: str, files: Sequence[Path], *, hive_partitioning: bool = True) -> list[str]:
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            raise ValueError(
                f"invalid view name {name!r}: use 1 to 63 letters, digits and '_', not starting with a digit"
            )
        if name.lower() in _OWN_RELATIONS:
            raise ValueError(
                f"view name {name!r} is taken by the store's own tables and views; choose another"
            )
        readable, skipped = [], []
        for path in (os.path.abspath(str(f)) for f in files):
            _check_path(path)
            try:
                pq.read_metadata(path)
                readable.append(path)
            except (OSError, pa.ArrowException) as exc:
                logger.warning("view %s leaves out %s: not a readable Parquet file (%s)", name, path, exc)
                skipped.append(path)
        if not readable:
            return skipped
        literal = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in readable) + "]"
        hive = "true" if hive_partitioning else "false"
        connection.execute(
            f'CREATE OR REPLACE VIEW "{name}" AS '
            f"SELECT * FROM read_parquet({literal}, union_by_name = true, hive_partitioning = {hive})"
        )
        return skipped

    # ----------------------------------------------------------------- reads

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query with parameters; rows as tuples."""
        if not self.db_path.exists():
            raise FileNotFoundError(
                f"results store {self.db_path} does not exist yet; nothing has been recorded"
            )
        with self._connection(read_only=True) as connection:
            return connection.execute(sql, params).fetchall()

    def _records(self, relation: str, cls: type, where: Mapping[str, str | None]) -> list[Any]:
        if not self.db_path.exists():
            return []
        columns = [f.name for f in dataclasses.fields(cls)]
        filters = {column: value for column, value in where.items() if value is not None}
        clause = " AND ".join(f"{column} = ?" for column in filters) or "TRUE"
        sql = f"SELECT {', '.join(columns)} FROM {relation} WHERE {clause} ORDER BY computed_at"
        with self._connection(read_only=True) as connection:
            present = connection.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [relation]
            ).fetchone()[0]
            if not present:
                return []
            rows = connection.execute(sql, list(filters.values())).fetchall()
        records = []
        for row in rows:
            data = dict(zip(columns, row))
            data["computed_at"] = data["computed_at"].astimezone(timezone.utc)
            records.append(cls(**data))
        return records

    def coefficients(self, dataset: str | None = None, probe: str | None = None) -> list[CoefficientRecord]:
        """All recorded coefficients (history included), oldest first, optionally filtered."""
        return self._records("coefficients", CoefficientRecord, {"dataset": dataset, "probe": probe})

    def latest_coefficient(self, dataset: str, probe: str) -> CoefficientRecord | None:
        """The newest coefficient of (dataset, probe), or None."""
        rows = self._records("latest_coefficients", CoefficientRecord, {"dataset": dataset, "probe": probe})
        return rows[0] if rows else None

    def latest_coefficients(self, probe: str | None = None) -> list[CoefficientRecord]:
        """Each dataset's newest coefficient (`latest_coefficients`), optionally for one probe."""
        return self._records("latest_coefficients", CoefficientRecord, {"probe": probe})

    def latest_cross_coefficients(self, probe: str | None = None) -> list[CrossCoefficientRecord]:
        """Each pair's newest cross coefficient (`latest_cross_coefficients`)."""
        return self._records("latest_cross_coefficients", CrossCoefficientRecord, {"probe": probe})

    def cross_coefficients(self, probe: str | None = None) -> list[CrossCoefficientRecord]:
        """All recorded cross coefficients (history included), oldest first."""
        return self._records("cross_coefficients", CrossCoefficientRecord, {"probe": probe})
