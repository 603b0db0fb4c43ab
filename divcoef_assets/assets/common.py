"""What every audit asset shares: partitions, code versions and progress logging."""

import dagster as dg

from divcoef_assets.core.config import ENGINE_VERSION
from divcoef_assets.partitions import dataset_probe_partitions, partition_keys

GROUP = "diversity_audit"
PARTITIONS = dataset_probe_partitions
# Version of the chain's artifacts (records, paths, cache keys); the steps that compute numbers
# add the engine version, so an estimator change marks them stale in the UI.
CHAIN_VERSION = "chain-4"
ENGINE_CODE_VERSION = f"{CHAIN_VERSION}-engine-{ENGINE_VERSION}"
# Concurrency pools (limits in data/dagster_home/dagster.yaml): the steps that write the DuckDB
# results file, and the steps that run the probe network on every core.
DUCKDB_POOL = "duckdb_writer"
TORCH_POOL = "torch"


def keys(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(dataset, probe) of the partition being materialized, validated."""
    return partition_keys(context.partition_key)


def progress_logger(context: dg.AssetExecutionContext):
    def report(done: int, total: int, seconds: float) -> None:
        context.log.info(f"embedding {done}/{total} done ({seconds:.1f}s)")

    return report
