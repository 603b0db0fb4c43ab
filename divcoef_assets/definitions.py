"""The one `dg.Definitions` of the project: assets, checks, jobs, sensor, schedule, resources.

    dagster dev -h 127.0.0.1          # UI on localhost only
    dagster definitions validate
    dagster dev -h 127.0.0.1 -m divcoef_assets.ray_definitions   # embeddings on Ray (README "Scaling out", "Running it for a team")
    dagster asset materialize --select '*' --partition 'bible|local-gpt2' -m divcoef_assets.definitions

Paths are fields of `DivcoefResource`; left empty they come from the environment when a run
starts (`DIVCOEF_REGISTRY`, `DIVCOEF_DATA_DIR`, `DIVCOEF_CACHE`, `DIVCOEF_DB`, see `paths`) or
default to `data/registry.yaml`, `data/`, `data/artifacts/cache/embeddings` and
`data/divcoef.duckdb`. Nothing is read from the environment when this module is imported.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from divcoef_assets.assets.batches import token_batches
from divcoef_assets.assets.coefficients import cross_diversity, diversity_coefficient
from divcoef_assets.assets.distances import distance_matrix
from divcoef_assets.assets.common import GPU_POOL
from divcoef_assets.assets.embeddings import build_task2vec_embeddings, task2vec_embeddings
from divcoef_assets.assets.leaderboard import leaderboard
from divcoef_assets.assets.probe import probe_network
from divcoef_assets.assets.snapshots import dataset_snapshot
from divcoef_assets.io import RecordIOManager
from divcoef_assets.jobs import audit_job, cross_job, leaderboard_job, probe_job
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.schedules import weekly_reaudit
from divcoef_assets.sensors import registry_sensor

ASSETS = [probe_network, dataset_snapshot, token_batches, task2vec_embeddings, distance_matrix, diversity_coefficient, cross_diversity,
          leaderboard]

# Runs the assets that carry an automation condition (cross_diversity, leaderboard) while the daemon
# runs (`dagster dev`): on by default, so a coefficient that lands refreshes both without a click.
refresh_sensor = dg.AutomationConditionSensorDefinition(
    "refresh_after_coefficients", target=dg.AssetSelection.assets("cross_diversity", "leaderboard"),
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    description="Materializes cross_diversity (per probe) and leaderboard once a diversity_coefficient partition has landed "
    "and nothing upstream is in progress.",
)


def build_definitions(
    *, registry_path: str = "", data_dir: str = "", db_path: str = "", cache_dir: str = "", reports: bool = True,
    embedding_backend: str = "local", ray_address: str = "", **ray_options,
) -> dg.Definitions:
    """The project's definitions; `reports=False` leaves out the plots, tables, triage and
    baselines; `embedding_backend="ray"` computes batch embeddings on a Ray cluster
    (`ray_address`, `ray_options`: the `ray_*` fields of `DivcoefResource`) and puts
    task2vec_embeddings in the `gpu` pool instead of `torch`."""
    divcoef = DivcoefResource(registry_path=registry_path, data_dir=data_dir, db_path=db_path, cache_dir=cache_dir,
                              reports=reports, embedding_backend=embedding_backend, ray_address=ray_address, **ray_options)
    records = str(Path(data_dir).resolve() / "records") if data_dir else ""  # empty: <data dir>/records at run time
    embeddings = task2vec_embeddings if embedding_backend == "local" else build_task2vec_embeddings(GPU_POOL)
    assets = [embeddings if a is task2vec_embeddings else a for a in ASSETS]
    return dg.Definitions(
        assets=assets,
        jobs=[probe_job, audit_job, cross_job, leaderboard_job],
        sensors=[registry_sensor, refresh_sensor],
        schedules=[weekly_reaudit],
        resources={"divcoef": divcoef, "io_manager": RecordIOManager(base_dir=records)},
        # Every step of a run in the run's own process: a partition's steps run one after the other
        # anyway, and the default multiprocess executor would import torch again for each of them.
        # Pools still apply (the in-process executor takes its slots from the instance).
        executor=dg.in_process_executor,
    )


defs = build_definitions()
