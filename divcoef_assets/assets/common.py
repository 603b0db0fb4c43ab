"""What every audit asset shares: partitions, the dataset-only mapping and progress logging."""


import dagster as dg

from divcoef_assets.partitions import dataset_probe_partitions, partition_keys

GROUP = "diversity_audit"
PARTITIONS = dataset_probe_partitions


def keys(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(dataset, probe) of the partition being materialized, validated."""
    return partition_keys(context.partition_key)


def progress_logger(context: dg.AssetExecutionContext):
    def report(done: int, total: int, seconds: float) -> None:
        context.log.info(f"embedding {done}/{total} done ({seconds:.1f}s)")

    return report
