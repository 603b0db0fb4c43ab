"""Sample pools: a reproducible uniform sample of a source's documents, read at the cost of the sample.

An audit needs `n_batches x batch_size` documents, not the corpus. A *pool* of size k is the k
usable documents with the smallest seeded key, where each document's key is a 64-bit mix of the
seed and the document's identity:

    identity  = (file id, position)   file id: the path relative to the registry's folder;
                                      position: the byte offset of a line (JSON Lines, text lines),
                                      the row (Parquet, Arrow, a DuckDB query) or the record ordinal
                                      (CSV, text paragraphs, a hub stream)
    key       = splitmix64(salt(seed, file id) + position * golden)

so the pool does not depend on the order in which files or shards are read, nor on how many
shards or workers read them: each shard keeps its own k smallest usable documents, and the pool is
the k smallest of their union (bottom-k). Sorted by key, the pool is itself in random order, so
the first m documents of a pool of k are the pool of m: a grown pool begins with the old one.

Two ways of reading, by format:

- random access (Parquet, Hugging Face `save_to_disk` folders, DuckDB queries): row counts come
  from the footers (or one `count(*)`), keys are computed for every row in NumPy, and only the
  rows with the smallest keys are read: Parquet by decoding only the pages that hold them
  (`core.parquet_pages`; DuckDB's row groups for layouts it does not decode), Arrow by
  positioned reads of the drawn rows (`core.arrow_ipc`; the memory-mapped table of
  `datasets.load_from_disk` for folders it does not walk), a DuckDB plain table scan by rowid
  (any other query streamed once);
- one streaming pass (JSON Lines, text and CSV, plain or `.gz`, hub streams): lines are split and
  keyed in NumPy chunk by chunk, and only a line whose key beats the shard's current k-th smallest
  is decoded and parsed (about k * ln(n / k) of n lines); CSV, paragraphs and hub streams parse every
  record. Plain files larger than `SHARD_BYTES` are split into byte ranges, one shard each.

Empty and whitespace-only documents are dropped and counted among the documents read; the number
of usable documents in the source is estimated from that share (exact when every record was read,
`Pool.exact`). Shards run serially, in a local process pool, or on a Ray cluster with Ray Data
(`executor`); every way gives the same pool.

No Dagster here; `pipeline.snapshot` writes the pool (`core.snapshot.write_pool`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import heapq
import json
import logging
import mmap
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from divcoef_assets.core import arrow_ipc
from divcoef_assets.core.sources import (
    MAX_LINE_BYTES,
    CorruptSourceError,
    DuckDBSource,
    FilesSource,
    HuggingFaceSource,
    SourceDataError,
    SourceNotFoundError,
    SourceSpec,
    SourceSpecError,
    _check_text,
    _HUB_ID,
    _is_gzip,
    _iter_csv,
    _iter_hub,
    _iter_text,
    _matched_files,
    _resolve,
    decode_line,
    jsonl_text,
    load_saved_dataset,
    parse_source,
    source_to_dict,
)

logger = logging.getLogger(__name__)

Executor = Literal["auto", "serial", "process", "ray"]
EXECUTORS: tuple[str, ...] = ("auto", "serial", "process", "ray")
SHARD_BYTES = 256 * 2**20  # a plain line file is split into byte ranges of about this size
CHUNK_BYTES = 16 * 2**20  # bytes read and keyed at a time by the line scanner
# `auto` uses a process pool only when there is this much to read and more than one shard.
PROCESS_MIN_BYTES = 512 * 2**20
# Sampling on Ray: a run with no shard finished for RAY_STALL_BASE_S plus the largest shard read at
# RAY_STALL_MIN_RATE bytes a second is stalled; the unfinished shards get RAY_DATA_ATTEMPTS runs in all.
RAY_STALL_BASE_S = 300.0
RAY_STALL_MIN_RATE = 4 * 2**20
RAY_DATA_ATTEMPTS = 2
_KEY_TAG = "divcoef-pool-v1"
_MAX_KEY = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_KEY_BLOCK = 1 << 14  # row positions keyed at a time (128 KiB of keys: they stay in the CPU cache)


# ----------------------------------------------------------------------------- keys


def shard_salt(seed: int, file_id: str) -> int:
    """The 64-bit salt of one file (or stream) under one seed."""
    raw = hashlib.sha256(f"{_KEY_TAG}\x00{int(seed)}\x00{file_id}".encode("utf-8")).digest()
    return int.from_bytes(raw[:8], "big")


def document_keys(salt: int, positions: np.ndarray) -> np.ndarray:
    """splitmix64(salt + position * golden) of every position (uint64, wrapping arithmetic)."""
    z = np.array(positions, dtype=np.uint64)  # a fresh array: the steps below work in place
    z *= _GOLDEN
    z += np.uint64(salt)
    shifted = np.empty_like(z)
    for shift, multiplier in ((30, _MIX1), (27, _MIX2), (31, None)):
        np.right_shift(z, np.uint64(shift), out=shifted)
        z ^= shifted
        if multiplier is not None:
            z *= multiplier
    return z


def document_key(salt: int, position: int) -> int:
    return int(document_keys(salt, np.array([position], dtype=np.uint64))[0])


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, order=True)
class PoolDoc:
    """One sampled document; ordered by (key, file, position), the pool's order."""

    key: int
    file: str  # file id (relative to the registry folder) or stream id
    position: int  # byte offset, row or record ordinal: the identity keyed
    locator: str  # where a person finds it: "line 12", "row 3", "record 7"
    text: str


@dataclass(frozen=True)
class ShardResult:
    """One shard's k smallest usable documents and what it counted."""

    docs: tuple[PoolDoc, ...]
    n_records: int  # records in the shard (blank lines of line formats excluded)
    n_read: int  # records whose text was read
    n_empty_read: int  # of those, empty or whitespace-only
    n_bytes: int = 0
    file: str = ""
    range_index: int = 0  # for byte-range shards: its place in the file
    n_lines: int = 0  # lines seen (blank included), to turn local line numbers into file line numbers


@dataclass(frozen=True)
class SamplingProgress:
    """How far a pass over a source's shards has come: handed to `sample_pool`'s `progress`
    each time a shard is sampled (line formats, CSV and text files; random access is not reported)."""

    shards_done: int
    shards: int
    bytes_done: int  # of the shards sampled, as stored (a .gz file's compressed size)
    bytes: int
    seconds: float  # since the pass began

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """At the rate so far; None before any byte is done."""
        rate = self.bytes_per_second
        return (self.bytes - self.bytes_done) / rate if rate > 0 else None


Progress = Callable[[SamplingProgress], None]


@dataclass(frozen=True)
class Pool:
    """The k (or fewer) usable documents with the smallest keys, in key order."""

    docs: tuple[PoolDoc, ...]
    seed: int
    requested: int
    n_records: int  # records in the source
    n_read: int
    n_empty_read: int
    exact: bool  # every record was read, so the counts are exact

    @property
    def complete(self) -> bool:
        """The pool holds every usable document of the source."""
        return len(self.docs) < self.requested

    @property
    def empty_share(self) -> float:
        return self.n_empty_read / self.n_read if self.n_read else 0.0

    @property
    def n_usable_estimate(self) -> int:
        """Usable documents in the source: exact when `exact` or `complete`, else estimated from
        the share of empty documents among those read."""
        if self.complete:
            return len(self.docs)
        if self.exact:
            return self.n_records - self.n_empty_read
        return max(len(self.docs), round(self.n_records * (1.0 - self.empty_share)))


# ----------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """A piece of a source that one worker samples on its own."""

    kind: Literal["lines", "records", "stream"]
    path: str  # absolute path of the file ("" for a hub stream)
    file_id: str
    start: int = 0  # byte range [start, end) of a plain line file; end -1 = to the end
    end: int = -1
    range_index: int = 0


def _file_id(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def plan_shards(spec: FilesSource, base: Path) -> list[Shard]:
    """The shards of a sequential files source: one per file, plain line files in byte ranges."""
    shards: list[Shard] = []
    line_format = spec.format == "jsonl" or (spec.format == "text" and spec.split == "lines")
    for path in _matched_files(spec, base):
        file_id = _file_id(path, base)
        if not line_format:
            shards.append(Shard("records", str(path), file_id))
            continue
        size = path.stat().st_size
        if _is_gzip(path) or size <= SHARD_BYTES:
            shards.append(Shard("lines", str(path), file_id))
            continue
        n = -(-size // SHARD_BYTES)
        edges = [size * i // n for i in range(n + 1)]
        shards += [Shard("lines", str(path), file_id, edges[i], edges[i + 1], i) for i in range(n)]
    return shards


# ----------------------------------------------------------------------------- bottom-k


class _BottomK:
    """The k smallest usable documents offered so far (a max-heap on (key, position))."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: list[tuple[int, int, PoolDoc]] = []

    @property
    def threshold(self) -> int:
        """Keys above this cannot enter (the current k-th smallest, or the largest key)."""
        return -self.heap[0][0] if len(self.heap) >= self.k else _MAX_KEY

    def offer(self, doc: PoolDoc) -> None:
        item = (-doc.key, -doc.position, doc)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)

    def docs(self) -> tuple[PoolDoc, ...]:
        return tuple(sorted(item[2] for item in self.heap))


def _is_usable(text: str) -> bool:
    return bool(text) and not text.isspace()


# ----------------------------------------------------------------------------- line shards


def _parse_jsonl_line(raw: bytes, column: str, where: str, first: bool) -> str | None:
    """The text of one JSON Lines record; None for a whitespace-only line (not a record)."""
    line = decode_line(raw, where, first=first)
    return jsonl_text(line, column, where) if line.strip() else None


def _parse_text_line(raw: bytes, where: str, first: bool) -> str | None:
    line = decode_line(raw, where, first=first)
    return line if line.strip() else None


def _open_range(path: str, start: int) -> tuple[Any, int]:
    """A binary handle positioned at the first line that starts at or after `start` (a gzip file
    is decompressed with ISA-L's igzip, about 3x zlib's speed, the bottleneck of a .gz pass)."""
    from isal import igzip

    handle = igzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")
    if start > 0:
        handle.seek(start - 1)
        if handle.read(1) != b"\n":
            skipped = handle.readline()
            start += len(skipped)
    return handle, start


# A gzip file's `readinto` reads into a new object of the size asked for, then copies it: asked
# for a little at a time, it allocates little. A plain file reads a whole piece in one request.
_GZIP_STEP = 1 << 20


def _piece_buffer(size: int) -> mmap.mmap:
    """A buffer for pieces of a line file, mapped on its own rather than taken from the C heap: a
    heap block this large, once freed, raises the allocator's thresholds so far that the heap kept
    tens of MB more resident after a long pass than after a short one."""
    return mmap.mmap(-1, size)


def _fill(handle: Any, view: memoryview, step: int) -> int:
    """Read into `view`, at most `step` bytes a call, until it is full or the file ends; the bytes read."""
    filled = 0
    while filled < len(view):
        got = handle.readinto(view[filled:filled + step])
        if not got:
            break
        filled += got
    return filled


def _chunks(handle: Any, path: str, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) pieces that end on a line end; the last line of the range is read whole.

    Every piece is read into one buffer, reused while the pieces fit it, so the pass allocates
    nothing per piece (a fresh 16 MB object per piece left the allocator's heap, and the peak
    memory, a little higher the longer the pass). A piece is valid until the next is asked for.
    A plain file is re-positioned after each piece's last line end; a gzip stream's unfinished
    line is moved to the front of the buffer, and the next piece is read after it."""
    seekable = not _is_gzip(path)
    offset = start
    size = CHUNK_BYTES
    buffer = _piece_buffer(size)
    kept = 0  # bytes of an unfinished line at the buffer's front (gzip)
    while True:
        if len(buffer) < kept + size:  # a line longer than a piece: a larger buffer
            grown = _piece_buffer(kept + size)
            grown[:kept] = buffer[:kept]
            buffer = grown
        view = memoryview(buffer)
        try:
            if seekable:
                handle.seek(offset)
            got = _fill(handle, view[kept:kept + size], size if seekable else _GZIP_STEP)
        except (EOFError, OSError, zlib.error) as exc:  # igzip's BadGzipFile is an OSError
            if seekable:
                raise
            raise SourceDataError(
                f"{path}: cannot decompress after byte {offset + kept} ({type(exc).__name__}: {exc}); the gzip file "
                "may be truncated or corrupt: copy or compress it again (`gzip -t` checks a file)"
            ) from None
        filled = kept + got
        if got < size:  # the end of the file
            if filled:
                yield offset, view[:filled]
            return
        cut = buffer.rfind(b"\n", 0, filled) + 1
        if cut == 0:  # one line longer than the piece: read more at once, up to the line limit
            if filled > MAX_LINE_BYTES:
                raise SourceDataError(
                    f"{path}: the line at byte {offset} is longer than {MAX_LINE_BYTES // 2**20} MiB; one document per "
                    "line is limited to that size so memory stays bounded: split the document into several lines"
                )
            size *= 2
            kept = 0 if seekable else filled
            continue
        size = CHUNK_BYTES
        yield offset, view[:cut]
        offset += cut
        kept = 0 if seekable else filled - cut
        if kept:
            buffer[:kept] = buffer[cut:filled]
        if 0 <= end <= offset:
            return


def _line_ends(buf: np.ndarray) -> np.ndarray:
    """Positions of the newlines in `buf`, found 1 MiB at a time (no piece-sized temporary)."""
    step = 1 << 20
    return np.concatenate([np.flatnonzero(buf[i:i + step] == 10) + i for i in range(0, len(buf), step)] or [np.empty(0, np.int64)])


def sample_line_shard(shard: Shard, spec: FilesSource, seed: int, k: int) -> ShardResult:
    """Bottom-k of one JSON Lines or text-lines shard, keyed by each line's byte offset."""
    salt = shard_salt(seed, shard.file_id)
    best = _BottomK(k)
    n_records = n_read = n_empty = n_lines = 0
    jsonl = spec.format == "jsonl"
    handle, start = _open_range(shard.path, shard.start)
    end = shard.end
    try:
        for offset, data in _chunks(handle, shard.path, start, end):
            buf = np.frombuffer(data, dtype=np.uint8)
            ends = _line_ends(buf)
            if ends.size == 0 or ends[-1] != len(data) - 1:
                ends = np.append(ends, len(data))  # a last line without a newline
            starts = np.concatenate(([0], ends[:-1] + 1))
            if end >= 0:
                inside = offset + starts < end
                starts, ends = starts[inside], ends[inside]
            lengths = ends - starts
            too_long = np.flatnonzero(lengths > MAX_LINE_BYTES)
            if too_long.size:
                raise SourceDataError(
                    f"{shard.path}, line {n_lines + int(too_long[0]) + 1 if shard.start == 0 else 'at byte ' + str(offset + int(starts[too_long[0]]))}: "
                    f"longer than {MAX_LINE_BYTES // 2**20} MiB; one document per line is limited to that size so "
                    "memory stays bounded: split the document into several lines"
                )
            last = np.where(lengths > 0, buf[np.maximum(ends - 1, 0)], 10)
            blank = (lengths == 0) | ((lengths == 1) & (last == 13))
            records = np.flatnonzero(~blank)
            n_records += int(records.size)
            keys = document_keys(salt, offset + starts[records])
            threshold = best.threshold
            hits = records[keys <= np.uint64(threshold)] if threshold < _MAX_KEY else records
            hit_keys = keys[keys <= np.uint64(threshold)] if threshold < _MAX_KEY else keys
            for i in np.argsort(hit_keys, kind="stable"):
                key = int(hit_keys[i])
                if key > best.threshold:
                    break
                row = int(hits[i])
                raw = bytes(data[starts[row]:ends[row]])
                line_no = n_lines + row + 1
                where = f"{shard.path}, line {line_no}" if shard.start == 0 else f"{shard.path}, line at byte {offset + int(starts[row])}"
                first = offset + int(starts[row]) == 0
                text = (_parse_jsonl_line(raw, spec.text_column, where, first) if jsonl
                        else _parse_text_line(raw.rstrip(b"\r"), where, first))
                if text is None:
                    n_records -= 1
                    continue
                n_read += 1
                if not _is_usable(text):
                    n_empty += 1
                    continue
                best.offer(PoolDoc(key, shard.file_id, offset + int(starts[row]), f"line {line_no}", text))
            n_lines += int(starts.size)
    finally:
        handle.close()
    return ShardResult(best.docs(), n_records, n_read, n_empty, file=shard.file_id, range_index=shard.range_index,
                       n_lines=n_lines)


def _sample_records(records: Iterable[str], salt: int, file_id: str, unit: str, k: int) -> ShardResult:
    """Bottom-k of a stream whose every record is parsed (CSV, paragraphs, hub streams)."""
    best = _BottomK(k)
    n_records = n_empty = 0
    for position, text in enumerate(records):
        n_records += 1
        if not _is_usable(text):
            n_empty += 1
            continue
        key = document_key(salt, position)
        if key <= best.threshold:
            best.offer(PoolDoc(key, file_id, position, f"{unit} {position + 1}", text))
    return ShardResult(best.docs(), n_records, n_records, n_empty, file=file_id)


def sample_record_shard(shard: Shard, spec: FilesSource, seed: int, k: int) -> ShardResult:
    reader = _iter_csv if spec.format == "csv" else _iter_text
    unit = "row" if spec.format == "csv" else "paragraph"
    return _sample_records(reader(Path(shard.path), spec), shard_salt(seed, shard.file_id), shard.file_id, unit, k)


def sample_shard(shard: Shard, spec: FilesSource, seed: int, k: int) -> ShardResult:
    """One shard's bottom-k, whatever its kind (the function every executor runs)."""
    if shard.kind == "lines":
        return sample_line_shard(shard, spec, seed, k)
    return sample_record_shard(shard, spec, seed, k)


def _shard_task(args: tuple[dict[str, Any], dict[str, Any], int, int]) -> ShardResult:
    shard, spec, seed, k = args
    fields = dict(spec)
    return sample_shard(Shard(**shard), parse_source(fields.pop("source"), fields), seed, k)


# ----------------------------------------------------------------------------- merging


def merge(results: Sequence[ShardResult], *, seed: int, k: int, exact: bool) -> Pool:
    """The pool of a source from its shards' bottom-k (independent of their order and number)."""
    line_base: dict[tuple[str, int], int] = {}
    by_file: dict[str, list[ShardResult]] = {}
    for result in results:
        by_file.setdefault(result.file, []).append(result)
    for file, parts in by_file.items():
        base = 0
        for part in sorted(parts, key=lambda r: r.range_index):
            line_base[(file, part.range_index)] = base
            base += part.n_lines
    docs: list[PoolDoc] = []
    for result in results:
        shift = line_base.get((result.file, result.range_index), 0)
        for doc in result.docs:
            if shift and doc.locator.startswith("line "):
                doc = dataclasses.replace(doc, locator=f"line {int(doc.locator[5:]) + shift}")
            docs.append(doc)
    docs.sort()
    return Pool(
        docs=tuple(docs[:k]), seed=seed, requested=k,
        n_records=sum(r.n_records for r in results), n_read=sum(r.n_read for r in results),
        n_empty_read=sum(r.n_empty_read for r in results), exact=exact,
    )


def _shard_bytes(shard: Shard) -> int:
    return os.path.getsize(shard.path) if shard.end < 0 else shard.end - shard.start


def _run_shards(shards: list[Shard], spec: FilesSource, seed: int, k: int, executor: Executor,
                workers: int | None, ray_address: str | None, stall_s: float | None = None,
                progress: Progress | None = None) -> list[ShardResult]:
    """Each shard's result, in the order of `shards`; `progress` is called as each one is done."""
    sizes = [_shard_bytes(s) for s in shards]
    total = sum(sizes)
    if executor == "auto":
        executor = "process" if len(shards) > 1 and total >= PROCESS_MIN_BYTES else "serial"
    started = time.monotonic()
    done = {"shards": 0, "bytes": 0}

    def finished(i: int) -> None:
        done["shards"] += 1
        done["bytes"] += sizes[i]
        if progress is not None:
            progress(SamplingProgress(done["shards"], len(shards), done["bytes"], total, time.monotonic() - started))

    tasks = [(dataclasses.asdict(s), source_to_dict(spec), seed, k) for s in shards]
    if executor == "serial" or len(shards) == 0:
        results = []
        for i, shard in enumerate(shards):
            results.append(sample_shard(shard, spec, seed, k))
            finished(i)
        return results
    if executor == "process":
        n = min(len(shards), workers or os.cpu_count() or 1)
        logger.info("sampling %d shards (%.0f MB) in %d processes", len(shards), total / 2**20, n)
        context = multiprocessing.get_context("spawn")
        found: dict[int, ShardResult] = {}
        with concurrent.futures.ProcessPoolExecutor(max_workers=n, mp_context=context) as pool:
            futures = {pool.submit(_shard_task, task): i for i, task in enumerate(tasks)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    found[futures[future]] = future.result()
                    finished(futures[future])
            except BaseException:
                for future in futures:  # a failed shard fails the pool: the shards not started are not read
                    future.cancel()
                raise
        return [found[i] for i in range(len(tasks))]
    if executor == "ray":
        return _run_on_ray(tasks, ray_address, ray_stall_limit(shards, stall_s), finished)
    raise SourceSpecError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")


def _ray_sample_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """map_batches body: sample the shards of one block; results travel as JSON strings."""
    out = []
    for task in batch["task"]:
        shard, spec, seed, k = json.loads(str(task))
        out.append(json.dumps(dataclasses.asdict(_shard_task((shard, spec, seed, k)))))
    return {"index": batch["index"], "result": np.array(out, dtype=object)}


class SamplingStalledError(RuntimeError):
    """Sampling on Ray made no progress for longer than its stall limit, on every attempt."""


def ray_stall_limit(shards: Sequence[Shard], stall_s: float | None = None) -> float:
    """Seconds without a finished shard after which a Ray Data run counts as stalled: `stall_s`
    when given (> 0), else `RAY_STALL_BASE_S` plus the largest shard read at `RAY_STALL_MIN_RATE`."""
    if stall_s is not None and stall_s > 0:
        return float(stall_s)
    largest = max((_shard_bytes(s) for s in shards), default=0)
    return RAY_STALL_BASE_S + largest / RAY_STALL_MIN_RATE


def _run_on_ray(tasks: list[tuple[dict[str, Any], dict[str, Any], int, int]], ray_address: str | None,
                stall_s: float, finished: Callable[[int], None]) -> list[ShardResult]:
    """The shards' results from Ray Data, each shard an item of `ray.data.from_items` sampled by
    `map_batches`.

    Ray Data's streaming executor can wait forever on a task whose worker is gone (the driver in
    `ray.wait`, no task left running). Rows are taken on a thread while this one watches: when no
    shard finishes for `stall_s` seconds, the run is shut down (its tasks cancelled) and the shards
    not yet returned are sampled by a new run, up to `RAY_DATA_ATTEMPTS` runs, then
    `SamplingStalledError`. A shard's result does not depend on which run or worker sampled it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("sampling on Ray needs the `ray` extra: pip install 'divcoef_assets[ray]'") from exc
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=ray_address or "auto", log_to_driver=False)
    results: dict[int, ShardResult] = {}
    try:
        for attempt in range(1, RAY_DATA_ATTEMPTS + 1):
            pending = [i for i in range(len(tasks)) if i not in results]
            items = [{"index": i, "task": json.dumps(list(tasks[i]))} for i in pending]
            dataset = ray.data.from_items(items, override_num_blocks=len(items))
            rows = dataset.map_batches(_ray_sample_batch, batch_size=1, batch_format="numpy")
            name = f"divcoef-sampling-{os.getpid()}-{id(rows):x}-{attempt}"
            rows.set_name(name)
            if _take_watched(rows, name, results, stall_s, finished):
                break
            done = len(results)
            if attempt < RAY_DATA_ATTEMPTS:
                logger.warning("sampling on Ray Data: no shard finished for %.0f s (%d of %d done); "
                               "sampling the other %d again in a new run", stall_s, done, len(tasks), len(tasks) - done)
        else:
            raise SamplingStalledError(
                f"sampling on Ray Data stalled: no shard finished for {stall_s:.0f} s, in each of {RAY_DATA_ATTEMPTS} "
                f"runs ({len(results)} of {len(tasks)} shards done); check the cluster (`ray status`: free CPUs, "
                "lost nodes) and that every node sees the source's files, or raise ray_sampling_stall_s; nothing was written"
            )
    finally:
        if connected_here:
            ray.shutdown()
    logger.info("sampled %d shards on Ray Data", len(results))
    return [results[i] for i in range(len(tasks))]


def _take_watched(rows: Any, name: str, results: dict[int, ShardResult], stall_s: float,
                  finished: Callable[[int], None]) -> bool:
    """Add the rows of the Ray dataset `rows` (named `name`) to `results` (by shard index, calling
    `finished` with it); False when no row came for `stall_s` seconds, once its run is shut down."""
    import queue
    import threading

    arrived: queue.Queue[tuple[str, Any]] = queue.Queue()

    def consume() -> None:
        try:
            for row in rows.iter_rows():
                arrived.put(("row", row))
            arrived.put(("end", None))
        except BaseException as exc:  # handed to the watching thread
            arrived.put(("error", exc))

    reader = threading.Thread(target=consume, name=f"{name}-reader", daemon=True)
    reader.start()
    while True:
        try:
            kind, value = arrived.get(timeout=stall_s)
        except queue.Empty:
            _stop_ray_data_run(name)
            reader.join(timeout=30)
            return False
        if kind == "end":
            return True
        if kind == "error":
            raise value
        fields = json.loads(str(value["result"]))
        fields["docs"] = tuple(PoolDoc(**d) for d in fields["docs"])
        index = int(value["index"])
        if index not in results:
            results[index] = ShardResult(**fields)
            finished(index)


def _stop_ray_data_run(name: str) -> None:
    """Shut down the streaming executor of the Ray dataset named `name`, cancelling its tasks.

    Ray Data keeps the executor of a run that has not yielded yet out of reach, but it runs on a
    thread of its own, tagged with the dataset's name: a stalled run left running would go on
    calling Ray after the step disconnects (and Ray would then start a local cluster for it)."""
    import threading

    executors = [t for t in threading.enumerate()
                 if str(getattr(t, "_dataset_id", "")).startswith(f"{name}_") and callable(getattr(t, "shutdown", None))]
    if not executors:
        logger.warning("sampling on Ray Data: the stalled run %s was not found to be shut down", name)
    for executor in executors:
        executor.shutdown(force=True)


# ----------------------------------------------------------------------------- random access


def _key_bound(want: int, total: int) -> int:
    """A key below which the `want` smallest of `total` uniform keys lie, all but surely (2^64: no bound)."""
    return _MAX_KEY + 1 if total == 0 else min(_MAX_KEY + 1, (_MAX_KEY + 1) * (2 * want + 64) // total)


def _select_rows(row_counts: Sequence[int], salts: Sequence[int], want: int) -> list[tuple[int, int, int]]:
    """The `want` (file, row) pairs with the smallest keys, as (key, file index, row), sorted.

    Keys are uniform over 64 bits, so the `want` smallest of `total` lie, all but surely, below
    a bound a few times `want / total` of the range: each block of rows keeps only the keys under
    it. The blocks are small enough for their keys to stay in the CPU cache, which makes one
    thread faster here than several (whose small NumPy calls would contend for the GIL). Should
    fewer than `want` fall under the bound, every key is kept instead. The result is the exact
    `want` smallest either way, and memory stays flat."""
    total = int(sum(row_counts))
    bound = _key_bound(want, total)

    def smallest(limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys_kept: list[np.ndarray] = []
        rows_kept: list[np.ndarray] = []
        files_kept: list[np.ndarray] = []
        kept = 0
        for f, n in enumerate(row_counts):
            for start in range(0, n, _KEY_BLOCK):
                rows = np.arange(start, min(n, start + _KEY_BLOCK), dtype=np.int64)
                keys = document_keys(salts[f], rows)
                if limit <= _MAX_KEY:
                    under = np.flatnonzero(keys < np.uint64(limit))
                    keys, rows = keys[under], rows[under]
                if not keys.size:
                    continue
                keys_kept.append(keys)
                rows_kept.append(rows)
                files_kept.append(np.full(keys.size, f, dtype=np.int64))
                kept += keys.size
                if kept > 4 * want + _KEY_BLOCK:  # (only when there is no bound) keep the memory flat
                    merged = [np.concatenate(part) for part in (keys_kept, files_kept, rows_kept)]
                    part = np.argpartition(merged[0], want - 1)[:want]
                    keys_kept, files_kept, rows_kept = ([m[part]] for m in merged)
                    kept = want
        if not keys_kept:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        best_keys, best_file, best_row = (np.concatenate(part) for part in (keys_kept, files_kept, rows_kept))
        if best_keys.size > want:
            part = np.argpartition(best_keys, want - 1)[:want]
            best_keys, best_file, best_row = best_keys[part], best_file[part], best_row[part]
        return best_keys, best_file, best_row

    best_keys, best_file, best_row = smallest(bound)
    if best_keys.size < min(want, total):
        best_keys, best_file, best_row = smallest(_MAX_KEY + 1)
    order = np.lexsort((best_row, best_file, best_keys))
    return [(int(best_keys[i]), int(best_file[i]), int(best_row[i])) for i in order]


def first_draw(k: int, total: int) -> int:
    """Rows a random-access pool of `k` draws at first, of `total`: each costs a read, so few more
    than `k` (a shortfall of usable rows draws again)."""
    return min(total, k + max(4, k // 64))


def _random_access_pool(
    row_counts: Sequence[int], file_ids: Sequence[str], fetch: Callable[[int, list[int]], list[str]], seed: int, k: int,
) -> Pool:
    """Bottom-k usable rows of row-addressable files: only drawn rows are read (`fetch(file, rows)`)."""
    salts = [shard_salt(seed, f) for f in file_ids]
    total = int(sum(row_counts))
    # Each drawn row costs a read, so few more are drawn than needed; a shortfall (empty documents)
    # draws again, as many more as the empty share seen so far suggests. The pool is the first k
    # usable rows in key order whatever the rounds.
    want = first_draw(k, total)
    best: list[PoolDoc] = []
    n_read = n_empty = 0
    done = 0  # candidates already read, in key order
    while True:
        candidates = _select_rows(row_counts, salts, want)
        fresh = candidates[done:]
        by_file: dict[int, list[int]] = {}
        for _, f, row in fresh:
            by_file.setdefault(f, []).append(row)
        texts: dict[tuple[int, int], str] = {}
        for f, rows in by_file.items():
            for row, text in zip(rows, fetch(f, rows)):
                texts[(f, row)] = text
        for key, f, row in fresh:
            text = texts[(f, row)]
            n_read += 1
            if not _is_usable(text):
                n_empty += 1
                continue
            best.append(PoolDoc(key, file_ids[f], row, f"row {row + 1}", text))
            if len(best) == k:
                break
        done = len(candidates)
        if len(best) >= k or want >= total:
            break
        usable_share = max(len(best), 1) / max(n_read, 1)
        want = min(total, max(want + 16, want + int((k - len(best)) / usable_share * 1.25)))
    return Pool(docs=tuple(best[:k]), seed=seed, requested=k, n_records=total, n_read=n_read,
                n_empty_read=n_empty, exact=n_read == total)


def _parquet_footers(files: Sequence[Path], column: str) -> list[int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts = []
    for path in files:
        try:
            with pq.ParquetFile(path) as parquet:
                schema = parquet.schema_arrow
                counts.append(parquet.metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptSourceError(
                f"{path}: not a readable Parquet file: its footer cannot be read ({' '.join(str(exc).split())}); it may "
                "be truncated or corrupt: rewrite it"
            ) from None
        if column not in schema.names:
            raise SourceDataError(f"{path}: no column {column!r}; the file has {schema.names}; set text_column to one of them")
        kind = schema.field(column).type
        value = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (pa.types.is_string(value) or pa.types.is_large_string(value) or pa.types.is_string_view(value)):
            raise SourceDataError(
                f"{path}, row 1: column {column!r} holds {kind} values, not strings; point text_column at a string column"
            )
    return counts


DUCKDB_BATCH_ROWS = 65_536  # rows per Arrow batch of a streamed DuckDB query
DUCKDB_MEMORY_LIMIT = "256MB"  # DuckDB's buffer pool while sampling a DuckDB source
DUCKDB_ROWID_MEMORY_LIMIT = "32MB"  # and while reading drawn rows of a table one by one
DUCKDB_READERS = 4  # threads reading drawn rows by rowid, each with its own cursor


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _int_list(rows: Sequence[int]) -> str:
    """Row numbers as SQL literals: each passes through int(), so nothing else can be formatted."""
    return ", ".join(str(int(r)) for r in sorted(rows))


def _parquet_fetch(files: Sequence[Path], column: str) -> Callable[[int, list[int]], list[str]]:
    """Drawn rows of a Parquet file: only their pages decoded (`parquet_pages`), else DuckDB's row groups."""
    import duckdb

    from divcoef_assets.core.duckdb_files import NO_EXTENSION_AUTOLOAD
    from divcoef_assets.core.parquet_pages import Unsupported, read_rows

    name = _quote(column)

    def by_row_group(f: int, rows: list[int]) -> dict[int, str | None]:
        connection = duckdb.connect(config=dict(NO_EXTENSION_AUTOLOAD))
        row_list = _int_list(rows)
        try:
            return dict(connection.execute(
                f"SELECT file_row_number, {name} FROM read_parquet(?, file_row_number = true) "
                f"WHERE file_row_number IN ({row_list})",
                [str(files[f])],
            ).fetchall())
        except duckdb.Error as exc:
            raise CorruptSourceError(f"{files[f]}: reading rows failed ({exc}); the file may be truncated or corrupt: rewrite it") from None
        finally:
            connection.close()

    def fetch(f: int, rows: list[int]) -> list[str]:
        try:
            found = read_rows(files[f], column, rows)
        except Unsupported as exc:
            logger.info("%s: reading whole row groups (its pages are not decoded here: %s)", files[f], exc)
            found = by_row_group(f, rows)
        return [_check_text(found.get(row), f"{files[f]}, row {row + 1}") for row in rows]

    return fetch


def parquet_pool(spec: FilesSource, base: Path, seed: int, k: int) -> Pool:
    files = _matched_files(spec, base)
    counts = _parquet_footers(files, spec.text_column)
    return _random_access_pool(counts, [_file_id(p, base) for p in files], _parquet_fetch(files, spec.text_column), seed, k)


def arrow_pool(spec: HuggingFaceSource, local: Path, base: Path, seed: int, k: int) -> Pool:
    """Drawn rows of a `save_to_disk` folder, each read on its own from the Arrow files.

    `arrow_ipc` walks the record batch headers with positioned reads and reads a drawn row as its
    offsets and bytes: nothing is memory-mapped, so resident memory does not grow with the folder.
    A folder it does not walk (compressed batches, an unusual column type, a file that does not
    add up) is opened with `datasets.load_from_disk` instead (memory-mapped), and the rows taken
    from the Arrow column: the same rows, so the same pool, and a damaged file named."""
    file_id = f"{_file_id(local, base)}#{spec.split}"
    try:
        saved = arrow_ipc.open_saved_column(local, spec.split, spec.text_column)
    except arrow_ipc.Unsupported as exc:
        logger.info("%s: read through datasets.load_from_disk (%s)", local, exc)
    else:

        def read(_: int, rows: list[int]) -> list[str]:
            try:
                values = saved.read_rows(rows)
            except arrow_ipc.Unsupported as exc:
                raise CorruptSourceError(f"a drawn row cannot be read: {exc}; the file may be truncated or corrupt: save the dataset again") from None
            return [_check_text(values[r], f"{local}, row {r + 1}") for r in rows]

        return _random_access_pool([saved.num_rows], [file_id], read, seed, k)

    loaded = load_saved_dataset(spec, local)
    if loaded._indices is not None:  # an indices mapping (not written by save_to_disk): let `datasets` resolve it

        def fetch(_: int, rows: list[int]) -> list[str]:
            values = loaded.select(rows)[spec.text_column]
            return [_check_text(v, f"{local}, row {r + 1}") for r, v in zip(rows, values)]
    else:
        column = loaded.data.table.column(spec.text_column)
        starts = np.cumsum([0] + [len(chunk) for chunk in column.chunks])

        def fetch(_: int, rows: list[int]) -> list[str]:
            out = []
            for row in rows:
                c = int(np.searchsorted(starts, row, side="right")) - 1
                out.append(_check_text(column.chunk(c)[row - int(starts[c])].as_py(), f"{local}, row {row + 1}"))
            return out

    return _random_access_pool([loaded.num_rows], [file_id], fetch, seed, k)


def _table_scan(connection: Any, query: str, total: int) -> str | None:
    """The table (quoted) when the query is a plain scan of one table whose rowids are its positions.

    A plain scan is `SELECT <columns or *> FROM <table>` with nothing else (no WHERE, ORDER BY,
    LIMIT, DISTINCT, sample or expression that could depend on other rows). Its result row `p`
    is the table's row with rowid `p` when the rowids run 0..n-1 (no deleted rows), because a scan
    keeps insertion order. None when any of this does not hold, or cannot be checked.
    """
    import duckdb

    try:
        (serialized,) = connection.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
        tree = json.loads(serialized)
        if tree.get("error") or len(tree["statements"]) != 1:
            return None
        node = tree["statements"][0]["node"]
        source = node.get("from_table") or {}
        plain = (
            node.get("type") == "SELECT_NODE" and not node.get("modifiers") and not node["cte_map"]["map"]
            and node.get("where_clause") is None and not node.get("group_expressions") and not node.get("group_sets")
            and node.get("having") is None and node.get("sample") is None and node.get("qualify") is None
            and source.get("type") == "BASE_TABLE" and source.get("sample") is None and source.get("at_clause") is None
            and all(
                item["class"] == "COLUMN_REF"
                or (item["class"] == "STAR" and not item.get("replace_list") and item.get("expr") is None and not item.get("columns"))
                for item in node["select_list"]
            )
        )
        if not plain:
            return None
        table = ".".join(_quote(source[part]) for part in ("catalog_name", "schema_name", "table_name") if source[part])
        described = connection.execute(f"SELECT * FROM {table} LIMIT 0")
        columns = [d[0].lower() for d in described.description]
        described.fetchall()
        if "rowid" in columns:  # a column of that name hides the row id
            return None
        count, low, high = connection.execute(f"SELECT count(*), min(rowid), max(rowid) FROM {table}").fetchone()
        if count != total or (count and (low != 0 or high != count - 1)):
            return None
    except (duckdb.Error, KeyError, TypeError, ValueError):
        return None
    return table


def duckdb_pool(spec: DuckDBSource, base: Path, seed: int, k: int) -> Pool:
    """Rows of the query's result, addressed by their position (DuckDB keeps insertion order).

    A `count(*)` gives the positions to draw. When the query is a plain scan of one table (see
    `_table_scan`), each drawn row is read on its own by rowid, which DuckDB finds without
    scanning the table: the time follows the sample. Any other query is streamed once, in Arrow
    batches, keeping the drawn positions and stopping after the last one: no document is copied
    and memory stays flat, but the time follows the query's rows. DuckDB's buffer pool is capped
    at `DUCKDB_MEMORY_LIMIT` either way. Both ways draw the same positions, so give the same pool.
    """
    import duckdb
    import pyarrow as pa

    from divcoef_assets.core.duckdb_files import random_reads
    from divcoef_assets.core.sources import _duckdb_connection

    database = _resolve(spec.database, base)
    connection, query = _duckdb_connection(spec, base, memory_limit=DUCKDB_MEMORY_LIMIT)
    try:
        name = _quote(spec.text_column)
        try:
            (total,) = connection.execute(f"SELECT count(*) FROM ({query})").fetchone()
        except duckdb.OutOfMemoryException as exc:
            raise SourceDataError(
                f"{database}: the query needs more than {DUCKDB_MEMORY_LIMIT} of memory while sampling ({exc}); "
                "sample from a table or a simpler view"
            ) from None
        scan = _table_scan(connection, query, int(total))
        limit = DUCKDB_ROWID_MEMORY_LIMIT if scan else DUCKDB_MEMORY_LIMIT
        if scan:  # point reads need a block or two each: a smaller cache keeps memory flat
            connection.execute(f"SET memory_limit = '{DUCKDB_ROWID_MEMORY_LIMIT}'")

        def fetch_by_rowid(rows: list[int]) -> dict[int, str | None]:
            wanted = sorted(set(rows))
            n = max(1, min(DUCKDB_READERS, len(wanted) // 16))
            step = -(-len(wanted) // n)

            def part(chunk: list[int]) -> dict[int, str | None]:
                found: dict[int, str | None] = {}
                cursor = connection.cursor()  # a connection of its own to the same database, for this thread
                try:
                    for row in chunk:
                        # A literal bound (through int()): DuckDB then skips to the row's segment.
                        row_list = _int_list([row])
                        hit = cursor.execute(
                            f"SELECT {name} FROM ({query}\nWHERE rowid BETWEEN {row_list} AND {row_list})"
                        ).fetchone()
                        if hit is None:
                            raise SourceDataError(f"{database}: row {row + 1} of the query is gone: the table changed while it was sampled")
                        found[row] = hit[0]
                finally:
                    cursor.close()
                return found

            # Each lookup waits on a block read when the database is not cached: a few side by side.
            with random_reads(database), concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
                parts = list(pool.map(part, [wanted[i:i + step] for i in range(0, len(wanted), step)]))
            return {row: text for found in parts for row, text in found.items()}

        def fetch_streamed(rows: list[int]) -> dict[int, str | None]:
            wanted = sorted(set(rows))
            found: dict[int, str | None] = {}
            cursor = connection.cursor()  # its own result: stopping after the last drawn row leaves the connection usable
            try:
                reader = cursor.sql(f"SELECT {name} FROM ({query})").to_arrow_reader(DUCKDB_BATCH_ROWS)  # streamed
                start, i = 0, 0
                for batch in reader:
                    end = start + batch.num_rows
                    j = i
                    while j < len(wanted) and wanted[j] < end:
                        j += 1
                    if j > i:
                        picked = batch.column(0).take(pa.array([r - start for r in wanted[i:j]], pa.int64())).to_pylist()
                        found.update(zip(wanted[i:j], picked))
                        i = j
                    start = end
                    if i == len(wanted):
                        break
            finally:
                cursor.close()
            return found

        def fetch(_: int, rows: list[int]) -> list[str]:
            try:
                found = fetch_by_rowid(rows) if scan else fetch_streamed(rows)
            except duckdb.OutOfMemoryException as exc:
                raise SourceDataError(
                    f"{database}: reading the drawn rows needs more than {limit} of memory ({exc}); "
                    "sample from a table or a simpler view"
                ) from None
            return [_check_text(found.get(row), f"{database}, query row {row + 1}") for row in rows]

        if scan:
            logger.info("sampling %s by rowid: the query is a plain scan of %s", database.name, scan)
        else:
            logger.info("sampling %s by streaming the query once (not a plain scan of one table)", database.name)
        return _random_access_pool([int(total)], [f"{_file_id(database, base)}?{spec.query}"], fetch, seed, k)
    finally:
        connection.close()


# ----------------------------------------------------------------------------- entry point


def sample_pool(
    spec: SourceSpec, base_dir: str | Path, *, seed: int, k: int, executor: Executor = "auto",
    workers: int | None = None, ray_address: str | None = None, ray_stall_s: float | None = None,
    progress: Progress | None = None,
) -> Pool:
    """The pool of k usable documents of a text source under `seed` (fewer when the source has fewer).

    Relative paths resolve against `base_dir` (the registry's folder), as the readers do. On Ray,
    `ray_stall_s` is how long a run may go without a finished shard (None: `ray_stall_limit`'s).
    `progress` is called each time a shard of a file source read in one pass is sampled.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if executor not in EXECUTORS:
        raise SourceSpecError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    base = Path(base_dir)
    max_documents = getattr(spec, "max_documents", None)
    if max_documents:
        # Only the first `max_documents` records are eligible: one ordered stream.
        from divcoef_assets.core.sources import iter_texts

        stream_id = f"{source_to_dict(spec)}"
        result = _sample_records(iter_texts(spec, base), shard_salt(seed, stream_id), stream_id, "record", k)
        return merge([result], seed=seed, k=k, exact=True)
    if isinstance(spec, FilesSource):
        if spec.format == "parquet":
            return parquet_pool(spec, base, seed, k)
        shards = plan_shards(spec, base)
        logger.info("sampling %d document(s) from %d shard(s) of %s", k, len(shards), spec.path)
        results = _run_shards(shards, spec, seed, k, executor, workers, ray_address, ray_stall_s, progress)
        return merge(results, seed=seed, k=k, exact=all(r.n_read == r.n_records for r in results))
    if isinstance(spec, HuggingFaceSource):
        local = _resolve(spec.path, base)
        if local.is_dir():
            return arrow_pool(spec, local, base, seed, k)
        if spec.path.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(spec.path):
            raise SourceNotFoundError(
                f"Hugging Face dataset folder {spec.path!r} not found (resolved to {local}); a relative path is relative to {base}"
            )
        stream_id = f"hub:{spec.path}:{spec.name}:{spec.split}"
        result = _sample_records(_iter_hub(spec), shard_salt(seed, stream_id), stream_id, "row", k)
        return merge([result], seed=seed, k=k, exact=True)
    if isinstance(spec, DuckDBSource):
        return duckdb_pool(spec, base, seed, k)
    raise SourceSpecError(f"a {spec.type} source has no documents of its own to sample")
