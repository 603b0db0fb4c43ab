"""How many threads torch may use for one computation: the cores that are actually free.

torch starts one intra-op thread per core whatever else runs. When several audits (or other jobs)
share a small machine, each then fights the others for the same cores and every embedding gets
several times slower than with fewer threads. So the command line and the Dagster runs size
torch's thread pool once per process, at start:

    threads = max(1, cpu_count - cores busy right now), at most the cores this process may run on

"Busy right now" is measured over a fraction of a second from /proc/stat (where there is one),
not from the load average: the load average decays over minutes, so right after the set-up's
package installs, or with this very process counted, it would leave a lone audit one thread.

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


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot, from /proc/stat; None where unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cpus(interval_s: float = 0.3) -> float:
    """Cores busy with other work right now: the busy share of all cores over `interval_s`
    (/proc/stat), or the 1-minute load average where there is no /proc/stat."""
    import time

    cores = os.cpu_count() or 1
    first = _cpu_times()
    if first is None:
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            return 0.0
    time.sleep(interval_s)
    second = _cpu_times()
    busy, total = second[0] - first[0], second[1] - first[1]
    return cores * busy / total if total > 0 else 0.0


def free_cpus() -> int:
    """Cores not busy with other work right now, at least 1, at most `usable_cpus()`."""
    cores = os.cpu_count() or 1
    return max(1, min(usable_cpus(), cores - round(busy_cpus())))


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
