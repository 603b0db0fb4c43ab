"""The one atomic-write helper: write to a temporary name beside the target, then rename.

A reader (or a re-run after SIGKILL) therefore finds either the whole new file or the old one,
never a torn file. Temporary names start with `.tmp-`; `sweep_temporaries` removes the ones a
killed process left behind, once they are older than a grace period (a live writer's file is
younger).

`mkstemp` and `mkdtemp` create their names readable by the owner only (0600 / 0700); the result
gets the mode a plain `open()` or `mkdir` would have given it (0666 / 0777 less the umask), so an
output is as readable as any other file its user writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    """The process's umask, read without changing it (`os.umask` would set it for every thread
    for a moment); 0o022 where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on any
    error (or interrupt) it is removed and `path` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=target.suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~_umask())
        if directory and target.exists():
            # Move the old folder aside first: readers never see the target missing for longer
            # than one rename, and a failure leaves the old folder in place of a half state.
            aside = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "old-", dir=target.parent))
            os.replace(target, aside / target.name)
            os.replace(tmp, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` and move the result onto `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sweep_temporaries(root: str | os.PathLike, *, older_than_s: float = 3600.0) -> int:
    """Delete `.tmp-*` files and folders under `root` older than `older_than_s`; returns the count."""
    root = Path(root)
    if not root.exists():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in sorted(root.rglob(f"{TMP_PREFIX}*"), key=lambda p: len(p.parts), reverse=True):
        try:
            if tmp.lstat().st_mtime >= cutoff:
                continue
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed += 1
        except FileNotFoundError:
            continue
    return removed
