"""Deterministic, distinct batches of dataset items for the diversity coefficient.

Batch ``k`` of a dataset is drawn without replacement by a generator seeded with ``(seed, k)``, so
any batch can be recomputed alone, on any machine, and different batches are different draws. (The
paper's official code shuffled every batch with the same seed, so all its "batches" were the same
texts and the coefficient measured estimator noise, not data diversity.)
"""

from __future__ import annotations

import logging
import operator

import numpy as np

logger = logging.getLogger(__name__)

_SEED_MASK_63 = (1 << 63) - 1


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


def sample_batch_indices(
    n_items: int, batch_size: int, n_batches: int, seed: int
) -> list[np.ndarray]:
    """Indices of batches ``0 .. n_batches - 1`` (see ``batch_indices``)."""
    n_batches = operator.index(n_batches)
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    if n_items == batch_size:
        logger.warning(
            "n_items == batch_size == %d: every batch holds the same items (in another order), "
            "so batch-to-batch distances measure estimator noise only",
            batch_size,
        )
    return [batch_indices(n_items, batch_size, k, seed) for k in range(n_batches)]


def batch_seed(seed: int, batch_index: int) -> int:
    """A 63-bit seed for batch ``batch_index``'s own RNG use (e.g. ``torch.Generator``), derived
    with ``np.random.SeedSequence([seed, batch_index])`` so it is the same on every machine."""
    seed = _non_negative("seed", seed)
    batch_index = _non_negative("batch_index", batch_index)
    hi, lo = np.random.SeedSequence([seed, batch_index]).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & _SEED_MASK_63
