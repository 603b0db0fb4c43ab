"""Pretrain a small GPT-2-architecture probe offline, on a declared corpus, for a fixed budget.

The paper's probe is GPT-2 pretrained on WebText; a machine without a model hub cannot have it.
A randomly initialised probe is the paper's "rand" ablation and mostly measures noise, so the
default audit uses a probe pretrained here: the GPT-2 tokenizer and architecture, a few layers,
trained with next-token cross-entropy on contiguous 128-token blocks packed from the corpus
(documents joined by eos), AdamW with linear warm-up and cosine decay, for `steps` optimiser
steps. The budget is a step count, not a time, so the same config gives the same weights (bit
for bit on the same machine). The model is saved with `save_pretrained` (safetensors) next to a
`pretrain.json` that states the corpus fingerprint, config and final loss.

`train_tokenizer` trains a byte-level BPE tokenizer (GPT-2's scheme, a smaller vocabulary) on the
same kind of corpus, for a probe whose vocabulary is learned here rather than taken from GPT-2:
with tens of thousands of output rows a small probe spends most of its time and most of its
Task2Vec embedding on tokens it has never seen.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from divcoef_assets.core.atomic import atomic_path
from divcoef_assets.core.fused import linear_cross_entropy
from divcoef_assets.core.tokenize import TextTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    n_positions: int = 128  # context of the probe; audits use seq_len <= this
    block_len: int = 128  # tokens per training sequence
    batch_size: int = 16  # sequences per optimiser step
    steps: int = 300  # the budget
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    dropout: float = 0.0  # saved in the config: audits with this probe run without dropout noise
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "n_positions", "block_len", "batch_size", "steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"pretrain {name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.block_len > self.n_positions:
            raise ValueError(f"block_len {self.block_len} exceeds n_positions {self.n_positions}")


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    steps: int
    first_loss: float  # mean loss of the first steps (10, or a third of a short run)
    final_loss: float  # mean loss of the last steps, same window
    seconds: float
    n_corpus_tokens: int


def pack_tokens(tokenizer: TextTokenizer, texts: Sequence[str], *, chunk: int = 1024) -> np.ndarray:
    """All texts tokenized and joined by eos into one int32 stream."""
    parts = []
    for start in range(0, len(texts), chunk):
        for ids in tokenizer.encode(list(texts[start : start + chunk])):
            parts.append(np.asarray(ids, dtype=np.int32))
            parts.append(np.asarray([tokenizer.eos_id], dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: str | os.PathLike, *, min_frequency: int = 2) -> Path:
    """Train a byte-level BPE tokenizer with `vocab_size` ids (eos `<|endoftext|>` is id 0, also
    the pad id) on `texts`, and save it with `save_pretrained` to `out_dir` (a staging folder: callers
    publish it atomically). Deterministic for the same texts in the same order."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise ValueError(f"a byte-level BPE vocabulary needs more than the 256 byte tokens and eos, got {vocab_size}")
    if not texts:
        raise ValueError("no texts to train the tokenizer on")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(iter(texts), vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS_TOKEN],
                            show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                        unk_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    log.info("trained a %d-id byte-level BPE tokenizer on %d texts into %s", len(tokenizer), len(texts), out)
    return out


def _lr(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain_probe(
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    config: PretrainConfig,
    out_dir: str | os.PathLike,
    *,
    corpus_fingerprint: str = "",
    progress: Callable[[int, int, float], None] | None = None,
) -> PretrainResult:
    """Train a GPT-2-architecture model on `texts` and save it atomically to `out_dir`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    stream = pack_tokens(tokenizer, texts)
    if stream.size < config.block_len + 1:
        raise ValueError(f"the pretraining corpus has {stream.size} tokens, fewer than one block of {config.block_len}")
    hf_config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = GPT2LMHeadModel(hf_config)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
        )
        rng = np.random.default_rng(config.seed)
        starts_max = stream.size - config.block_len - 1
        losses = []
        t0 = time.perf_counter()
        for step in range(config.steps):
            starts = rng.integers(0, starts_max + 1, size=config.batch_size)
            block = np.stack([stream[s : s + config.block_len + 1] for s in starts]).astype(np.int64)
            x = torch.from_numpy(block[:, :-1])
            y = torch.from_numpy(block[:, 1:])
            for group in optimizer.param_groups:
                group["lr"] = _lr(step, config)
            hidden = model.transformer(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).last_hidden_state
            loss = linear_cross_entropy(hidden.flatten(0, 1), model.lm_head.weight, None, y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step + 1, config.steps, losses[-1])
            if (step + 1) % 50 == 0 or step + 1 == config.steps:
                log.info("pretrain step %d/%d loss %.3f (%.0fs)", step + 1, config.steps, losses[-1], time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
    model.eval()
    window = max(1, min(10, config.steps // 3))
    result = PretrainResult(
        path=Path(out_dir), steps=config.steps, first_loss=float(np.mean(losses[:window])), final_loss=float(np.mean(losses[-window:])),
        seconds=seconds, n_corpus_tokens=int(stream.size),
    )
    _save_atomic(model, tokenizer, config, result, corpus_fingerprint, Path(out_dir))
    return result


def _save_atomic(model, tokenizer: TextTokenizer, config: PretrainConfig, result: PretrainResult, corpus_fp: str, out_dir: Path) -> None:
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        meta = {
            "pretrain_config": dataclasses.asdict(config),
            "tokenizer": tokenizer.name,
            "corpus_fingerprint": corpus_fp,
            "first_loss": result.first_loss,
            "final_loss": result.final_loss,
            "seconds": result.seconds,
            "n_corpus_tokens": result.n_corpus_tokens,
        }
        (tmp / "pretrain.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
