"""Synthetic token datasets with known diversity: the paper's conceptual bounds and GINC corpora.

The diversity coefficient paper (Lee, Miranda, Koyejo 2023) calibrates its scale with

* a *conceptual lower bound*: a dataset that is (almost) one token repeated, so every batch looks
  the same (paper value with GPT-2: 0.0525);
* a *conceptual upper bound*: tokens drawn uniformly from the vocabulary, so batches share nothing
  but noise (0.4037);
* *GINC* corpora (Xie et al. 2021, "An Explanation of In-context Learning as Implicit Bayesian
  Inference"): a mixture of hidden Markov models, one per latent concept; their diversity should
  rise with the number of concepts and with the vocabulary size.

Every function returns int64 token ids of shape [n_seqs, seq_len] and is a pure function of its
arguments (numpy generators seeded from them), so datasets are identical on every machine.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# Independent random streams drawn from one seed: SeedSequence([seed, stream, ...]).
_STREAM_EMISSION = 1
_STREAM_CONCEPT = 2
_STREAM_DOCS = 3
_STREAM_TOKEN_IDS = 4


def _check_int(name: str, value: int, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_eos(eos_id: int, vocab_size: int) -> int:
    eos_id = _check_int("eos_id", eos_id, 0)
    if eos_id >= vocab_size:
        raise ValueError(f"eos_id {eos_id} is not a token id of a vocabulary of size {vocab_size}")
    return eos_id


def _non_eos(draws: np.ndarray, eos_id: int) -> np.ndarray:
    """Map draws from ``range(vocab_size - 1)`` onto ``range(vocab_size)`` minus ``eos_id``."""
    return draws + (draws >= eos_id)


def lower_bound_tokens(
    n_seqs: int, seq_len: int, *, vocab_size: int, eos_id: int, seed: int
) -> np.ndarray:
    """The paper's conceptual lower bound: one token ``t`` (not eos, chosen once per dataset from
    ``seed``) repeated, each position replaced by eos with probability ``1 / vocab_size``."""
    n_seqs = _check_int("n_seqs", n_seqs, 1)
    seq_len = _check_int("seq_len", seq_len, 2)
    vocab_size = _check_int("vocab_size", vocab_size, 2)
    eos_id = _check_eos(eos_id, vocab_size)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    token = int(_non_eos(rng.integers(vocab_size - 1), eos_id))
    is_eos = rng.random((n_seqs, seq_len)) < 1.0 / vocab_size
    logger.debug("lower bound dataset: token %d with eos %d", token, eos_id)
    return np.where(is_eos, eos_id, token).astype(np.int64)


def upper_bound_tokens(
    n_seqs: int, seq_len: int, *, vocab_size: int, eos_id: int, seed: int
) -> np.ndarray:
    """The paper's conceptual upper bound: every token uniform over the vocabulary except eos.

    Eos is left out because it is also the pad token: the paper's Fisher loss ignores it, so an eos
    in an "all tokens equally likely" dataset would be a position that contributes nothing.
    """
    n_seqs = _check_int("n_seqs", n_seqs, 1)
    seq_len = _check_int("seq_len", seq_len, 2)
    vocab_size = _check_int("vocab_size", vocab_size, 2)
    eos_id = _check_eos(eos_id, vocab_size)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    return _non_eos(rng.integers(vocab_size - 1, size=(n_seqs, seq_len)), eos_id).astype(np.int64)


def default_token_ids(
    vocab_size: int, *, tokenizer_vocab_size: int, eos_id: int, seed: int
) -> np.ndarray:
    """``vocab_size`` distinct ids of a real tokenizer (eos excluded), drawn from ``seed``: the
    tokens that stand for a GINC corpus's symbols ``0 .. vocab_size - 1`` when a probe reads it."""
    vocab_size = _check_int("vocab_size", vocab_size, 2)
    tokenizer_vocab_size = _check_int("tokenizer_vocab_size", tokenizer_vocab_size, 2)
    eos_id = _check_eos(eos_id, tokenizer_vocab_size)
    if vocab_size > tokenizer_vocab_size - 1:
        raise ValueError(
            f"cannot pick {vocab_size} distinct non-eos ids from a tokenizer with "
            f"{tokenizer_vocab_size} ids; lower the GINC vocab_size"
        )
    rng = np.random.default_rng([_check_int("seed", seed, 0), _STREAM_TOKEN_IDS])
    draws = rng.choice(tokenizer_vocab_size - 1, size=vocab_size, replace=False)
    return _non_eos(draws, eos_id).astype(np.int64)


@dataclass(frozen=True, eq=False)
class GincModel:
    """The HMMs of a GINC corpus, one per concept, sharing one emission matrix.

    start:      [n_concepts, n_states]           P(first hidden state | concept)
    transition: [n_concepts, n_states, n_states] P(next state | state, concept); rows sum to 1
    emission:   [n_states, vocab_size]           P(symbol | state), shared by all concepts
    """

    start: np.ndarray
    transition: np.ndarray
    emission: np.ndarray

    n_concepts = property(lambda self: int(self.transition.shape[0]))
    n_states = property(lambda self: int(self.transition.shape[1]))
    vocab_size = property(lambda self: int(self.emission.shape[1]))


def _check_concentration(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def ginc_model(
    *,
    n_concepts: int,
    vocab_size: int,
    seed: int,
    n_states: int = 10,
    transition_concentration: float = 0.1,
    emission_concentration: float = 0.1,
) -> GincModel:
    """Random GINC-style HMMs, a pure function of the arguments.

    As in GINC, concepts differ only in their dynamics: each concept has its own start distribution
    (Dirichlet(1), i.e. uniform over the simplex) and transition matrix, whose rows are
    Dirichlet(``transition_concentration``); the default 0.1 makes rows peaky, so each concept has
    a few characteristic state paths. The emission matrix is shared; its rows are
    Dirichlet(``emission_concentration``) over the ``vocab_size`` symbols, so each state favours
    roughly ``1 + 0.1 * vocab_size`` symbols: a larger vocabulary spreads emissions wider and gives
    more diverse text, as the paper's vocabulary sweep needs.

    Concept ``c``'s HMM depends only on (``seed``, ``n_states``, ``c``), so the concepts of a
    smaller mixture are exactly the first concepts of a larger one with the same seed.
    """
    n_concepts = _check_int("n_concepts", n_concepts, 1)
    vocab_size = _check_int("vocab_size", vocab_size, 2)
    n_states = _check_int("n_states", n_states, 1)
    seed = _check_int("seed", seed, 0)
    alpha_t = _check_concentration("transition_concentration", transition_concentration)
    alpha_e = _check_concentration("emission_concentration", emission_concentration)

    emission_rng = np.random.default_rng([seed, _STREAM_EMISSION, n_states, vocab_size])
    emission = emission_rng.dirichlet(np.full(vocab_size, alpha_e), size=n_states)
    start = np.empty((n_concepts, n_states))
    transition = np.empty((n_concepts, n_states, n_states))
    for c in range(n_concepts):
        concept_rng = np.random.default_rng([seed, _STREAM_CONCEPT, n_states, c])
        start[c] = concept_rng.dirichlet(np.ones(n_states))
        transition[c] = concept_rng.dirichlet(np.full(n_states, alpha_t), size=n_states)
    for name, probs in (("start", start), ("transition", transition), ("emission", emission)):
        if not np.isfinite(probs).all():
            raise ValueError(f"GINC {name} probabilities are not finite; raise the concentrations")
    return GincModel(start=start, transition=transition, emission=emission)


def _cdf(probs: np.ndarray) -> np.ndarray:
    """Cumulative distribution along the last axis, ending at exactly 1.0."""
    cdf = np.cumsum(probs, axis=-1)
    cdf /= cdf[..., -1:]
    cdf[..., -1] = 1.0
    return cdf


def _draw_rows(cdf_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One categorical draw per row: the index i with cdf[i-1] <= u < cdf[i]."""
    return (u[:, None] >= cdf_rows).sum(axis=1)


def ginc_tokens(
    n_seqs: int,
    seq_len: int,
    *,
    n_concepts: int,
    vocab_size: int,
    seed: int,
    n_states: int = 10,
    token_ids: Sequence[int] | np.ndarray | None = None,
    doc_seed: int | None = None,
    transition_concentration: float = 0.1,
    emission_concentration: float = 0.1,
) -> np.ndarray:
    """A GINC-style corpus: each sequence picks a concept uniformly, then runs that concept's HMM.

    The HMMs come from ``ginc_model`` (``seed``, ``n_concepts``, ``vocab_size``, ``n_states`` and
    the concentrations); the sequences from ``doc_seed`` (default: ``seed``; the two use separate
    random streams), so corpora can share HMMs and differ in samples. Symbols
    ``0 .. vocab_size - 1`` are returned as is, or as ``token_ids[symbol]`` when ``token_ids`` (e.g.
    from ``default_token_ids``) is given.
    """
    n_seqs = _check_int("n_seqs", n_seqs, 1)
    seq_len = _check_int("seq_len", seq_len, 2)
    model = ginc_model(
        n_concepts=n_concepts,
        vocab_size=vocab_size,
        seed=seed,
        n_states=n_states,
        transition_concentration=transition_concentration,
        emission_concentration=emission_concentration,
    )
    lookup = None
    if token_ids is not None:
        lookup = np.asarray(token_ids)
        if lookup.shape != (model.vocab_size,) or not np.issubdtype(lookup.dtype, np.integer):
            raise ValueError(
                f"token_ids must be {model.vocab_size} integer ids (one per GINC symbol), got "
                f"{lookup.dtype} of shape {lookup.shape}"
            )
        if lookup.min() < 0 or np.unique(lookup).size != lookup.size:
            raise ValueError("token_ids must be distinct non-negative ids")

    docs_seed = seed if doc_seed is None else _check_int("doc_seed", doc_seed, 0)
    rng = np.random.default_rng([docs_seed, _STREAM_DOCS])
    concepts = rng.integers(model.n_concepts, size=n_seqs)
    u_state = rng.random((seq_len, n_seqs))
    u_symbol = rng.random((n_seqs, seq_len))

    start_cdf = _cdf(model.start)  # [C, S]
    transition_cdf = _cdf(model.transition)  # [C, S, S]
    states = np.empty((n_seqs, seq_len), dtype=np.int64)
    states[:, 0] = _draw_rows(start_cdf[concepts], u_state[0])
    for t in range(1, seq_len):
        states[:, t] = _draw_rows(transition_cdf[concepts, states[:, t - 1]], u_state[t])

    emission_cdf = _cdf(model.emission)  # [S, V]
    symbols = np.empty((n_seqs, seq_len), dtype=np.int64)
    for s in range(model.n_states):
        at_s = states == s
        symbols[at_s] = np.searchsorted(emission_cdf[s], u_symbol[at_s], side="right")
    return symbols if lookup is None else lookup[symbols].astype(np.int64)
