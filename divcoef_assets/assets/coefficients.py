"""diversity_coefficient and cross_diversity: the numbers, written to DuckDB for SQL."""

import dagster as dg
import numpy as np

from divcoef_assets import checks, pipeline
from divcoef_assets.assets.common import DUCKDB_POOL, ENGINE_CODE_VERSION, GROUP, PARTITIONS, keys
from divcoef_assets.assets.embeddings import task2vec_embeddings
from divcoef_assets.core.summary_md import CoefficientSummary, coefficient_markdown
from divcoef_assets.partitions import PROBE_DIMENSION, probe_partitions
from divcoef_assets.records import CrossRecord, DistancesRecord
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.storage import CoefficientRecord

_METADATA = ("value", "stderr", "ci_low", "ci_high", "noise_floor", "noise_corrected", "n_batches", "n_pairs", "distance")


@dg.multi_asset(
    # A multi-asset of one asset, only because `@asset` cannot be subsettable: subsettable makes the
    # check outputs optional, so a check with nothing to compare with reports no result
    # (`checks.NotEvaluated`) instead of a pass; only the selected checks are reported.
    outs={"result": dg.AssetOut(
        key="diversity_coefficient", group_name=GROUP, kinds={"duckdb"}, code_version=ENGINE_CODE_VERSION,
        description="Mean distance over all pairs of distinct batches, with a jackknife-over-batches 95% "
        "interval and the noise floor; one row per (dataset, probe, snapshot) in DuckDB `coefficients`, "
        "with the fingerprints of the batches, weights and estimator it was computed from.",
    )},
    ins={"distance_matrix": dg.AssetIn("distance_matrix")},
    partitions_def=PARTITIONS, pool=DUCKDB_POOL, can_subset=True,
    check_specs=checks.check_specs("diversity_coefficient", PARTITIONS),
)
def diversity_coefficient(context: dg.AssetExecutionContext, divcoef: DivcoefResource, distance_matrix: DistancesRecord):
    dataset, probe = keys(context)
    registry, store = divcoef.registry(), divcoef.store()
    record = pipeline.coefficient(registry, dataset, probe, distance_matrix, code_version=ENGINE_CODE_VERSION, run_id=context.run_id)
    store.ensure_schema()
    near = pipeline.neighbours(store, registry, record)
    for path in pipeline.record_coefficient(store, registry, record, divcoef.layout()):
        context.log.warning(f"left out of the DuckDB views (unreadable Parquet): {path}")
    context.log.info(f"{dataset} | {probe}: diversity {record.value:.4f}, 95% interval [{record.ci_low}, {record.ci_high}], noise floor {record.noise_floor}")
    metadata = {k: getattr(record, k) for k in _METADATA if getattr(record, k) is not None}
    yield dg.Output(record, metadata={**metadata, "summary": dg.MetadataValue.md(_summary(record, distance_matrix))})
    selected = {key.name for key in context.selected_asset_check_keys}
    for outcome in checks.evaluate(record, near):
        if isinstance(outcome, checks.NotEvaluated):
            context.log.info(f"check {outcome.check_name} not evaluated: {outcome.reason}")
        elif outcome.check_name in selected:
            yield outcome


def _summary(record: CoefficientRecord, distances: DistancesRecord) -> str:
    """The table and distance histogram that the asset page shows behind "[Show Markdown]"."""
    matrix = pipeline.read_matrix(distances.path)
    summary = CoefficientSummary(
        dataset=record.dataset, probe=record.probe, value=record.value, ci_low=record.ci_low, ci_high=record.ci_high,
        noise_floor=record.noise_floor, noise_corrected=record.noise_corrected, n_batches=record.n_batches,
        snapshot=record.snapshot_fingerprint,
    )
    return coefficient_markdown(summary, matrix[np.triu_indices(len(matrix), k=1)])


@dg.asset(
    partitions_def=probe_partitions, group_name=GROUP, kinds={"duckdb", "parquet"}, code_version=ENGINE_CODE_VERSION, pool=DUCKDB_POOL,
    deps=[dg.AssetDep(task2vec_embeddings, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=PROBE_DIMENSION))],
    description="Cross-diversity of every pair of registered datasets audited with this probe's current "
    "settings, from the stored embeddings (nothing embedded twice); rows in DuckDB `cross_coefficients`.",
)
def cross_diversity(context: dg.AssetExecutionContext, divcoef: DivcoefResource) -> dg.Output[CrossRecord]:
    probe = context.partition_key
    layout = divcoef.layout()
    record, matrices = pipeline.cross(divcoef.registry(), probe, layout, code_version=ENGINE_CODE_VERSION, run_id=context.run_id)
    for path in pipeline.record_cross(divcoef.store(), record, matrices, layout):
        context.log.warning(f"left out of the DuckDB view cross_distances (unreadable Parquet): {path}")
    table = {f"{p.dataset_a} x {p.dataset_b}": round(p.value, 4) for p in record.pairs}
    return dg.Output(record, metadata={"n_pairs": len(record.pairs), "datasets": list(record.datasets), "cross": table,
                                       "skipped": list(record.skipped)})
