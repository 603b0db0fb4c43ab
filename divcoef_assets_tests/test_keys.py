"""Key validation (keys become paths, partition keys and SQL values) and partition-key parsing."""

from __future__ import annotations

import re

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from divcoef_assets.keys import KEY_RULE, InvalidKeyError, validate_key
from divcoef_assets.partitions import (
    dataset_probe_key,
    dataset_probe_partitions,
    partition_keys,
    probe_partitions,
)

VALID = ["a", "0", "bible", "ginc-c8", "mix_bible-jargon", "x" * 63, "9lives"]
INVALID = [
    "",
    "Bible",
    "a.b",
    "..",
    "a/b",
    "a\\b",
    "a'b",
    'a"b',
    "a|b",
    "a,b",
    "a[b]",
    "a(b)",
    "a b",
    "a\tb",
    "bible\n",
    "a\x00",
    "a\x7f",
    "-a",
    "_a",
    "x" * 64,
    "é",
    "a;b",
    "a=b",
    "a*",
]


@pytest.mark.parametrize("key", VALID)
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", INVALID)
def test_invalid_keys_raise_naming_key_and_rule(key: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        validate_key(key, what="probe")
    message = str(info.value)
    assert repr(key) in message
    assert "probe" in message
    assert KEY_RULE in message


@pytest.mark.parametrize("key", [None, 12, 1.5, b"bible", ["a"]])
def test_non_string_keys_raise(key: object) -> None:
    with pytest.raises(InvalidKeyError, match="expected a string"):
        validate_key(key)


def test_invalid_key_error_is_a_value_error() -> None:
    assert issubclass(InvalidKeyError, ValueError)


@given(st.text(max_size=80))
def test_accepted_keys_are_safe_as_paths_and_sql(text: str) -> None:
    try:
        validate_key(text)
    except InvalidKeyError:
        return
    assert 1 <= len(text) <= 63
    assert re.fullmatch(r"[a-z0-9_-]+", text)
    assert text[0] not in "-_"


def test_partition_keys_from_multi_key_string_mapping_and_context() -> None:
    key = dataset_probe_key("bible", "gpt2")
    assert partition_keys(key) == ("bible", "gpt2")
    assert partition_keys("bible|gpt2") == ("bible", "gpt2")
    assert partition_keys({"dataset": "bible", "probe": "gpt2"}) == ("bible", "gpt2")
    # closed here, not whenever it is garbage-collected: its ephemeral Dagster instance is the current
    # one until then, and a late close would make an instance of a later test's past current again
    with dg.build_asset_context(partition_key=key) as context:
        assert partition_keys(context) == ("bible", "gpt2")


@pytest.mark.parametrize(
    "bad",
    ["bible", "a|b|c", "Bible|gpt2", "bible|../x", {"dataset": "bible"}, {"dataset": "b", "probe": "a b"}],
)
def test_partition_keys_reject_malformed_keys(bad: object) -> None:
    with pytest.raises(InvalidKeyError):
        partition_keys(bad)


def test_dataset_probe_key_validates() -> None:
    with pytest.raises(InvalidKeyError, match="dataset"):
        dataset_probe_key("../etc", "gpt2")


def test_partitions_are_dataset_by_probe() -> None:
    assert dataset_probe_partitions.partition_dimension_names == ["dataset", "probe"]
    assert isinstance(probe_partitions, dg.DynamicPartitionsDefinition) and probe_partitions.name == "probe"
