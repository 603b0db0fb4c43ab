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


def test_batch_baselines_rank_repeated_batches_below_varied_ones():
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(300)]
    varied = [[" ".join(rng.choice(vocabulary, size=12)) for _ in range(16)] for _ in range(5)]
    repeated = [[" ".join(rng.choice(vocabulary[:20], size=12))] * 16 for _ in range(5)]
    a = {b.metric: b for b in baselines.batch_baselines(varied)}
    b = {b.metric: b for b in baselines.batch_baselines(repeated)}
    assert set(a) == set(baselines.TEXT_METRICS)
    for metric in ("distinct_1", "distinct_2", "distinct_4", "guiraud_r", "vendi_tfidf", "compression_ratio"):
        assert a[metric].ci_low > b[metric].ci_high, (metric, a[metric], b[metric])
    assert b["vendi_tfidf"].value == pytest.approx(1.0, abs=1e-6)  # 16 copies of one document: one document
    assert a["distinct_1"].n_batches == 5 and a["distinct_1"].ci_low < a["distinct_1"].value < a["distinct_1"].ci_high


def test_vendi_of_embeddings_counts_distinct_directions():
    assert baselines.vendi_embeddings(np.eye(4)) == pytest.approx(4)
    assert baselines.vendi_embeddings(np.ones((6, 3)) * np.arange(1, 7)[:, None]) == pytest.approx(1)
    assert baselines.vendi_tfidf(["", "", ""]) == 1.0
