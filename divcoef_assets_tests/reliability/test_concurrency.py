"""Concurrency: audits of several partitions, and of one partition twice, run at the same time
in separate processes against one Dagster instance and one DuckDB file; plus a run on Dagster's
multiprocess executor during them. Every record lands exactly once and no lock error escapes."""

from __future__ import annotations

import json
import multiprocessing

import dagster as dg

from divcoef_assets.storage import ResultsStore
from divcoef_assets_tests.reliability import concurrent_jobs
from divcoef_assets_tests.reliability.concurrent_jobs import multiprocess_audit_job, partition_tags
from divcoef_assets_tests.reliability.support import tiny_probe, write_jsonl, write_registry

DATASETS = ["corpus-a", "corpus-b", "corpus-c", "corpus-d"]


def test_concurrent_partitions_and_a_duplicate_each_land_once(tmp_path, small_probe_dir, monkeypatch):
    datasets = {}
    for seed, name in enumerate(DATASETS):
        write_jsonl(tmp_path / f"{name}.jsonl", n=12, seed=seed)
        datasets[name] = {"source": "files", "path": f"{name}.jsonl"}
    registry = write_registry(tmp_path, datasets, {"tiny": tiny_probe(small_probe_dir)})
    home = tmp_path / "dagster_home"
    home.mkdir()
    db = tmp_path / "results.duckdb"
    env = {"DAGSTER_HOME": str(home), "DIVCOEF_REGISTRY": str(registry), "DIVCOEF_DATA_DIR": str(tmp_path / "data"),
           "DIVCOEF_DB": str(db), "HF_HUB_OFFLINE": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("dataset", DATASETS)
        instance.add_dynamic_partitions("probe", ["tiny"])

    # four partitions, all started at once, each in its own process; the processes fork from a
    # server that imported the package once (a fresh process each, without the import cost)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([concurrent_jobs.__name__])
    processes = [context.Process(target=concurrent_jobs.run_partition, args=(name, "tiny", env, str(tmp_path / f"{name}.result.json"))) for name in DATASETS]
    for process in processes:
        process.start()
    # meanwhile, the first partition a second time, on the multiprocess executor (a process per step)
    with dg.DagsterInstance.get() as instance:
        mp_result = dg.execute_job(dg.reconstructable(multiprocess_audit_job), instance=instance,
                                   tags=partition_tags(DATASETS[0], "tiny"))
        mp_success = mp_result.success
        mp_failures = [str(e.step_failure_data.error) for e in mp_result.get_step_failure_events()]
    for process in processes:
        process.join(timeout=300)
    outcomes = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.result.json"))]
    assert [p.exitcode for p in processes] == [0] * 4, outcomes
    assert sorted(o["dataset"] for o in outcomes) == DATASETS
    assert all(o["success"] for o in outcomes), outcomes
    assert not any("lock" in e.lower() for o in outcomes for e in o["errors"])
    assert mp_success, mp_failures

    store = ResultsStore(db)
    counts = dict(store.query("SELECT dataset, count(*) FROM coefficients GROUP BY dataset ORDER BY dataset"))
    assert counts == {name: 1 for name in DATASETS}
    assert store.query("SELECT count(*) FROM datasets") == [(4,)]
    assert store.query("SELECT count(*) FROM probes") == [(1,)]
    assert store.query("SELECT count(DISTINCT dataset) FROM embeddings") == [(4,)]
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 5 and all(run.is_success for run in runs)
