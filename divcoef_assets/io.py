"""An IO manager for the small records assets hand each other: JSON files, never pickle.

Assets write their heavy outputs (Parquet) themselves and return a JSON-able record with the
paths and fingerprints; this manager stores that record per asset and partition under
`<base_dir>/<asset key>/<partition>.json`, written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg


def _partition_file(key: str) -> str:
    # Partition keys are validated ([a-z0-9_-] halves joined by "|"), so this is a safe name.
    return key.replace("|", "__") + ".json"


class JsonRecordIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def _path(self, asset_key: dg.AssetKey, partition_key: str | None) -> Path:
        folder = Path(self.base_dir).joinpath(*asset_key.path)
        return folder / (_partition_file(partition_key) if partition_key else "record.json")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        path = self._path(context.asset_key, context.partition_key if context.has_partition_key else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(key, partition)
        if not path.exists():
            raise FileNotFoundError(
                f"no record for {key.to_user_string()} partition {partition!r} at {path}: materialize it first"
            )
        return json.loads(path.read_text(encoding="utf-8"))
