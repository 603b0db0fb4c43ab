"""Tests for divcoef_assets.core.sampling: deterministic, distinct, duplicate-free batches."""

from __future__ import annotations

import numpy as np
import pytest

from divcoef_assets.core.sampling import (
    NotEnoughTextsError,
    batch_indices,
    batch_seed,
    sample_batch_indices,
)


def test_batch_is_reproducible_and_in_range() -> None:
    a = batch_indices(1000, 64, 3, seed=7)
    b = batch_indices(1000, 64, 3, seed=7)
    assert a.dtype == np.int64 and a.shape == (64,)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, np.random.default_rng([7, 3]).choice(1000, 64, replace=False))


def test_batches_differ_across_index_and_seed_without_duplicates() -> None:
    batches = sample_batch_indices(500, 50, 20, seed=0)
    assert len(batches) == 20
    for batch in batches:
        assert np.unique(batch).size == 50
    as_sets = {frozenset(b.tolist()) for b in batches}
    assert len(as_sets) == 20
    assert set(batch_indices(500, 50, 0, seed=1).tolist()) != set(batches[0].tolist())


def test_batch_can_be_recomputed_alone() -> None:
    batches = sample_batch_indices(300, 10, 5, seed=11)
    np.testing.assert_array_equal(batches[4], batch_indices(300, 10, 4, seed=11))


def test_too_few_texts_says_what_to_do() -> None:
    expected = r"has 10 usable texts.*needs 11.*lower batch_size"
    with pytest.raises(NotEnoughTextsError, match=expected):
        batch_indices(10, 11, 0, seed=0)
    assert issubclass(NotEnoughTextsError, ValueError)


@pytest.mark.parametrize(
    ("n_items", "batch_size", "batch_index", "match"),
    [(10, 0, 0, "batch_size"), (-1, 1, 0, "n_items"), (10, 2, -1, "batch_index")],
)
def test_invalid_arguments(n_items: int, batch_size: int, batch_index: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        batch_indices(n_items, batch_size, batch_index, seed=0)


def test_full_dataset_batches_warn(caplog) -> None:
    with caplog.at_level("WARNING"):
        sample_batch_indices(8, 8, 2, seed=0)
    assert "same items" in caplog.text
    with pytest.raises(ValueError, match="n_batches"):
        sample_batch_indices(8, 4, 0, seed=0)


def test_batch_seed_is_stable_63_bit_and_distinct() -> None:
    seeds = [batch_seed(0, k) for k in range(100)]
    assert len(set(seeds)) == 100
    assert all(0 <= s < 2**63 for s in seeds)
    hi, lo = np.random.SeedSequence([0, 0]).generate_state(2, dtype=np.uint32)
    assert seeds[0] == ((int(hi) << 32) | int(lo)) & (2**63 - 1)
    assert batch_seed(1, 0) != seeds[0]
    with pytest.raises(ValueError, match="seed"):
        batch_seed(-1, 0)
