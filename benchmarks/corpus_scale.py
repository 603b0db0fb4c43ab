"""An audit's snapshot cost against corpus size: the full copy (before) and the sample pool (now), side by side.

    .venv/bin/python benchmarks/corpus_scale.py [--sizes 100M 1G 4G] [--formats jsonl jsonl.gz parquet parquet-hf arrow duckdb]
                                                [--workdir benchmarks/out/corpus_scale] [--no-write]

Builds corpora of each size in each format from the shipped corpora (their documents repeated,
each copy made distinct), once, under `--workdir` (kept between runs: about 3.5x the largest size
per format). Parquet comes two ways: `parquet` as pyarrow writes it when asked for zstd and row
groups of 64K rows (no page index), `parquet-hf` as `datasets.Dataset.to_parquet` writes it
(snappy, row groups of about 100 MB, content-defined pages, a page index), which is how corpora
exported with `datasets` (and, with their own defaults, Spark) carry one. Then, in a fresh process per measurement, times the dataset_snapshot step three ways:

- full copy: what the step did before sample pools, every document streamed into a Parquet
  snapshot and hashed (`core.snapshot.write_snapshot` over the registry's reader). It re-read the
  whole corpus on every materialization, so its re-audit costs what its first run did;
- pool: `pipeline.snapshot` with a probe of 10 batches of 32 documents (320), from nothing;
- re-audit: `pipeline.snapshot` again on the unchanged source, in a new process.

Before every run the corpus's files are dropped from the OS's file cache (`posix_fadvise`
DONTNEED), so each run reads the corpus from the disk, as an audit of a corpus larger than memory
does, and the libraries the step imports are read once in another process, so they come from the
cache, as on a machine that runs audits; what earlier runs wrote is flushed to the disk first.

For each it prints the step's wall time (inside the process: the project's imports excluded, the
modules the step imports on first use included), the process's
peak resident memory and the snapshot's size on disk (the full copy's Parquet file; the pool's
snapshot folder, pool index included), and writes the table as the "Corpus scale" section of
BENCHMARKS.md (`--no-write`: print only). Run nothing else meanwhile: the rows are timings.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from sections import replace_section  # noqa: E402

CORPORA = sorted((ROOT / "data" / "corpora").glob("*.jsonl.gz"))
FORMATS = ("jsonl", "jsonl.gz", "parquet", "parquet-hf", "arrow", "duckdb")
SIZES = {"100M": 100 * 2**20, "1G": 2**30, "4G": 4 * 2**30}
PROBE = {"model": "arch:gpt2", "init": "random", "extra": {"config": {"n_layer": 1, "n_embd": 8, "n_head": 1,
         "n_positions": 64, "vocab_size": 50257}}, "tokenizer": "gpt2", "seq_len": 64, "batch_size": 32, "n_batches": 10}

log = logging.getLogger("corpus_scale")


# ----------------------------------------------------------------------------- corpora


def documents():
    """The shipped documents, repeated without end; copy c of a document ends with " [c]"."""
    texts = []
    for path in CORPORA:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    copy = 0
    while True:
        for text in texts:
            yield text if copy == 0 else f"{text} [{copy}]"
        copy += 1


def build_jsonl(path: Path, size: int) -> None:
    tmp = path.with_suffix(".part")
    written = 0
    with open(tmp, "w", encoding="utf-8") as out:
        for i, text in enumerate(documents()):
            line = json.dumps({"id": i, "text": text}) + "\n"
            out.write(line)
            written += len(line)
            if written >= size:
                break
    os.replace(tmp, path)


def build(fmt: str, label: str, folder: Path) -> Path:
    """The corpus of `label` in `fmt` (built from the JSON Lines one when missing); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / f"corpus-{label}.jsonl"
    if not jsonl.exists():
        log.info("building %s", jsonl)
        build_jsonl(jsonl, SIZES[label])
    if fmt == "jsonl":
        return jsonl
    target = folder / (f"corpus-{label}." + {"jsonl.gz": "jsonl.gz", "parquet": "parquet", "parquet-hf": "hf.parquet",
                                              "arrow": "arrow-dir", "duckdb": "duckdb"}[fmt])
    if target.exists():
        return target
    log.info("building %s", target)
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    part = target.with_name(target.name + ".part")
    if fmt == "parquet-hf":
        import datasets

        datasets.disable_progress_bars()
        datasets.load_from_disk(str(build("arrow", label, folder))).to_parquet(str(part))
    elif fmt == "jsonl.gz":
        with open(jsonl, "rb") as src, gzip.open(part, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 16 * 2**20)
    elif fmt in ("parquet", "arrow"):
        reader = pj.open_json(jsonl, read_options=pj.ReadOptions(block_size=64 * 2**20))
        schema = pa.schema([("id", pa.int64()), ("text", pa.large_string())])
        if fmt == "parquet":
            with pq.ParquetWriter(part, schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(schema), row_group_size=64 * 1024)
        else:
            import datasets

            ipc = target.with_name(target.name + ".ipc")
            with pa.OSFile(str(ipc), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(schema))
            with pa.memory_map(str(ipc)) as source:
                table = pa.ipc.open_stream(source).read_all()
                datasets.Dataset(table).save_to_disk(str(part), max_shard_size="500MB")
            ipc.unlink()
    else:
        import duckdb

        with duckdb.connect(str(part)) as con:
            con.execute("CREATE TABLE docs AS SELECT id, text FROM read_json(?, format = 'newline_delimited', "
                        "columns = {id: 'BIGINT', text: 'VARCHAR'})", [str(jsonl)])
    os.replace(part, target)
    return target


def source_entry(fmt: str, path: Path) -> dict:
    if fmt in ("jsonl", "jsonl.gz", "parquet", "parquet-hf"):
        return {"source": "files", "path": path.name, "format": "jsonl" if fmt.startswith("jsonl") else "parquet"}
    if fmt == "arrow":
        return {"source": "huggingface", "path": path.name}
    return {"source": "duckdb", "database": path.name, "query": "SELECT text FROM docs"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- one measurement (child)


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (kB there), in MB; NaN where there is none."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _private_mb() -> float:
    """The process's resident anonymous memory (what it allocated, not mapped file pages), in MB."""
    return _status_mb("RssAnon")


def _peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (VmHWM).

    Not `getrusage`'s ru_maxrss: Linux carries the forking parent's resident size at the fork into
    the child's ru_maxrss across exec, so a child of a benchmark that has just built a 4 GB corpus
    would report the builder's memory as its own."""
    return _status_mb("VmHWM")


class PrivatePeak:
    """The peak of `_private_mb` while it runs, sampled every 5 ms on a thread (the kernel keeps no such peak)."""

    def __enter__(self) -> "PrivatePeak":
        import threading

        self.peak = _private_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _private_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _private_mb())


def child(mode: str, registry_path: str, artifacts: str) -> None:
    """Run one step in this fresh process; print {seconds, peak_mb, private_mb, disk_mb, documents} as JSON."""
    from divcoef_assets import pipeline
    from divcoef_assets.core.snapshot import write_snapshot
    from divcoef_assets.registry import load_registry

    registry = load_registry(registry_path)
    layout = pipeline.Layout(Path(artifacts))
    watch = PrivatePeak().__enter__()
    start = time.perf_counter()
    if mode == "copy":
        out = Path(artifacts) / "full-copy.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        info = write_snapshot(registry.iter_dataset_texts("corpus"), out, name="corpus")
        seconds, documents, disk = time.perf_counter() - start, info.n_documents, out.stat().st_size
        out.unlink()
    else:
        record = pipeline.snapshot(registry, "corpus", layout, "scale")
        seconds, documents = time.perf_counter() - start, record.n_documents
        disk = disk_bytes(layout.snapshot_dir("corpus"))
    watch.__exit__()
    peak_mb = _peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "private_mb": watch.peak, "disk_mb": disk / 2**20,
                      "documents": documents}))


def median_of(runs: list[dict]) -> dict:
    """Each field's median over the runs (the rows quote medians)."""
    import statistics

    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def evict(corpus: Path) -> None:
    """Drop the corpus's files from the OS's file cache, so that a run reads them as it would a
    corpus larger than memory (or one not read lately): from the disk."""
    for path in [corpus] if corpus.is_file() else sorted(p for p in corpus.rglob("*") if p.is_file()):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


WARM_UP = "import pandas, pyarrow.parquet, duckdb, datasets, divcoef_assets.pipeline"


def cold_run(corpus: Path, args: list[str], what: str) -> dict:
    """Run `python *args` in a fresh process with `corpus` dropped from the file cache (the
    libraries cached); the JSON object its last line prints."""
    os.sync()  # the last run's writes (the full copy's 1.4 GB at 4 GB) reach the disk before this run reads it
    subprocess.run([sys.executable, "-c", WARM_UP], check=True, capture_output=True)  # the code cached, as on a machine that audits
    evict(corpus)
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(mode: str, registry: Path, artifacts: Path, corpus: Path) -> dict:
    return cold_run(corpus, [__file__, "--child", mode, str(registry), str(artifacts)], mode)


# ----------------------------------------------------------------------------- table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "corpus_scale")
    parser.add_argument("--repeats", type=int, default=5, help="pool and re-audit runs per cell (medians quoted)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "REGISTRY", "ARTIFACTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import yaml

    rows = []
    header = ("| format | corpus | documents | full copy: time | RSS (private) | on disk | pool: time | RSS (private) "
              "| on disk | re-audit: time | RSS (private) | copy / pool time |")
    pool_times: dict[tuple[str, str], float] = {}
    print(header)
    for fmt in args.formats:
        for label in args.sizes:
            corpus = build(fmt, label, args.workdir / "corpora")
            case = args.workdir / "runs" / f"{fmt}-{label}"
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir(parents=True)
            registry = case / "registry.yaml"
            entry = {**source_entry(fmt, corpus), "path" if fmt != "duckdb" else "database": str(corpus)}
            registry.write_text(yaml.safe_dump({"default_probe": "scale", "probes": {"scale": PROBE},
                                                "datasets": {"corpus": entry}}))
            pools, agains = [], []
            for run in range(args.repeats):
                shutil.rmtree(case / "artifacts", ignore_errors=True)
                pools.append(measure("pool", registry, case / "artifacts", corpus))
                agains.append(measure("pool", registry, case / "artifacts", corpus))
            copy = measure("copy", registry, case / "copy", corpus)  # last: its gigabytes of cache and writes do not linger into the pools
            evict(corpus)
            pool, again = median_of(pools), median_of(agains)
            pool_times[(fmt, label)] = pool["seconds"]
            row = (f"| {fmt} | {label} ({disk_bytes(corpus) / 2**20:,.0f} MB) | {copy['documents']:,} "
                   f"| {copy['seconds']:.1f} s | {copy['peak_mb']:.0f} ({copy['private_mb']:.0f}) MB | {copy['disk_mb']:.1f} MB "
                   f"| {pool['seconds']:.2f} s | {pool['peak_mb']:.0f} ({pool['private_mb']:.0f}) MB | {pool['disk_mb']:.2f} MB "
                   f"| {again['seconds']:.3f} s | {again['peak_mb']:.0f} ({again['private_mb']:.0f}) MB "
                   f"| {copy['seconds'] / pool['seconds']:.1f}x |")
            print(row, flush=True)
            rows.append(row)
            shutil.rmtree(case, ignore_errors=True)
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    ratios = []
    for fmt in args.formats:
        small, large = pool_times.get((fmt, args.sizes[0])), pool_times.get((fmt, args.sizes[-1]))
        if small and large and len(args.sizes) > 1:
            ratios.append(f"{fmt} {large / small:.2f}x")
    scaling = (f"Pool time at {args.sizes[-1]} over pool time at {args.sizes[0]} (medians): {', '.join(ratios)}."
               if ratios else "")
    print(scaling)
    body = "\n".join([
        "`.venv/bin/python benchmarks/corpus_scale.py` (one fresh process per run; time of the dataset_snapshot step",
        "inside the process, the modules it imports on first use included, as in a Dagster step's process (pyarrow",
        "imports pandas to write the snapshot); RSS = the process's peak resident memory (VmHWM), mapped file",
        "pages included; private = the peak of its anonymous memory, what it allocated, sampled every 5 ms; the",
        "local pool's worker processes, which sample JSON Lines files of more than 256 MB in byte ranges, are not",
        "counted; on disk = the snapshot written). Before",
        "every run the corpus's files are dropped from the OS's file cache, so it reads them from the disk, and the",
        "libraries the step imports are imported once in another process, so they come from the cache. The full",
        "copy is the step before sample pools (every document streamed into Parquet and hashed; it had no reuse, so",
        "its re-audit costs its first run again), run once; the pool is the step now, drawing 320 documents (10",
        f"batches of 32), and the re-audit runs it again on the unchanged source: medians of {args.repeats} runs,",
        "each pool from nothing. Corpora are the shipped documents repeated, each copy made distinct; parquet as",
        "pyarrow writes it with zstd and row groups of 64K rows (no page index), parquet-hf as",
        "`datasets.Dataset.to_parquet` writes it (snappy, row groups of about 100 MB, a page index). Machine:",
        f"{machine}, load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        scaling,
    ])
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", "Corpus scale", body)
        print("wrote the 'Corpus scale' section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
