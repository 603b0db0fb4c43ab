"""Baseline diversity measures: known values on constructed texts."""

import numpy as np
import pytest

from divcoef_assets.core import baselines


def test_repetition_lowers_every_measure():
    varied = [f"word{i} other{i * 7} thing{i * 13} more{i}" for i in range(40)]
    repeated = ["the same four words"] * 40
    a, b = baselines.all_baselines(varied), baselines.all_baselines(repeated)
    assert all(a[k] > b[k] for k in a), (a, b)


def test_distinct_n_and_entropy_by_hand():
    texts = ["a b a b", "a c"]
    assert baselines.distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert baselines.distinct_n(texts, 2) == pytest.approx(3 / 4)  # ab, ba, ab | ac
    p = np.array([3, 2, 1]) / 6
    assert baselines.unigram_entropy(texts) == pytest.approx(-(p * np.log2(p)).sum())


def test_vendi_counts_effective_distinct_documents():
    assert baselines.vendi_score(np.eye(5)) == pytest.approx(5)
    assert baselines.vendi_score(np.ones((5, 5))) == pytest.approx(1)
    two_groups = ["red apple"] * 3 + ["blue sky"] * 3
    assert baselines.vendi_tfidf(two_groups) == pytest.approx(2, rel=1e-6)
