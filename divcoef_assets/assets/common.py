"""What every audit asset shares: partitions, code versions and progress logging."""

import dagster as dg

from divcoef_assets.core.config import ENGINE_VERSION
from divcoef_assets.core.markdown import Table
from divcoef_assets.partitions import dataset_probe_partitions, partition_keys

GROUP = "diversity_audit"
PARTITIONS = dataset_probe_partitions
# Version of the chain's artifacts (records, paths, cache keys); the steps that compute numbers
# add the engine version, so an estimator change marks them stale in the UI.
CHAIN_VERSION = "chain-5"  # 5: text snapshots are sample pools
ENGINE_CODE_VERSION = f"{CHAIN_VERSION}-engine-{ENGINE_VERSION}"
# Concurrency pools (limits in data/dagster_home/dagster.yaml): the steps that write the DuckDB
# results file, the steps that run the probe network on every core, and the embedding steps that
# send their batches to a Ray cluster's (GPU) workers.
DUCKDB_POOL = "duckdb_writer"
TORCH_POOL = "torch"
GPU_POOL = "gpu"


def keys(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(dataset, probe) of the partition being materialized, validated."""
    return partition_keys(context.partition_key)


def progress_logger(context: dg.AssetExecutionContext):
    def report(done: int, total: int, seconds: float) -> None:
        context.log.info(f"embedding {done}/{total} done ({seconds:.1f}s)")

    return report


def table_metadata(table: Table) -> dg.TableMetadataValue:
    """A table as Dagster table metadata (shown inline on the asset page), numbers as text to 4
    significant digits."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string") for name in table.header])
    records = [dg.TableRecord(dict(zip(table.header, row))) for row in table.text_rows()]
    return dg.MetadataValue.table(records=records, schema=schema)


def shown(value: Table | str) -> dg.MetadataValue:
    """A table as table metadata, a markdown string (an embedded plot) as markdown."""
    return table_metadata(value) if isinstance(value, Table) else dg.MetadataValue.md(value)
