"""Jobs: the per-(dataset, probe) audit chain, and the per-probe cross-diversity."""

from __future__ import annotations

import dagster as dg

from divcoef_assets.partitions import dataset_probe_partitions, probe_partitions

AUDIT_ASSETS = ["dataset_snapshot", "token_batches", "task2vec_embeddings", "distance_matrix", "diversity_coefficient"]

audit_job = dg.define_asset_job(
    "audit",
    selection=dg.AssetSelection.assets(*AUDIT_ASSETS),
    partitions_def=dataset_probe_partitions,
    description="Snapshot -> token batches -> embeddings -> distances -> coefficient for one dataset|probe partition.",
)

probe_job = dg.define_asset_job(
    "probe",
    selection=dg.AssetSelection.assets("probe_network"),
    partitions_def=probe_partitions,
    description="Build (pretrain) or describe the probe network of one probe partition.",
)

leaderboard_job = dg.define_asset_job(
    "refresh_leaderboard",
    selection=dg.AssetSelection.assets("leaderboard"),
    description="Every probe's leaderboard: real corpora with intervals, tied groups and place between the bounds.",
)

cross_job = dg.define_asset_job(
    "cross_audit",
    selection=dg.AssetSelection.assets("cross_diversity"),
    partitions_def=probe_partitions,
    description="Cross-diversity of every pair of audited datasets for one probe.",
)
