"""task2vec_embeddings: one Task2Vec embedding per batch (plus noise repeats), cached by content."""

import dagster as dg

from divcoef_assets import pipeline
from divcoef_assets.assets.common import ENGINE_CODE_VERSION, GROUP, PARTITIONS, TORCH_POOL, keys, progress_logger
from divcoef_assets.assets.probe import probe_network
from divcoef_assets.partitions import PROBE_DIMENSION
from divcoef_assets.core.markdown import rounded
from divcoef_assets.records import EmbeddingsRecord, TokenBatchesRecord
from divcoef_assets.resources import DivcoefResource


@dg.asset(
    partitions_def=PARTITIONS, group_name=GROUP, kinds={"pytorch", "parquet"}, code_version=ENGINE_CODE_VERSION, pool=TORCH_POOL,
    deps=[dg.AssetDep(probe_network, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=PROBE_DIMENSION))],
    description="Fine-tune the probe's head on each batch, estimate the diagonal Fisher, reduce it per "
    "filter. Every embedding is cached under a key made from the batch's content, the probe's weights, the "
    "estimator and the seed: a re-materialization computes only what is missing.",
)
def task2vec_embeddings(context: dg.AssetExecutionContext, divcoef: DivcoefResource, token_batches: TokenBatchesRecord) -> dg.Output[EmbeddingsRecord]:
    dataset, probe = keys(context)
    record = pipeline.embeddings(divcoef.registry(), dataset, probe, token_batches, divcoef.layout(), progress=progress_logger(context))
    return dg.Output(record, metadata={
        "n_embeddings": record.n_embeddings, "n_computed": record.n_computed, "n_cached": record.n_cached,
        "dim": record.dim, "seconds_computed": rounded(record.seconds_computed),
        "mean_seconds_per_embedding": rounded(record.mean_seconds_per_embedding), "path": dg.MetadataValue.path(record.path),
    })
