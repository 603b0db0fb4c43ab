"""diversity_coefficient and cross_diversity: the numbers, written to DuckDB for SQL."""

import dagster as dg

from divcoef_assets import checks, pipeline, presentation
from divcoef_assets.assets.common import DUCKDB_POOL, ENGINE_CODE_VERSION, GROUP, PARTITIONS, keys, shown, table_metadata
from divcoef_assets.assets.embeddings import task2vec_embeddings
from divcoef_assets.assets.leaderboard import REFRESH
from divcoef_assets.core.markdown import interval, rounded, sig
from divcoef_assets.partitions import PROBE_DIMENSION, probe_partitions
from divcoef_assets.records import CrossRecord, DistancesRecord
from divcoef_assets.resources import DivcoefResource

_TYPED = ("value", "stderr", "ci_low", "ci_high", "noise_floor", "noise_corrected")


def _typed(record) -> dict:
    """Numbers as typed metadata, to 4 significant digits (DuckDB keeps them in full)."""
    out = {k: rounded(getattr(record, k)) for k in _TYPED if getattr(record, k) is not None}
    return {**out, "n_batches": record.n_batches, "n_pairs": record.n_pairs, "distance": record.distance}


@dg.multi_asset(
    # A multi-asset of one asset, only because `@asset` cannot be subsettable: subsettable makes the
    # check outputs optional, so a check with nothing to compare with reports no result
    # (`checks.NotEvaluated`) instead of a pass; only the selected checks are reported.
    outs={"result": dg.AssetOut(
        key="diversity_coefficient", group_name=GROUP, kinds={"duckdb"}, code_version=ENGINE_CODE_VERSION,
        description="Mean distance over all pairs of distinct batches, with a jackknife-over-batches 95% "
        "interval and the noise floor; one row per (dataset, probe, snapshot) in DuckDB `coefficients`, "
        "with the fingerprints of the batches, weights and estimator it was computed from. The materialization "
        "shows the value table, the histogram of pairwise distances, the trend over snapshots, the batches farthest "
        "from the rest (DuckDB `batch_outliers`) and baseline measures of the same batches (DuckDB `baselines`).",
    )},
    ins={"distance_matrix": dg.AssetIn("distance_matrix")},
    partitions_def=PARTITIONS, pool=DUCKDB_POOL, can_subset=True,
    check_specs=checks.check_specs("diversity_coefficient", PARTITIONS),
)
def diversity_coefficient(context: dg.AssetExecutionContext, divcoef: DivcoefResource, distance_matrix: DistancesRecord):
    dataset, probe = keys(context)
    registry, store = divcoef.registry(), divcoef.store()
    record, result = pipeline.coefficient_result(registry, dataset, probe, distance_matrix, code_version=ENGINE_CODE_VERSION, run_id=context.run_id)
    extras = None
    if divcoef.reports:
        try:
            extras = pipeline.coefficient_extras(result, distance_matrix.embeddings)
        except (pipeline.StaleUpstreamError, pipeline.ArtifactError, OSError, ValueError) as exc:
            context.log.warning(f"{dataset} | {probe}: no triage or baselines: {exc}")
    store.ensure_schema()
    near = pipeline.neighbours(store, registry, record)
    metadata = _typed(record)
    if divcoef.reports:  # everything shown is made before anything is recorded: a failure records nothing
        labels = extras.documents.labels if extras is not None else (dataset,) * record.n_batches
        metadata.update(
            summary=table_metadata(presentation.coefficient_table(record)),
            histogram=dg.MetadataValue.md(presentation.distance_histogram(record, result, labels)),
            trend=dg.MetadataValue.md(presentation.trend(presentation.history(store, record), dataset=dataset, probe=probe)),
        )
        if extras is not None:
            metadata.update(outlier_batches=table_metadata(presentation.outlier_table(extras.outliers)),
                            baselines=table_metadata(presentation.baseline_table(extras.baselines)))
    for path in pipeline.record_coefficient(store, registry, record, divcoef.layout(), extras):
        context.log.warning(f"left out of the DuckDB views (unreadable Parquet): {path}")
    context.log.info(f"{dataset} | {probe}: diversity {sig(record.value)}, 95% interval {interval(record.ci_low, record.ci_high)}, "
                     f"noise floor {sig(record.noise_floor)}")
    yield dg.Output(record, metadata=metadata)
    selected = {key.name for key in context.selected_asset_check_keys}
    not_evaluated = set()
    for outcome in checks.evaluate(record, near):
        if isinstance(outcome, checks.NotEvaluated):
            context.log.info(f"check {outcome.check_name} not evaluated: {outcome.reason}")
            not_evaluated.add(outcome.check_name)
        elif outcome.check_name in selected:
            yield outcome
    checks.quiet_not_evaluated(context, not_evaluated & selected)


@dg.asset(
    partitions_def=probe_partitions, group_name=GROUP, kinds={"duckdb", "parquet"}, code_version=ENGINE_CODE_VERSION, pool=DUCKDB_POOL,
    deps=[dg.AssetDep(upstream, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=PROBE_DIMENSION))
          for upstream in (task2vec_embeddings, "diversity_coefficient")],
    automation_condition=REFRESH,
    description="Cross-diversity of every pair of registered datasets audited with this probe's current "
    "settings, from the stored embeddings (nothing embedded twice); rows in DuckDB `cross_coefficients`. The "
    "materialization shows the cross matrix (table with intervals, own diversity on the diagonal marked '(own)', and "
    "heatmap). Refreshed by declarative automation after a coefficient lands; the ranking is the leaderboard asset.",
)
def cross_diversity(context: dg.AssetExecutionContext, divcoef: DivcoefResource) -> dg.Output[CrossRecord]:
    probe = context.partition_key
    layout = divcoef.layout()
    record, matrices = pipeline.cross(divcoef.registry(), probe, layout, code_version=ENGINE_CODE_VERSION, run_id=context.run_id)
    metadata = {"n_pairs": len(record.pairs), "datasets": dg.MetadataValue.text(", ".join(record.datasets)),
                "skipped": dg.MetadataValue.text("; ".join(record.skipped) or "none")}
    if divcoef.reports:
        metadata.update({k: shown(v) for k, v in presentation.cross_views(divcoef.store(), record).items()})
    else:
        metadata["cross"] = {f"{p.dataset_a} x {p.dataset_b}": rounded(p.value) for p in record.pairs}
    for path in pipeline.record_cross(divcoef.store(), record, matrices, layout):
        context.log.warning(f"left out of the DuckDB view cross_distances (unreadable Parquet): {path}")
    return dg.Output(record, metadata=metadata)
