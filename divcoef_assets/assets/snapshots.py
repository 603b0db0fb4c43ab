"""dataset_snapshot: a sample pool of the dataset's documents, sized for the probe, in a fingerprinted Parquet file."""

import contextlib
import dataclasses

import dagster as dg

from divcoef_assets import pipeline
from divcoef_assets.assets.common import CHAIN_VERSION, GROUP, PARTITIONS, keys, sampling_progress_logger
from divcoef_assets.records import SnapshotRecord
from divcoef_assets.resources import DivcoefResource


@dg.asset(
    partitions_def=PARTITIONS, group_name=GROUP, kinds={"parquet"}, code_version=CHAIN_VERSION,
    description="A sample pool of the dataset: the documents with the smallest seeded keys, as many as the probe's "
    "batches need, in a content-addressed Parquet snapshot. Only the drawn rows of Parquet, Arrow and DuckDB "
    "sources are read; line formats take one streaming pass; an unchanged source reads nothing. Its data version "
    "is the fingerprint; the source version is taken before the read and checked after it.",
)
def dataset_snapshot(context: dg.AssetExecutionContext, divcoef: DivcoefResource) -> dg.Output[SnapshotRecord]:
    dataset, probe = keys(context)
    sampling = dataclasses.replace(divcoef.sampling(), progress=sampling_progress_logger(context))
    with divcoef.ray_cluster() if sampling.executor == "ray" else contextlib.nullcontext():
        record = pipeline.snapshot(divcoef.registry(), dataset, divcoef.layout(), probe, sampling=sampling)
    context.log.info(f"snapshot of {dataset}: {record.n_documents} documents, fingerprint {record.fingerprint}")
    return dg.Output(
        record,
        data_version=dg.DataVersion(record.fingerprint),
        metadata={
            "fingerprint": record.fingerprint, "n_documents": record.n_documents, "source_type": record.source_type,
            "source_version": record.source_version, "path": dg.MetadataValue.path(record.path),
            "source_documents": record.n_source_documents, "counts_exact": record.counts_exact,
            "documents_read": record.n_read, "empty_dropped": record.n_dropped_empty,
        },
    )
