"""`divcoef register NAME PATH --format F`: check a new text dataset and write it into the registry.

The entry is checked before the file is touched: the name is a valid, unused key; the registry with
the entry loads (every rule of `registry.load_registry`, `allowed_roots` included); and the
dataset's documents are read to the end, so a missing text column, a malformed line or an empty
file is reported now, with its file and line, rather than by the first audit. The entry is then
added at the end of the registry's `datasets:` section as text, so the file's comments and order
stay as they were, and the file is replaced atomically. With `dagster dev` running, the
registry sensor picks it up on its next tick: a new partition and one audit run for it alone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from divcoef_assets.core.atomic import write_text_atomic
from divcoef_assets.keys import validate_key
from divcoef_assets.registry import RegistryError, load_registry

_TOP_LEVEL_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")


@dataclass(frozen=True)
class Registered:
    name: str
    registry: Path
    entry: dict
    n_documents: int
    batch_size: int  # the default probe's, for the comparison with n_documents


def _relative(path: Path, folder: Path) -> str:
    """`path` as the registry should hold it: relative to the registry's folder when inside it."""
    resolved = path.expanduser().resolve()
    try:
        return resolved.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def with_entry(text: str, name: str, entry: dict, where: Path) -> str:
    """`text` (a registry file) with `name: entry` appended to its block-style `datasets:` section."""
    lines = text.splitlines()
    starts = [k for k, line in enumerate(lines) if re.match(r"^datasets\s*:\s*(#.*)?$", line)]
    if not starts:
        if any(re.match(r"^datasets\s*:", line) for line in lines):
            raise RegistryError(f"registry {where}: `datasets:` is written inline; write it as a block to add entries with divcoef register")
        lines += ["", "datasets:"]
        starts = [len(lines) - 1]
    end = next((k for k in range(starts[0] + 1, len(lines)) if _TOP_LEVEL_KEY.match(lines[k])), len(lines))
    while end > starts[0] + 1 and not lines[end - 1].strip():
        end -= 1
    block = yaml.safe_dump({name: entry}, sort_keys=False, default_flow_style=False, allow_unicode=True).splitlines()
    return "\n".join(lines[:end] + ["  " + line for line in block] + lines[end:]) + "\n"


def register(name: str, path: str | os.PathLike, *, fmt: str | None, text_column: str = "text", description: str = "",
             registry_path: str | os.PathLike | None = None) -> Registered:
    """Check the dataset `name` reading `path` and add it to the registry; nothing is written if
    any check fails (`RegistryError`, `SourceError` or `ValueError` with the file and the entry)."""
    from divcoef_assets.core.sources import iter_texts

    registry = load_registry(registry_path)
    validate_key(name, "dataset")
    if name in registry.datasets:
        raise RegistryError(f"registry {registry.path}: dataset {name!r} is already registered; pick another name or edit its entry")
    entry: dict = {"source": "files"}
    if description:
        entry["description"] = description
    entry["path"] = _relative(Path(path), registry.base_dir)
    if fmt:
        entry["format"] = fmt
    entry["text_column"] = text_column
    text = with_entry(registry.path.read_text(encoding="utf-8"), name, entry, registry.path)
    candidate = registry.path.with_name(f".tmp-register-{os.getpid()}-{registry.path.name}")
    try:
        candidate.write_text(text, encoding="utf-8")
        checked = load_registry(candidate)
        checked.check_allowed(name)
        n = sum(1 for _ in iter_texts(checked.dataset(name), checked.base_dir))
    finally:
        candidate.unlink(missing_ok=True)
    if n == 0:
        raise RegistryError(f"registry {registry.path}, dataset {name!r}: {path} holds no documents")
    write_text_atomic(registry.path, text)
    return Registered(name, registry.path, entry, n, registry.probe().batch_size)
