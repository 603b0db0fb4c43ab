"""distance_matrix: Task2Vec distances between every pair of a dataset's batch embeddings."""

import dagster as dg

from divcoef_assets import pipeline, presentation
from divcoef_assets.assets.common import ENGINE_CODE_VERSION, GROUP, PARTITIONS, keys
from divcoef_assets.core.markdown import rounded
from divcoef_assets.partitions import DATASET_DIMENSION, dataset_probe_key
from divcoef_assets.records import DistancesRecord, EmbeddingsRecord
from divcoef_assets.resources import DivcoefResource


def _recorded_maxima(instance: dg.DagsterInstance, probe: str) -> list[float]:
    """The largest distance of every dataset's latest distance_matrix with `probe` (its metadata):
    the heatmaps of one probe share the colour scale 0 to the largest of them."""
    out = []
    for dataset in instance.get_dynamic_partitions(DATASET_DIMENSION):
        records = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("distance_matrix"), asset_partitions=[str(dataset_probe_key(dataset, probe))]), limit=1).records
        entry = records[0].asset_materialization.metadata.get("max") if records else None
        if entry is not None and isinstance(entry.value, (int, float)):
            out.append(float(entry.value))
    return out


@dg.asset(
    partitions_def=PARTITIONS, group_name=GROUP, kinds={"numpy", "parquet"}, code_version=ENGINE_CODE_VERSION,
    description="Pairwise distances (the probe's `distance`, default Task2Vec's normalized cosine) "
    "between batch embeddings, stored long (i, j, distance). The materialization shows them as a heatmap "
    "(batches grouped by source for mixtures, in clustering order otherwise; '*' marks noise-repeat batches).",
)
def distance_matrix(context: dg.AssetExecutionContext, divcoef: DivcoefResource, task2vec_embeddings: EmbeddingsRecord) -> dg.Output[DistancesRecord]:
    dataset, probe = keys(context)
    record = pipeline.distance_matrix(divcoef.registry(), dataset, probe, task2vec_embeddings, divcoef.layout())
    metadata = {"n_batches": record.n_batches, "min": rounded(record.min), "max": rounded(record.max), "distance": record.distance}
    if divcoef.reports:
        high = max([record.max, *_recorded_maxima(context.instance, probe)])
        metadata["heatmap"] = dg.MetadataValue.md(presentation.distance_heatmap(record, scale=(0.0, high)))
    return dg.Output(record, metadata=metadata)
