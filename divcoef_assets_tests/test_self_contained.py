"""A bare `git clone` of the repository must run its default audit and its tests.

So the shipped registry may only name data inside the repository (relative paths that resolve
below the repository root and match files git tracks), and no code, test or script may reach for
a corpus folder beside the repository, which a clone does not have. CI runs the suite from a
fresh clone (`.ci/run`), but these checks say which entry or line is at fault.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from divcoef_assets.core.sources import DuckDBSource, FilesSource, HuggingFaceSource
from divcoef_assets.registry import DEFAULT_REGISTRY_PATH, REPO_ROOT, Registry, load_registry

ROOT = REPO_ROOT.resolve()
SCANNED_FOLDERS = ("divcoef_assets", "divcoef_assets_tests", "scripts", ".ci", "benchmarks", "studies")
# A corpus folder beside the checkout, written as a relative path up and out, as `<name>/corpora`,
# or as pathlib's `/ "<name>"` (the sibling folder's name is assembled below, not written out).
OUTSIDE_PATTERN = re.compile(r"\.\./+shared\b|\bshared/corpora\b|/\s*[\"']shared[\"']")


def _inside_repository(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def _git_files(*options: str) -> set[Path] | None:
    """`git ls-files` of this checkout with `options` (none: the tracked files, what a clone
    gets), or None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", *options], capture_output=True, check=False
    )
    if listing.returncode != 0:
        return None
    return {(ROOT / name).resolve() for name in listing.stdout.decode().split("\0") if name}


def _local_paths(registry: Registry) -> list[tuple[str, str, str, Path]]:
    """(dataset, field, value as written, resolved path) for every path-bearing field of every dataset."""
    base = registry.base_dir
    found: list[tuple[str, str, str]] = []
    for name, spec in registry.datasets.items():
        source = spec.source
        if isinstance(source, FilesSource):
            found.append((name, "path", source.path))
        elif isinstance(source, HuggingFaceSource):
            found.append((name, "path", source.path))
        elif isinstance(source, DuckDBSource):
            found.append((name, "database", source.database))
    return [(name, field, value, base / Path(value).expanduser()) for name, field, value in found]


def test_shipped_registry_names_only_files_inside_the_repository() -> None:
    registry = load_registry(DEFAULT_REGISTRY_PATH)
    tracked = _git_files()
    entries = _local_paths(registry)
    assert entries, "the shipped registry has no file-backed dataset; this test would check nothing"
    problems = []
    for name, field, value, pattern in entries:
        where = f"{registry.path}: dataset {name!r}, {field} {value!r}"
        if Path(value).expanduser().is_absolute():
            problems.append(f"{where} is absolute; write it relative to {registry.base_dir}")
            continue
        if not _inside_repository(pattern):
            problems.append(f"{where} resolves to {pattern.resolve()}, outside the repository {ROOT}")
            continue
        if isinstance(registry.datasets[name].source, HuggingFaceSource):
            if not pattern.is_dir():
                problems.append(f"{where}: no such folder inside the repository (a hub id needs the network)")
                continue
            matches = [p for p in pattern.rglob("*") if p.is_file()]
        else:
            matches = [Path(m) for m in glob.glob(str(pattern), recursive=True) if Path(m).is_file()]
        if not matches:
            problems.append(f"{where} matches no file")
        for match in matches:
            if not _inside_repository(match):
                problems.append(f"{where}: {match} resolves outside the repository (a link?)")
            elif tracked is not None and match.resolve() not in tracked:
                problems.append(f"{where}: {match} is not tracked by git, so a clone lacks it; git add it")
    assert not problems, "\n".join(problems)


def _scanned_files() -> list[Path]:
    files = [DEFAULT_REGISTRY_PATH]
    for folder in SCANNED_FOLDERS:
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    # Files a commit could hold: tracked, or new and not ignored (outputs git ignores, such as the
    # benchmarks' gigabytes of corpora, are not part of a clone).
    committable = _git_files("--cached", "--others", "--exclude-standard")
    if committable is not None:
        files = [p for p in files if p.resolve() in committable]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def test_no_code_or_script_reads_a_folder_beside_the_repository() -> None:
    scanned = _scanned_files()
    assert any(p.suffix == ".py" for p in scanned), f"found no Python files under {ROOT}"
    hits = []
    for path in scanned:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary: no paths written by hand
        for lineno, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_PATTERN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not hits, "paths outside the repository (a clone has no such folder):\n" + "\n".join(hits)


@pytest.mark.parametrize(
    ("line", "outside"),
    [
        ("path: ../../" + "shared/corpora/bible_kjv.jsonl", True),
        ('CORPORA = ROOT.parent / "shared" / "corpora"', True),
        ("cp shared/corpora/x .", True),
        ("path: corpora/bible_kjv.jsonl.gz", False),
        ("one file per content fingerprint, shared by every probe", False),
    ],
)
def test_the_pattern_catches_the_usual_spellings(line: str, outside: bool) -> None:
    assert bool(OUTSIDE_PATTERN.search(line)) is outside
