"""Where a random-access pool's read goes at 100 MB and at 4 GB: reads, bytes from the disk, CPU time.

    .venv/bin/python benchmarks/read_cost.py [--formats parquet parquet-hf arrow] [--sizes 100M 4G]
                                             [--repeats 5] [--workdir benchmarks/out/corpus_scale] [--no-write]

corpus_scale.py times the whole snapshot step; this script takes apart its largest part for the
formats without a footer of page locations: Parquet, read by `core.parquet_pages.read_rows`, and
`save_to_disk` folders, read by `core.arrow_ipc` (its walk of the record batch headers, then the
rows). The rows read are the 325 candidates a pool of 320 documents draws (`sampler._select_rows`
under seed 0, as the sampler draws them). The corpora are corpus_scale.py's, built there when
missing. Each run is a fresh process:

- cold: the files dropped from the OS's file cache first (as corpus_scale.py measures the step),
- warm: the same read again in the same process, the files now cached: what the CPU alone costs.

Per cell it prints the header reads (Parquet: positioned reads of a page header, walked up to each
drawn page when the file has no page index; a header longer than the first read counts twice.
Arrow: reads of a record batch's message header, every batch of every file), the pages decoded
(Parquet), the MB the process read from the disk (`read_bytes` of /proc/self/io, read-ahead it
asked for included), the wall time and the CPU time (user + system, all threads). It also
measures the disk: random 4 KB reads of the largest file, not cached, on 1 and on 8 threads.
Header reads over that rate is about the least time the chains of header reads can take. Medians
of `--repeats` runs; writes the "Random-access read cost" section of BENCHMARKS.md (`--no-write`:
print only). Run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import corpus_scale  # noqa: E402
from sections import replace_section  # noqa: E402

POOL = 320
SEED = 0
FORMATS = ("parquet", "parquet-hf", "arrow")

log = logging.getLogger("read_cost")


def _read_bytes() -> int:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _drawn(counts: list[int], file_id: str) -> list[int]:
    from divcoef_assets.core import sampler

    want = sampler.first_draw(POOL, sum(counts))
    return [row for _, _, row in sampler._select_rows(counts, [sampler.shard_salt(SEED, file_id)], want)]


def _timed(read, tally: dict[str, int]) -> dict:
    tally.update(headers=0, pages=0)
    disk, cpu, start = _read_bytes(), _cpu(), time.perf_counter()
    rows = read()
    return {"rows": rows, "seconds": time.perf_counter() - start, "cpu": _cpu() - cpu,
            "disk_mb": (_read_bytes() - disk) / 2**20, **tally}


def child(fmt: str, path: str) -> None:
    """One cold read then one warm read of the drawn rows; prints the counts and times as JSON."""
    tally = {"headers": 0, "pages": 0}
    lock = threading.Lock()
    if fmt == "arrow":
        from divcoef_assets.core import arrow_ipc

        reads = threading.local()
        pread = os.pread

        def counted_pread(fd, n, offset):
            reads.n = getattr(reads, "n", 0) + 1
            return pread(fd, n, offset)

        walk = arrow_ipc._walk

        def counted_walk(path, column):  # every read of a walk is of a message header
            before = getattr(reads, "n", 0)
            try:
                return walk(path, column)
            finally:
                with lock:
                    tally["headers"] += getattr(reads, "n", 0) - before

        os.pread = counted_pread
        arrow_ipc._walk = counted_walk

        def read() -> int:
            column = arrow_ipc.open_saved_column(path, "train", "text")
            return len(column.read_rows(_drawn([column.num_rows], Path(path).name)))
    else:
        from divcoef_assets.core import parquet_pages, sampler

        rows = _drawn(sampler._parquet_footers([Path(path)], "text"), Path(path).name)
        header, decode = parquet_pages._Chunk._header, parquet_pages._Chunk.read

        def counted_header(self, offset):  # a header that needs a longer read calls os.pread again inside
            before = self.reads
            try:
                return header(self, offset)
            finally:
                with lock:
                    tally["headers"] += self.reads - before

        def counted_read(self, page, wanted):
            with lock:
                tally["pages"] += 1
            return decode(self, page, wanted)

        parquet_pages._Chunk._header = counted_header
        parquet_pages._Chunk.read = counted_read

        def read() -> int:
            return len(parquet_pages.read_rows(path, "text", rows))
    cold, warm = _timed(read, tally), _timed(read, tally)
    print(json.dumps({"rows": cold["rows"], "cold": cold, "warm": warm}))


def measure(fmt: str, path: Path) -> dict:
    return corpus_scale.cold_run(path, [__file__, "--child", fmt, str(path)], f"reading {path}")


def disk_rate(path: Path, threads: int, n: int = 2000) -> float:
    """Random 4 KB reads per second of `path`, dropped from the file cache first, on `threads` threads."""
    corpus_scale.evict(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        size = os.fstat(fd).st_size
        rng = random.Random(SEED)
        offsets = [rng.randrange(0, size - 4096) for _ in range(n)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda offset: os.pread(fd, 4096, offset), offsets))
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["100M", "4G"], choices=list(corpus_scale.SIZES))
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "corpus_scale")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    header = ("| format | corpus | rows drawn | header reads | pages decoded | from disk | cold: time | CPU | "
              "warm: time | CPU |")
    rows = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    print(header)
    largest = None
    for fmt in args.formats:
        for label in args.sizes:
            path = corpus_scale.build(fmt, label, args.workdir / "corpora")
            files = [path] if path.is_file() else sorted(path.rglob("*.arrow"))
            biggest = max(files, key=lambda f: f.stat().st_size)
            if largest is None or biggest.stat().st_size > largest.stat().st_size:
                largest = biggest
            runs = [measure(fmt, path) for _ in range(args.repeats)]

            def med(side: str, key: str) -> float:
                return statistics.median(run[side][key] for run in runs)

            pages = "-" if fmt == "arrow" else f"{med('cold', 'pages'):,.0f}"
            row = (f"| {fmt} | {label} ({corpus_scale.disk_bytes(path) / 2**20:,.0f} MB) | {runs[0]['rows']} "
                   f"| {med('cold', 'headers'):,.0f} | {pages} | {med('cold', 'disk_mb'):.0f} MB "
                   f"| {med('cold', 'seconds'):.3f} s | {med('cold', 'cpu'):.2f} s "
                   f"| {med('warm', 'seconds'):.3f} s | {med('warm', 'cpu'):.2f} s |")
            print(row, flush=True)
            rows.append(row)
    assert largest is not None
    one = statistics.median(disk_rate(largest, 1) for _ in range(3))
    eight = statistics.median(disk_rate(largest, 8) for _ in range(3))
    disk = (f"The disk, random 4 KB reads of {largest.name} not cached: {one:,.0f}/s on 1 thread, "
            f"{eight:,.0f}/s on 8 threads (medians of 3 runs of 2,000 reads).")
    print(disk)
    machine = f"{corpus_scale.cpu_model()}, {os.cpu_count()} cores"
    body = "\n".join([
        f"`.venv/bin/python benchmarks/read_cost.py` ({machine}; medians of {args.repeats} runs, a fresh process",
        "each): the read of the 325 rows a pool of 320 documents draws (seed 0), the largest part of",
        "corpus_scale.py's pool time for these formats: Parquet by `core.parquet_pages.read_rows`, a",
        "`save_to_disk` folder by `core.arrow_ipc` (the walk of its record batch headers, then the rows).",
        "Cold: the files dropped from the OS's file cache first; warm: the same read again in that process.",
        "Header reads: Parquet, positioned reads of a page header (walked up to each drawn page when the",
        "file has no page index; one per drawn page with one); Arrow, reads of a record batch's header,",
        "every batch of every file. From disk: what the process read from the disk, read-ahead included;",
        "CPU: user + system time of all its threads.",
        "",
        *rows,
        "",
        disk,
    ])
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", "Random-access read cost", body)
        log.info("wrote the Random-access read cost section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
