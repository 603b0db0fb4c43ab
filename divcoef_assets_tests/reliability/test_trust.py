"""The registry's trust boundary and the readers' memory bound."""

from __future__ import annotations

import os

import pytest

from divcoef_assets import pipeline
from divcoef_assets.core import sources
from divcoef_assets.core.sources import FilesSource, SourceDataError, iter_texts
from divcoef_assets.registry import DEFAULT_REGISTRY_PATH, RegistryError, load_registry

from .support import write_jsonl, write_registry


def _registry(tmp_path, path: str):
    (tmp_path / "corpora").mkdir(exist_ok=True)
    registry = write_registry(tmp_path, {"d": {"source": "files", "path": path}}, {"tiny": {"model": "gpt2"}})
    text = registry.read_text()
    registry.write_text("allowed_roots: [corpora]\n" + text)
    return load_registry(registry)


def test_the_shipped_registry_restricts_reads_to_its_corpora():
    registry = load_registry(DEFAULT_REGISTRY_PATH)
    assert registry.allowed_roots == ((DEFAULT_REGISTRY_PATH.parent / "corpora").resolve(),)


@pytest.mark.parametrize("where", ["../outside.jsonl", "outside.jsonl", "corpora/../outside.jsonl"])
def test_a_path_outside_the_allowed_roots_is_refused_before_reading(tmp_path, where):
    folder = tmp_path / "reg"
    folder.mkdir()
    write_jsonl(tmp_path / "outside.jsonl")
    write_jsonl(folder / "outside.jsonl")
    registry = _registry(folder, where)
    with pytest.raises(RegistryError, match=r"dataset 'd'.*outside the allowed roots.*allowed_roots"):
        pipeline.snapshot(registry, "d", pipeline.Layout(tmp_path / "artifacts"))
    assert not (tmp_path / "artifacts" / "snapshots" / "d").exists() or not any((tmp_path / "artifacts" / "snapshots" / "d").iterdir())


def test_a_symlink_out_of_the_allowed_roots_is_refused(tmp_path):
    secret = write_jsonl(tmp_path / "secret.jsonl")
    registry = _registry(tmp_path, "corpora/*.jsonl")
    os.symlink(secret, tmp_path / "corpora" / "innocent.jsonl")
    with pytest.raises(RegistryError, match="secret.jsonl, outside the allowed roots"):
        list(registry.iter_dataset_texts("d"))


def test_files_inside_the_allowed_roots_are_read(tmp_path):
    registry = _registry(tmp_path, "corpora/*.jsonl")
    write_jsonl(tmp_path / "corpora" / "fine.jsonl", n=5)
    assert len(list(registry.iter_dataset_texts("d"))) == 5


def test_bad_allowed_roots_are_refused(tmp_path):
    registry = write_registry(tmp_path, {}, {"tiny": {"model": "gpt2"}})
    registry.write_text("allowed_roots: [no-such-folder]\n" + registry.read_text())
    with pytest.raises(RegistryError, match="are not folders"):
        load_registry(registry)


def test_one_enormous_line_is_refused_with_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "short"}\n{"text": "' + "x" * 5000 + '"}\n')
    with pytest.raises(SourceDataError, match=r"big.jsonl, line 2: longer than .* split the document"):
        list(iter_texts(FilesSource(path=str(path)), tmp_path))
