"""Tests for divcoef_assets.core.sampling: deterministic, distinct, duplicate-free batches."""

from __future__ import annotations

import numpy as np
import pytest

from divcoef_assets.core.sampling import NotEnoughTextsError, batch_indices


def test_batch_is_reproducible_and_in_range() -> None:
    a = batch_indices(1000, 64, 3, seed=7)
    b = batch_indices(1000, 64, 3, seed=7)
    assert a.dtype == np.int64 and a.shape == (64,)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, np.random.default_rng([7, 3]).choice(1000, 64, replace=False))


def test_batches_differ_across_index_and_seed_without_duplicates() -> None:
    batches = [batch_indices(500, 50, k, seed=0) for k in range(20)]
    for batch in batches:
        assert np.unique(batch).size == 50
    as_sets = {frozenset(b.tolist()) for b in batches}
    assert len(as_sets) == 20
    assert set(batch_indices(500, 50, 0, seed=1).tolist()) != set(batches[0].tolist())


def test_too_few_texts_says_what_to_do() -> None:
    expected = r"has 10 usable texts.*needs 11.*add data"
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
