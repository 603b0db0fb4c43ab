"""A plain, unoptimised transcription of the Task2Vec semantics, used as a test oracle.

It follows the official code's structure: deep copy of the model, full forward pass with logits
at every position, `CrossEntropyLoss(ignore_index=...)` on shifted logits/targets, squared
gradients of every parameter accumulated per loader batch, filter-wise mean per module weight.
The engine in `divcoef_assets.core.task2vec` must give the same numbers when it uses the same
random draws.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from divcoef_assets.core.task2vec import _sample


def straightforward_embedding(model, head, eos_id, ids, mask, *, epochs, seed, reference_compat, loader=8,
                              lr=5e-5, eps=1e-8, weight_decay=1e-4):
    model = copy.deepcopy(model)
    head = model.get_output_embeddings()
    model.train()
    ids = torch.as_tensor(ids)
    mask = torch.as_tensor(mask)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, eps=eps, weight_decay=weight_decay)
        for _ in range(epochs):
            for i in range(0, ids.shape[0], loader):
                x, m = ids[i : i + loader], mask[i : i + loader]
                logits = model(input_ids=x, attention_mask=m).logits
                targets = x[:, 1:].clone()
                if reference_compat:
                    ignore = targets == eos_id
                else:
                    ignore = m[:, 1:] == 0
                if bool(ignore.all()):
                    continue
                targets[ignore] = -100
                loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100)
                opt.zero_grad()
                loss.backward()
                opt.step()
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
    return torch.cat(out).numpy().astype(np.float32)
