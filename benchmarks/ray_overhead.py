"""What embedding on Ray costs on top of embedding locally, and what a cluster of N workers would
take for the paper's audit.

    python benchmarks/ray_overhead.py                 # about 2 minutes on a 2-core machine
    python benchmarks/ray_overhead.py --batches 3 --no-write

Starts a real local Ray head (127.0.0.1, as many CPUs as the machine), then embeds the same
`--batches` token batches (random 2-layer n_embd-64 GPT-2, 8 x 128 tokens, 1 fine-tune epoch,
the paper's Monte Carlo Fisher) twice in the same run:

- locally: `core.audit.LocalEmbedder`, torch on every core;
- on Ray: `ray_backend.RayEmbedder` with one actor asking for every core (so torch has as many
  threads as locally), the tasks queued to it at once, as `task2vec_embeddings` does.

Per-batch cost is the time between consecutive finished embeddings (the first one, which includes
loading the probe, or starting the actor, is left out and reported on its own). On a shared
machine that time moves with the other work far more than Ray adds to it, so the overhead is
measured per batch as the time between finished embeddings minus the embedding's own compute time
(fine-tune + Fisher, timed where it ran), on each path; the Ray overhead is the difference of the
two medians. Also measured: shipping one paper-sized batch (512 x 128 ids and mask) to a Ray
worker and back; the projection below uses the larger of the two as the per-batch overhead o.

Projection: the paper's audit is 200 batches of 512 x 128 with a GPT-2-base-shaped probe. With N
workers, each batch costing C seconds on a worker plus the overhead o, and one actor
start s per worker (in parallel), the audit takes about s + ceil(200 / N) * (C + o). C on a GPU is
not measured here (no GPU on this machine): the table takes C as a parameter (`--per-batch`), and
its CPU row is an extrapolation of a measured number (see CPU_GPT2_512).

Writes the "Ray: overhead per batch, and the paper's audit on N workers" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from divcoef_assets.core.audit import EmbeddingTask, LocalEmbedder, embedding_key, embedding_seed  # noqa: E402
from divcoef_assets.core.config import ProbeConfig  # noqa: E402
from divcoef_assets.core.probe import load_probe_for, probe_identity  # noqa: E402
from divcoef_assets.core.tokenize import TokenBatch, load_tokenizer  # noqa: E402
from divcoef_assets_tests.ray_head import ray_head  # noqa: E402
from run import SMALL, load_average, machine, say  # noqa: E402
from sections import replace_section  # noqa: E402

SECTION = "Ray: overhead per batch, and the paper's audit on N workers"
PAPER_BATCHES, PAPER_B, PAPER_T = 200, 512, 128
# GPT-2-small-shaped probe, one 16 x 128 embedding, float32, 2 epochs, on a 2-core AMD EPYC with
# nothing else running: 29.1 s (BENCHMARKS.md, "Less work: speed per embedding"). Fine-tune and
# Fisher are linear in the batch size, so a 512 x 128 batch is about 32 times that: an
# extrapolation, not a measurement.
CPU_GPT2_16 = 29.1
CPU_GPT2_512 = CPU_GPT2_16 * PAPER_B / 16


def tasks_for(config: ProbeConfig, identity: str, n: int) -> list[EmbeddingTask]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ids = rng.integers(0, SMALL["vocab_size"] - 1, size=(config.batch_size, config.seq_len)).astype(np.int64)
        batch = TokenBatch(ids, np.ones_like(ids))
        seed = embedding_seed(config.seed, i, 0)
        key = embedding_key(batch=batch.fingerprint(), probe=identity, estimator=config.estimator_fingerprint(), seed=seed)
        out.append(EmbeddingTask(batch_index=i, repeat=0, seed=seed, key=key, batch_fingerprint=batch.fingerprint(), batch=batch))
    return out


def compute_s(row) -> float:
    return row.seconds_finetune + row.seconds_fisher


def arrivals(rows) -> tuple[float, list[float], list]:
    """(seconds to the first row, seconds between the following rows, the rows)."""
    t0 = time.perf_counter()
    stamps, got = [], []
    for row in rows:
        stamps.append(time.perf_counter())
        got.append(row)
    return stamps[0] - t0, [b - a for a, b in zip(stamps, stamps[1:])], got


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="batches embedded each way (the first is left out of the medians)")
    parser.add_argument("--per-batch", default=f"{CPU_GPT2_512:.0f},20,5",
                        help="per-batch seconds C on one worker for the projection, comma-separated")
    parser.add_argument("--workers", default="1,2,4,8,16,32,64", help="N for the projection, comma-separated")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from divcoef_assets.ray_backend import RayEmbedder, RayOptions

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    started, before = time.perf_counter(), load_average()
    config = ProbeConfig(name="bench", model="arch:gpt2", init="random", epochs=1, batch_size=8, seq_len=128,
                         extra={"config": dict(SMALL)})
    tokenizer = load_tokenizer(config.tokenizer)
    identity = probe_identity(config, tokenizer)
    tasks = tasks_for(config, identity, args.batches)

    local_first, local_gaps, local_rows = arrivals(LocalEmbedder(lambda: load_probe_for(config, tokenizer))(config, tasks))
    with ray_head(num_cpus=cores) as head:
        import ray

        address = head.address  # waits for `ray start`
        t0 = time.perf_counter()
        ray.init(address=address, logging_level=logging.WARNING)
        connect = time.perf_counter() - t0
        embedder = RayEmbedder(config, identity, RayOptions(workers=1, cpus_per_worker=cores))
        ray_first, ray_gaps, ray_rows = arrivals(embedder(config, tasks))

        echo = ray.remote(lambda task: task.batch.input_ids.shape)
        ray.get(echo.remote(tasks[0]))  # a worker for the function, started outside the timing
        ids = np.zeros((PAPER_B, PAPER_T), dtype=np.int64)
        paper = EmbeddingTask(0, 0, 0, tasks[0].key, "", TokenBatch(ids, np.ones_like(ids)))
        ship_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            ray.get(echo.remote(paper))
            ship_times.append(time.perf_counter() - t0)
        ray.shutdown()

    local_s, ray_s = statistics.median(local_gaps), statistics.median(ray_gaps)
    local_o = statistics.median(g - compute_s(r) for g, r in zip(local_gaps, local_rows[1:]))
    ray_o = statistics.median(g - compute_s(r) for g, r in zip(ray_gaps, ray_rows[1:]))
    overhead = ray_o - local_o
    ship = statistics.median(ship_times)
    o = max(overhead, ship)  # shipping a paper-sized batch is a per-batch cost of its own
    by_key = {r.key: r.vector for r in local_rows}
    max_diff = max(float(np.abs(r.vector - by_key[r.key]).max()) for r in ray_rows)
    pids = sorted({r.worker_pid for r in ray_rows})
    m = machine()

    lines = [
        f"Produced by `python benchmarks/ray_overhead.py --batches {args.batches}` ({(time.perf_counter() - started) / 60:.1f} min; "
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, ray {ray.__version__}; load average before {before}, "
        f"after {load_average()}). A real local Ray head on 127.0.0.1 with {cores} CPUs; one actor with num_cpus={cores} "
        f"against the local path with {cores} torch threads, the same {args.batches} batches (random 2-layer n_embd-64 GPT-2, "
        f"8 x 128 tokens, 1 epoch, Monte Carlo Fisher) in the same run.",
        "",
        "| path | first embedding (s) | per batch after it, median (s) | of which not the embedding's own compute, median (s) | batches in the medians |",
        "|---|---|---|---|---|",
        f"| local (probe loaded in the first) | {local_first:.2f} | {local_s:.3f} | {local_o:.4f} | {len(local_gaps)} |",
        f"| Ray actor (actor started in the first) | {ray_first:.2f} | {ray_s:.3f} | {ray_o:.4f} | {len(ray_gaps)} |",
        "",
        f"- Overhead of the Ray path per batch: {overhead * 1000:+.1f} ms ({overhead / local_s:+.2%} of the local per-batch "
        f"time; the per-batch medians themselves differ by {ray_s - local_s:+.3f} s, which is the other work on the machine); "
        f"per partition once: connecting to the cluster {connect:.2f} s and starting each actor (the first embedding's "
        f"{ray_first:.2f} s against {local_first:.2f} s locally).",
        f"- Shipping one paper-sized batch ({PAPER_B} x {PAPER_T} ids and mask, {2 * ids.nbytes / 1e6:.1f} MB) to a Ray "
        f"worker and back: median {ship * 1000:.1f} ms of 5.",
        f"- Same numbers both ways: largest difference between the Ray and the local embedding of a batch "
        f"{max_diff:.2e} (same seeds; computed by Ray worker pid(s) {', '.join(map(str, pids))}, not this process "
        f"{os.getpid()}).",
        "",
        f"Projection of the paper's audit ({PAPER_BATCHES} batches of {PAPER_B} x {PAPER_T}, GPT-2-base-shaped probe) on N "
        f"workers: s + ceil({PAPER_BATCHES} / N) * (C + o), with o = {o * 1000:.0f} ms (the larger of the overhead and the "
        f"shipping time above) "
        f"and s = {ray_first:.0f} s (this run's actor start; a GPT-2 checkpoint on a GPU node takes longer to load). "
        f"C is per-batch seconds on one worker. No GPU here: GPU rows are parameters, not measurements. "
        f"C = {CPU_GPT2_512:.0f} s is a 2-core CPU, extrapolated: {CPU_GPT2_16} s measured for a 16 x 128 batch, 2 epochs, "
        f"on the 2-core AMD EPYC of \"Less work: speed per embedding\", times {PAPER_B // 16}.",
        "",
        "| C (s per batch) | " + " | ".join(f"N = {n}" for n in map(int, args.workers.split(","))) + " |",
        "|---|" + "---|" * len(args.workers.split(",")),
    ]
    for c in (float(x) for x in args.per_batch.split(",")):
        cells = []
        for n in map(int, args.workers.split(",")):
            total = ray_first + math.ceil(PAPER_BATCHES / n) * (c + o)
            cells.append(f"{total / 3600:.2f} h" if total >= 3600 else f"{total / 60:.1f} min")
        lines.append(f"| {c:g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    say(text)
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", SECTION, text)
        say(f"\nwrote the section {SECTION!r} of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
