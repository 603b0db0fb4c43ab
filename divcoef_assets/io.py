"""An IO manager for the typed records assets hand each other: JSON files, never pickle.

Assets write their heavy outputs (Parquet) themselves and return a frozen record (`records`)
with the paths and fingerprints; this manager stores it per asset and partition under
`<base_dir>/<asset key>/<partition>.json` (atomically) and gives the next asset the same typed
record back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from divcoef_assets import paths
from divcoef_assets.core.atomic import write_text_atomic
from divcoef_assets.records import from_json, to_json


def _partition_file(key: str) -> str:
    # Partition keys are validated ([a-z0-9_-] halves joined by "|"), so this is a safe name.
    return key.replace("|", "__") + ".json"


class RecordIOManager(dg.ConfigurableIOManager):
    base_dir: str = ""  # empty: <data dir>/records (see `paths`)

    def _path(self, asset_key: dg.AssetKey, partition_key: str | None) -> Path:
        folder = Path(self.base_dir or paths.data_dir() / "records").joinpath(*asset_key.path)
        return folder / (_partition_file(partition_key) if partition_key else "record.json")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        write_text_atomic(self._path(context.asset_key, context.partition_key if context.has_partition_key else None), to_json(obj))

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(key, partition)
        if not path.exists():
            raise FileNotFoundError(
                f"no record for {key.to_user_string()} partition {partition!r} at {path}: materialize it first"
            )
        try:
            return from_json(path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"the record of {key.to_user_string()} partition {partition!r} at {path} is unreadable or from an "
                f"older version ({exc}); re-materialize {key.to_user_string()}"
            ) from exc
