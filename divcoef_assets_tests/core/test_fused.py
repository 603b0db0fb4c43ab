"""The fused output layer + cross-entropy against `F.linear` + `F.cross_entropy` and `_sample`.

Sampled variants score the draws of `_sample` (shared through `draws.SharedDraws`, which checks
that each is a draw of the fused path's own softmax): chunked logits may differ in the last bits
and move a draw to a neighbouring token.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from divcoef_assets.core import fused
from divcoef_assets.core.task2vec import _sample
from divcoef_assets_tests.core.draws import SharedDraws


def _close(a, b, rtol=1e-5, atol=1e-7):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("rows", [None, 1, 7, 64, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_loss_and_gradients_equal_autograd(rows, with_bias):
    g = torch.Generator().manual_seed(0)
    N, d, V = 300, 16, 1000
    h = torch.randn(N, d, generator=g, dtype=torch.float64).float().requires_grad_(True)
    w = (0.5 * torch.randn(V, d, generator=g)).requires_grad_(True)
    b = torch.randn(V, generator=g).requires_grad_(True) if with_bias else None
    targets = torch.randint(0, V, (N,), generator=g)
    targets[::7] = -100
    inputs = [h, w] + ([b] if with_bias else [])

    ref = F.cross_entropy(F.linear(h, w, b), targets, ignore_index=-100)
    ref_grads = torch.autograd.grad(ref * 3.0, inputs)
    out = fused.linear_cross_entropy(h, w, b, targets, rows_per_chunk=rows)
    out_grads = torch.autograd.grad(out * 3.0, inputs)  # a non-unit incoming gradient is applied
    _close(out, ref)
    for got, want in zip(out_grads, ref_grads):
        _close(got, want, atol=1e-7)


def test_other_ignore_index_and_all_ignored_rows():
    h = torch.randn(10, 4, requires_grad=True)
    w = torch.randn(6, 4, requires_grad=True)
    t = torch.tensor([0, 5, 5, 2, 1, 5, 3, 4, 5, 0])
    ref = F.cross_entropy(F.linear(h, w), t, ignore_index=5)
    _close(fused.linear_cross_entropy(h, w, None, t, ignore_index=5), ref)
    none_scored = fused.linear_cross_entropy(h, w, None, torch.full((10,), -100))
    assert torch.isnan(none_scored) and torch.isnan(F.cross_entropy(F.linear(h, w), torch.full((10,), -100)))


def test_tied_weight_gets_both_gradient_paths():
    """A weight used as input embedding and output layer: grad = lookup path + output path."""
    torch.manual_seed(1)
    V, d, T = 50, 8, 12
    emb = torch.randn(V, d, requires_grad=True)
    mix = torch.randn(d, d)
    ids = torch.randint(0, V, (3, T))
    targets = torch.randint(0, V, (3 * T,))
    targets[5] = -100

    def loss_with(head):
        hidden = torch.tanh(F.embedding(ids, emb) @ mix).reshape(-1, d)
        return head(hidden, emb)

    ref = loss_with(lambda hid, w: F.cross_entropy(F.linear(hid, w), targets))
    (g_ref,) = torch.autograd.grad(ref, [emb])
    out = loss_with(lambda hid, w: fused.linear_cross_entropy(hid, w, None, targets, rows_per_chunk=5))
    (g_out,) = torch.autograd.grad(out, [emb])
    _close(out, ref)
    _close(g_out, g_ref, atol=1e-7)


def test_large_logit_gaps_give_finite_exact_loss():
    """-log p underflows for a target 200 nats below the best logit; the loss must still be exact."""
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    w = torch.tensor([[100.0, 0.0], [-100.0, 0.0], [0.0, 1.0]], requires_grad=True)
    t = torch.tensor([1, 2])
    ref = F.cross_entropy(F.linear(h, w), t)
    out = fused.linear_cross_entropy(h, w, None, t)
    assert torch.isfinite(out)
    _close(out, ref)
    for got, want in zip(torch.autograd.grad(out, [h, w]), torch.autograd.grad(ref, [h, w])):
        _close(got, want, atol=1e-5)  # terms of size 20 cancel: float rounding of that size


@pytest.mark.parametrize("V", [13, 50257])
def test_inverse_cdf_draws_equal_task2vec_sample(V):
    logits = 4 * torch.randn(300, V, generator=torch.Generator().manual_seed(2))
    want = _sample(logits, torch.Generator().manual_seed(3))
    u = torch.rand((300, 1), generator=torch.Generator().manual_seed(3))
    got = fused.sample_inverse_cdf(torch.softmax(logits, dim=-1), u)
    assert torch.equal(got, want)


def test_sampled_loss_equals_cross_entropy_of_the_draws(monkeypatch):
    g = torch.Generator().manual_seed(4)
    N, d, V = 200, 8, 500
    h = torch.randn(N, d, generator=g, requires_grad=True)
    w = torch.randn(V, d, generator=g, requires_grad=True)
    logits = F.linear(h, w)
    shared = SharedDraws(monkeypatch)  # chunked logits differ in the last bits: share the draws
    draws = _sample(logits, torch.Generator().manual_seed(9))
    ref = F.cross_entropy(logits, draws)
    ref_grads = torch.autograd.grad(ref, [h, w])
    u = torch.rand((N, 1), generator=torch.Generator().manual_seed(9))
    shared.replay()
    out, targets, exact = fused.linear_sampled_cross_entropy(h, w, None, u, rows_per_chunk=33, exact_head=True)
    shared.finish()
    assert torch.equal(targets, draws)
    _close(out, ref)
    for got, want in zip(torch.autograd.grad(out, [h, w]), ref_grads):
        _close(got, want)
    p = torch.softmax(logits.detach(), dim=-1)
    _close(exact, (p * (1 - p)).T @ h.detach() ** 2, rtol=1e-5, atol=1e-6)


def test_sampled_next_token_pairing_reproduces_the_reference_rule(monkeypatch):
    """seq_len mode: row t is scored against the draw of row t + 1, last rows and eos draws ignored."""
    g = torch.Generator().manual_seed(5)
    B, T, d, V, eos = 3, 16, 8, 7, 6
    h = torch.randn(B * T, d, generator=g, requires_grad=True)
    w = torch.randn(V, d, generator=g, requires_grad=True)
    logits = F.linear(h, w)
    shared = SharedDraws(monkeypatch)
    draws = _sample(logits, torch.Generator().manual_seed(8)).view(B, T)
    targets = draws[:, 1:]
    keep = targets != eos
    ref = F.cross_entropy(logits.view(B, T, V)[:, :-1][keep], targets[keep])
    ref_grads = torch.autograd.grad(ref, [h, w])
    u = torch.rand((B * T, 1), generator=torch.Generator().manual_seed(8))
    shared.replay()
    out, got_targets, _ = fused.linear_sampled_cross_entropy(h, w, None, u, seq_len=T, ignore_target=eos, rows_per_chunk=T)
    shared.finish()
    want_targets = torch.full((B, T), -100)
    want_targets[:, :-1] = torch.where(keep, targets, -100)
    assert torch.equal(got_targets.view(B, T), want_targets)
    _close(out, ref)
    for got, want in zip(torch.autograd.grad(out, [h, w]), ref_grads):
        _close(got, want)
    with pytest.raises(ValueError, match="split sequences"):
        fused.linear_sampled_cross_entropy(h, w, None, u, seq_len=T, rows_per_chunk=T + 1)


def test_bfloat16_products_stay_close_to_float32():
    g = torch.Generator().manual_seed(1)
    N, d, V = 200, 16, 3000
    h = torch.randn(N, d, generator=g).requires_grad_(True)
    w = (0.5 * torch.randn(V, d, generator=g)).requires_grad_(True)
    targets = torch.randint(0, V, (N,), generator=g)
    full = fused.linear_cross_entropy(h, w, None, targets, rows_per_chunk=64)
    low = fused.linear_cross_entropy(h, w, None, targets, rows_per_chunk=64, compute_dtype=torch.bfloat16)
    grads_full = torch.autograd.grad(full, [h, w])
    grads_low = torch.autograd.grad(low, [h, w])
    assert low.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads_low)
    assert abs(float(low - full)) < 0.01 * float(full)
    for got, want in zip(grads_low, grads_full):
        rel = float((got - want).norm() / want.norm())
        assert 0 < rel < 0.02  # bfloat16 products were used (not bit-equal), and they are close


def test_bfloat16_closed_form_head_term_stays_close_to_float32():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(150, 16, generator=g)
    w = 0.5 * torch.randn(2000, 16, generator=g)
    uniforms = torch.rand(150, generator=g)
    _, _, full = fused.linear_sampled_cross_entropy(h, w, None, uniforms, exact_head=True, rows_per_chunk=64)
    _, _, low = fused.linear_sampled_cross_entropy(
        h, w, None, uniforms, exact_head=True, rows_per_chunk=64, compute_dtype=torch.bfloat16
    )
    rel = float((low - full).norm() / full.norm())
    assert 0 < rel < 0.02
