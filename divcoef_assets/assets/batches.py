"""token_batches: batch i draws batch_size documents with rng(seed, i), tokenized and padded."""

import dagster as dg

from divcoef_assets import pipeline
from divcoef_assets.assets.common import CHAIN_VERSION, GROUP, PARTITIONS, keys
from divcoef_assets.core.markdown import rounded
from divcoef_assets.records import SnapshotRecord, TokenBatchesRecord
from divcoef_assets.resources import DivcoefResource


@dg.asset(
    partitions_def=PARTITIONS, group_name=GROUP, kinds={"parquet"}, code_version=CHAIN_VERSION,
    description="Batch i draws batch_size documents with rng(seed, i), tokenized and padded to seq_len "
    "with the probe's tokenizer (synthetic datasets are generated as token ids).",
)
def token_batches(context: dg.AssetExecutionContext, divcoef: DivcoefResource, dataset_snapshot: SnapshotRecord) -> dg.Output[TokenBatchesRecord]:
    dataset, probe = keys(context)
    record = pipeline.token_batches(divcoef.registry(), dataset, probe, dataset_snapshot, divcoef.layout())
    return dg.Output(record, metadata={
        "n_batches": len(record.batch_fingerprints), "batch_size": record.batch_size, "seq_len": record.seq_len,
        "pad_fraction": rounded(record.pad_fraction), "path": dg.MetadataValue.path(record.path),
    })
