"""The project's Dagster instance settings (data/dagster_home/dagster.yaml) and the concurrency
pools of the steps that write DuckDB and of the steps that run the probe network."""

from __future__ import annotations

import shutil
import subprocess

import dagster as dg
import yaml

from divcoef_assets.default_audit import _instance
from divcoef_assets.definitions import build_definitions
from divcoef_assets.registry import REPO_ROOT

SETTINGS = REPO_ROOT / "data" / "dagster_home" / "dagster.yaml"
POOLS = {
    "diversity_coefficient": "duckdb_writer",
    "cross_diversity": "duckdb_writer",
    "task2vec_embeddings": "torch",
    "probe_network": "torch",
}


def test_the_settings_file_has_the_keys_set():
    settings = yaml.safe_load(SETTINGS.read_text())
    assert settings["telemetry"] == {"enabled": False}
    assert settings["nux"] == {"enabled": False}
    assert settings["run_monitoring"]["enabled"] is True
    assert settings["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert settings["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_the_settings_file_is_committed_and_the_run_data_beside_it_ignored():
    assert shutil.which("git") and (REPO_ROOT / ".git").exists(), "run the suite from a git checkout of the project"

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True)

    assert git("ls-files", "--error-unmatch", "data/dagster_home/dagster.yaml").returncode == 0
    for generated in ("data/dagster_home/runs.db", "data/dagster_home/history/runs/x.db", "data/dagster_home/storage/x"):
        assert git("check-ignore", "-q", generated).returncode == 0, generated
    assert git("check-ignore", "-q", "data/dagster_home/dagster.yaml").returncode == 1


def test_a_dagster_instance_reads_the_settings(tmp_path):
    shutil.copy(SETTINGS, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.telemetry_enabled is False
        assert instance.nux_enabled is False
        assert instance.run_monitoring_enabled is True
        pool_config = instance.event_log_storage.get_pool_config()
        assert pool_config.default_pool_limit == 1
        assert instance.event_log_storage.supports_global_concurrency_limits


def test_the_audit_gives_a_fresh_home_the_settings_and_keeps_an_existing_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    fresh = tmp_path / "fresh"
    instance, home = _instance(str(fresh))
    with instance:
        assert home == fresh.resolve()
        assert (fresh / "dagster.yaml").read_text() == SETTINGS.read_text()
        assert instance.telemetry_enabled is False and instance.nux_enabled is False

    own = tmp_path / "own"
    own.mkdir()
    (own / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance, _ = _instance(str(own))
    with instance:
        assert (own / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
        assert instance.nux_enabled is True  # the user's settings, untouched


def test_the_definitions_load_with_the_pools_on_their_assets():
    defs = build_definitions()
    for asset, pool in POOLS.items():
        assert defs.resolve_assets_def(asset).op.pool == pool, asset
    for asset in ("dataset_snapshot", "token_batches", "distance_matrix"):
        assert defs.resolve_assets_def(asset).op.pool is None, asset
    for job in ("audit", "probe", "cross_audit"):
        defs.resolve_job_def(job)  # the jobs resolve with the pooled assets
