"""How many threads torch may use for one computation: the cores that are actually free.

torch starts one intra-op thread per core whatever else runs. When several audits (or other jobs)
share a small machine, each then fights the others for the same cores and every embedding gets
several times slower than with fewer threads. So the command line and the Dagster runs size
torch's thread pool once per process, at start:

    threads = max(1, cpu_count - round(1-minute load average)), at most the cores this process may run on

unless `DIVCOEF_TORCH_THREADS` says how many to use. Nothing here imports Dagster; torch is
imported only when the pool is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

THREADS_ENV = "DIVCOEF_TORCH_THREADS"

_configured: int | None = None  # threads set in this process, None until configure_torch_threads ran


def usable_cpus() -> int:
    """Cores this process may run on (its CPU affinity), or all cores where that is unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cpus() -> int:
    """Cores not busy with other work: the core count less the 1-minute load average, at least 1,
    at most `usable_cpus()`."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        load = 0.0
    return max(1, min(usable_cpus(), cores - round(load)))


def torch_threads(environ: Mapping[str, str] | None = None) -> int:
    """`DIVCOEF_TORCH_THREADS` when set (a positive integer), else `free_cpus()`."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(THREADS_ENV, "").strip()
    if not explicit:
        return free_cpus()
    try:
        threads = int(explicit)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_ENV}={explicit!r}: expected a positive whole number of threads")
    return threads


def configure_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (`threads`, else `torch_threads()`) and return it."""
    global _configured
    threads = torch_threads() if threads is None else threads
    import torch

    torch.set_num_threads(threads)
    _configured = threads
    log.debug("torch intra-op threads: %d (usable cores %d)", threads, usable_cpus())
    return threads


def ensure_torch_threads() -> int:
    """`configure_torch_threads()` the first time in this process; afterwards the count already set."""
    return _configured if _configured is not None else configure_torch_threads()
