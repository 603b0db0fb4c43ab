"""End-to-end tests of the Python API on tiny seeded probes (no Dagster)."""

from __future__ import annotations

import numpy as np
import pytest

from divcoef_assets.api import cross_diversity_coefficient, diversity_coefficient
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.sampling import NotEnoughTextsError
from divcoef_assets.core.synthetic import lower_bound_tokens, upper_bound_tokens


def _probe(folder, **kw):
    base = dict(name="tiny", model=str(folder), seq_len=16, batch_size=8, n_batches=4, epochs=1, noise_repeats=2, noise_batches=1)
    base.update(kw)
    return ProbeConfig(**base)


def _texts(n, seed, words):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=rng.integers(5, 20))) for _ in range(n)]


WORDS_A = ["the", "lord", "said", "unto", "moses", "and", "israel", "people", "land", "god"]
WORDS_B = ["kernel", "hack", "bug", "compiler", "byte", "unix", "daemon", "lisp", "foo", "bar", "cruft", "grok"]


def test_lower_bound_scores_below_upper_bound(tiny_gpt2_dir, tmp_path):
    config = _probe(tiny_gpt2_dir, n_batches=4)
    low = diversity_coefficient(tokens=lower_bound_tokens(64, 16, vocab_size=50257, eos_id=50256, seed=0), probe=config, cache_dir=tmp_path)
    high = diversity_coefficient(tokens=upper_bound_tokens(64, 16, vocab_size=50257, eos_id=50256, seed=0), probe=config, cache_dir=tmp_path)
    assert 0 <= low.value < high.value <= 1
    assert low.estimate.n_batches == 4 and low.estimate.n_pairs == 6


def test_result_has_interval_noise_and_provenance(tiny_gpt2_dir, tmp_path):
    config = _probe(tiny_gpt2_dir)
    result = diversity_coefficient(_texts(40, 0, WORDS_A), probe=config, cache_dir=tmp_path)
    est = result.estimate
    assert est.ci_low <= result.value <= est.ci_high
    assert result.noise is not None and result.noise.value >= 0
    assert result.noise_corrected == pytest.approx(result.value - result.noise.value)
    assert result.matrix.shape == (4, 4)
    record = result.to_dict()
    from divcoef_assets.core.probe import probe_identity
    from divcoef_assets.core.tokenize import load_tokenizer
    from divcoef_assets.pipeline import measurement_fingerprint

    # the probe as measured (settings and weights), as the DuckDB rows record it
    assert record["probe_fingerprint"] == measurement_fingerprint(config, probe_identity(config, load_tokenizer(config.tokenizer)))
    assert record["distance"] == "task2vec_cosine"
    assert result.n_computed == 5  # 4 batches + 1 noise repeat


def test_cache_computes_nothing_twice_and_only_new_batches(tiny_gpt2_dir, tmp_path):
    config = _probe(tiny_gpt2_dir)
    texts = _texts(40, 1, WORDS_A)
    first = diversity_coefficient(texts, probe=config, cache_dir=tmp_path)
    again = diversity_coefficient(texts, probe=config, cache_dir=tmp_path)
    assert again.n_computed == 0 and again.value == first.value
    more = diversity_coefficient(texts, probe=config.replace(n_batches=6), cache_dir=tmp_path)
    assert more.n_computed == 2
    np.testing.assert_allclose(more.matrix[:4, :4], first.matrix, rtol=1e-12)


def test_cross_diversity_exceeds_each_side(tiny_gpt2_dir, tmp_path):
    config = _probe(tiny_gpt2_dir, epochs=2)
    cross, a, b = cross_diversity_coefficient(_texts(40, 2, WORDS_A), _texts(40, 3, WORDS_B), probe=config, cache_dir=tmp_path)
    assert cross.matrix.shape == (4, 4)
    assert cross.value > max(a.value, b.value)


def test_too_few_texts_is_a_clear_error(tiny_gpt2_dir, tmp_path):
    with pytest.raises(NotEnoughTextsError, match="has 1 usable documents, but one batch needs 8. Add documents"):
        diversity_coefficient(["one text", "  ", ""], probe=_probe(tiny_gpt2_dir), cache_dir=tmp_path)


def test_sequential_stopping_adds_batches_until_the_interval_is_narrow(tiny_gpt2_dir, tmp_path):
    texts = _texts(60, 4, WORDS_A)
    wide = _probe(tiny_gpt2_dir, n_batches=8, min_batches=3, target_half_width=1.0, noise_repeats=0)
    stopped = diversity_coefficient(texts, probe=wide, cache_dir=tmp_path)
    assert stopped.estimate.n_batches == 3  # any interval is narrower than 1.0
    tight = wide.replace(target_half_width=1e-9)
    full = diversity_coefficient(texts, probe=tight, cache_dir=tmp_path)
    assert full.estimate.n_batches == 8 and full.n_computed == 5  # the first 3 came from the cache
    middle = (full.estimate.ci_high - full.estimate.ci_low) / 2
    target = wide.replace(target_half_width=middle * 1.5)
    some = diversity_coefficient(texts, probe=target, cache_dir=tmp_path)
    assert 3 <= some.estimate.n_batches <= 8 and some.n_computed == 0
    assert (some.estimate.ci_high - some.estimate.ci_low) / 2 <= target.target_half_width or some.estimate.n_batches == 8

