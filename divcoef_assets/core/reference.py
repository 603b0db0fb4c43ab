"""A plain transcription of the Task2Vec semantics: the oracle the engine is tested and timed against.

It follows the official code's structure: deep copy of the model, full forward pass with logits
at every position, `F.cross_entropy` on shifted logits/targets, AdamW (non-fused) on the head,
squared gradients of every parameter per loader batch, filter-wise mean per module weight; so
its cost is that code's cost. `divcoef_assets.core.task2vec` must give the same numbers when it
uses the same random draws (tests), and is benchmarked against it (benchmarks/run.py).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from divcoef_assets.core.task2vec import _sample


def straightforward_embedding(model, eos_id, ids, mask, *, epochs, seed, reference_compat=False, loader=8,
                              lr=5e-5, eps=1e-8, weight_decay=1e-4):
    """Returns (embedding float32 [n], {"epoch_ends": [seconds after each epoch], "finetune": s, "fisher": s})."""
    model = copy.deepcopy(model)
    head = model.get_output_embeddings()
    model.train()
    ids = torch.tensor(ids)  # a copy: the batch's arrays may be read-only
    mask = torch.tensor(mask)
    epoch_ends = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, eps=eps, weight_decay=weight_decay)
        t0 = time.perf_counter()
        for _ in range(epochs):
            for i in range(0, ids.shape[0], loader):
                x, m = ids[i : i + loader], mask[i : i + loader]
                logits = model(input_ids=x, attention_mask=m).logits
                targets = x[:, 1:].clone()
                ignore = (targets == eos_id) if reference_compat else (m[:, 1:] == 0)
                if bool(ignore.all()):
                    continue
                targets[ignore] = -100
                loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100)
                opt.zero_grad()
                loss.backward()
                opt.step()
            epoch_ends.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        count = 0
        for i in range(0, ids.shape[0], loader):
            x, m = ids[i : i + loader], mask[i : i + loader]
            logits = model(input_ids=x, attention_mask=m).logits  # [b, T, V]
            b, T, V = logits.shape
            if reference_compat:
                sampled = _sample(logits.reshape(b * T, V), gen).view(b, T)
                targets = sampled[:, 1:].clone()
                targets[targets == eos_id] = -100
                loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100)
            else:
                keep = m.bool()
                sampled = _sample(logits[keep], gen)
                loss = F.cross_entropy(logits[keep], sampled)
            model.zero_grad()
            loss.backward()
            for n, p in model.named_parameters():
                if p.grad is not None:
                    acc[n] += p.grad.detach() ** 2
            count += 1
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for _, module in model.named_modules():
        if module is head:
            continue
        w = getattr(module, "weight", None)
        if isinstance(w, torch.nn.Parameter):
            g2 = acc[names[id(w)]] / count
            out.append(g2.reshape(g2.shape[0], -1).mean(1))
    t2 = time.perf_counter()
    vector = torch.cat(out).numpy().astype(np.float32)
    return vector, {"epoch_ends": epoch_ends, "finetune": t1 - t0, "fisher": t2 - t1}
