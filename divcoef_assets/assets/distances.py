"""distance_matrix: Task2Vec distances between every pair of a dataset's batch embeddings."""

import dagster as dg

from divcoef_assets import pipeline, presentation
from divcoef_assets.assets.common import ENGINE_CODE_VERSION, GROUP, PARTITIONS, keys
from divcoef_assets.core.markdown import rounded
from divcoef_assets.records import DistancesRecord, EmbeddingsRecord
from divcoef_assets.resources import DivcoefResource


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
        metadata["heatmap"] = dg.MetadataValue.md(presentation.distance_heatmap(record))
    return dg.Output(record, metadata=metadata)
