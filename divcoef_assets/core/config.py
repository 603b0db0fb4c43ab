"""Typed, frozen configuration of a diversity audit's probe and estimator.

A `ProbeConfig` names everything that changes an embedding: the probe network, its
initialisation, the tokenizer, the batch geometry, the fine-tune schedule and the Fisher
estimator. Its `fingerprint()` is therefore part of every cache key: two audits with equal
fingerprints on equal data produce equal numbers, and any change to a number-changing field
gives a new key (nothing stale is ever reused).

Defaults follow the paper's experiment driver (10 fine-tune epochs, AdamW lr 5e-5, eps 1e-8,
weight decay 1e-4, loader batches of 8, sequences of 128 tokens) except where the field says so.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from divcoef_assets.core.fingerprint import digest

FisherEstimator = Literal["mc", "mc_head_exact"]
ProbeInit = Literal["pretrained", "random"]
FinetuneMode = Literal["full", "cached_body"]
Precision = Literal["fp32", "bf16"]
Device = str  # "cpu", "auto", "cuda", "cuda:N" or "mps"

DEVICE_FORMS: tuple[str, ...] = ("cpu", "auto", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"cpu|auto|cuda|cuda:\d+|mps")
# Below this many tokens per sequence the probe's Fisher is degenerate: a handful of positions per
# sequence give a few gradient terms, so embeddings are dominated by noise (and the first position
# has no context at all).
MIN_SEQ_LEN = 8
# A jackknife interval leaves one batch out at a time: with fewer than 3 batches there is no spread.
MIN_N_BATCHES = 3

FISHER_ESTIMATORS: tuple[str, ...] = ("mc", "mc_head_exact")
FINETUNE_MODES: tuple[str, ...] = ("full", "cached_body")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

# Fields added after ENGINE_VERSION 2, with the value that reproduces what came before: they
# enter the fingerprint only when set to something else, so existing cache entries stay valid.
_LATER_FIELDS_DEFAULTS: dict[str, Any] = {"finetune": "full", "precision": "fp32"}

# Version of what the engine computes for a given config. It is part of every probe fingerprint,
# hence of every cache key: bump it whenever a change to core/task2vec.py (or what it calls)
# changes an embedding's value, so no stale embedding is ever reused.
ENGINE_VERSION = "2"  # 2: closed-form head rows only where absent from the input


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_non_negative(value: object) -> bool:
    """A real number (bools excluded) that is neither NaN nor infinite and not below 0."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
        and value >= 0
    )


# The fields of the fine-tune and Fisher steps (the estimator part of an embedding's cache key).
ESTIMATOR_FIELDS: tuple[str, ...] = (
    "epochs", "lr", "adam_eps", "weight_decay", "loader_batch_size", "fisher", "fisher_samples", "fisher_squares",
    "reference_compat", "finetune", "precision",
)
# The fields that decide which token batches are drawn from a snapshot.
SAMPLING_FIELDS: tuple[str, ...] = ("tokenizer", "seq_len", "batch_size", "n_batches", "seed")


@dataclass(frozen=True)
class ProbeConfig:
    """What produces a Task2Vec embedding. The fields that can change an embedding's value enter
    the fingerprint (`numeric_fields`); `name`, `description`, `device` (float noise only, so a
    GPU re-run may reuse a CPU cache entry) and the fields that only choose which embeddings are
    used and how they are compared stay out. `finetune` and `precision` enter only when not at
    their defaults, so cache keys from before they existed stay valid."""

    name: str = "default"
    # Hugging Face hub id or local folder of a causal LM (safetensors weights only).
    model: str = "gpt2"
    # "pretrained" loads the weights; "random" builds the architecture from its config with `seed`.
    init: ProbeInit = "pretrained"
    # "gpt2" = GPT-2 byte-level BPE built offline; otherwise a hub id or local tokenizer folder.
    tokenizer: str = "gpt2"
    seq_len: int = 128  # tokens per sequence (truncate / right-pad with the pad id)
    batch_size: int = 512  # sequences per Task2Vec batch (paper: 512)
    n_batches: int = 200  # batches per dataset (paper: 200)
    epochs: int = 10  # fine-tune epochs over the batch; 0 = the paper's "no fine-tune" ablation
    lr: float = 5e-5
    adam_eps: float = 1e-8
    weight_decay: float = 1e-4
    loader_batch_size: int = 8  # sequences per optimisation / Fisher step
    # "mc": one target per position sampled from the model's softmax (the paper's estimator);
    # "mc_head_exact": same expectation, with the output layer's term in closed form.
    fisher: FisherEstimator = "mc"
    fisher_samples: int = 1  # Monte Carlo targets per position, averaged (same expectation)
    # Squared gradients per "loader_batch" (the paper) or per "sequence" (each sequence's share of
    # the loader batch's loss squared separately: same expectation, lower variance).
    fisher_squares: Literal["loader_batch", "sequence"] = "loader_batch"
    # Reproduce the official code's quirks exactly (off-by-one target, pads scored, eos ignored).
    reference_compat: bool = False
    # "full": every fine-tune step runs the whole network (a tied head's input path moves too);
    # "cached_body": the body's final hidden states are computed once, with the initial weights,
    # and the head is fine-tuned on them (the input-embedding path of a tied head is not
    # followed during fine-tuning). Less work per step; the Fisher step is unchanged.
    finetune: FinetuneMode = "full"
    # "fp32": float32 throughout. "bf16": mixed precision, the matrix products of the body (autocast)
    # and of the output layer in bfloat16, softmax, losses and Fisher sums in float32.
    precision: Precision = "fp32"
    seed: int = 0  # seeds batch sampling, random init, dropout and Monte Carlo draws
    noise_repeats: int = 2  # embeddings of one batch used to measure the noise floor (0 = skip)
    noise_batches: int = 2  # batches whose repeats measure the noise floor
    distance: str = "task2vec_cosine"  # see core.distance.DISTANCES
    # Sequential stopping: when > 0, add batches (at least `min_batches`, at most `n_batches`)
    # until the 95% interval's half-width is at most this. 0 = always `n_batches`.
    target_half_width: float = 0.0
    min_batches: int = 5
    device: Device = "cpu"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # recorded, part of the fingerprint

    def __post_init__(self) -> None:
        problems = []
        for name in ("seq_len", "batch_size", "n_batches", "loader_batch_size", "fisher_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if _is_int(self.seq_len) and 0 < self.seq_len < MIN_SEQ_LEN:
            problems.append(
                f"seq_len must be at least {MIN_SEQ_LEN}, got {self.seq_len}: fewer tokens per sequence give a "
                "degenerate Fisher (a few positions, most of them without context); raise seq_len"
            )
        if _is_int(self.n_batches) and 0 < self.n_batches < MIN_N_BATCHES:
            problems.append(
                f"n_batches must be at least {MIN_N_BATCHES}, got {self.n_batches}: the jackknife interval "
                "leaves one batch out at a time and needs at least 3 batches; raise n_batches"
            )
        if not _is_finite_non_negative(self.target_half_width):
            problems.append(
                f"target_half_width must be a finite non-negative number, got {self.target_half_width!r}"
            )
        if not isinstance(self.min_batches, int) or self.min_batches < 3:
            problems.append(f"min_batches must be an integer >= 3 (a jackknife needs batches to leave out), got {self.min_batches!r}")
        for name in ("epochs", "noise_repeats", "noise_batches", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name} must be a non-negative integer, got {value!r}")
        if self.noise_repeats == 1:
            problems.append("noise_repeats must be 0 (skip) or at least 2")
        if self.init not in ("pretrained", "random"):
            problems.append(f"init must be 'pretrained' or 'random', got {self.init!r}")
        if self.fisher not in FISHER_ESTIMATORS:
            problems.append(f"fisher must be one of {FISHER_ESTIMATORS}, got {self.fisher!r}")
        if self.fisher_squares not in ("loader_batch", "sequence"):
            problems.append(f"fisher_squares must be 'loader_batch' or 'sequence', got {self.fisher_squares!r}")
        if self.reference_compat and self.fisher_squares != "loader_batch":
            problems.append("reference_compat squares gradients per loader batch: use fisher_squares='loader_batch'")
        if self.reference_compat and self.fisher != "mc":
            problems.append("reference_compat reproduces the official Monte Carlo estimator: use fisher='mc'")
        if self.finetune not in FINETUNE_MODES:
            problems.append(f"finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.reference_compat and (self.finetune != "full" or self.precision != "fp32"):
            problems.append("reference_compat reproduces the official code: use finetune='full' and precision='fp32'")
        for name in ("lr", "adam_eps", "weight_decay"):
            value = getattr(self, name)
            if not _is_finite_non_negative(value):
                problems.append(f"{name} must be a finite non-negative number, got {value!r}")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            problems.append(
                f"device must be one of {', '.join(DEVICE_FORMS)} (N a GPU index such as cuda:1), got {self.device!r}"
            )
        if not self.model:
            problems.append("model must name a hub id or a local folder")
        if problems:
            raise ValueError(f"invalid probe config {self.name!r}: " + "; ".join(problems))

    def numeric_fields(self) -> dict[str, Any]:
        """The fields that can change an embedding (the fingerprint's content)."""
        data = dataclasses.asdict(self)
        for key in ("name", "description", "device", "n_batches", "noise_repeats", "noise_batches", "distance",
                    "target_half_width", "min_batches"):
            data.pop(key)
        for key, default in _LATER_FIELDS_DEFAULTS.items():
            if data[key] == default:
                data.pop(key)
        return data

    def fingerprint(self) -> str:
        """Stable 16-hex digest of `numeric_fields()` and the engine version: the probe
        configuration a coefficient row is recorded under.

        `n_batches`, `noise_repeats`, `noise_batches` and `distance` are excluded: they decide
        which embeddings are used and how they are compared, not what any one embedding is.
        """
        return digest({"engine": ENGINE_VERSION, **self.numeric_fields()})

    def estimator_fields(self) -> dict[str, Any]:
        """What the engine does to one token batch with given probe weights: the estimator part
        of every embedding's cache key (batch content, weights and seed are the other parts)."""
        return {name: getattr(self, name) for name in ESTIMATOR_FIELDS}

    def estimator_fingerprint(self) -> str:
        return digest({"engine": ENGINE_VERSION, **self.estimator_fields()})

    def settings_fingerprint(self) -> str:
        """Every field but `name`, `description` and `device`: equal for two configs that would
        record the same coefficient. Each audit step compares it with its upstream's, so a
        registry edit between steps is caught instead of mixing settings."""
        data = dataclasses.asdict(self)
        for key in ("name", "description", "device"):
            data.pop(key)
        return digest({"engine": ENGINE_VERSION, **data})

    def sampling_fields(self) -> dict[str, Any]:
        """What decides the token batches drawn from a snapshot."""
        return {name: getattr(self, name) for name in SAMPLING_FIELDS}

    def replace(self, **changes: Any) -> "ProbeConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
