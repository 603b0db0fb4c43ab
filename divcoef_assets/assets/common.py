"""What every audit asset shares: partitions, code versions and progress logging."""

import dagster as dg

from divcoef_assets.core.config import ENGINE_VERSION
from divcoef_assets.core.markdown import Table
from divcoef_assets.core.sampler import SamplingProgress
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


def sampling_progress_logger(context: dg.AssetExecutionContext, every_s: float = 10.0):
    """A `SamplingProgress` callback that logs to the step at most every `every_s` seconds, and once done."""
    last = [float("-inf")]

    def report(progress: SamplingProgress) -> None:
        if progress.shards_done < progress.shards and progress.seconds - last[0] < every_s:
            return
        last[0] = progress.seconds
        left = progress.seconds_left
        context.log.info(
            f"sampling: {progress.shards_done}/{progress.shards} shards, {_size(progress.bytes_done)} of "
            f"{_size(progress.bytes)} read in {progress.seconds:.0f} s ({_size(progress.bytes_per_second)}/s)"
            + (f", about {_duration(left)} left" if left and progress.shards_done < progress.shards else "")
        )

    return report


def _size(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    if n >= 10 * 2**20:
        return f"{n / 2**20:.0f} MB"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


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
