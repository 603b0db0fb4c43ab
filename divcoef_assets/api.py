"""The Python API: a text dataset's diversity coefficient without Dagster.

    >>> from divcoef_assets.api import diversity_coefficient
    >>> result = diversity_coefficient(texts, probe="local-gpt2", n_batches=10)
    >>> result.value, result.estimate.ci_low, result.estimate.ci_high, result.noise.value

`probe` is a `ProbeConfig`, the name of a probe in the registry (`data/registry.yaml`; a probe
pretrained here must have been built first, e.g. by `divcoef audit`), or a model (hub id or
local folder, loaded pretrained). Keyword overrides (`batch_size`, `n_batches`, `epochs`,
`seq_len`, `seed`, `fisher`, `device`, ...) replace fields of the probe config.

The API runs the same audit chain as the Dagster assets (`pipeline.audit_partition`): the texts
are staged as a one-dataset registry in a temporary folder, snapshotted, batched, embedded,
compared and summarized. Embeddings go to the content-addressed cache (`cache_dir`, default
`$DIVCOEF_CACHE` or the project's cache, shared with the audits), so asking again, or for more
batches, computes only what is new.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from divcoef_assets import paths, pipeline
from divcoef_assets.core.audit import CrossResult, DiversityResult, ProgressCallback, cross_summarize
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.sources import DatasetSpec, FilesSource, parse_source
from divcoef_assets.core.tokenize import load_tokenizer
from divcoef_assets.keys import InvalidKeyError, validate_key
from divcoef_assets.registry import Registry

log = logging.getLogger(__name__)


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


def is_valid_key(name: str) -> bool:
    try:
        validate_key(name, "probe")
        return True
    except InvalidKeyError:
        return False


def _runnable(config: ProbeConfig) -> ProbeConfig:
    """A probe pretrained here, replaced by the folder the audit built it in."""
    if config.model.startswith(pipeline.PRETRAIN_PREFIX):
        return pipeline.resolve_model(config, pipeline.Layout(paths.artifacts_dir()))
    return config


def _stage_texts(folder: Path, name: str, texts: Iterable[str]) -> DatasetSpec:
    path = folder / f"{name}.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for text in texts:
            fh.write(json.dumps({"text": text}) + "\n")
    return DatasetSpec(name=name, source=FilesSource(path=str(path), format="jsonl"), description="texts given to the API")


def _registry(folder: Path, config: ProbeConfig, datasets: dict[str, DatasetSpec]) -> Registry:
    return Registry(path=folder / "registry.yaml", datasets=datasets, probes={config.name: config}, default_probe=config.name)


def _padding_mask(tokens: np.ndarray, pad_id: int) -> np.ndarray:
    """1 for real tokens, 0 for the trailing run of pad ids of each row (right padding)."""
    real = tokens != pad_id
    last_real = np.where(real.any(axis=1), tokens.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)
    return (np.arange(tokens.shape[1])[None, :] < last_real[:, None]).astype(np.int64)


def _check_ids(ids: np.ndarray, vocab_size: int, probe: str) -> None:
    """Refuse token ids outside the probe's vocabulary before any work, naming the first one."""
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"tokens must be integer token ids, got dtype {ids.dtype}")
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if bad.size:
        row, column = (int(v) for v in bad[0])
        raise ValueError(f"token ids outside the probe's vocabulary of {vocab_size} (probe {probe!r}): tokens[{row}, {column}] = "
                         f"{int(ids[row, column])}, {len(bad)} such ids in all; use the probe's tokenizer, or ids in [0, {vocab_size})")


def diversity_coefficient(
    texts: Iterable[str] | None = None,
    *,
    tokens: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    probe: ProbeConfig | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    name: str = "dataset",
    **overrides,
) -> DiversityResult:
    """Task2Vec diversity coefficient of `texts`, or of pre-tokenized `tokens` [n, >= seq_len].

    For `tokens`, `attention_mask` marks real tokens (1) and padding (0); without it, each row's
    trailing run of the tokenizer's pad id is padding. Returns a `DiversityResult`: `.value`,
    `.estimate` (standard error and 95% interval from a jackknife over batches), `.noise` (noise
    floor) and `.noise_corrected`.
    """
    if (texts is None) == (tokens is None):
        raise ValueError("give exactly one of texts= or tokens=")
    validate_key(name, "dataset")  # it names files: checked before any work
    config = _runnable(resolve_probe(probe, **overrides))
    if not is_valid_key(config.name):
        config = config.replace(name=_safe_name(config.name))
    with tempfile.TemporaryDirectory(prefix="divcoef-api-") as tmp:
        folder = Path(tmp)
        layout = pipeline.Layout(folder / "artifacts", cache_root=paths.cache_dir(cache_dir))
        if tokens is None:
            registry = _registry(folder, config, {name: _stage_texts(folder, name, texts)})
            return pipeline.audit_partition(registry, name, config.name, layout, progress=progress).result
        ids = np.asarray(tokens)
        if ids.ndim != 2:
            raise ValueError(f"tokens must be a 2-D [n, seq_len] array of token ids, got shape {ids.shape}")
        tokenizer = load_tokenizer(config.tokenizer)
        _check_ids(ids, tokenizer.vocab_size, config.name)
        mask = _padding_mask(ids, tokenizer.pad_id) if attention_mask is None else np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask {mask.shape} must have the shape of tokens {ids.shape}")
        spec = DatasetSpec(name=name, source=parse_source("synthetic", {"kind": "upper_bound", "n_sequences": int(ids.shape[0])}),
                           description="token ids given to the API")
        registry = _registry(folder, config, {name: spec})
        snap = pipeline.token_snapshot(registry, name, ids, mask, layout)
        return pipeline.audit_partition(registry, name, config.name, layout, snap=snap, progress=progress).result


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
    a = diversity_coefficient(texts_a, probe=config, cache_dir=cache_dir, progress=progress, name="a")
    b = diversity_coefficient(texts_b, probe=config, cache_dir=cache_dir, progress=progress, name="b")
    return cross_summarize(config, a.embeddings, b.embeddings), a, b
