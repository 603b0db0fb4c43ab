"""dataset_snapshot: the dataset's usable documents, streamed to a fingerprinted Parquet file."""

import dagster as dg

from divcoef_assets import pipeline
from divcoef_assets.assets.common import CHAIN_VERSION, GROUP, PARTITIONS, keys
from divcoef_assets.records import SnapshotRecord
from divcoef_assets.resources import DivcoefResource


@dg.asset(
    partitions_def=PARTITIONS, group_name=GROUP, kinds={"parquet"}, code_version=CHAIN_VERSION,
    description="Usable documents of the dataset, streamed into a content-addressed Parquet snapshot "
    "(one file per content fingerprint, shared by every probe). Its data version is the fingerprint; the "
    "source version is taken before the read and checked after it.",
)
def dataset_snapshot(context: dg.AssetExecutionContext, divcoef: DivcoefResource) -> dg.Output[SnapshotRecord]:
    dataset, _ = keys(context)
    record = pipeline.snapshot(divcoef.registry(), dataset, divcoef.layout())
    context.log.info(f"snapshot of {dataset}: {record.n_documents} documents, fingerprint {record.fingerprint}")
    return dg.Output(
        record,
        data_version=dg.DataVersion(record.fingerprint),
        metadata={
            "fingerprint": record.fingerprint, "n_documents": record.n_documents, "source_type": record.source_type,
            "source_version": record.source_version, "path": dg.MetadataValue.path(record.path),
        },
    )
