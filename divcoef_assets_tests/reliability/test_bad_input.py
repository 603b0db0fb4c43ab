"""Bad input, end to end: every case fails the audit run with an error that says what is wrong,
where, and what to do, and leaves no coefficient row in DuckDB and no embedding in the cache.

Each test runs the Dagster audit job in process for a registry in a temporary folder.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from divcoef_assets.registry import RegistryError, load_registry
from divcoef_assets_tests.conftest import save_tiny_gpt2
from divcoef_assets_tests.reliability.support import (
    assert_failed_cleanly,
    coefficient_rows,
    run_audit,
    tiny_probe,
    write_jsonl,
    write_registry,
)


def _audit_files(tmp_path, small_probe_dir, entry, *, probe=None):
    registry = write_registry(tmp_path, {"bad": {"source": "files", **entry}}, {"tiny": probe or tiny_probe(small_probe_dir)})
    return run_audit(tmp_path, registry, "bad")


# ----------------------------------------------------------------------------- files


def test_missing_file(tmp_path, small_probe_dir):
    result = _audit_files(tmp_path, small_probe_dir, {"path": "nowhere.jsonl"})
    assert_failed_cleanly(tmp_path, result, "bad", "SourceNotFoundError", "dataset 'bad'", "nowhere.jsonl", "not found",
                          step="dataset_snapshot")


def test_glob_matching_nothing(tmp_path, small_probe_dir):
    (tmp_path / "shards").mkdir()
    result = _audit_files(tmp_path, small_probe_dir, {"path": "shards/*.jsonl"})
    assert_failed_cleanly(tmp_path, result, "bad", "shards/*.jsonl", "matches no files", step="dataset_snapshot")


def test_empty_dataset(tmp_path, small_probe_dir):
    (tmp_path / "empty.jsonl").write_text("")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "empty.jsonl"})
    text = assert_failed_cleanly(tmp_path, result, "bad", "EmptySnapshotError", "dataset 'bad'", "no usable document",
                                 step="dataset_snapshot")
    assert ".pending-" not in text  # names the dataset, not a temporary file
    assert not list((tmp_path / "data").rglob(".pending-*"))


def test_all_texts_empty_or_whitespace(tmp_path, small_probe_dir):
    lines = [{"text": ""}, {"text": "   "}, {"text": "\n\t"}, {"text": None}, {"text": "\u3000"}]
    (tmp_path / "blank.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = _audit_files(tmp_path, small_probe_dir, {"path": "blank.jsonl"})
    assert_failed_cleanly(tmp_path, result, "bad", "dataset 'bad'", "5 empty or blank document(s)", step="dataset_snapshot")


def test_fewer_usable_texts_than_one_batch(tmp_path, small_probe_dir):
    write_jsonl(tmp_path / "few.jsonl", n=3)
    result = _audit_files(tmp_path, small_probe_dir, {"path": "few.jsonl"})
    assert_failed_cleanly(tmp_path, result, "bad", "NotEnoughTextsError", "dataset 'bad'", "3 usable documents",
                          "one batch needs 4", "Add documents, or cut long documents into chunks", step="token_batches")


def test_text_column_missing(tmp_path, small_probe_dir):
    write_jsonl(tmp_path / "a.jsonl")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl", "text_column": "body"})
    assert_failed_cleanly(tmp_path, result, "bad", "a.jsonl, line 1", "no field 'body'", "set text_column",
                          step="dataset_snapshot")


def test_text_column_not_a_string(tmp_path, small_probe_dir):
    path = write_jsonl(tmp_path / "a.jsonl")
    with open(path, "a") as fh:
        fh.write(json.dumps({"text": {"nested": 1}}) + "\n")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl"})
    assert_failed_cleanly(tmp_path, result, "bad", "a.jsonl, line 13", "is a dict", "not a string",
                          step="dataset_snapshot")


def test_text_parquet_column_not_a_string(tmp_path, small_probe_dir):
    pq.write_table(pa.table({"text": list(range(10))}), tmp_path / "n.parquet")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "n.parquet"})
    assert_failed_cleanly(tmp_path, result, "bad", "n.parquet", "holds int64 values, not strings", step="dataset_snapshot")


def test_invalid_utf8_in_a_text_file(tmp_path, small_probe_dir):
    (tmp_path / "latin1.txt").write_bytes(b"first line\nsecond line\ncaf\xe9 au lait\n")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "latin1.txt", "format": "text", "split": "lines"})
    assert_failed_cleanly(tmp_path, result, "bad", "latin1.txt, line 3", "invalid UTF-8", "re-encode the file",
                          step="dataset_snapshot")


def test_nul_bytes_in_a_text_file(tmp_path, small_probe_dir):
    (tmp_path / "binary.txt").write_bytes(b"first line\nsec\x00ond\n")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "binary.txt", "format": "text", "split": "lines"})
    assert_failed_cleanly(tmp_path, result, "bad", "binary.txt, line 2", "NUL byte", step="dataset_snapshot")


def test_truncated_parquet(tmp_path, small_probe_dir):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [f"document number {i}" for i in range(50)]}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = _audit_files(tmp_path, small_probe_dir, {"path": "docs.parquet"})
    assert_failed_cleanly(tmp_path, result, "bad", "docs.parquet", "truncated or corrupt", step="dataset_snapshot")


def test_corrupt_parquet_pages(tmp_path, small_probe_dir):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [f"document number {i} " * 20 for i in range(200)]}), path, compression="zstd")
    data = bytearray(path.read_bytes())
    data[100:400] = b"\xa5" * 300  # garbage in the first data page, footer intact
    path.write_bytes(bytes(data))
    result = _audit_files(tmp_path, small_probe_dir, {"path": "docs.parquet"})
    assert_failed_cleanly(tmp_path, result, "bad", "docs.parquet", "corrupt", step="dataset_snapshot")


def test_malformed_jsonl_line_names_the_line(tmp_path, small_probe_dir):
    path = write_jsonl(tmp_path / "a.jsonl", n=4)
    with open(path, "a") as fh:
        fh.write('{"text": "unterminated\n')
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl"})
    assert_failed_cleanly(tmp_path, result, "bad", "a.jsonl, line 5", "malformed JSON", step="dataset_snapshot")


def test_enormous_single_document_is_truncated(tmp_path, small_probe_dir):
    path = write_jsonl(tmp_path / "big.jsonl", n=8)
    with open(path, "a") as fh:
        fh.write(json.dumps({"text": "many words again " * (20 * 1024 * 1024 // 17)}) + "\n")
    registry = write_registry(tmp_path, {"big": {"source": "files", "path": "big.jsonl"}},
                              {"tiny": tiny_probe(small_probe_dir, batch_size=8, n_batches=3)})
    started = time.perf_counter()
    result = run_audit(tmp_path, registry, "big")
    assert result.success
    assert time.perf_counter() - started < 60
    assert result.output_for_node("dataset_snapshot").n_chars > 20_000_000
    assert coefficient_rows(tmp_path, "big") == 1


# ----------------------------------------------------------------------------- registry and probe config


def test_unknown_source_type(tmp_path, small_probe_dir):
    registry = write_registry(tmp_path, {"bad": {"source": "ftp", "path": "x"}}, {"tiny": tiny_probe(small_probe_dir)})
    with pytest.raises(RegistryError, match=r"dataset 'bad'.*unknown source type 'ftp'.*files"):
        load_registry(registry)
    result = run_audit(tmp_path, registry, "bad")
    assert_failed_cleanly(tmp_path, result, "bad", "RegistryError", "unknown source type 'ftp'", step="dataset_snapshot")


@pytest.mark.parametrize("batch_size", [0, -4])
def test_batch_size_zero_or_negative(tmp_path, small_probe_dir, batch_size):
    write_jsonl(tmp_path / "a.jsonl")
    registry = write_registry(tmp_path, {"good": {"source": "files", "path": "a.jsonl"}},
                              {"tiny": tiny_probe(small_probe_dir, batch_size=batch_size)})
    with pytest.raises(RegistryError, match=rf"probe 'tiny'.*batch_size must be a positive integer, got {batch_size}"):
        load_registry(registry)
    result = run_audit(tmp_path, registry, "good")
    assert_failed_cleanly(tmp_path, result, "good", "batch_size must be a positive integer")


def test_seq_len_above_the_probe_context(tmp_path, small_probe_dir):
    write_jsonl(tmp_path / "a.jsonl")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl"}, probe=tiny_probe(small_probe_dir, seq_len=32))
    assert_failed_cleanly(tmp_path, result, "bad", "ProbeLoadError", "probe 'tiny'", "seq_len 32",
                          "context of 16 tokens", step="task2vec_embeddings")


def test_unknown_probe(tmp_path, small_probe_dir):
    write_jsonl(tmp_path / "a.jsonl")
    registry = write_registry(tmp_path, {"good": {"source": "files", "path": "a.jsonl"}}, {"tiny": tiny_probe(small_probe_dir)})
    result = run_audit(tmp_path, registry, "good", probe="ghost")
    assert_failed_cleanly(tmp_path, result, "good", "probe 'ghost' is not registered", "known: tiny", step="dataset_snapshot")


def _probe_folder_copy(tmp_path, small_probe_dir, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text((small_probe_dir / "config.json").read_text())
    return folder


def test_probe_folder_without_weights(tmp_path, small_probe_dir):
    write_jsonl(tmp_path / "a.jsonl")
    folder = _probe_folder_copy(tmp_path, small_probe_dir, "no-weights")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl"}, probe=tiny_probe(folder))
    assert_failed_cleanly(tmp_path, result, "bad", "ProbeLoadError", "has no weights", "save_pretrained",
                          step="task2vec_embeddings")


def test_probe_folder_with_only_pickle_weights_is_refused(tmp_path, small_probe_dir):
    import torch

    write_jsonl(tmp_path / "a.jsonl")
    folder = _probe_folder_copy(tmp_path, small_probe_dir, "pickle-only")
    tensors = {k: torch.from_numpy(v) for k, v in load_file(small_probe_dir / "model.safetensors").items()}
    torch.save(tensors, folder / "pytorch_model.bin")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl"}, probe=tiny_probe(folder))
    assert_failed_cleanly(tmp_path, result, "bad", "only has pickle weights", "pytorch_model.bin", "safe_serialization=True",
                          step="task2vec_embeddings")


def test_probe_requiring_remote_code_is_refused(tmp_path, small_probe_dir):
    write_jsonl(tmp_path / "a.jsonl")
    folder = _probe_folder_copy(tmp_path, small_probe_dir, "remote-code")
    (folder / "model.safetensors").write_bytes((small_probe_dir / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl"}, probe=tiny_probe(folder))
    assert_failed_cleanly(tmp_path, result, "bad", "ProbeLoadError", "auto_map", "refused", step="task2vec_embeddings")


def test_model_vocabulary_smaller_than_the_tokenizer(tmp_path):
    write_jsonl(tmp_path / "a.jsonl")
    folder = save_tiny_gpt2(tmp_path / "small-vocab", vocab_size=1000, n_embd=8, n_positions=16)
    result = _audit_files(tmp_path, folder, {"path": "a.jsonl"}, probe=tiny_probe(folder))
    assert_failed_cleanly(tmp_path, result, "bad", "ProbeLoadError", "ids up to 50256", "only 1000 output rows",
                          "use the model's own tokenizer", step="task2vec_embeddings")


def test_nan_in_the_fisher_is_reported_and_nothing_is_written(tmp_path, small_probe_dir):
    write_jsonl(tmp_path / "a.jsonl")
    folder = _probe_folder_copy(tmp_path, small_probe_dir, "poisoned")
    tensors = load_file(small_probe_dir / "model.safetensors")
    weight = tensors["transformer.h.0.mlp.c_fc.weight"].copy()
    weight[0, 0] = np.nan
    tensors["transformer.h.0.mlp.c_fc.weight"] = weight
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    result = _audit_files(tmp_path, small_probe_dir, {"path": "a.jsonl"}, probe=tiny_probe(folder))
    assert_failed_cleanly(tmp_path, result, "bad", "FisherNotFiniteError", "NaN/Inf", "bad|tiny", "batch 0",
                          step="task2vec_embeddings")
