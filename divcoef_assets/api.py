"""The Python API: a text dataset's diversity coefficient without Dagster.

    >>> from divcoef_assets.api import diversity_coefficient
    >>> result = diversity_coefficient(texts, probe="tiny-random", batch_size=64, n_batches=10)
    >>> result.value, result.estimate.ci_low, result.estimate.ci_high, result.noise.value

`probe` is a `ProbeConfig`, the name of a probe in the registry (`data/registry.yaml`), or a
model (hub id or local folder, loaded pretrained). Keyword overrides (`batch_size`,
`n_batches`, `epochs`, `seq_len`, `seed`, `fisher`, `device`, ...) replace fields of the probe
config. Every embedding is cached under `cache_dir` (default: `$DIVCOEF_CACHE` or
`~/.cache/divcoef_assets`), so asking again, or for more batches, computes only what is new.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from divcoef_assets.core.audit import (
    CrossResult,
    DiversityResult,
    ProgressCallback,
    audit_embeddings,
    cross_summarize,
    summarize,
)
from divcoef_assets.core.cache import EmbeddingCache
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.probe import load_probe_for
from divcoef_assets.core.sampling import NotEnoughTextsError, batch_indices
from divcoef_assets.core.tokenize import TextTokenizer, encode_fixed, load_tokenizer, tokens_batch, usable_texts

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("DIVCOEF_CACHE") or Path.home() / ".cache" / "divcoef_assets")


def resolve_probe(probe: ProbeConfig | str | None, **overrides) -> ProbeConfig:
    """A probe config from a config, a registry name or a model id/folder, plus overrides.

    A string that is not a registered probe is taken as a model when it looks like one: an existing
    local folder, a hub id with an owner (`org/name`), a bare hub id of the GPT-2 family (`gpt2`,
    `distilgpt2`, ...) or an `arch:<model_type>` architecture. Anything else (a typo'd probe name,
    say) is refused with the list of registered probes.
    """
    known_bare_models = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2", "openai-gpt")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(probe, ProbeConfig):
        config = probe
    else:
        from divcoef_assets.registry import load_registry

        registry = load_registry()
        name = probe or registry.default_probe
        if name in registry.probes:
            config = registry.probes[name]
        elif probe is None:
            raise ValueError(f"the registry's default probe {name!r} is not defined")
        elif (
            "/" not in probe
            and not os.path.isdir(os.path.expanduser(probe))
            and probe not in known_bare_models
            and not probe.startswith("arch:")
        ):
            raise ValueError(
                f"probe {probe!r} is not registered; registered probes: {list(registry.probes)} "
                f"(in {registry.path}); or name a local model folder or a hub id such as org/name"
            )
        else:
            config = ProbeConfig(name=_safe_name(probe), model=probe)
    return config.replace(**overrides) if overrides else config


def _safe_name(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(model).name.lower())[:63] or "probe"


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Content fingerprint of an ordered list of texts (length-framed, so unambiguous)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def tokens_fingerprint(tokens: np.ndarray) -> str:
    arr = np.ascontiguousarray(tokens, dtype=np.int64)
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class PreparedDataset:
    """What the engine needs from a dataset: a fingerprint and batch i on demand."""

    fingerprint: str
    n_items: int
    texts: Sequence[str] | None = None
    tokens: np.ndarray | None = None
    tokenizer: TextTokenizer | None = None
    name: str = "dataset"

    def batch(self, config: ProbeConfig, index: int):
        rows = batch_indices(self.n_items, config.batch_size, index, config.seed)
        if self.tokens is not None:
            return tokens_batch(self.tokens[rows, : config.seq_len], pad_id=self.tokenizer.pad_id if self.tokenizer else 0)
        return encode_fixed(self.tokenizer, [self.texts[i] for i in rows], seq_len=config.seq_len)


def prepare_texts(texts: Iterable[str], config: ProbeConfig, name: str = "dataset") -> PreparedDataset:
    kept = usable_texts(texts)
    if len(kept) < config.batch_size:
        raise NotEnoughTextsError(
            f"{name}: {len(kept)} usable (non-empty) texts, but one batch needs batch_size={config.batch_size}; "
            "lower batch_size or add data"
        )
    tokenizer = load_tokenizer(config.tokenizer)
    return PreparedDataset(texts_fingerprint(kept), len(kept), texts=kept, tokenizer=tokenizer, name=name)


def prepare_tokens(tokens: np.ndarray, config: ProbeConfig, name: str = "dataset") -> PreparedDataset:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < config.seq_len:
        raise ValueError(f"{name}: token array must be [n, >= seq_len={config.seq_len}], got shape {tokens.shape}")
    if tokens.shape[0] < config.batch_size:
        raise NotEnoughTextsError(f"{name}: {tokens.shape[0]} sequences, but one batch needs batch_size={config.batch_size}")
    tokenizer = load_tokenizer(config.tokenizer)
    return PreparedDataset(tokens_fingerprint(tokens), tokens.shape[0], tokens=tokens, tokenizer=tokenizer, name=name)


def audit_prepared(
    data: PreparedDataset,
    config: ProbeConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    probe_loader=None,
) -> DiversityResult:
    cache = EmbeddingCache(cache_dir or default_cache_dir())
    common = dict(data_fingerprint=data.fingerprint, cache=cache, progress=progress, label=data.name)
    loader = probe_loader or (lambda: load_probe_for(config, data.tokenizer))
    rows = audit_embeddings(config, lambda i: data.batch(config, i), loader, **common)
    return summarize(config, rows, data.fingerprint)


def diversity_coefficient(
    texts: Iterable[str] | None = None,
    *,
    tokens: np.ndarray | None = None,
    probe: ProbeConfig | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    **overrides,
) -> DiversityResult:
    """Task2Vec diversity coefficient of `texts` (or of pre-tokenized `tokens` [n, seq_len]).

    Returns a `DiversityResult`: `.value`, `.estimate` (standard error and 95% interval from a
    jackknife over batches), `.noise` (noise floor) and `.noise_corrected`.
    """
    config = resolve_probe(probe, **overrides)
    if (texts is None) == (tokens is None):
        raise ValueError("give exactly one of texts= or tokens=")
    data = prepare_texts(texts, config) if tokens is None else prepare_tokens(tokens, config)
    return audit_prepared(data, config, cache_dir=cache_dir, progress=progress)


def cross_diversity_coefficient(
    texts_a: Iterable[str],
    texts_b: Iterable[str],
    *,
    probe: ProbeConfig | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    **overrides,
) -> tuple[CrossResult, DiversityResult, DiversityResult]:
    """Cross-diversity of two datasets (mean distance between a batch of A and a batch of B),
    returned with the diversity of each (their embeddings are shared, computed once)."""
    config = resolve_probe(probe, **overrides)
    a = audit_prepared(prepare_texts(texts_a, config, "a"), config, cache_dir=cache_dir, progress=progress)
    b = audit_prepared(prepare_texts(texts_b, config, "b"), config, cache_dir=cache_dir, progress=progress)
    return cross_summarize(config, a.embeddings, b.embeddings), a, b
