"""Tests for divcoef_assets.core.synthetic: bounds and GINC corpora, deterministic and ordered."""

from __future__ import annotations

import numpy as np
import pytest

from divcoef_assets.core.synthetic import (
    default_token_ids,
    ginc_model,
    ginc_tokens,
    lower_bound_tokens,
    upper_bound_tokens,
)


def mean_js_distance(tokens: np.ndarray, vocab_size: int) -> float:
    """Mean Jensen-Shannon distance (natural log) between per-sequence unigram histograms."""
    hist = np.stack([np.bincount(row, minlength=vocab_size) for row in tokens]).astype(float)
    p = hist / hist.sum(axis=1, keepdims=True)
    a, b = p[:, None, :], p[None, :, :]
    m = (a + b) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_a = np.where(a > 0, a * np.log(a / m), 0.0).sum(-1)
        kl_b = np.where(b > 0, b * np.log(b / m), 0.0).sum(-1)
    js = np.sqrt(np.clip((kl_a + kl_b) / 2, 0, None))
    return float(js[np.triu_indices(len(tokens), k=1)].mean())


def test_lower_bound_is_one_token_plus_rare_eos() -> None:
    x = lower_bound_tokens(200, 128, vocab_size=10, eos_id=3, seed=1)
    assert x.dtype == np.int64 and x.shape == (200, 128)
    values, counts = np.unique(x, return_counts=True)
    assert values.size == 2 and 3 in values
    eos_rate = counts[values == 3][0] / x.size
    assert abs(eos_rate - 0.1) < 0.01
    np.testing.assert_array_equal(x, lower_bound_tokens(200, 128, vocab_size=10, eos_id=3, seed=1))


def test_lower_bound_token_is_chosen_once_per_dataset_from_seed() -> None:
    datasets = [lower_bound_tokens(4, 64, vocab_size=50257, eos_id=50256, seed=s) for s in range(10)]
    tokens = {int(np.setdiff1d(x, [50256])[0]) for x in datasets}
    assert len(tokens) > 1 and all(0 <= t < 50256 for t in tokens)


def test_upper_bound_is_uniform_without_eos() -> None:
    x = upper_bound_tokens(100, 128, vocab_size=20, eos_id=0, seed=2)
    assert x.dtype == np.int64 and x.shape == (100, 128)
    assert x.min() == 1 and x.max() == 19
    counts = np.bincount(x.ravel(), minlength=20)[1:]
    assert counts.min() > 0.8 * x.size / 19
    np.testing.assert_array_equal(x, upper_bound_tokens(100, 128, vocab_size=20, eos_id=0, seed=2))
    assert not np.array_equal(x, upper_bound_tokens(100, 128, vocab_size=20, eos_id=0, seed=3))


def test_lower_bound_is_least_diverse_by_histogram_statistic() -> None:
    low = mean_js_distance(lower_bound_tokens(60, 128, vocab_size=50, eos_id=49, seed=0), 50)
    high = mean_js_distance(upper_bound_tokens(60, 128, vocab_size=50, eos_id=49, seed=0), 50)
    ginc = mean_js_distance(ginc_tokens(60, 128, n_concepts=8, vocab_size=50, seed=0), 50)
    # Only the lower bound is ordered by this proxy: uniform sequences all share one histogram, so
    # their distance is sampling noise, which peaky GINC emissions exceed.
    assert low < 0.1 < high and low < 0.1 < ginc


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab_size": 1, "eos_id": 0}, "vocab_size"),
        ({"vocab_size": 10, "eos_id": 10}, "eos_id"),
        ({"vocab_size": 10, "eos_id": 0, "seed": -1}, "seed"),
    ],
)
def test_bound_arguments_are_validated(kwargs: dict, match: str) -> None:
    kwargs = {"seed": 0, **kwargs}
    for fn in (lower_bound_tokens, upper_bound_tokens):
        with pytest.raises(ValueError, match=match):
            fn(2, 8, **kwargs)
    with pytest.raises(ValueError, match="seq_len"):
        lower_bound_tokens(2, 1, vocab_size=10, eos_id=0, seed=0)


def test_ginc_shapes_ranges_and_determinism() -> None:
    x = ginc_tokens(30, 64, n_concepts=4, vocab_size=50, seed=5)
    assert x.dtype == np.int64 and x.shape == (30, 64)
    assert x.min() >= 0 and x.max() < 50
    np.testing.assert_array_equal(x, ginc_tokens(30, 64, n_concepts=4, vocab_size=50, seed=5))


def test_ginc_doc_seed_keeps_model_and_changes_samples() -> None:
    base = ginc_tokens(30, 64, n_concepts=4, vocab_size=50, seed=5)
    np.testing.assert_array_equal(
        base, ginc_tokens(30, 64, n_concepts=4, vocab_size=50, seed=5, doc_seed=5)
    )
    other_docs = ginc_tokens(30, 64, n_concepts=4, vocab_size=50, seed=5, doc_seed=6)
    assert not np.array_equal(base, other_docs)
    # Same documents seed, different HMMs: different corpus too.
    assert not np.array_equal(
        base, ginc_tokens(30, 64, n_concepts=4, vocab_size=50, seed=6, doc_seed=5)
    )


def test_ginc_model_is_a_valid_nested_mixture() -> None:
    small = ginc_model(n_concepts=2, vocab_size=30, seed=1, n_states=6)
    big = ginc_model(n_concepts=5, vocab_size=30, seed=1, n_states=6)
    assert (big.n_concepts, big.n_states, big.vocab_size) == (5, 6, 30)
    for probs in (big.start, big.transition, big.emission):
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
        assert (probs >= 0).all()
    np.testing.assert_array_equal(small.transition, big.transition[:2])
    np.testing.assert_array_equal(small.emission, big.emission)


def test_ginc_diversity_grows_with_concepts() -> None:
    one = ginc_tokens(80, 128, n_concepts=1, vocab_size=50, seed=0)
    many = ginc_tokens(80, 128, n_concepts=32, vocab_size=50, seed=0)
    assert mean_js_distance(one, 50) + 0.05 < mean_js_distance(many, 50)


def test_ginc_more_vocabulary_more_distinct_tokens() -> None:
    distinct = [
        np.unique(ginc_tokens(100, 128, n_concepts=8, vocab_size=v, seed=0)).size
        for v in (50, 150, 1000)
    ]
    assert distinct[0] < distinct[1] < distinct[2]


def test_ginc_token_ids_map_symbols() -> None:
    ids = default_token_ids(40, tokenizer_vocab_size=50257, eos_id=50256, seed=3)
    assert ids.dtype == np.int64 and np.unique(ids).size == 40
    assert 50256 not in ids and ids.min() >= 0 and ids.max() < 50257
    np.testing.assert_array_equal(
        ids, default_token_ids(40, tokenizer_vocab_size=50257, eos_id=50256, seed=3)
    )
    symbols = ginc_tokens(10, 32, n_concepts=2, vocab_size=40, seed=0)
    mapped = ginc_tokens(10, 32, n_concepts=2, vocab_size=40, seed=0, token_ids=ids)
    np.testing.assert_array_equal(mapped, ids[symbols])


def test_default_token_ids_excludes_eos_even_when_tight() -> None:
    ids = default_token_ids(9, tokenizer_vocab_size=10, eos_id=4, seed=0)
    assert sorted(ids.tolist()) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="cannot pick 10"):
        default_token_ids(10, tokenizer_vocab_size=10, eos_id=4, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_concepts": 0}, ValueError, "n_concepts"),
        ({"vocab_size": 1}, ValueError, "vocab_size"),
        ({"n_states": 0}, ValueError, "n_states"),
        ({"transition_concentration": 0.0}, ValueError, "transition_concentration"),
        ({"token_ids": [1, 2, 3]}, ValueError, "token_ids"),
        ({"token_ids": [1] * 10}, ValueError, "distinct"),
        ({"doc_seed": -2}, ValueError, "doc_seed"),
        ({"n_concepts": 2.5}, TypeError, "n_concepts"),
    ],
)
def test_ginc_arguments_are_validated(kwargs: dict, error: type, match: str) -> None:
    args = {"n_concepts": 2, "vocab_size": 10, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        ginc_tokens(4, 16, **args)
