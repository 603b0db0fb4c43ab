"""Partitions of the audit assets: datasets (dynamic) x probes (static).

Datasets come and go with the registry, so their partitions are dynamic: the registry sensor adds
a partition per registered dataset. Probes are few and change with code review, so their keys are
read from the registry when the definitions load (`DIVCOEF_REGISTRY` or `data/registry.yaml`); a
malformed registry therefore fails the code location at load time with the registry's own error.

Keys become folder names and SQL values, so `partition_keys` re-validates both halves of a key
(`keys.validate_key`) before any asset uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from divcoef_assets.keys import InvalidKeyError, validate_key
from divcoef_assets.registry import load_registry

DATASET_DIMENSION = "dataset"
PROBE_DIMENSION = "probe"

dataset_partitions = dg.DynamicPartitionsDefinition(name=DATASET_DIMENSION)
probe_partitions = dg.StaticPartitionsDefinition(list(load_registry().probes))
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
