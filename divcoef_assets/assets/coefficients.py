"""diversity_coefficient and cross_diversity: the numbers, written to DuckDB for SQL."""


import math

import dagster as dg

from divcoef_assets import checks, pipeline
from divcoef_assets.assets.common import GROUP, PARTITIONS, keys
from divcoef_assets.assets.embeddings import task2vec_embeddings
from divcoef_assets.core.sources import SyntheticSource
from divcoef_assets.partitions import PROBE_DIMENSION, probe_partitions
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.storage import CoefficientRecord, CrossCoefficientRecord

CODE_VERSION = "1"
_FIELDS = ("value", "stderr", "ci_low", "ci_high", "noise_floor", "noise_floor_stderr", "noise_corrected", "n_batches", "n_pairs", "distance")


def _bound_values(divcoef: DivcoefResource, probe: str, store) -> tuple[float | None, float | None]:
    found = {"lower_bound": None, "upper_bound": None}
    for name, spec in divcoef.registry().datasets.items():
        if isinstance(spec.source, SyntheticSource) and spec.source.kind in found:
            latest = store.latest_coefficient(name, probe)
            if latest is not None and found[spec.source.kind] is None:
                found[spec.source.kind] = latest.value
    return found["lower_bound"], found["upper_bound"]


@dg.asset(
    partitions_def=PARTITIONS, group_name=GROUP, kinds={"duckdb"}, code_version=CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(checks.COEFFICIENT_IN_RANGE, asset="diversity_coefficient"),
        dg.AssetCheckSpec(checks.COEFFICIENT_BETWEEN_BOUNDS, asset="diversity_coefficient"),
        dg.AssetCheckSpec(checks.COEFFICIENT_DRIFT, asset="diversity_coefficient"),
    ],
    description="Mean distance over all pairs of distinct batches, with a jackknife-over-batches 95% "
    "interval and the noise floor; one row per (dataset, probe, snapshot) in DuckDB `coefficients`.",
)
def diversity_coefficient(context: dg.AssetExecutionContext, divcoef: DivcoefResource, distance_matrix: dict):
    dataset, probe = keys(context)
    registry = divcoef.registry()
    record = pipeline.coefficient(registry, dataset, probe, distance_matrix)
    store = divcoef.store()
    store.ensure_schema()
    previous = [r for r in store.coefficients(dataset, probe) if r.snapshot_fingerprint != record["snapshot_fingerprint"]]
    previous_value = max(previous, key=lambda r: r.computed_at).value if previous else None
    spec = registry.dataset(dataset)
    store.record_coefficient(  # dataset, probe and coefficient rows in one transaction
        CoefficientRecord(
            dataset=dataset, probe=probe, snapshot_fingerprint=record["snapshot_fingerprint"],
            probe_fingerprint=record["probe_fingerprint"], code_version=CODE_VERSION, run_id=context.run_id,
            **{k: record[k] for k in _FIELDS},
        ),
        source_type=spec.source_type, description=spec.description, spec=spec.to_dict(),
        probe_config=registry.probe(probe).to_dict(),
    )
    layout = divcoef.layout()
    store.register_parquet_view("embeddings", layout.root / "embeddings" / "*" / "*" / "part.parquet", hive_partitioning=True)
    store.register_parquet_view("distances", layout.root / "distances" / "*" / "*" / "part.parquet", hive_partitioning=True)
    context.log.info(
        f"{dataset} | {probe}: diversity {record['value']:.4f} [{record['ci_low']:.4f}, {record['ci_high']:.4f}], "
        f"noise floor {record['noise_floor']}"
    )
    yield dg.Output(record, metadata={k: record[k] for k in _FIELDS if record[k] is not None})
    yield checks.check_range(record)
    lower, upper = _bound_values(divcoef, probe, store)
    yield checks.check_bounds(record["value"], lower, upper)
    half = (record["ci_high"] - record["ci_low"]) / 2 if record["ci_high"] is not None and not math.isnan(record["ci_high"]) else math.inf
    yield checks.check_drift(record["value"], half, previous_value)


@dg.asset(
    partitions_def=probe_partitions, group_name=GROUP, kinds={"duckdb", "parquet"}, code_version=CODE_VERSION,
    deps=[dg.AssetDep(task2vec_embeddings, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=PROBE_DIMENSION))],
    description="Cross-diversity of every pair of registered datasets audited with this probe, from the "
    "stored embeddings (nothing embedded twice); rows in DuckDB `cross_coefficients`, matrices in Parquet.",
)
def cross_diversity(context: dg.AssetExecutionContext, divcoef: DivcoefResource) -> dg.Output[dict]:
    probe = context.partition_key
    record = pipeline.cross(divcoef.registry(), probe, divcoef.layout())
    store = divcoef.store()
    store.ensure_schema()
    for pair in record["pairs"]:
        store.upsert_cross(CrossCoefficientRecord(
            dataset_a=pair["dataset_a"], dataset_b=pair["dataset_b"], probe=probe, snapshot_a=pair["snapshot_a"],
            snapshot_b=pair["snapshot_b"], probe_fingerprint=record["probe_fingerprint"], value=pair["value"],
            stderr=pair["stderr"], ci_low=pair["ci_low"], ci_high=pair["ci_high"], n_batches_a=pair["n_batches_a"],
            n_batches_b=pair["n_batches_b"], n_pairs=pair["n_pairs"], distance=record["distance"],
            code_version=CODE_VERSION, run_id=context.run_id,
        ))
    if record["path"]:
        store.register_parquet_view("cross_distances", record["path"].rsplit("/probe=", 1)[0] + "/*/part.parquet", hive_partitioning=True)
    table = {f"{p['dataset_a']} x {p['dataset_b']}": round(p["value"], 4) for p in record["pairs"]}
    return dg.Output(record, metadata={"n_pairs": len(record["pairs"]), "datasets": record["datasets"], "cross": table})
