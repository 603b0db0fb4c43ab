"""Hostile dataset and probe keys: refused by the registry loader before they can become a
folder, a partition key or a SQL value."""

from __future__ import annotations

import pytest
import yaml

from divcoef_assets.keys import KEY_RULE, InvalidKeyError
from divcoef_assets.partitions import partition_keys
from divcoef_assets.pipeline import Layout
from divcoef_assets.registry import RegistryError, load_registry

HOSTILE_KEYS = {
    "parent": "..",
    "dot": ".",
    "slash": "a/b",
    "absolute": "/etc",
    "backslash": "a\\b",
    "single-quote": "a'b",
    "double-quote": 'a"b',
    "sql": "x'); DROP TABLE coefficients; --",
    "pipe": "a|b",
    "comma": "a,b",
    "brackets": "a[b]",
    "braces": "a{b}",
    "control": "a\x01b",
    "newline": "a\nb",
    "nul": "a\x00b",
    "tab": "a\tb",
    "space": "a b",
    "too-long": "a" * 64,
    "empty": "",
    "upper": "Bible",
    "leading-dash": "-a",
    "unicode-lookalike": "bіble",  # Cyrillic i
    "number": 12,
}


def _registry(tmp_path, *, dataset="good", probe="tiny"):
    data = {
        "default_probe": probe,
        "probes": {probe: {"model": "gpt2", "init": "pretrained"}},
        "datasets": {dataset: {"source": "synthetic", "kind": "lower_bound", "n_sequences": 8}},
    }
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=False))
    return path


@pytest.mark.parametrize("key", list(HOSTILE_KEYS.values()), ids=list(HOSTILE_KEYS))
def test_hostile_dataset_key_is_refused(tmp_path, key):
    path = _registry(tmp_path, dataset=key)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert str(path) in message and "invalid dataset key" in message and repr(key) in message and KEY_RULE in message


@pytest.mark.parametrize("key", list(HOSTILE_KEYS.values()), ids=list(HOSTILE_KEYS))
def test_hostile_probe_key_is_refused(tmp_path, key):
    path = _registry(tmp_path, probe=key)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert "invalid probe key" in str(info.value) and repr(key) in str(info.value)


def test_longest_allowed_key_is_accepted(tmp_path):
    key = "a" * 63
    assert key in load_registry(_registry(tmp_path, dataset=key, probe="p-1_x")).datasets


@pytest.mark.parametrize("key", ["..", "a/b", "a\\b", "a'b", "a|b", "a\x01b", "a" * 64])
def test_keys_that_bypass_the_registry_are_refused_before_becoming_paths(tmp_path, key):
    layout = Layout(tmp_path / "artifacts")
    with pytest.raises(InvalidKeyError):
        layout.snapshot_dir(key)
    with pytest.raises(InvalidKeyError):
        layout.embeddings("good", key)
    with pytest.raises(InvalidKeyError):
        partition_keys({"dataset": key, "probe": "tiny"})
    assert not (tmp_path / "artifacts").exists()
