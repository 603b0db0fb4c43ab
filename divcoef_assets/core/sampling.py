"""Deterministic, distinct batches of dataset items for the diversity coefficient.

Batch ``k`` of a dataset is drawn without replacement by a generator seeded with ``(seed, k)``, so
any batch can be recomputed alone, on any machine, and different batches are different draws. (The
paper's official code shuffled every batch with the same seed, so all its "batches" were the same
texts and the coefficient measured estimator noise, not data diversity.)
"""

from __future__ import annotations

import operator

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
            "lower batch_size or add data"
        )
    rng = np.random.default_rng([seed, batch_index])
    return rng.choice(n_items, size=batch_size, replace=False).astype(np.int64, copy=False)
