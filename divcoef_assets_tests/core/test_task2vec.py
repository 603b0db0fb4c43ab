"""Tests of the Task2Vec engine on tiny seeded GPT-2 probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.probe import load_probe
from divcoef_assets.core.task2vec import FisherNotFiniteError, embed_batch, filterwise, finetune_head
from divcoef_assets.core.tokenize import TokenBatch
from divcoef_assets.core.reference import straightforward_embedding
from divcoef_assets_tests.conftest import save_tiny_gpt2
from divcoef_assets_tests.core.draws import SharedDraws

# bfloat16 products keep about 3 significant digits: the prefix sums of their softmax may differ
# from float32's by this much, so a shared draw is checked to that precision only
BF16_CDF_TOL = 1e-2


def _batch(n, T, vocab, eos, seed=0, min_len=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab - 1, size=(n, T))
    lens = rng.integers(min_len, T + 1, size=n)
    mask = (np.arange(T)[None, :] < lens[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, eos).astype(np.int64)
    return TokenBatch(input_ids=ids, attention_mask=mask)


def _block(emb, module):
    """The entries of `module` in an embedding (its layout entry's slice)."""
    (entry,) = [e for e in emb.layout if e.module == module]
    return emb.vector[entry.start : entry.stop]


def _config(folder, **kw):
    base = dict(name="tiny", model=str(folder), init="pretrained", seq_len=32, batch_size=16, n_batches=3, epochs=1)
    base.update(kw)
    return ProbeConfig(**base)


def test_layout_matches_hand_count(tiny_gpt2_dir):
    probe = load_probe(_config(tiny_gpt2_dir))
    emb = embed_batch(probe, _batch(16, 32, 50257, 50256), _config(tiny_gpt2_dir), seed=0)
    V, P, d, L = 50257, 32, 16, 2
    # wte (V rows) + wpe (P) + per layer ln_1, c_attn, c_proj, ln_2, c_fc (d each) and mlp.c_proj (4d)
    # -- HF Conv1D weights are [in, out], so rows are input features -- + ln_f (d)
    assert emb.vector.shape == (V + P + L * 9 * d + d,)
    modules = [e.module for e in emb.layout]
    assert modules[0] == "transformer.wte" and "lm_head" not in modules
    assert _block(emb, "transformer.h.1.mlp.c_proj").shape == (4 * d,)
    assert emb.layout[-1].stop == emb.vector.size
    assert (emb.vector >= 0).all() and np.isfinite(emb.vector).all()


def test_paper_shape_probe_has_51601_entries():
    config = ProbeConfig(
        name="r", model="arch:gpt2", init="random", epochs=0, batch_size=8,
        extra={"config": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128, "vocab_size": 50257}},
    )
    probe = load_probe(config)
    fisher = {n: torch.ones_like(p) for n, p in probe.model.named_parameters()}
    vector, _ = filterwise(probe, fisher)
    assert vector.shape == (51601,)


def test_finetune_changes_only_the_tied_head(tiny_gpt2_dir):
    config = _config(tiny_gpt2_dir, epochs=2)
    probe = load_probe(config)
    before = {n: p.detach().clone() for n, p in probe.model.named_parameters()}
    batch = _batch(16, 32, 50257, 50256)
    ids, mask = torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)
    first, last = finetune_head(probe, ids, mask, config)
    assert np.isfinite(first) and np.isfinite(last)
    changed = {n for n, p in probe.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"transformer.wte.weight"}
    probe.reset()
    assert all(torch.equal(p, before[n]) for n, p in probe.model.named_parameters())


def test_embedding_is_bit_stable_and_seed_dependent(tiny_gpt2_dir):
    config = _config(tiny_gpt2_dir)
    probe = load_probe(config)
    batch = _batch(16, 32, 50257, 50256)
    a = embed_batch(probe, batch, config, seed=7)
    b = embed_batch(load_probe(config), batch, config, seed=7)
    c = embed_batch(probe, batch, config, seed=8)
    assert np.array_equal(a.vector, b.vector)
    assert not np.array_equal(a.vector, c.vector)


@pytest.mark.parametrize("compat", [False, True])
def test_engine_equals_straightforward_implementation(tiny_gpt2_dir, compat, monkeypatch):
    """The engine gives the reference's embedding when both score the same Monte Carlo targets
    (their logits differ in the last bits, which may move a draw to a neighbouring token)."""
    config = _config(tiny_gpt2_dir, epochs=2, reference_compat=compat)
    probe = load_probe(config)
    batch = _batch(12, 32, 50257, 50256, seed=3)
    draws = SharedDraws(monkeypatch)
    ref, _ = straightforward_embedding(
        probe.model, 50256, batch.input_ids, batch.attention_mask, epochs=2, seed=5, reference_compat=compat
    )
    draws.replay()
    ours = embed_batch(probe, batch, config, seed=5).vector
    draws.finish()
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=1e-12)


def test_compat_and_default_differ(tiny_gpt2_dir):
    batch = _batch(12, 32, 50257, 50256, seed=3)
    a = embed_batch(load_probe(_config(tiny_gpt2_dir)), batch, _config(tiny_gpt2_dir), seed=5)
    cfg = _config(tiny_gpt2_dir, reference_compat=True)
    b = embed_batch(load_probe(cfg), batch, cfg, seed=5)
    assert not np.allclose(a.vector, b.vector)


def _exact_fisher(probe, ids, mask, loader):
    """E[(dL/dw)^2] per loader batch = (1/N^2) sum_t sum_y p_t(y) (d log p_t(y)/dw)^2, averaged.

    The gradients of all N x V log-probabilities come from one batched backward pass (over the
    rows of an identity): only possible for a tiny vocabulary.
    """
    model = probe.model
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = 0
    for i in range(0, ids.shape[0], loader):
        x, m = ids[i : i + loader], mask[i : i + loader]
        logp = torch.log_softmax(model(input_ids=x, attention_mask=m).logits[m.bool()], -1)  # [N, V]
        n, V = logp.shape
        p = logp.exp().detach().reshape(-1)
        rows = torch.eye(n * V, dtype=logp.dtype).view(n * V, n, V)
        grads = torch.autograd.grad(logp, list(params.values()), grad_outputs=rows, is_grads_batched=True)
        for (name, _), g in zip(params.items(), grads):
            total[name] += torch.tensordot(p, g * g, dims=1) / (n * n)
        batches += 1
    return {n: v / batches for n, v in total.items()}


@pytest.mark.parametrize(
    "estimator",
    [dict(fisher="mc"), dict(fisher="mc_head_exact"), dict(fisher="mc_head_exact", fisher_squares="sequence")],
    ids=["mc", "mc_head_exact", "mc_head_exact-sequence"],
)
def test_fisher_estimators_converge_to_the_exact_expectation(tmp_path, estimator, one_thread):
    """The mean of K independent runs of S samples each equals the exact Fisher within its own noise.

    Tolerance, from the estimator's variance: the runs are independent, so entry j of their mean
    has standard error se_j = sd_j / sqrt(K), sd_j the spread of the K runs. For an unbiased
    estimator the mean's errors are about normal with those spreads, so their L1 norm
    sum_j |mean_j - exact_j| has expectation sqrt(2/pi) sum_j se_j; the test allows three times
    that. Over 40 repetitions with other seeds the ratio of the two averaged 1.0 with a standard
    deviation of 0.2 (largest 1.7) for each estimator, so the bound is about ten standard
    deviations away. It amounts to an L1 error of 5 to 8% of the exact Fisher's total.
    """
    V, K, S = 13, 8, 24
    folder = save_tiny_gpt2(tmp_path / "m", vocab_size=V, n_embd=8, n_positions=8, dropout=0.0, seed=1)
    base = dict(name="x", model=str(folder), seq_len=8, batch_size=4, epochs=0, loader_batch_size=2)
    batch = _batch(4, 8, V, V - 1, seed=2, min_len=4)
    probe = load_probe(ProbeConfig(**base))
    ids, mask = torch.as_tensor(batch.input_ids.copy()), torch.as_tensor(batch.attention_mask.copy())
    exact = filterwise(probe, _exact_fisher(probe, ids, mask, 2))[0].astype(np.float64)

    config = ProbeConfig(**base, **estimator, fisher_samples=S)
    runs = np.stack([embed_batch(probe, batch, config, seed=k).vector for k in range(K)]).astype(np.float64)
    error = np.abs(runs.mean(0) - exact).sum()
    expected = np.sqrt(2 / np.pi) * (runs.std(0, ddof=1) / np.sqrt(K)).sum()
    assert error < 3 * expected, (error / expected, error / exact.sum())


def test_head_exact_estimator_is_less_noisy_when_most_tokens_are_absent(tmp_path):
    # 200-token vocabulary, one loader batch of 8 x 8 tokens: most embedding rows are absent from
    # the input, which is the regime of GPT-2's 50k rows, where the closed form removes their noise.
    V = 200
    folder = save_tiny_gpt2(tmp_path / "m", vocab_size=V, n_embd=8, n_positions=8, dropout=0.0, seed=1)
    base = dict(name="x", model=str(folder), seq_len=8, batch_size=8, epochs=0, loader_batch_size=8)
    batch = _batch(8, 8, V, V - 1, seed=2, min_len=4)
    probe = load_probe(ProbeConfig(**base))

    def spread(fisher, squares="loader_batch"):
        cfg = ProbeConfig(**base, fisher=fisher, fisher_squares=squares)
        runs = np.stack([embed_batch(probe, batch, cfg, seed=s).vector for s in range(20)])
        centre = runs.mean(0)
        return (np.abs(runs - centre).sum(1) / centre.sum()).mean()

    assert spread("mc_head_exact") < 0.5 * spread("mc")
    assert spread("mc_head_exact", "sequence") < 0.75 * spread("mc_head_exact")


def test_head_exact_rows_absent_from_input_have_no_monte_carlo_noise(tiny_gpt2_dir):
    config = _config(tiny_gpt2_dir, epochs=0, fisher="mc_head_exact")
    probe = load_probe(config.replace(device="cpu"))
    nodrop = probe.model
    for module in nodrop.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = _batch(8, 32, 50257, 50256)
    a = _block(embed_batch(probe, batch, config, seed=1), "transformer.wte")
    b = _block(embed_batch(probe, batch, config, seed=2), "transformer.wte")
    present = np.zeros(50257, dtype=bool)
    present[np.unique(batch.input_ids)] = True
    np.testing.assert_allclose(a[~present], b[~present], rtol=1e-5)
    assert not np.allclose(a[present], b[present], rtol=1e-5)


def test_poisoned_weight_is_detected(tiny_gpt2_dir):
    config = _config(tiny_gpt2_dir, epochs=0)
    probe = load_probe(config)
    with torch.no_grad():
        probe.model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    probe._initial = {n: t.detach().clone() for n, t in probe.model.state_dict().items()}
    with pytest.raises(FisherNotFiniteError, match="transformer"):
        embed_batch(probe, _batch(8, 32, 50257, 50256), config, seed=0)



@pytest.mark.parametrize(
    "settings",
    [dict(fisher="mc"), dict(fisher="mc", reference_compat=True), dict(fisher="mc_head_exact"), dict(fisher="mc", fisher_samples=3)],
)
def test_fused_output_layer_equals_the_unfused_path(tiny_gpt2_dir, settings, monkeypatch):
    """The chunked output layer (core.fused) and plain F.linear + F.cross_entropy give one embedding."""
    import divcoef_assets.core.task2vec as t2v

    config = _config(tiny_gpt2_dir, epochs=2, **settings)
    batch = _batch(12, 32, 50257, 50256, seed=4)
    draws = SharedDraws(monkeypatch)  # both paths score the same targets (see draws.py)
    fused = embed_batch(load_probe(config), batch, config, seed=3)
    draws.replay()
    monkeypatch.setattr(t2v, "_fused_head", lambda probe: False)
    plain = embed_batch(load_probe(config), batch, config, seed=3)
    draws.finish()
    np.testing.assert_allclose(fused.vector, plain.vector, rtol=1e-4, atol=1e-12)
    assert fused.finetune_loss_last == pytest.approx(plain.finetune_loss_last, rel=1e-5)
    assert fused.fisher_loss == pytest.approx(plain.fisher_loss, rel=1e-5)


def test_cached_body_finetune_is_head_only_training_on_the_initial_features(tiny_gpt2_dir):
    """finetune='cached_body' equals AdamW on an untied copy of the head over fixed body features."""
    config = _config(tiny_gpt2_dir, epochs=3, finetune="cached_body", lr=1e-2, loader_batch_size=4)
    probe = load_probe(config)
    probe.model.eval()  # no dropout, so the reference's features are the engine's
    batch = _batch(10, 32, 50257, 50256, seed=6)
    ids, mask = torch.as_tensor(batch.input_ids.copy()), torch.as_tensor(batch.attention_mask.copy())
    before = {n: p.detach().clone() for n, p in probe.model.named_parameters()}

    weight = probe.head.weight.detach().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([weight], lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, fused=True)
    steps = []
    with torch.no_grad():
        for i in range(0, 10, 4):
            x, m = ids[i : i + 4], mask[i : i + 4]
            hidden = probe.body(input_ids=x, attention_mask=m).last_hidden_state[:, :-1][m[:, 1:].bool()]
            steps.append((hidden, x[:, 1:][m[:, 1:].bool()]))
    for _ in range(config.epochs):
        for hidden, targets in steps:
            loss = F.cross_entropy(F.linear(hidden, weight), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    finetune_head(probe, ids, mask, config)
    torch.testing.assert_close(probe.head.weight.detach(), weight.detach(), rtol=1e-4, atol=1e-5)
    changed = {n for n, p in probe.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"transformer.wte.weight"}

    probe.reset()
    finetune_head(probe, ids, mask, config.replace(finetune="full"))
    assert not torch.allclose(probe.head.weight.detach(), weight.detach(), rtol=1e-4, atol=1e-5)


def test_bfloat16_embedding_is_closer_to_float32_than_another_seed(tiny_gpt2_dir, monkeypatch):
    """With the same targets, bfloat16 moves the embedding far less than the Monte Carlo draws of another seed."""
    from divcoef_assets.core.distance import pdist

    batch = _batch(12, 32, 50257, 50256, seed=4)

    def embed(precision, seed):
        config = _config(tiny_gpt2_dir, epochs=2, fisher="mc_head_exact", fisher_squares="sequence", precision=precision)
        return embed_batch(load_probe(config), batch, config, seed=seed).vector

    other_seed = embed("fp32", 4)
    draws = SharedDraws(monkeypatch, tol=BF16_CDF_TOL)
    full = embed("fp32", 3)
    draws.replay()
    low = embed("bf16", 3)
    draws.finish()
    d = pdist(np.stack([full, low, other_seed]))
    assert 0 < d[0, 1] < d[0, 2] / 100, d  # measured: 1 / 15000


def test_bfloat16_runs_on_the_unfused_path(tiny_gpt2_dir, monkeypatch):
    import divcoef_assets.core.task2vec as t2v

    config = _config(tiny_gpt2_dir, epochs=1, precision="bf16")
    batch = _batch(8, 32, 50257, 50256, seed=4)
    draws = SharedDraws(monkeypatch, tol=BF16_CDF_TOL)
    fused = embed_batch(load_probe(config), batch, config, seed=3).vector
    draws.replay()
    monkeypatch.setattr(t2v, "_fused_head", lambda probe: False)
    plain = embed_batch(load_probe(config), batch, config, seed=3).vector
    draws.finish()
    assert np.isfinite(plain).all() and (plain >= 0).all()
    assert np.abs(plain - fused).sum() / np.abs(fused).sum() < 0.02  # 0.003 measured: bfloat16 rounding only


def test_cached_body_needs_a_linear_head_over_the_body(tiny_gpt2_dir, monkeypatch):
    import divcoef_assets.core.task2vec as t2v

    config = _config(tiny_gpt2_dir, finetune="cached_body")
    monkeypatch.setattr(t2v, "_fused_head", lambda probe: False)
    with pytest.raises(ValueError, match="cached_body.*use finetune 'full'"):
        embed_batch(load_probe(config), _batch(8, 32, 50257, 50256), config, seed=0)


def test_less_work_options_are_validated_and_fingerprinted(tiny_gpt2_dir):
    base = _config(tiny_gpt2_dir)
    assert base.fingerprint() == base.replace(finetune="full", precision="fp32").fingerprint()
    assert "finetune" not in base.numeric_fields() and "precision" not in base.numeric_fields()
    prints = {base.fingerprint(), base.replace(finetune="cached_body").fingerprint(), base.replace(precision="bf16").fingerprint()}
    assert len(prints) == 3
    with pytest.raises(ValueError, match="finetune must be one of"):
        base.replace(finetune="frozen")
    with pytest.raises(ValueError, match="precision must be one of"):
        base.replace(precision="fp16")
    with pytest.raises(ValueError, match="reference_compat reproduces the official code"):
        base.replace(reference_compat=True, precision="bf16")
