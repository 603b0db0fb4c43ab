"""Dagster resources: where the registry, the artifacts, the embedding cache and the results live.

One resource whose fields default to empty, meaning "ask `paths`" at run time: the environment
variables `DIVCOEF_REGISTRY`, `DIVCOEF_DATA_DIR`, `DIVCOEF_CACHE` and `DIVCOEF_DB`, else the
project's `data/` folder. Nothing is read from the environment when the definitions load, so a
deployment sets the fields (or the variables) and tests point the whole graph elsewhere.

When a run starts, the resource also sizes torch's thread pool to the free cores (once per
process, see `divcoef_assets.threads`), so runs launched side by side do not oversubscribe them.

Where batch embeddings are computed is a field too, `embedding_backend`:

- "local" (the default): in the step's own process;
- "ray": on a Ray cluster (`divcoef_assets.ray_backend`), reached through dagster-ray's resource
  (`divcoef_assets.ray_resources`): `ray_address` names the cluster (`ray://head:10001`), empty
  means `DIVCOEF_RAY_ADDRESS` at run time, and where that is unset too `ray.init()` finds it
  (`RAY_ADDRESS`, else the cluster started last on this machine, else a local one). The step still
  reads the cache, writes the cache and the embeddings file, and the DuckDB file is written by the
  Dagster steps only. Ray is an optional extra: the modules that import it are imported only in
  this mode, and without it the step fails saying how to install it.

`ray_cluster()` is the connection itself (the address it resolved, connected for the duration of a
block), so any step can put work on the same cluster; `embedder()` is built on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from divcoef_assets import paths, threads
from divcoef_assets.core.audit import EmbedderFactory
from divcoef_assets.pipeline import Layout, SamplingOptions
from divcoef_assets.registry import Registry, load_registry
from divcoef_assets.storage import ResultsStore


BACKENDS = ("local", "ray")


class DivcoefResource(dg.ConfigurableResource):
    """Registry file, artifact folder, embedding cache and DuckDB results file of the audit."""

    registry_path: str = ""  # empty: $DIVCOEF_REGISTRY or data/registry.yaml
    data_dir: str = ""  # empty: $DIVCOEF_DATA_DIR or data/
    cache_dir: str = ""  # empty: $DIVCOEF_CACHE or <data_dir>/artifacts/cache/embeddings
    db_path: str = ""  # empty: $DIVCOEF_DB or <data_dir>/divcoef.duckdb
    lock_timeout_s: float = 120.0  # how long a writer waits for the DuckDB file lock
    embedding_backend: str = "local"  # "local" or "ray": where task2vec_embeddings computes missing embeddings
    ray_address: str = ""  # "ray": the cluster (ray://head:10001); empty: $DIVCOEF_RAY_ADDRESS, else RAY_ADDRESS, else a local cluster
    ray_workers: int = 0  # "ray": actors per partition; 0: as many as the cluster's GPUs (or CPUs) hold
    ray_cpus_per_worker: float = 1.0  # "ray": num_cpus of each actor (and its torch threads)
    ray_gpus_per_worker: float = -1.0  # "ray": num_gpus of each actor; -1: 1 when the probe's device is cuda, else 0
    ray_max_retries: int = 3  # "ray": lost actors (killed, node gone; their batches embedded again by others) before the step fails
    ray_sampling_stall_s: float = 0.0  # "ray": seconds without a sampled shard before a Ray Data run is retried; 0: 300 + the largest shard at 4 MB/s
    # Plots, formatted tables, per-batch triage and baselines attached to the materializations
    # (and the `baselines` / `batch_outliers` rows). Off: the numbers only, to measure what
    # these cost (benchmarks/reports_overhead.py) or to save the time on a very large audit.
    reports: bool = True

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.embedding_backend not in BACKENDS:
            raise ValueError(f"DivcoefResource.embedding_backend is {self.embedding_backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.ray_sampling_stall_s < 0:
            raise ValueError(f"DivcoefResource.ray_sampling_stall_s is {self.ray_sampling_stall_s}; expected 0 (automatic) or more seconds")
        if context.dagster_run is not None:  # a run, not a sensor or schedule evaluation
            threads.ensure_torch_threads()

    def resolved_ray_address(self) -> str:
        """The Ray cluster's address: `ray_address`, else `DIVCOEF_RAY_ADDRESS`; empty: let
        `ray.init()` find one (`RAY_ADDRESS`, else the cluster started last here, else a new local one)."""
        return self.ray_address or os.environ.get("DIVCOEF_RAY_ADDRESS", "")

    @contextmanager
    def ray_cluster(self) -> Iterator[str]:
        """Connected to the Ray cluster (dagster-ray's resource: `ray.init` on entry, the disconnect
        on exit, also on error) for the duration of the block; yields the address it resolved
        (empty: the one `ray.init()` found)."""
        from divcoef_assets.ray_backend import INSTALL_HINT, RayNotInstalledError, import_ray

        import_ray()
        try:
            from divcoef_assets.ray_resources import cluster_resource
        except ImportError as exc:
            raise RayNotInstalledError(f"embedding_backend 'ray' needs dagster-ray ({exc}); install it with {INSTALL_HINT}") from exc
        address = self.resolved_ray_address()
        with dg.build_resources({"ray_cluster": cluster_resource(address)}):
            yield address

    @contextmanager
    def embedder(self) -> Iterator[EmbedderFactory | None]:
        """None in the local mode; in the Ray mode, connected to the cluster for the duration of
        the block (`ray_cluster`), a factory of Ray embedders for `pipeline.embeddings`."""
        if self.embedding_backend == "local":
            yield None
            return
        if self.embedding_backend != "ray":
            raise ValueError(f"DivcoefResource.embedding_backend is {self.embedding_backend!r}; expected one of {', '.join(BACKENDS)}")
        from divcoef_assets.ray_backend import RayOptions, ray_embedder_factory

        factory = ray_embedder_factory(RayOptions(
            workers=self.ray_workers, cpus_per_worker=self.ray_cpus_per_worker, max_retries=self.ray_max_retries,
            gpus_per_worker=None if self.ray_gpus_per_worker < 0 else self.ray_gpus_per_worker,
        ))
        with self.ray_cluster():
            yield factory

    def sampling(self) -> SamplingOptions:
        """How dataset_snapshot reads a source: on the Ray cluster (Ray Data) in the "ray" mode,
        else locally (a process pool for large sources)."""
        if self.embedding_backend == "ray":
            return SamplingOptions(executor="ray", ray_address=self.resolved_ray_address() or None,
                                   ray_stall_s=self.ray_sampling_stall_s if self.ray_sampling_stall_s > 0 else None)
        return SamplingOptions()

    def registry(self) -> Registry:
        return load_registry(self.registry_path or None)

    def layout(self) -> Layout:
        data = self.data_dir or None
        return Layout(paths.artifacts_dir(data), cache_root=paths.cache_dir(self.cache_dir or None, data=data))

    def store(self) -> ResultsStore:
        return ResultsStore(paths.db_path(self.db_path or None, data=self.data_dir or None), lock_timeout_s=self.lock_timeout_s)
