"""Deterministic, distinct batches of dataset items for the diversity coefficient.

Batch ``k`` of a dataset is drawn without replacement by a generator seeded with ``(seed, k)``, so
any batch can be recomputed alone, on any machine, and different batches are different draws. (The
paper's official code shuffled every batch with the same seed, so all its "batches" were the same
texts and the coefficient measured estimator noise, not data diversity.)
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import numpy as np

class NotEnoughTextsError(ValueError):
    """A dataset has fewer usable items than one batch needs."""


def _non_negative(name: str, value: int) -> int:
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def batch_indices(n_items: int, batch_size: int, batch_index: int, seed: int) -> np.ndarray:
    """Item indices (int64, ``batch_size`` distinct values in ``range(n_items)``) of batch
    ``batch_index``, drawn by ``np.random.default_rng([seed, batch_index])``."""
    n_items = _non_negative("n_items", n_items)
    batch_index = _non_negative("batch_index", batch_index)
    seed = _non_negative("seed", seed)
    batch_size = operator.index(batch_size)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_items < batch_size:
        raise NotEnoughTextsError(
            f"the dataset has {n_items} usable texts but one batch needs {batch_size}; "
            "add data"
        )
    rng = np.random.default_rng([seed, batch_index])
    return rng.choice(n_items, size=batch_size, replace=False).astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- batches of a sample pool


class PoolTooSmallError(NotEnoughTextsError):
    """A pool snapshot holds fewer documents than the batches need, though the source has more:
    it was drawn for a smaller probe."""


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `weights` (ties go to the earlier one)."""
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    remainders = exact - counts
    order = np.argsort(-remainders, kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def _check_batch_args(batch_size: int, n_batches: int, seed: int) -> None:
    for name, value, low in (("batch_size", batch_size, 1), ("n_batches", n_batches, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _component_rows(name: str, n_rows: int, complete: bool, take: int, start: int, stream: list[int]) -> np.ndarray:
    """Rows (local to a source) of one draw of `take` documents: the pool's slice from `start`.

    Consecutive slices of the pool keep every document in one batch at most. A draw past the end
    of a pool that holds the whole corpus (`complete`: the corpus is smaller than the batches
    need) is drawn with `default_rng(stream)` from every document instead (without repeats inside
    the draw; it may share documents with other batches)."""
    if start + take <= n_rows:
        return np.arange(start, start + take, dtype=np.int64)
    if not complete:
        raise PoolTooSmallError(
            f"{name}: the snapshot holds {n_rows} documents, fewer than these batches need, but the source has more; "
            "materialize dataset_snapshot for this probe again (it grows the pool)"
        )
    if n_rows < take:
        raise NotEnoughTextsError(
            f"{name} has {n_rows} usable documents, but one batch needs {take}. Add documents, or cut long "
            "documents into chunks (a document contributes only its first seq_len tokens); lowering batch_size "
            "would make its coefficient incomparable with the other datasets'"
        )
    return np.random.default_rng(stream).choice(n_rows, size=take, replace=False).astype(np.int64)


def pool_batch_rows(name: str, n_rows: int, complete: bool, batch_size: int, n_batches: int, seed: int) -> list[np.ndarray]:
    """The snapshot rows of each of `n_batches` batches drawn from a pool of `n_rows` documents.

    Batch i is rows [i * batch_size, (i + 1) * batch_size): the pool is in random (key) order, so
    the batches are disjoint uniform samples, and raising `n_batches` keeps the batches there were.
    When the whole corpus (`complete`) is smaller than `n_batches * batch_size`, the batches past
    its end are drawn by `default_rng([seed, i])` from all its documents."""
    _check_batch_args(batch_size, n_batches, seed)
    return [_component_rows(name, n_rows, complete, batch_size, i * batch_size, [seed, i]) for i in range(n_batches)]


def mixture_plan(weights: Mapping[str, float], mode: str, batch_size: int, n_batches: int, seed: int) -> list[list[tuple[str, int]]]:
    """For each batch, (component, documents) in component order.

    - interleave: component k gets its largest-remainder share of `batch_size` in every batch;
    - concat: `default_rng([seed, i])` picks one component for batch i with probability
      proportional to its weight, and the whole batch comes from it."""
    _check_batch_args(batch_size, n_batches, seed)
    if mode not in ("interleave", "concat"):
        raise ValueError(f"mode must be one of interleave, concat, got {mode!r}")
    if not weights:
        raise ValueError("weights must name at least one component")
    names = list(weights)
    values = np.array([float(weights[n]) for n in names])
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"weights must be positive finite numbers, got {dict(weights)}")
    if mode == "interleave":
        counts = _largest_remainder(values, batch_size)
        return [[(n, int(c)) for n, c in zip(names, counts) if c > 0] for _ in range(n_batches)]
    return [[(names[int(np.random.default_rng([seed, i]).choice(len(names), p=values / values.sum()))], batch_size)]
            for i in range(n_batches)]


def mixture_needs(weights: Mapping[str, float], mode: str, batch_size: int, n_batches: int, seed: int) -> dict[str, int]:
    """Documents each component's pool must hold for disjoint batches (0 for an unused component)."""
    needs = {name: 0 for name in weights}
    for batch in mixture_plan(weights, mode, batch_size, n_batches, seed):
        for name, count in batch:
            needs[name] += count
    return needs


def mixture_batch_rows(
    components: Mapping[str, tuple[int, int, bool]], weights: Mapping[str, float], mode: str,
    batch_size: int, n_batches: int, seed: int,
) -> list[np.ndarray]:
    """Snapshot rows of each batch of a mixture. `components` maps each component to (first row,
    rows, complete) in the snapshot; each component's share of batch i is its next slice of pool
    rows (or, for a component whose corpus is too small, a draw with `default_rng([seed, i, k])`),
    and the batch is then shuffled with `default_rng([seed, i])` so components are not in blocks."""
    plan = mixture_plan(weights, mode, batch_size, n_batches, seed)
    taken = {name: 0 for name in weights}
    order = {name: k for k, name in enumerate(weights)}
    batches = []
    for i, batch in enumerate(plan):
        parts = []
        for name, count in batch:
            if name not in components:
                raise ValueError(f"mixture component {name!r} has no rows in the snapshot")
            first, n_rows, complete = components[name]
            local = _component_rows(f"mixture component {name!r}", n_rows, complete, count, taken[name],
                                    [seed, i, order[name]])
            taken[name] += count
            parts.append(first + local)
        batches.append(np.random.default_rng([seed, i]).permutation(np.concatenate(parts)).astype(np.int64))
    return batches
