"""Task2Vec embedding of one batch of token sequences (Achille et al. 2019; Lee et al. 2023).

For a batch B of sequences and a fixed probe network p_w:

1. start from the probe's initial weights (`Probe.reset()`);
2. fine-tune the output head on B: AdamW(lr, eps, weight_decay) over loader batches of 8
   sequences in a fixed order, `epochs` times, next-token cross-entropy. Only the head's
   parameters are in the optimiser, but for GPT-2 the head is tied to the input embedding
   `wte`, so the update also moves `wte` (gradients reach it through both the output layer and
   the input lookup), exactly as in the reference code;
3. estimate the diagonal Fisher information F = E_x E_{y~p_w(.|x)} [(d/dw log p_w(y|x))^2] by
   Monte Carlo: for each loader batch, draw every target from the model's own softmax, take the
   mean cross-entropy L over the scored positions, backpropagate, square the gradient; average
   the squares over loader batches. Since the sampled targets are independent with zero-mean
   scores, E[(dL/dw)^2] = (1/N^2) sum_t F_t(w) for a loader batch of N scored positions;
4. reduce each module weight's Fisher to one value per row of the weight tensor
   (`grad2.reshape(shape[0], -1).mean(1)`), skipping the head module itself (a tied head is
   represented once, through the input embedding), and concatenate in module order.

Estimators (`ProbeConfig.fisher`):
- "mc": step 3 as written, one target per position (`fisher_samples` > 1 averages several).
- "mc_head_exact": the same expectation with lower variance. The output layer's own gradient
  for a position is (p - e_y) h^T, whose squared expectation over y has the closed form
  p_v (1 - p_v) h_k^2 (summed over positions; the cross terms between positions vanish). The
  head runs on a detached copy of its weight, so autograd returns the output-layer part `a` of
  the gradient apart from the rest `b` (the input-embedding path of a tied head, and the body).
  A row v of a tied embedding whose token is absent from the loader batch's input gets b_v = 0,
  so its (a + b)^2 = a^2 is taken in closed form; rows of input tokens keep the plain Monte Carlo
  (a + b)^2; every other parameter is plain Monte Carlo. Unbiased and non-negative. For GPT-2
  this removes the Monte Carlo noise from nearly all of the 50,257 word-embedding rows, which
  otherwise dominates the embedding.

Options that do less work (`ProbeConfig.finetune`, `ProbeConfig.precision`):
- finetune "cached_body": the body's final hidden states of the batch are computed once, with the
  initial weights (and, in train mode, one dropout draw), and the head is fine-tuned on them with
  the same optimiser, loader batches and epochs. A tied head then moves only through the output
  layer's gradient during fine-tuning (the input path would change the features after every
  step); the Fisher step runs the whole network with the fine-tuned weights as usual. Saves the
  body's forward and backward at every fine-tune step: little for a 2-layer probe whose cost is
  the output layer, most of the fine-tune for GPT-2-small-sized bodies.
- precision "bf16": mixed precision. The body runs under `torch.autocast(bfloat16)` and the
  output layer's three products take bfloat16 operands (`core.fused`); softmax, sampling, losses,
  parameters, optimiser state and the Fisher sums stay float32. bfloat16 keeps float32's exponent
  range, so squared gradients of 1e-12 do not underflow (float16 would).

Deviations from the reference code (default; `reference_compat=True` restores them exactly):
- Fisher targets: the reference scores the token sampled from position t+1's distribution
  against position t's logits (an off-by-one) and samples at pad positions too, ignoring only
  sampled targets equal to eos. By default each sampled token is scored against the logits it
  was drawn from, at every non-pad position, and a sampled eos counts like any other token.
- Fine-tune targets: the reference ignores every target equal to eos; by default the targets
  ignored are the pad positions (the same thing unless a text contains eos itself).
Both modes keep float32, the mean-over-positions loss and therefore the Fisher's scale, which
matters because Task2Vec's distance has an absolute epsilon.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.fused import linear_cross_entropy, linear_sampled_cross_entropy, sample_inverse_cdf
from divcoef_assets.core.probe import Probe
from divcoef_assets.core.tokenize import TokenBatch

log = logging.getLogger(__name__)


class FisherNotFiniteError(ArithmeticError):
    """The Fisher estimate contains NaN or Inf; the embedding must not be stored."""


@dataclass(frozen=True)
class LayoutEntry:
    module: str  # e.g. "transformer.h.0.attn.c_attn"
    start: int
    stop: int
    shape: tuple[int, ...]  # the weight's shape; entries = shape[0]


@dataclass(frozen=True)
class Task2VecEmbedding:
    """One batch's Task2Vec embedding and how it was obtained."""

    vector: np.ndarray  # float32 [n_filters], non-negative
    layout: tuple[LayoutEntry, ...]
    finetune_loss_first: float  # mean loss of the first fine-tune epoch (nan if epochs == 0)
    finetune_loss_last: float  # mean loss of the last fine-tune epoch
    fisher_loss: float  # mean cross-entropy of the sampled targets
    seconds_finetune: float
    seconds_fisher: float
    n_scored_tokens: int
    extra: dict = field(default_factory=dict)


def _loader_slices(n: int, size: int) -> list[slice]:
    """Contiguous loader batches in a fixed order (no shuffle, last one may be short)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _targets_finetune(ids: torch.Tensor, mask: torch.Tensor, probe: Probe, compat: bool):
    """Positions whose next token is scored, and those next tokens.

    positions: bool [B, T] (last column False); targets: [N] in positions' row-major order.
    """
    nxt = ids[:, 1:]
    valid = (nxt != probe.eos_id) if compat else mask[:, 1:].bool()
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[:, :-1] = valid
    return positions, nxt[valid]


def _sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One target per row from softmax(logits), by inverse CDF (one uniform per row).

    logits: [N, V] -> [N] int64. Exact categorical sampling; much cheaper than
    `torch.multinomial` over a 50k-way vocabulary. The fused path draws with the same rule
    (`core.fused.sample_inverse_cdf`) from the same generator's uniforms.
    """
    probs = torch.softmax(logits.detach(), dim=-1)
    uniforms = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device, dtype=probs.dtype)
    return sample_inverse_cdf(probs, uniforms)


def _fused_head(probe: Probe) -> bool:
    """Whether the output layer can run through `core.fused`: a plain linear layer fed by `probe.body`."""
    return probe.body is not None and type(probe.head) is torch.nn.Linear


def _compute_dtype(config: ProbeConfig) -> torch.dtype | None:
    return torch.bfloat16 if config.precision == "bf16" else None


def _autocast(probe: Probe, config: ProbeConfig):
    """Mixed precision for the body's forward (and its backward, which autograd runs alike)."""
    if config.precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=probe.device.type, dtype=torch.bfloat16)


def _body_hidden(probe: Probe, ids: torch.Tensor, mask: torch.Tensor, config: ProbeConfig) -> torch.Tensor:
    """The body's final hidden states [B, T, d], float32 (computed in bf16 under mixed precision)."""
    with _autocast(probe, config):
        hidden = probe.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return hidden.float()


def finetune_head(probe: Probe, ids: torch.Tensor, mask: torch.Tensor, config: ProbeConfig) -> tuple[float, float]:
    """Fine-tune the output head in place; returns (first, last) epoch mean loss."""
    if config.epochs == 0:
        return float("nan"), float("nan")
    cached = config.finetune == "cached_body"
    if cached and not _fused_head(probe):
        raise ValueError(
            f"finetune 'cached_body' needs a linear output layer over the base model's last hidden state; "
            f"{probe.source} has a {type(probe.head).__name__} head: use finetune 'full'"
        )
    model = probe.model
    head_params = list(probe.head.parameters())
    head_ids = {id(p) for p in head_params}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_ids)  # body weights get no gradient: none is needed
    # fused=True: one pass over the (vocabulary-sized) head instead of a dozen elementwise ops
    optimizer = torch.optim.AdamW(
        head_params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay, fused=True
    )
    slices = _loader_slices(ids.shape[0], config.loader_batch_size)
    fused = _fused_head(probe)
    steps_input = []
    for sl in slices:
        positions, targets = _targets_finetune(ids[sl], mask[sl], probe, config.reference_compat)
        if targets.numel():
            steps_input.append((ids[sl], mask[sl], positions, targets))
    if cached:  # the body's features, once, with the initial weights
        with torch.no_grad():
            features = [_body_hidden(probe, b_ids, b_mask, config)[positions] for b_ids, b_mask, positions, _ in steps_input]
    compute_dtype = _compute_dtype(config)
    epoch_losses = []
    try:
        for _ in range(config.epochs):
            total = torch.zeros((), device=ids.device)
            for step, (b_ids, b_mask, positions, targets) in enumerate(steps_input):
                if cached or fused:
                    hidden = features[step] if cached else _body_hidden(probe, b_ids, b_mask, config)[positions]
                    loss = linear_cross_entropy(hidden, probe.head.weight, probe.head.bias, targets, compute_dtype=compute_dtype)
                else:
                    with _autocast(probe, config):
                        _, logits = probe.hidden_and_logits(b_ids, b_mask, positions)
                    loss = F.cross_entropy(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
            epoch_losses.append(float(total) / max(len(steps_input), 1))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
    return epoch_losses[0], epoch_losses[-1]


def _fisher_positions(ids: torch.Tensor, mask: torch.Tensor, compat: bool) -> torch.Tensor:
    if compat:
        return torch.ones_like(ids, dtype=torch.bool)  # reference: softmax and sample everywhere
    return mask.bool()


def _sampled_loss(probe: Probe, logits: torch.Tensor, b_ids: torch.Tensor, generator: torch.Generator, compat: bool) -> torch.Tensor:
    """Mean cross-entropy of targets drawn from softmax(logits) (unfused path)."""
    sampled = _sample(logits, generator)
    if not compat:
        return F.cross_entropy(logits, sampled)
    # Reference: logits[:, t] scored against the token sampled at t + 1, eos ignored.
    logits_bt = logits.view(b_ids.shape[0], b_ids.shape[1], -1)[:, :-1]
    sampled_bt = sampled.view(b_ids.shape[0], b_ids.shape[1])[:, 1:]
    keep = sampled_bt != probe.eos_id
    return F.cross_entropy(logits_bt[keep], sampled_bt[keep])


def fisher_diagonal(probe: Probe, ids: torch.Tensor, mask: torch.Tensor, config: ProbeConfig, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], float, int]:
    """Diagonal Fisher of every parameter, averaged over loader batches.

    Returns ({parameter name: F [same shape]}, mean sampled-target loss, scored positions).
    """
    model = probe.model
    params = {name: p for name, p in model.named_parameters()}
    acc = {name: torch.zeros_like(p) for name, p in params.items()}
    exact_head = config.fisher == "mc_head_exact"
    if exact_head and not isinstance(probe.head, torch.nn.Linear):
        raise ValueError("fisher 'mc_head_exact' needs a linear output head")
    fused = _fused_head(probe)
    compat = config.reference_compat
    compute_dtype = _compute_dtype(config)
    head_weight = probe.head.weight
    head_name = next(name for name, p in params.items() if p is head_weight)
    n_samples = config.fisher_samples
    n_loader = 0
    losses: list[torch.Tensor] = []
    n_scored = 0
    for sl in _loader_slices(ids.shape[0], config.loader_batch_size):
        n_norm = int(_fisher_positions(ids[sl], mask[sl], compat).sum())  # scored positions of the loader batch
        if n_norm == 0:
            continue
        # "sequence" squares: the gradient of each sequence's share of the loader batch's loss is
        # squared separately; the cross terms they drop have zero mean, so the expectation is the
        # same and the variance lower.
        units = [sl] if config.fisher_squares == "loader_batch" else [slice(i, i + 1) for i in range(sl.start, sl.stop)]
        for unit in units:
            b_ids, b_mask = ids[unit], mask[unit]
            positions = _fisher_positions(b_ids, b_mask, compat)
            model.zero_grad(set_to_none=True)
            # exact_head: the head runs on a detached copy of its weight, so the output-layer part
            # of that weight's gradient (a) comes back apart from the rest (b)
            head_leaf = head_weight.detach().requires_grad_(True) if exact_head else head_weight
            if fused or exact_head:
                hidden = _body_hidden(probe, b_ids, b_mask, config)[positions]
                logits = None if fused else F.linear(hidden, head_leaf, probe.head.bias)
            else:
                with _autocast(probe, config):
                    hidden, logits = probe.hidden_and_logits(b_ids, b_mask, positions)
                logits = logits.float()
            n = hidden.shape[0] if hidden is not None else logits.shape[0]
            if n == 0:
                continue
            wrt = [params[k] for k in params] + ([head_leaf] if exact_head else [])
            exact_term = None  # closed-form E[a^2] of the output layer, [V, d], before / n_norm^2
            # Rows of a tied embedding whose tokens are in this unit's input: only these get an
            # input-path gradient b; every other row has b = 0 and takes E[a^2] in closed form.
            present = b_ids.unique() if exact_head and probe.tied_head else None
            for s in range(n_samples):
                if fused:
                    uniforms = torch.rand((n, 1), generator=generator, device=hidden.device, dtype=hidden.dtype)
                    loss, _, exact = linear_sampled_cross_entropy(
                        hidden, head_leaf, probe.head.bias, uniforms,
                        seq_len=b_ids.shape[1] if compat else None,
                        ignore_target=probe.eos_id if compat else None,
                        exact_head=exact_head and s == 0,
                        compute_dtype=compute_dtype,
                    )
                else:
                    loss, exact = _sampled_loss(probe, logits, b_ids, generator, compat), None
                if exact is not None:
                    exact_term = exact
                losses.append(loss.detach())
                if n != n_norm:  # per-sequence squares: the unit's share of the loader batch's mean loss
                    loss = loss * (n / n_norm)
                grads = torch.autograd.grad(loss, wrt, retain_graph=s < n_samples - 1, allow_unused=True)
                for (name, _), g in zip(params.items(), grads):
                    if g is None:
                        continue
                    if present is not None and name == head_name:
                        full = (g + grads[-1])[present]  # input-path part b plus output-layer part a
                        acc[name].index_add_(0, present, full * full, alpha=1.0 / n_samples)
                    else:
                        acc[name].addcmul_(g, g, value=1.0 / n_samples)
            if exact_head:
                with torch.no_grad():
                    if exact_term is None:
                        p = torch.softmax(logits.detach(), dim=-1)  # [N, V]
                        exact_term = (p * (1 - p)).T @ (hidden.detach() ** 2)  # [V, d]
                    if present is not None:
                        exact_term[present] = 0.0  # those rows are in the Monte Carlo term above
                    acc[head_name].add_(exact_term, alpha=1.0 / (n_norm * n_norm))
            n_scored += n
        n_loader += 1
    model.zero_grad(set_to_none=True)
    if n_loader == 0:
        raise ValueError("the batch has no scorable positions (every sequence is empty)")
    return {name: a / n_loader for name, a in acc.items()}, float(torch.stack(losses).mean()), n_scored


def filterwise(probe: Probe, fisher: dict[str, torch.Tensor]) -> tuple[np.ndarray, tuple[LayoutEntry, ...]]:
    """One value per row of each module weight (mean over the other axes), head skipped."""
    param_names = {id(p): name for name, p in probe.model.named_parameters()}
    blocks, layout, start = [], [], 0
    for module_name, module in probe.model.named_modules():
        if module is probe.head:
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or id(weight) not in param_names:
            continue
        grad2 = fisher[param_names[id(weight)]]
        values = grad2.reshape(grad2.shape[0], -1).mean(dim=1)
        blocks.append(values)
        layout.append(LayoutEntry(module_name, start, start + values.numel(), tuple(weight.shape)))
        start += values.numel()
    vector = torch.cat(blocks).detach().to("cpu", torch.float32).numpy()
    return vector, tuple(layout)


def embed_batch(probe: Probe, batch: TokenBatch, config: ProbeConfig, *, seed: int) -> Task2VecEmbedding:
    """The Task2Vec embedding of `batch` (see the module docstring for the method).

    `seed` fixes dropout and the Monte Carlo draws: same probe, batch, config and seed give the
    same vector bit for bit on the same machine.
    """
    probe.reset()
    ids = torch.tensor(batch.input_ids, dtype=torch.long, device=probe.device)
    mask = torch.tensor(batch.attention_mask, dtype=torch.long, device=probe.device)
    if int(ids.max()) >= probe.vocab_size or int(ids.min()) < 0:
        raise ValueError(f"token ids outside the probe's vocabulary of {probe.vocab_size}: use the probe's tokenizer")
    devices = [probe.device] if probe.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        generator = torch.Generator(device=probe.device)
        generator.manual_seed(seed + 1)
        probe.model.train()
        t0 = time.perf_counter()
        loss_first, loss_last = finetune_head(probe, ids, mask, config)
        t1 = time.perf_counter()
        fisher, fisher_loss, n_scored = fisher_diagonal(probe, ids, mask, config, generator)
        vector, layout = filterwise(probe, fisher)
        t2 = time.perf_counter()
    probe.reset()
    if not np.isfinite(vector).all():
        bad = [e.module for e in layout if not np.isfinite(vector[e.start : e.stop]).all()]
        raise FisherNotFiniteError(f"the Fisher estimate has NaN/Inf in {', '.join(bad[:5])}: check the probe's weights")
    return Task2VecEmbedding(
        vector=vector,
        layout=layout,
        finetune_loss_first=loss_first,
        finetune_loss_last=loss_last,
        fisher_loss=fisher_loss,
        seconds_finetune=t1 - t0,
        seconds_fisher=t2 - t1,
        n_scored_tokens=n_scored,
    )
