"""Output layer + softmax cross-entropy, fused and computed in row chunks, for large vocabularies.

Task2Vec on a language model spends almost all of its time in the output layer: every scored
position needs a V-way row of logits (V = 50,257 for GPT-2), its softmax, and the two products of
the backward pass. Written as `F.linear` + `F.cross_entropy`, autograd materialises several
[N, V] float32 tensors per step (logits, log-probabilities, their gradient), hundreds of MB each,
and on CPU every fresh allocation that size also pays for page faults.

Here rows are processed in chunks whose [c, V] block stays in cache, in a reused buffer. For a
chunk of hidden states h_c [c, d]:

    z = h_c W^T + b                    logits [c, V], the only [c, V] block
    p = softmax(z)                     in place
    loss += sum(-log p[target])        (lse - logit where p[target] underflows)
    G = p - onehot(target)             in place; rows that are not scored are zeroed
    grad_h[chunk] = G W,  grad_W += G^T h_c,  grad_b += sum(G)

Because the loss is a scalar, its gradient is known during the forward pass: the autograd
Function computes it there (three matrix products per chunk, the minimum) and its backward only
scales the stored result by the incoming gradient. Gradients reach `hidden` and `weight` through
autograd like any other op's, so a weight tied to an input embedding still gets its input-path
gradient from autograd, summed with the output-layer gradient from here.

With `compute_dtype=torch.bfloat16` (mixed precision) the three products take bfloat16 inputs
(h, W and G rounded once per chunk) while the softmax, the loss and every sum across chunks stay
in float32.

The sampled variant draws each row's target from the row's own softmax by inverse CDF with a
given uniform (the Monte Carlo Fisher's targets); for the same uniforms it draws the same
targets as `divcoef_assets.core.task2vec._sample`. Its value is the mean cross-entropy of those
targets, differentiable like the above.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
_TINY_P = 1e-30  # below this, -log p loses precision (denormals): take lse - logit instead
_CHUNK_ROWS_CPU = 128  # a [128, 50257] float32 block (26 MB) still fits a 32 MB L3 cache
_CHUNK_BYTES_CUDA = 256 << 20

_scratch = threading.local()


def _workspace(name: str, numel: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A flat scratch buffer reused across calls (per thread, name, device and dtype).

    Allocating a fresh multi-MB block per chunk costs page faults on CPU; reusing one does not.
    """
    cache = getattr(_scratch, "buffers", None)
    if cache is None:
        cache = _scratch.buffers = {}
    key = (name, str(device), dtype)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, device=device, dtype=dtype)
        cache[key] = buf
    return buf[:numel]


def chunk_rows(n_rows: int, vocab: int, device: torch.device, multiple: int = 1) -> int:
    """Rows per chunk: few enough for the [rows, vocab] block to stay in cache; a multiple of `multiple`."""
    rows = _CHUNK_ROWS_CPU if device.type != "cuda" else max(1, _CHUNK_BYTES_CUDA // (4 * vocab))
    rows = max(multiple, rows // multiple * multiple)
    return min(rows, -(-max(n_rows, 1) // multiple) * multiple)


def _onednn_linear_works() -> bool:
    try:
        x, w, b = torch.randn(3, 5), torch.randn(7, 5), torch.randn(7)
        with_bias = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        without = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return torch.allclose(with_bias, torch.addmm(b, x, w.t()), atol=1e-5) and torch.allclose(without, x @ w.t(), atol=1e-5)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


# On CPU, oneDNN's matmul computes the logits (inner dimension d, tens of thousands of columns)
# about twice as fast as the BLAS `mm`, and G W about 1.4 times as fast, for chunks that fit in
# cache. It is an internal operator, so it is used only where it exists and reproduces `addmm`.
_USE_ONEDNN = torch.backends.mkldnn.is_available() and _onednn_linear_works()


def _use_onednn(x: torch.Tensor) -> bool:
    return _USE_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32


def _logits(h_c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """h_c [c, d] @ weight [V, d]^T (+ bias) -> [c, V], in `out` or (oneDNN) a new tensor."""
    if _use_onednn(h_c):
        return torch.ops.mkldnn._linear_pointwise(h_c, weight, bias, "none", [], "")
    if bias is not None:
        return torch.addmm(bias, h_c, weight.t(), out=out)
    return torch.mm(h_c, weight.t(), out=out)


def _grad_hidden(g: torch.Tensor, weight: torch.Tensor, weight_t: torch.Tensor | None, out: torch.Tensor) -> None:
    """out [c, d] = g [c, V] @ weight [V, d]; `weight_t` is weight^T made contiguous, for oneDNN."""
    if weight_t is not None:
        out.copy_(torch.ops.mkldnn._linear_pointwise(g, weight_t, None, "none", [], ""))
    else:
        torch.mm(g, weight, out=out)


def sample_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor, cdf_out: torch.Tensor | None = None) -> torch.Tensor:
    """One index per row of `probs` [c, V] by inverse CDF with `uniforms` [c] in [0, 1).

    Prefix sums, threshold u * total, first prefix above it, clamped to V - 1. `task2vec._sample`
    (the unfused path) draws with this function too, so equal probabilities and uniforms give
    equal draws. `cdf_out` [c, V] is an optional scratch buffer for the prefix sums.
    """
    c, V = probs.shape
    cdf = torch.cumsum(probs, dim=1) if cdf_out is None else torch.cumsum(probs, dim=1, out=cdf_out)
    threshold = uniforms.reshape(c, 1).to(cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, threshold, right=True).clamp_(max=V - 1).squeeze(1)


@dataclass
class _HeadResult:
    loss_sum: torch.Tensor  # 0-d, sum of cross-entropies over scored rows
    n_kept: torch.Tensor  # 0-d float, number of scored rows
    targets: torch.Tensor  # [N] int64, IGNORE_INDEX where a row is not scored
    grad_h: torch.Tensor | None  # [N, d], gradient of loss_sum
    grad_w: torch.Tensor | None  # [V, d]
    grad_b: torch.Tensor | None  # [V]
    exact_w: torch.Tensor | None  # [V, d], sum over rows of p (1 - p) h^2


def _head_pass(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    targets: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
    seq_len: int | None = None,
    ignore_target: int | None = None,
    grads: bool = True,
    exact: bool = False,
    rows_per_chunk: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> _HeadResult:
    """The chunked pass. Exactly one of `targets` ([N], IGNORE_INDEX = skip) and `uniforms` ([N]).

    With `uniforms`, row r's target is drawn from softmax row r; with `seq_len` as well, rows
    form sequences of `seq_len` and row r is scored against the draw of row r + 1 (none for a
    sequence's last row); drawn targets equal to `ignore_target` are not scored.
    """
    N, d = h.shape
    V = weight.shape[0]
    device, dtype = h.device, h.dtype
    if seq_len is not None and N % seq_len:
        raise ValueError(f"{N} rows do not form sequences of {seq_len}")
    step = rows_per_chunk or chunk_rows(N, V, device, multiple=seq_len or 1)
    if seq_len is not None and step % seq_len:
        raise ValueError(f"chunks of {step} rows split sequences of {seq_len}")
    width = min(step, max(N, 1)) * V
    z_buf = _workspace("logits", width, device, dtype)
    aux_buf = _workspace("aux", width, device, dtype) if (exact or uniforms is not None) else None
    loss_sum = torch.zeros((), device=device, dtype=dtype)
    n_kept = torch.zeros((), device=device, dtype=dtype)
    all_targets = torch.empty(N, device=device, dtype=torch.long)
    grad_h = torch.empty_like(h) if grads else None
    grad_w = torch.zeros_like(weight) if grads else None
    grad_b = torch.zeros_like(bias) if grads and bias is not None else None
    exact_w = torch.zeros_like(weight) if exact else None
    low = compute_dtype is not None and compute_dtype != dtype
    if low:  # mixed precision: bfloat16 copies of the operands, float32 everywhere else
        weight_c = weight.to(compute_dtype)
        bias_c = None if bias is None else bias.to(compute_dtype)
    weight_t = weight.t().contiguous() if grads and not low and _use_onednn(h) else None
    # rows that are not scored must not contribute p to the gradient
    masked = seq_len is not None or (targets is not None and bool((targets == IGNORE_INDEX).any()))
    for r0 in range(0, N, step):
        r1 = min(r0 + step, N)
        c = r1 - r0
        h_c = h[r0:r1]
        if low:
            h_low = h_c.to(compute_dtype)
            z = z_buf[: c * V].view(c, V)
            z.copy_(torch.nn.functional.linear(h_low, weight_c, bias_c))
        else:
            z = _logits(h_c, weight, bias, z_buf[: c * V].view(c, V))  # [c, V]
        torch.ops.aten._softmax.out(z, 1, False, out=z)  # z holds p from here on
        if uniforms is None:
            t_c = targets[r0:r1]
            keep = t_c != IGNORE_INDEX
        else:
            drawn = sample_inverse_cdf(z, uniforms[r0:r1], aux_buf[: c * V].view(c, V))
            if seq_len is None:
                t_c, keep = drawn, torch.ones(c, device=device, dtype=torch.bool)
            else:
                t_c = torch.roll(drawn, -1)  # chunks hold whole sequences: row r takes draw r + 1
                keep = (torch.arange(r0, r1, device=device) % seq_len) != seq_len - 1
                if ignore_target is not None:
                    keep &= t_c != ignore_target
        safe_t = torch.where(keep, t_c, 0)
        all_targets[r0:r1] = torch.where(keep, t_c, IGNORE_INDEX)
        p_t = z.gather(1, safe_t.unsqueeze(1)).squeeze(1)
        ce = -torch.log(p_t)
        tiny = keep & (p_t < _TINY_P)
        if bool(tiny.any()):
            rows = tiny.nonzero().squeeze(1)
            few = torch.nn.functional.linear(h_c[rows], weight, bias)  # logits of those rows only
            ce[rows] = torch.logsumexp(few, dim=1) - few.gather(1, safe_t[rows].unsqueeze(1)).squeeze(1)
        loss_sum += torch.where(keep, ce, 0.0).sum()
        n_kept += keep.sum()
        if exact:
            q = aux_buf[: c * V].view(c, V)
            torch.addcmul(z, z, z, value=-1.0, out=q)  # p (1 - p)
            if low:
                exact_w += q.t().to(compute_dtype) @ (h_low * h_low)
            else:
                exact_w.addmm_(q.t(), h_c * h_c)
        if not grads:
            continue
        # z becomes G = p - onehot(target), zero on rows that are not scored
        z.index_put_((torch.arange(c, device=device), safe_t), torch.where(keep, -1.0, 0.0).to(dtype), accumulate=True)
        if masked:
            z.mul_(keep.unsqueeze(1).to(dtype))
        if low:
            g_low = z.to(compute_dtype)
            grad_h[r0:r1] = g_low @ weight_c
            grad_w += g_low.t() @ h_low
        else:
            _grad_hidden(z, weight, weight_t, grad_h[r0:r1])
            grad_w.addmm_(z.t(), h_c)
        if grad_b is not None:
            grad_b += z.sum(dim=0)
    return _HeadResult(loss_sum, n_kept, all_targets, grad_h, grad_w, grad_b, exact_w)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """loss = mean CE(h W^T + b, targets); outputs (loss, targets, exact_w or empty)."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, uniforms, seq_len, ignore_target, exact, rows_per_chunk, compute_dtype):
        grads = any(ctx.needs_input_grad[:3])
        res = _head_pass(
            h.detach(), weight.detach(), None if bias is None else bias.detach(),
            targets=targets, uniforms=uniforms, seq_len=seq_len, ignore_target=ignore_target,
            grads=grads, exact=exact, rows_per_chunk=rows_per_chunk, compute_dtype=compute_dtype,
        )
        scale = 1.0 / res.n_kept
        ctx.scale = scale
        ctx.grads = (res.grad_h, res.grad_w, res.grad_b)
        ctx.mark_non_differentiable(res.targets)
        exact_w = res.exact_w if res.exact_w is not None else h.new_empty(0)
        ctx.mark_non_differentiable(exact_w)
        return res.loss_sum * scale, res.targets, exact_w

    @staticmethod
    def backward(ctx, grad_loss, _grad_targets, _grad_exact):
        grad_h, grad_w, grad_b = ctx.grads
        factor = grad_loss * ctx.scale
        needs = ctx.needs_input_grad
        return (
            grad_h * factor if needs[0] else None,
            grad_w * factor if needs[1] else None,
            grad_b * factor if needs[2] and grad_b is not None else None,
            None, None, None, None, None, None, None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    rows_per_chunk: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`F.cross_entropy(F.linear(hidden, weight, bias), targets, ignore_index=...)` without [N, V] tensors.

    hidden [N, d], weight [V, d], bias [V] or None, targets [N] int64. Mean over the rows whose
    target is not `ignore_index` (nan when there are none, like `F.cross_entropy`).
    `compute_dtype` (e.g. torch.bfloat16) runs the matrix products in that type.
    """
    targets = targets.to(torch.long)
    if ignore_index != IGNORE_INDEX:
        targets = torch.where(targets == ignore_index, IGNORE_INDEX, targets)
    loss, _, _ = _FusedLinearCrossEntropy.apply(
        hidden, weight, bias, targets, None, None, None, False, rows_per_chunk, compute_dtype
    )
    return loss


def linear_sampled_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    uniforms: torch.Tensor,
    *,
    seq_len: int | None = None,
    ignore_target: int | None = None,
    exact_head: bool = False,
    rows_per_chunk: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean cross-entropy of targets drawn from the model's own softmax (one uniform per row).

    hidden [N, d], uniforms [N] (or [N, 1]) in [0, 1). Row r's draw is
    `sample_inverse_cdf(softmax(logits), uniforms)[r]`, the same as
    `task2vec._sample(logits, generator)` when `uniforms` are that generator's next draws.
    Without `seq_len`, row r is scored against its own draw. With `seq_len`, the rows are
    sequences of `seq_len` positions and row r is scored against the draw of row r + 1 (the
    reference code's pairing); a sequence's last row, and draws equal to `ignore_target`, are
    not scored.

    Returns (loss, targets [N] with IGNORE_INDEX where not scored, exact [V, d] or None), where
    exact = sum over rows of softmax (1 - softmax) outer hidden^2 (the closed-form output-layer
    Fisher, before normalisation), computed when `exact_head`. `compute_dtype` as in
    `linear_cross_entropy`.
    """
    uniforms = uniforms.reshape(-1)
    loss, targets, exact = _FusedLinearCrossEntropy.apply(
        hidden, weight, bias, None, uniforms, seq_len, ignore_target, exact_head, rows_per_chunk, compute_dtype
    )
    return loss, targets, (exact if exact_head else None)
