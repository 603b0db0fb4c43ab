"""Batch embeddings on a real local Ray cluster: the same numbers as the local path, computed in
Ray's workers, and a worker killed mid-embedding does not change the coefficient.

One Ray head (127.0.0.1, 2 CPUs) serves the module's tests and is stopped by its process group
and session when they end, passed or failed (`ray_head`)."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from divcoef_assets.core.cache import EmbeddingCache
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.storage import ResultsStore
from divcoef_assets_tests.ray_head import ray_head
from divcoef_assets_tests.reliability.support import tiny_probe, write_jsonl, write_registry

DATASET, PROBE = "corpus", "tiny"
# 3 batches and 2 noise repeats of batch 0: 4 embeddings. One Ray worker per run: starting a worker
# (torch, transformers, the probe) is most of a run's time on 2 cores.
PROBE_ENTRY = dict(n_batches=3, noise_repeats=2, noise_batches=1)


@pytest.fixture(scope="module")
def head():
    with ray_head(num_cpus=2) as cluster:
        yield cluster
    left = cluster.processes()
    assert not left, f"processes of the Ray cluster outlived it: {left}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_gpt2_dir):
    folder = tmp_path_factory.mktemp("ray-registry")
    write_jsonl(folder / "corpus.jsonl", n=24, seed=3)
    return write_registry(folder, {DATASET: {"source": "files", "path": "corpus.jsonl"}},
                          {PROBE: tiny_probe(tiny_gpt2_dir, **PROBE_ENTRY)})


def materialize(folder, registry, **backend):
    """The audit job of the partition with a fresh instance and its own data folder (own cache);
    in the Ray mode a stalled sampling run is started again after 60 s, not the default 300 s."""
    if backend.get("embedding_backend") == "ray":
        backend.setdefault("ray_sampling_stall_s", 60.0)
    defs = build_definitions(registry_path=str(registry), data_dir=str(folder / "data"), db_path=str(folder / "r.duckdb"), **backend)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("dataset", [DATASET])
    instance.add_dynamic_partitions("probe", [PROBE])
    result = defs.resolve_job_def("audit").execute_in_process(partition_key=dataset_probe_key(DATASET, PROBE), instance=instance)
    assert result.success
    emb = result.output_for_node("task2vec_embeddings")
    table = pq.read_table(emb.path).to_pydict()
    order = sorted(range(len(table["batch_index"])), key=lambda k: (table["batch_index"][k], table["repeat"][k]))
    rows = {name: [values[k] for k in order] for name, values in table.items()}
    stored = ResultsStore(folder / "r.duckdb").coefficients(DATASET)
    return emb, rows, result.output_for_node("diversity_coefficient"), stored


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, registry):
    return materialize(tmp_path_factory.mktemp("local"), registry)


def test_sampling_on_ray_data_gives_the_local_pool(head, tmp_path):
    from divcoef_assets.core.sampler import sample_pool
    from divcoef_assets.core.sources import FilesSource

    for i in range(3):
        write_jsonl(tmp_path / f"part-{i}.jsonl", n=40, seed=i)
    spec = FilesSource(path="part-*.jsonl")
    local = sample_pool(spec, tmp_path, seed=1, k=25, executor="serial")
    reports = []
    on_ray = sample_pool(spec, tmp_path, seed=1, k=25, executor="ray", ray_address=head.address, progress=reports.append)
    assert len(local.docs) == 25 and on_ray == local
    assert [r.shards_done for r in reports] == [1, 2, 3]  # as each shard's row arrives
    assert reports[-1].bytes_done == reports[-1].bytes == sum(p.stat().st_size for p in tmp_path.glob("part-*.jsonl"))


def test_a_stalled_ray_data_sampling_run_is_retried_for_its_unfinished_shards(head, tmp_path, monkeypatch, caplog):
    from divcoef_assets.core import sampler
    from divcoef_assets.core.sources import FilesSource

    for i in range(3):
        write_jsonl(tmp_path / f"part-{i}.jsonl", n=40, seed=i)
    spec = FilesSource(path="part-*.jsonl")
    local = sampler.sample_pool(spec, tmp_path, seed=1, k=25, executor="serial")
    stall, release = tmp_path / "stall-once", tmp_path / "release"
    stall.touch()

    def first_shard_stalls(batch):  # runs in a Ray worker, where the module holds the real function
        from divcoef_assets.core import sampler as in_worker

        try:
            stall.unlink()
        except FileNotFoundError:
            return in_worker._ray_sample_batch(batch)
        give_up = time.monotonic() + 120
        while not release.exists() and time.monotonic() < give_up:
            time.sleep(0.05)
        return in_worker._ray_sample_batch(batch)

    monkeypatch.setattr(sampler, "_ray_sample_batch", first_shard_stalls)
    try:
        with caplog.at_level(logging.WARNING, logger=sampler.__name__):
            on_ray = sampler.sample_pool(spec, tmp_path, seed=1, k=25, executor="ray", ray_address=head.address, ray_stall_s=30)
    finally:
        release.touch()  # the stalled worker returns to a run nobody reads, and frees its CPU
    assert not stall.exists(), "no shard was stalled"
    assert on_ray == local
    stalled = re.search(r"no shard finished for 30 s \(([0-2]) of 3 done\); sampling the other ([1-3]) again", caplog.text)
    assert stalled and int(stalled[1]) + int(stalled[2]) == 3, caplog.text
    assert "was not found" not in caplog.text  # the stalled run was shut down


def test_sampling_that_stalls_in_every_run_fails_clearly(head, tmp_path, monkeypatch):
    from divcoef_assets.core import sampler
    from divcoef_assets.core.sources import FilesSource

    write_jsonl(tmp_path / "part.jsonl", n=10, seed=0)
    release = tmp_path / "release"

    def never_returns(batch):
        give_up = time.monotonic() + 120
        while not release.exists() and time.monotonic() < give_up:
            time.sleep(0.05)
        return {"index": batch["index"], "result": batch["task"]}

    monkeypatch.setattr(sampler, "_ray_sample_batch", never_returns)
    monkeypatch.setattr(sampler, "RAY_DATA_ATTEMPTS", 2)
    try:
        with pytest.raises(sampler.SamplingStalledError, match=r"no shard finished for 2 s, in each of 2 runs \(0 of 1 shards done\)"):
            sampler.sample_pool(FilesSource(path="part.jsonl"), tmp_path, seed=1, k=5, executor="ray",
                                ray_address=head.address, ray_stall_s=2)
    finally:
        release.touch()


def test_the_stall_limit_grows_with_the_largest_shard():
    from divcoef_assets.core.sampler import RAY_STALL_BASE_S, RAY_STALL_MIN_RATE, Shard, ray_stall_limit

    shards = [Shard("lines", "a.jsonl", "a", 0, 10 * RAY_STALL_MIN_RATE, 0), Shard("lines", "a.jsonl", "a", 10 * RAY_STALL_MIN_RATE, 40 * RAY_STALL_MIN_RATE, 1)]
    assert ray_stall_limit(shards) == RAY_STALL_BASE_S + 30
    assert ray_stall_limit(shards, 7.5) == 7.5
    assert ray_stall_limit([]) == RAY_STALL_BASE_S


def test_partition_through_ray_equals_local_and_is_computed_in_ray_workers(head, registry, local_run, tmp_path):
    emb, rows, coefficient, stored = materialize(tmp_path, registry, embedding_backend="ray", ray_address=head.address, ray_workers=1)
    local_emb, local_rows, local_coefficient, _ = local_run

    assert emb.n_embeddings == emb.n_computed == 4 and emb.n_cached == 0
    assert set(rows["worker_pid"]).isdisjoint({0, os.getpid()}), rows["worker_pid"]
    assert all(len(node) == 56 for node in rows["node_id"]), rows["node_id"]  # Ray node ids: 28 bytes in hex
    assert set(local_rows["worker_pid"]) == {os.getpid()} and set(local_rows["node_id"]) == {""}

    # Same seeds, same cache keys, same numbers (float tolerance: the workers run torch on 1 thread).
    assert rows["key"] == local_rows["key"] and rows["seed"] == local_rows["seed"]
    np.testing.assert_allclose(np.array(rows["vector"]), np.array(local_rows["vector"]), rtol=1e-4, atol=1e-7)
    assert coefficient.value == pytest.approx(local_coefficient.value, abs=1e-6)
    assert emb.batches_fingerprint == local_emb.batches_fingerprint
    assert emb.settings_fingerprint == local_emb.settings_fingerprint

    # Written by this (the Dagster) process: the cache entries and the DuckDB row.
    assert EmbeddingCache(tmp_path / "data" / "artifacts" / "cache" / "embeddings").count() == 4
    assert [r.value for r in stored] == [coefficient.value]


def test_a_worker_killed_mid_embedding_is_retried_and_the_coefficient_is_unchanged(head, registry, local_run, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", head.address)  # no ray_address: dagster-ray's LocalRay finds the cluster
    killed: list[int] = []
    done = threading.Event()

    def kill_first_busy_worker() -> None:
        while not done.is_set() and not killed:
            for pid, title in head.processes().items():
                if title.startswith("ray::EmbeddingWorker.embed"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_busy_worker, daemon=True)
    killer.start()
    try:
        emb, rows, coefficient, stored = materialize(tmp_path, registry, embedding_backend="ray", ray_workers=1, ray_max_retries=2)
    finally:
        done.set()
        killer.join()

    assert killed, "no Ray worker was seen embedding, so none was killed"
    assert emb.n_computed == 4
    assert coefficient.value == pytest.approx(local_run[2].value, abs=1e-6)
    np.testing.assert_allclose(np.array(rows["vector"]), np.array(local_run[1]["vector"]), rtol=1e-4, atol=1e-7)
    # The batch the killed worker was embedding came from another process; nothing torn is cached.
    assert any(pid not in killed for pid in rows["worker_pid"])
    cache = tmp_path / "data" / "artifacts" / "cache" / "embeddings"
    assert EmbeddingCache(cache).count() == 4 and not list(cache.rglob(".tmp-*"))
    assert [r.value for r in stored] == [coefficient.value]


def test_ray_mode_without_ray_installed_says_how_to_install_it(monkeypatch):
    from divcoef_assets.ray_backend import RayNotInstalledError

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install -e '\.\[ray\]'"):
        with DivcoefResource(embedding_backend="ray").embedder():
            pass


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="embedding_backend is 'spark'"):
        with DivcoefResource(embedding_backend="spark").embedder():
            pass


def test_gpu_probes_ask_ray_for_gpus_and_fail_clearly_without_them():
    from divcoef_assets.ray_backend import NoGpuError, RayOptions, gpus_per_worker, pool_size

    cpu = ProbeConfig(name="p", device="cpu")
    assert gpus_per_worker(cpu, RayOptions(), cluster_gpus=4) == 0
    assert gpus_per_worker(cpu.replace(device="cuda:1"), RayOptions(), cluster_gpus=4) == 1
    assert gpus_per_worker(cpu.replace(device="auto"), RayOptions(), cluster_gpus=4) == 1
    assert gpus_per_worker(cpu.replace(device="auto"), RayOptions(), cluster_gpus=0) == 0
    with pytest.raises(NoGpuError, match="has 0"):
        gpus_per_worker(cpu.replace(device="cuda"), RayOptions(), cluster_gpus=0)
    assert pool_size(RayOptions(), 200, {"CPU": 64, "GPU": 8}, gpus=1) == 8
    assert pool_size(RayOptions(cpus_per_worker=2), 200, {"CPU": 8}, gpus=0) == 4
    assert pool_size(RayOptions(workers=16), 3, {"CPU": 64}, gpus=0) == 3


def test_only_the_ray_modules_import_ray_and_nothing_imports_them_when_loading():
    """Definitions load, and local runs work, on a machine without Ray: `ray` and `dagster_ray`
    are imported at module level only by `ray_resources`, which only `DivcoefResource.embedder`
    imports (inside the function, in the Ray mode), like `ray_backend`'s `import_ray`."""
    import ast
    from pathlib import Path

    import divcoef_assets

    package = Path(divcoef_assets.__file__).parent
    top_level: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                top_level.setdefault(module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                top_level.setdefault(module, set()).add(node.module)
    importers = {m for m, names in top_level.items() if any(n.split(".")[0] in ("ray", "dagster_ray") for n in names)}
    assert importers == {"divcoef_assets.ray_resources"}
    lazy = {"divcoef_assets.ray_resources", "divcoef_assets.ray_backend"}
    assert not {m for m, names in top_level.items() if names & lazy}, "a module imports the Ray modules when it loads"


def test_the_ray_address_comes_from_the_field_then_divcoef_ray_address_and_feeds_divcoef_audit(monkeypatch):
    from divcoef_assets.cli import build_parser

    monkeypatch.delenv("DIVCOEF_RAY_ADDRESS", raising=False)
    assert DivcoefResource().resolved_ray_address() == ""  # ray.init() finds one (RAY_ADDRESS, ...)
    assert build_parser().parse_args(["audit"]).ray == ""  # no --ray: embeddings in this process
    monkeypatch.setenv("DIVCOEF_RAY_ADDRESS", "ray://head.internal:10001")
    assert DivcoefResource().resolved_ray_address() == "ray://head.internal:10001"
    assert DivcoefResource(ray_address="10.0.0.5:6379").resolved_ray_address() == "10.0.0.5:6379"
    assert build_parser().parse_args(["audit"]).ray == "ray://head.internal:10001"
    assert build_parser().parse_args(["audit", "--ray", "127.0.0.1:6379"]).ray == "127.0.0.1:6379"


def test_the_ray_mode_samples_on_ray_with_the_resource_stall_limit():
    from divcoef_assets.pipeline import SamplingOptions

    assert DivcoefResource().sampling() == SamplingOptions()
    ray_mode = DivcoefResource(embedding_backend="ray", ray_address="10.0.0.5:6379")
    assert ray_mode.sampling() == SamplingOptions(executor="ray", ray_address="10.0.0.5:6379", ray_stall_s=None)
    assert ray_mode.model_copy(update={"ray_sampling_stall_s": 45.0}).sampling().ray_stall_s == 45.0
    with pytest.raises(dg.DagsterResourceFunctionError) as failed:
        with dg.build_resources({"divcoef": DivcoefResource(ray_sampling_stall_s=-1.0)}):
            pass
    assert "ray_sampling_stall_s is -1.0; expected 0 (automatic) or more seconds" in str(failed.value.__cause__)
