"""Batch embeddings on a Ray cluster: the missing embeddings of a partition fan out to a pool of
Ray actors, and come back, one by one, to the process that caches and records them.

Why actors: loading a probe (and fingerprinting its weights) costs seconds for a GPT-2-sized
model, an embedding seconds to minutes; an actor loads the probe once and then embeds batch after
batch (it gets the next batch as soon as it returns one). Each actor asks Ray for `num_cpus` and,
when the probe runs on a GPU, `num_gpus`, so Ray places at most one probe per GPU.

What travels: a task (`core.audit.EmbeddingTask`: indices, seed, cache key, token batch) goes to
an actor, a `BatchEmbedding` comes back, both through Ray's object store. The seed is the one
`core.audit.embedding_seed` gives locally and the computation is `core.audit.embed_task`, the
function the local path calls, so a batch gives the same embedding here and on the cluster. Each
row records the worker's pid and Ray node id.

Safety: an actor refuses to work when the probe it loads is not the probe the caller keyed the
cache with (another file at the same path on that node) or when its code computes another
estimator (another version installed there): its results would be cached under keys that do not
describe them.

Placement: actors are spread over the cluster's nodes (Ray's SPREAD strategy), so a partition's
batches are embedded on several nodes at once rather than queued on the first that has room.

Faults: when an actor dies (its process killed, its node lost), the batch it was embedding goes
back to the queue and the actors still alive take it; when none is left, a new actor is started
wherever the cluster has room. Up to `max_retries` losses in all; past that the step fails, and
the embeddings that did arrive are already cached, so the next run computes only the rest. Ray's
own restarts are off: the batch would wait for its actor's restart, which on a cluster whose
other actors hold every CPU (or GPU) waits for room that they free only when the step ends.
Nothing here writes a file.

No Dagster imports; Ray is imported only when this path is used (`pip install -e '.[ray]'`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from divcoef_assets.core.audit import EmbeddingTask, embed_task
from divcoef_assets.core.cache import BatchEmbedding
from divcoef_assets.core.config import ProbeConfig

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[ray]' (the ray extra: ray[default] and dagster-ray)"


class RayNotInstalledError(ImportError):
    """The Ray execution mode was chosen on a machine without Ray."""


class ProbeMismatchError(RuntimeError):
    """A Ray worker loaded another probe, or runs another estimator, than the caller keyed the cache with."""


class NoGpuError(RuntimeError):
    """The probe asks for a GPU and the Ray cluster has none."""


def import_ray():
    """The `ray` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(
            f"embedding_backend 'ray' needs Ray, which is not installed in this environment ({exc}); "
            f"install it with {INSTALL_HINT}, or set embedding_backend to 'local'"
        ) from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How the actor pool is sized and placed."""

    workers: int = 0  # actors; 0: as many as the cluster can place, at most one per task
    cpus_per_worker: float = 1.0  # Ray `num_cpus` of each actor (also its torch thread count)
    gpus_per_worker: float | None = None  # Ray `num_gpus`; None: 1 when the probe runs on a GPU, else 0
    max_retries: int = 3  # lost actors (each one's batch is embedded again by another) before the step fails

    def __post_init__(self) -> None:
        if self.workers < 0 or self.cpus_per_worker <= 0 or self.max_retries < 0 or (self.gpus_per_worker or 0) < 0:
            raise ValueError(f"Ray options must be non-negative (and cpus_per_worker positive), got {self}")


def gpus_per_worker(config: ProbeConfig, options: RayOptions, cluster_gpus: float) -> float:
    """GPUs each actor asks for: the explicit option, else 1 for a probe on `cuda`/`cuda:N`, or on
    `auto` when the cluster has GPUs, else 0."""
    if options.gpus_per_worker is not None:
        wanted = options.gpus_per_worker
    elif config.device.startswith("cuda"):
        wanted = 1.0
    else:
        wanted = 1.0 if config.device == "auto" and cluster_gpus >= 1 else 0.0
    if wanted > 0 and cluster_gpus < wanted:
        raise NoGpuError(
            f"probe {config.name!r} (device {config.device!r}) asks each Ray worker for {wanted:g} GPU(s), but the Ray "
            f"cluster has {cluster_gpus:g}; add GPU nodes, or set device: cpu (or the resource's ray_gpus_per_worker: 0)"
        )
    return wanted


def pool_size(options: RayOptions, n_tasks: int, cluster: dict[str, float], gpus: float) -> int:
    """Actors to start: `options.workers`, or what the cluster's GPUs (or CPUs) can hold; never
    more than there are tasks, never fewer than one."""
    if options.workers:
        fits = options.workers
    elif gpus > 0:
        fits = math.floor(cluster.get("GPU", 0.0) / gpus)
    else:
        fits = math.floor(cluster.get("CPU", 1.0) / options.cpus_per_worker)
    return max(1, min(fits, n_tasks))


class EmbeddingWorker:
    """The body of one Ray actor: loads the probe once, then embeds task after task.

    Its arguments are plain values (a `ProbeConfig` whose model is a path or hub id every node can
    load, the probe's identity and the estimator fingerprint the caller computed)."""

    def __init__(self, config: ProbeConfig, identity: str, estimator: str, threads: int):
        import torch

        from divcoef_assets.core.probe import load_probe_for, probe_identity
        from divcoef_assets.core.tokenize import load_tokenizer

        torch.set_num_threads(max(1, threads))
        tokenizer = load_tokenizer(config.tokenizer)
        found = probe_identity(config, tokenizer)
        if found != identity:
            raise ProbeMismatchError(
                f"the Ray worker on node {_node_id()} loads another probe from {config.model!r} (identity {found}) than "
                f"the caller keyed its cache with ({identity}); every node must reach the same weights at that path"
            )
        if config.estimator_fingerprint() != estimator:
            raise ProbeMismatchError(
                f"the Ray worker on node {_node_id()} computes another estimator ({config.estimator_fingerprint()}) than "
                f"the caller ({estimator}); install the same version of divcoef_assets on every node"
            )
        self.config = config
        self.probe = load_probe_for(config, tokenizer)
        self.node_id = _node_id()

    def embed(self, task: EmbeddingTask) -> BatchEmbedding:
        return embed_task(self.probe, self.config, task, node_id=self.node_id)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class RayEmbedder:
    """`core.audit.Embedder` that computes the tasks on the Ray cluster this process is connected
    to (`ray.init`, done by the Dagster resource), yielding each embedding as it arrives. The
    actors live for one call and are killed when it ends, also on error."""

    def __init__(self, config: ProbeConfig, identity: str, options: RayOptions = RayOptions()):
        self.config = config  # model resolved to the path or id the workers load
        self.identity = identity
        self.options = options

    def __call__(self, config: ProbeConfig, tasks: Sequence[EmbeddingTask]) -> Iterator[BatchEmbedding]:
        ray = import_ray()

        if not ray.is_initialized():
            raise RuntimeError("embedding on Ray needs a connection to a Ray cluster (ray.init) in this process")
        if not tasks:
            return
        cluster = ray.cluster_resources()
        gpus = gpus_per_worker(self.config, self.options, cluster.get("GPU", 0.0))
        n = pool_size(self.options, len(tasks), cluster, gpus)
        probe = self.config.replace(device="cuda") if gpus > 0 else self.config.replace(device="cpu")
        actor = ray.remote(EmbeddingWorker).options(
            num_cpus=self.options.cpus_per_worker, num_gpus=gpus, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD",
        )
        threads = max(1, int(self.options.cpus_per_worker))

        def start():
            return actor.remote(probe, self.identity, config.estimator_fingerprint(), threads)

        log.info("embedding %d batch(es) on Ray: %d actor(s), %g CPU and %g GPU each, up to %d lost actors",
                 len(tasks), n, self.options.cpus_per_worker, gpus, self.options.max_retries)
        actors = [start() for _ in range(n)]
        try:
            yield from _dispatch(ray, actors, list(tasks), start, self.options.max_retries)
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)


def _dispatch(ray, actors: list, tasks: list[EmbeddingTask], start, max_losses: int) -> Iterator[BatchEmbedding]:
    """Keep every actor in `actors` busy with one task at a time until every task is done, yielding
    each result as it arrives. A task whose actor died is queued again and the actor dropped (and,
    when none is left, replaced by `start()`, appended to `actors` so the caller kills it too)."""
    from collections import deque

    queue, idle, running, losses = deque(tasks), list(actors), {}, 0
    while queue or running:
        while queue and idle:
            worker, task = idle.pop(), queue.popleft()
            running[worker.embed.remote(task)] = (worker, task)
        (ref,), _ = ray.wait(list(running), num_returns=1)
        worker, task = running.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            if getattr(exc, "actor_init_failed", False):  # the probe check refused: any other actor would too
                raise
            losses += 1
            if losses > max_losses:
                raise RuntimeError(f"{losses} Ray embedding workers were lost (at most {max_losses} allowed, "
                                   f"ray_max_retries); the last one was embedding batch {task.batch_index}: {exc}") from exc
            log.warning("a Ray embedding worker was lost while embedding batch %d (repeat %d); embedding it again (%d of %d losses)",
                        task.batch_index, task.repeat, losses, max_losses)
            ray.kill(worker, no_restart=True)
            actors.remove(worker)
            queue.appendleft(task)
            if not idle and not running:
                actors.append(start())
                idle.append(actors[-1])
            continue
        idle.append(worker)
        yield result


def ray_embedder_factory(options: RayOptions = RayOptions()):
    """A `core.audit.EmbedderFactory` for `pipeline.embeddings`: Ray actors for the given probe."""
    import_ray()

    def factory(config: ProbeConfig, identity: str) -> RayEmbedder:
        return RayEmbedder(config, identity, options)

    return factory


__all__ = [
    "EmbeddingWorker", "NoGpuError", "ProbeMismatchError", "RayEmbedder", "RayNotInstalledError", "RayOptions",
    "gpus_per_worker", "import_ray", "pool_size", "ray_embedder_factory",
]
