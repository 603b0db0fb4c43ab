"""task2vec_embeddings: one Task2Vec embedding per batch (plus noise repeats), cached by content.

The missing embeddings are computed in the step's process, or on a Ray cluster when the resource's
`embedding_backend` is "ray"; the step itself reads and writes the cache and the embeddings file
either way. The step's concurrency pool is `torch` for local embedding (it uses every core here)
and `gpu` for Ray definitions (`build_definitions(embedding_backend="ray")`): there the pool's
limit is how many partitions may keep the cluster's workers busy at once.
"""

import dagster as dg

from divcoef_assets import pipeline
from divcoef_assets.assets.common import ENGINE_CODE_VERSION, GROUP, PARTITIONS, TORCH_POOL, keys, progress_logger
from divcoef_assets.assets.probe import probe_network
from divcoef_assets.partitions import PROBE_DIMENSION
from divcoef_assets.core.markdown import rounded
from divcoef_assets.records import EmbeddingsRecord, TokenBatchesRecord
from divcoef_assets.resources import DivcoefResource


def build_task2vec_embeddings(pool: str = TORCH_POOL) -> dg.AssetsDefinition:
    """The task2vec_embeddings asset, taking a slot of `pool` while it runs."""

    @dg.asset(
        name="task2vec_embeddings",
        partitions_def=PARTITIONS, group_name=GROUP, kinds={"pytorch", "parquet"}, code_version=ENGINE_CODE_VERSION, pool=pool,
        deps=[dg.AssetDep(probe_network, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=PROBE_DIMENSION))],
        description="Fine-tune the probe's head on each batch, estimate the diagonal Fisher, reduce it per "
        "filter. Every embedding is cached under a key made from the batch's content, the probe's weights, the "
        "estimator and the seed: a re-materialization computes only what is missing. Computed here, or on a "
        "Ray cluster when the divcoef resource's embedding_backend is 'ray'.",
    )
    def task2vec_embeddings(context: dg.AssetExecutionContext, divcoef: DivcoefResource, token_batches: TokenBatchesRecord) -> dg.Output[EmbeddingsRecord]:
        dataset, probe = keys(context)
        with divcoef.embedder() as embedder:
            record = pipeline.embeddings(divcoef.registry(), dataset, probe, token_batches, divcoef.layout(),
                                         progress=progress_logger(context), embedder=embedder)
        return dg.Output(record, metadata={
            "n_embeddings": record.n_embeddings, "n_computed": record.n_computed, "n_cached": record.n_cached,
            "dim": record.dim, "seconds_computed": rounded(record.seconds_computed),
            "mean_seconds_per_embedding": rounded(record.mean_seconds_per_embedding), "path": dg.MetadataValue.path(record.path),
            "embedding_backend": divcoef.embedding_backend,
        })

    return task2vec_embeddings


task2vec_embeddings = build_task2vec_embeddings()
