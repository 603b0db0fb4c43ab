"""Probe networks: any causal LM from `transformers`, loaded safely and made resettable.

A Task2Vec embedding starts every batch from the *same* probe weights, so a `Probe` keeps a copy
of its initial state and `reset()` copies it back in place (cheaper than a deep copy of the model
per batch). Loading is deliberately strict:

- weights are read from safetensors only (`use_safetensors=True`); a folder that only has pickle
  (`.bin`) weights is refused, because unpickling runs arbitrary code;
- `trust_remote_code` is always off;
- the output head and the pad/eos ids are found generically (`get_output_embeddings()`, the
  tokenizer's ids), never by GPT-2 constants.

`model` is a Hugging Face hub id, a local folder, or `arch:<model_type>` for a randomly
initialised architecture described entirely by `config.extra["config"]` (e.g. a 2-layer GPT-2),
which needs neither hub nor files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.fingerprint import digest, file_digest

log = logging.getLogger(__name__)


class ProbeLoadError(ValueError):
    """A probe network could not be loaded (missing, unsafe or incompatible)."""


@dataclass
class Probe:
    """A loaded probe network plus what the Task2Vec engine needs to know about it."""

    model: nn.Module
    head: nn.Module  # the output layer (for GPT-2, `lm_head`, tied to `transformer.wte`)
    head_name: str
    body: nn.Module | None  # base model whose last hidden state feeds `head`; None = use full model
    eos_id: int
    pad_id: int
    vocab_size: int  # rows of the output layer
    n_positions: int | None  # longest context the model accepts, when the config says
    device: torch.device
    source: str
    _initial: dict[str, torch.Tensor]

    @property
    def tied_head(self) -> bool:
        """True when the output layer's weight is the input embedding's weight."""
        emb = self.model.get_input_embeddings()
        return emb is not None and getattr(self.head, "weight", None) is getattr(emb, "weight", None)

    def reset(self) -> None:
        """Copy the initial weights back in place: every batch starts from the same probe."""
        with torch.no_grad():
            for name, tensor in self.model.state_dict(keep_vars=True).items():
                tensor.copy_(self._initial[name])

    def hidden_and_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor):
        """Final hidden states and logits at the selected positions only.

        input_ids, attention_mask: [B, T]; positions: bool [B, T].
        Returns (hidden [N, d] or None, logits [N, V]) with N = positions.sum(). Computing the
        50k-way output only where a loss is taken avoids most of the work on padding.
        """
        if self.body is not None:
            hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            selected = hidden[positions]  # [N, d]
            return selected, self.head(selected)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return None, logits[positions]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProbeLoadError(f"device {name!r} requested but CUDA is not available on this machine; use device: cpu")
    return device


def _check_local_folder(path: Path) -> None:
    if not path.is_dir():
        raise ProbeLoadError(f"probe folder {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise ProbeLoadError(f"probe folder {str(path)!r} has no config.json: save the model with save_pretrained()")


def _check_weights(path: Path) -> None:
    safetensors = list(path.glob("*.safetensors")) + list(path.glob("*.safetensors.index.json"))
    if safetensors:
        return
    pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")] + [p.name for p in path.glob("*.pth")]
    if pickled:
        raise ProbeLoadError(
            f"probe folder {str(path)!r} only has pickle weights ({', '.join(sorted(pickled))}); pickle files can run "
            "arbitrary code when loaded, so they are refused. Convert them once, in a trusted environment, with "
            "model.save_pretrained(folder, safe_serialization=True)."
        )
    raise ProbeLoadError(f"probe folder {str(path)!r} has no weights (*.safetensors); save the model with save_pretrained()")


def _is_local(model: str) -> bool:
    return model.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(model))


def _load_config(config: ProbeConfig):
    from transformers import AutoConfig

    overrides = dict(config.extra.get("config", {}))
    if config.model.startswith("arch:"):
        if config.init != "random":
            raise ProbeLoadError(f"probe {config.name!r}: 'arch:' models have no weights; use init: random")
        model_type = config.model.split(":", 1)[1]
        try:
            return AutoConfig.for_model(model_type, **overrides)
        except (ValueError, KeyError) as exc:
            raise ProbeLoadError(f"probe {config.name!r}: unknown architecture {model_type!r}: {exc}") from exc
    try:
        hf_config = AutoConfig.from_pretrained(_expand(config.model), trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ProbeLoadError(
                f"probe {config.name!r}: model {config.model!r} needs custom code from its repository "
                "(trust_remote_code); running remote code is refused. Use a model supported by transformers."
            ) from exc
        raise ProbeLoadError(f"probe {config.name!r}: cannot read the config of {config.model!r}: {exc}") from exc
    except OSError as exc:
        raise ProbeLoadError(_unreachable(config, exc)) from exc
    for key, value in overrides.items():
        setattr(hf_config, key, value)
    return hf_config


def _expand(model: str) -> str:
    return os.path.expanduser(model) if _is_local(model) else model


def _unreachable(config: ProbeConfig, exc: Exception) -> str:
    return (
        f"probe {config.name!r}: could not load {config.model!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        "If it is a hub id, the Hugging Face hub may be unreachable from this machine: download it elsewhere, "
        "save it with save_pretrained() and set `model:` to that folder."
    )


def load_probe(config: ProbeConfig, *, eos_id: int | None = None, pad_id: int | None = None, tokenizer_vocab_size: int | None = None) -> Probe:
    """Load the probe described by `config` (fp32, train mode) on `config.device`.

    eos_id / pad_id: the tokenizer's ids (default: the model config's eos, pad = eos).
    tokenizer_vocab_size: when given, the model must have an output row for every token id.
    """
    from transformers import AutoModelForCausalLM

    device = resolve_device(config.device)
    if _is_local(config.model):
        folder = Path(_expand(config.model))
        _check_local_folder(folder)
        if config.init == "pretrained":
            _check_weights(folder)
    hf_config = _load_config(config)
    if getattr(hf_config, "auto_map", None):
        raise ProbeLoadError(
            f"probe {config.name!r}: model {config.model!r} declares custom code (auto_map: "
            f"{sorted(hf_config.auto_map)}); running a model's own code is refused (trust_remote_code is always off). "
            "Use a model whose architecture transformers ships, or remove auto_map from its config.json if it is one."
        )
    try:
        if config.init == "pretrained":
            model = AutoModelForCausalLM.from_pretrained(
                _expand(config.model),
                config=hf_config,
                use_safetensors=True,
                trust_remote_code=False,
                dtype=torch.float32,
            )
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False, dtype=torch.float32)
    except ValueError as exc:
        raise ProbeLoadError(f"probe {config.name!r}: cannot build {config.model!r}: {exc}") from exc
    except OSError as exc:
        raise ProbeLoadError(_unreachable(config, exc)) from exc
    model.to(device)
    model.train()  # dropout active in fine-tune and Fisher, as in the reference implementation

    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise ProbeLoadError(f"probe {config.name!r}: {type(model).__name__} exposes no output head with a weight")
    head_name = next(name for name, module in model.named_modules() if module is head)
    vocab_size = int(head.weight.shape[0])

    eos = eos_id if eos_id is not None else model.config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0]
    if eos is None:
        raise ProbeLoadError(f"probe {config.name!r}: no eos id known (neither tokenizer nor model config gives one)")
    pad = pad_id if pad_id is not None else (model.config.pad_token_id if model.config.pad_token_id is not None else eos)
    if tokenizer_vocab_size is not None and tokenizer_vocab_size > vocab_size:
        raise ProbeLoadError(
            f"probe {config.name!r}: the tokenizer emits ids up to {tokenizer_vocab_size - 1} but the model has only "
            f"{vocab_size} output rows; use the model's own tokenizer"
        )
    for name, value in (("eos", eos), ("pad", pad)):
        if not 0 <= int(value) < vocab_size:
            raise ProbeLoadError(f"probe {config.name!r}: {name} id {value} is outside the model's vocabulary of {vocab_size}")
    n_positions = _context_length(model.config)
    if n_positions is not None and config.seq_len > n_positions:
        raise ProbeLoadError(
            f"probe {config.name!r}: seq_len {config.seq_len} exceeds the model's context of {n_positions} tokens"
        )

    initial = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    probe = Probe(
        model=model,
        head=head,
        head_name=head_name,
        body=None,
        eos_id=int(eos),
        pad_id=int(pad),
        vocab_size=vocab_size,
        n_positions=n_positions,
        device=device,
        source=config.model,
        _initial=initial,
    )
    probe.body = _verified_body(probe)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "loaded probe %s (%s, init=%s, %.1fM parameters, head %s%s, device %s)",
        config.name, config.model, config.init, n_params / 1e6, head_name, " tied to input embedding" if probe.tied_head else "", device,
    )
    return probe


def weights_fingerprint(config: ProbeConfig) -> str:
    """Content of the probe's starting weights, without loading the model.

    A local folder: its config.json and safetensors files, byte for byte. A hub id: the same
    files of the locally cached snapshot (fetched first when the hub is reachable, as loading
    would). A random initialisation: the architecture, its overrides, the seed and the library
    versions that draw the weights.
    """
    import transformers

    overrides = config.extra.get("config", {})
    if config.init == "random":
        if config.model.startswith("arch:"):
            origin: object = config.model
        else:
            origin = file_digest(_weights_folder(config) / "config.json")
        return digest("random", origin, overrides, config.seed, torch.__version__, transformers.__version__)
    folder = _weights_folder(config)
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.name.endswith((".safetensors", ".safetensors.index.json")))
    return digest("pretrained", [[p.name, file_digest(p)] for p in files], overrides)


def _weights_folder(config: ProbeConfig) -> Path:
    if _is_local(config.model):
        folder = Path(_expand(config.model))
        _check_local_folder(folder)
        return folder
    try:
        from huggingface_hub import snapshot_download

        patterns = ["config.json", "*.safetensors", "*.safetensors.index.json"]
        try:
            return Path(snapshot_download(config.model, allow_patterns=patterns, local_files_only=True))
        except Exception:  # not cached yet: fetch it the way from_pretrained would
            return Path(snapshot_download(config.model, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - any hub failure means the probe cannot be loaded either
        raise ProbeLoadError(_unreachable(config, exc)) from exc


def probe_identity(config: ProbeConfig, tokenizer) -> str:
    """The probe part of every embedding's cache key: starting weights plus the pad and eos ids
    the engine uses (they decide which positions are scored)."""
    return digest("probe", weights_fingerprint(config), int(tokenizer.pad_id), int(tokenizer.eos_id))


def load_probe_for(config: ProbeConfig, tokenizer) -> Probe:
    """`load_probe` with the eos/pad ids and vocabulary check of `tokenizer` (a TextTokenizer)."""
    return load_probe(config, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, tokenizer_vocab_size=tokenizer.vocab_size)


def _context_length(hf_config) -> int | None:
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(hf_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _verified_body(probe: Probe) -> nn.Module | None:
    """The base model, if `head(base(x).last_hidden_state)` reproduces the model's logits.

    Some architectures scale or soft-cap logits after the head; for those the engine falls back
    to the full forward pass (correct, just slower on padded batches).
    """
    body = getattr(probe.model, "base_model", None)
    if body is None or body is probe.model:
        return None
    model = probe.model
    ids = torch.arange(min(8, probe.vocab_size), device=probe.device).unsqueeze(0)
    mask = torch.ones_like(ids)
    model.eval()
    try:
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            split = probe.head(body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state)
        ok = full.shape == split.shape and torch.allclose(full, split, atol=1e-5, rtol=1e-4)
    except (TypeError, AttributeError, RuntimeError):
        ok = False
    finally:
        model.train()
    if not ok:
        log.info("probe %s: head(base_model) differs from the model's logits; using the full forward pass", probe.source)
    return body if ok else None
