"""Partitions of the audit assets: datasets x probes, both dynamic.

Datasets and probes both come from the registry, so both dimensions are dynamic: the registry
sensor (and `divcoef audit`) add a partition per registered dataset and probe. Loading the
definitions therefore never depends on the registry file: a malformed registry shows up as a
failed sensor tick or run with the registry's own error, not as a broken code location.

Keys become folder names and SQL values, so `partition_keys` re-validates both halves of a key
(`keys.validate_key`) before any asset uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from divcoef_assets.keys import InvalidKeyError, validate_key

DATASET_DIMENSION = "dataset"
PROBE_DIMENSION = "probe"

dataset_partitions = dg.DynamicPartitionsDefinition(name=DATASET_DIMENSION)
probe_partitions = dg.DynamicPartitionsDefinition(name=PROBE_DIMENSION)
dataset_probe_partitions = dg.MultiPartitionsDefinition(
    {DATASET_DIMENSION: dataset_partitions, PROBE_DIMENSION: probe_partitions}
)


def dataset_probe_key(dataset: str, probe: str) -> dg.MultiPartitionKey:
    """The partition key of (dataset, probe), both validated."""
    return dg.MultiPartitionKey(
        {DATASET_DIMENSION: validate_key(dataset, "dataset"), PROBE_DIMENSION: validate_key(probe, "probe")}
    )


def partition_keys(context_or_key: Any) -> tuple[str, str]:
    """(dataset, probe) from an asset context, a `MultiPartitionKey`, a mapping or a "dataset|probe" string."""
    key = getattr(context_or_key, "partition_key", context_or_key)
    if isinstance(key, dg.MultiPartitionKey):
        dimensions: Mapping[str, str] = key.keys_by_dimension
    elif isinstance(key, Mapping):
        dimensions = key
    elif isinstance(key, str):
        # Dagster orders dimensions by name: "dataset" < "probe". Keys contain no "|".
        parts = key.split("|")
        if len(parts) != 2:
            raise InvalidKeyError(f"partition key {key!r} is not of the form 'dataset|probe'")
        dimensions = dict(zip((DATASET_DIMENSION, PROBE_DIMENSION), parts))
    else:
        raise TypeError(f"cannot read a dataset/probe partition key from {context_or_key!r}")
    missing = [d for d in (DATASET_DIMENSION, PROBE_DIMENSION) if d not in dimensions]
    if missing:
        raise InvalidKeyError(f"partition key {dict(dimensions)!r} lacks dimension(s) {missing}")
    return (
        validate_key(dimensions[DATASET_DIMENSION], "dataset"),
        validate_key(dimensions[PROBE_DIMENSION], "probe"),
    )
