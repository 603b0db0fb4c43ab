"""Property-based tests of the text -> batch path with arbitrary Unicode: lone surrogates, control
characters, empty and huge strings. Never an unexpected exception: either well-formed batches and
an exact snapshot round trip, or the documented error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from divcoef_assets.core.snapshot import EmptySnapshotError, read_texts, write_snapshot
from divcoef_assets.core.tokenize import (
    EmptyTextError,
    UnencodableTextError,
    encode_fixed,
    load_tokenizer,
    usable_texts,
)

TOKENIZER = load_tokenizer("gpt2")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Any code point, lone surrogates included (Python str can hold them; UTF-8 cannot). Hypothesis
# leaves surrogates out unless asked, so they get a strategy of their own.
any_char = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
)
# (st.text would drop the surrogates again, so strings are joined from lists of characters.)
short_text = st.lists(any_char, max_size=40).map("".join)
huge_text = st.builds(lambda piece, n: "".join(piece) * n, st.lists(any_char, min_size=1, max_size=8), st.integers(10_000, 300_000))
texts_strategy = st.lists(st.one_of(short_text, short_text, st.just(""), st.sampled_from([" ", "\n\t", "\u3000", "\x00"]), huge_text),
                          min_size=0, max_size=6)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@SETTINGS
@given(texts=texts_strategy, seq_len=st.integers(1, 24))
def test_text_to_batch_is_well_formed_or_a_documented_error(texts, seq_len):
    kept = usable_texts(texts)
    assert all(isinstance(t, str) and t.strip() for t in kept)
    assert len(kept) == sum(1 for t in texts if t.strip())
    try:
        batch = encode_fixed(TOKENIZER, kept, seq_len)
    except UnencodableTextError as exc:
        assert any(_has_surrogate(t) for t in kept), exc
        assert "lone surrogate" in str(exc)
        return
    except EmptyTextError:  # documented; the byte-level BPE never yields it for a non-blank text
        pytest.fail("a usable text produced no tokens")
    assert batch.input_ids.shape == batch.attention_mask.shape == (len(kept), seq_len)
    assert batch.input_ids.dtype == np.int64
    ids, mask = batch.input_ids, batch.attention_mask
    assert ((mask == 0) | (mask == 1)).all()
    if len(kept):
        assert (np.diff(mask, axis=1) <= 0).all(), "mask must be ones then zeros"
        assert (mask[:, 0] == 1).all(), "every usable text has at least one token"
        assert ((0 <= ids) & (ids < TOKENIZER.vocab_size)).all()
        assert (ids[mask == 0] == TOKENIZER.pad_id).all()


@SETTINGS
@given(texts=texts_strategy)
def test_snapshot_round_trip_or_a_documented_error(tmp_path_factory, texts):
    folder = tmp_path_factory.mktemp("snap")
    out = folder / "snapshot.parquet"
    pairs = [("src", t) for t in texts]
    try:
        info = write_snapshot(pairs, out, chunk_rows=2)
    except EmptySnapshotError:
        assert not usable_texts(texts)
        assert not out.exists()
        return
    except ValueError as exc:
        assert "lone surrogate" in str(exc) and any(_has_surrogate(t) for t in usable_texts(texts)), exc
        assert not out.exists()
        return
    finally:
        assert [p.name for p in folder.iterdir() if p.name != out.name] == [], "a temporary file was left behind"
    kept = usable_texts(texts)
    assert info.n_documents == len(kept)
    order = np.arange(len(kept))[::-1]
    assert read_texts(out, order) == [kept[i] for i in order]


def test_tokenizer_names_a_lone_surrogate():
    """The property above is not vacuous: a lone surrogate raises the documented error."""
    with pytest.raises(UnencodableTextError, match=r"text 1 holds a lone surrogate \(U\+D800\) at character 2"):
        encode_fixed(TOKENIZER, ["fine", "ab\ud800cd"], 8)


def test_snapshot_refuses_a_lone_surrogate(tmp_path):
    with pytest.raises(ValueError, match="lone surrogate at character 2"):
        write_snapshot([("s", "ok"), ("s", "ab\udfffcd")], tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []
