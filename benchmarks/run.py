"""Benchmarks of the Task2Vec engine and the distances; the full run writes BENCHMARKS.md.

    python benchmarks/run.py            # full: about 15 minutes on a 2-core machine
    python benchmarks/run.py --quick    # 1 repetition, 5 epochs, 200-row distances (~3 minutes)
    python benchmarks/run.py --gpu      # GPT-2-small-shaped probe, 512 x 128 batches, on CUDA
                                        # (float32, and the bf16 / cached_body options)

What is measured, each the median of `--reps` runs (3; 1 with --quick) unless the table says
otherwise:
- the machine's float32 matmul rate (2048 x 2048 x 2048, and [1024 x 64] x [64 x 50257], the
  shape of one chunk of logits);
- one batch embedding (64 sequences x 128 tokens, no padding; random 2-layer n_embd-64 GPT-2
  probe, 50,257-token vocabulary) by the straightforward implementation (`divcoef_assets/core/reference.py`,
  the structure of the official code) and by the engine (`divcoef_assets.core.task2vec`), at 5
  and 10 fine-tune epochs, Fisher "mc" and "mc_head_exact", split into fine-tune and Fisher;
- the useful FLOPs of that work and the FLOP-bound time at the measured 2048^3 matmul rate;
- `divcoef_assets.core.distance.pdist` on 1,000 x 135,000 float32 embeddings, and the plain
  per-pair loop on a subset, extrapolated to all pairs.
The straightforward implementation is run once per repetition at 10 epochs; its 5-epoch figure
is the time at the end of epoch 5 plus its Fisher step, from the same run (the Fisher step does
not depend on the number of epochs).

--gpu needs CUDA; elsewhere it says so and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from divcoef_assets.core.config import ProbeConfig  # noqa: E402
from divcoef_assets.core.distance import pairwise_loop, pdist  # noqa: E402
from divcoef_assets.core.probe import load_probe  # noqa: E402
from divcoef_assets.core.task2vec import embed_batch  # noqa: E402
from divcoef_assets.core.tokenize import TokenBatch  # noqa: E402
from divcoef_assets.core.reference import straightforward_embedding  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from sections import keep_foreign_sections  # noqa: E402

V = 50257
SMALL = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128, "vocab_size": V}
GPT2_SMALL = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab_size": V}


def say(line: str = "") -> None:
    print(line, flush=True)


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------------------
# matmul rate
# ------------------------------------------------------------------------------------------------


def matmul_rates(reps: int) -> dict:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    square = 2 * 2048**3 / median_time(lambda: a @ b, max(reps, 5)) / 1e9
    h, w = torch.randn(1024, 64), torch.randn(V, 64)
    h @ w.t()
    logits = 2 * 1024 * 64 * V / median_time(lambda: h @ w.t(), max(reps, 5)) / 1e9
    return {"square": square, "logits": logits}


# ------------------------------------------------------------------------------------------------
# one batch embedding: straightforward vs engine
# ------------------------------------------------------------------------------------------------


def bench_config(epochs: int, fisher: str, shape: dict, batch_size: int, device: str = "cpu") -> ProbeConfig:
    return ProbeConfig(
        name="bench", model="arch:gpt2", init="random", epochs=epochs, batch_size=batch_size, seq_len=128,
        fisher=fisher, device=device, extra={"config": dict(shape)},
    )


def full_batch(n: int, T: int = 128, seed: int = 0) -> TokenBatch:
    ids = np.random.default_rng(seed).integers(0, V - 1, size=(n, T)).astype(np.int64)
    return TokenBatch(input_ids=ids, attention_mask=np.ones_like(ids))


def flops(shape: dict, B: int, T: int, epochs: int, fisher: str, loader: int = 8) -> tuple[float, float]:
    """Useful FLOPs (fine-tune, Fisher) of one batch embedding; see FLOP_FORMULA."""
    d, L = shape["n_embd"], shape["n_layer"]
    tokens = B * T
    body_forward = tokens * L * 24 * d * d + B * L * 4 * T * T * d
    n_finetune = B * (T - 1)  # scored positions per epoch (no padding)
    finetune = epochs * (6 * n_finetune * d * V + 2 * body_forward)
    fisher_flops = 6 * tokens * d * V + 3 * body_forward
    if fisher == "mc_head_exact":
        fisher_flops += 2 * tokens * d * V
    return float(finetune), float(fisher_flops)


FLOP_FORMULA = (
    "per fine-tune epoch 6 N d V (output layer: logits, G W, G^T h; N = B (T - 1) scored positions) "
    "+ 2 x body forward (forward and the input-gradient backward); Fisher 6 B T d V (+ 2 B T d V for "
    "the closed-form p(1-p) h^2 term of mc_head_exact) + 3 x body forward; body forward = "
    "tokens x L x 24 d^2 + B x L x 4 T^2 d. Softmax, sampling and AdamW are not counted."
)


def engine_runs(epochs: int, fisher: str, reps: int, batch: TokenBatch, shape: dict, device: str = "cpu",
                changes: dict | None = None):
    config = bench_config(epochs, fisher, shape, batch.input_ids.shape[0], device).replace(**(changes or {}))
    probe = load_probe(config)
    totals, fts, fis, vectors = [], [], [], []
    for rep in range(reps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        emb = embed_batch(probe, batch, config, seed=rep)  # seed 0 first: the straightforward run's seed
        totals.append(time.perf_counter() - t0)
        fts.append(emb.seconds_finetune)
        fis.append(emb.seconds_fisher)
        vectors.append(emb.vector)
    return statistics.median(totals), statistics.median(fts), statistics.median(fis), vectors


def l1_difference(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b||_1 / ||b||_1."""
    return float(np.abs(a.astype(np.float64) - b).sum() / np.abs(b.astype(np.float64)).sum())


def embedding_section(reps: int, quick: bool, rate: float) -> list[str]:
    batch = full_batch(64)
    epochs_list = [5] if quick else [5, 10]
    sf_epochs = max(epochs_list)
    say(f"\n== one batch embedding: 64 x 128, 2-layer n_embd-64 probe, {reps} repetition(s)")
    probe = load_probe(bench_config(sf_epochs, "mc", SMALL, 64))
    sf = {e: {"total": [], "ft": [], "fi": []} for e in epochs_list}
    sf_vector = None
    for r in range(reps):
        probe.reset()
        vector, t = straightforward_embedding(
            probe.model, probe.eos_id, batch.input_ids, batch.attention_mask, epochs=sf_epochs, seed=0
        )
        sf_vector = vector
        for e in epochs_list:
            ft = t["epoch_ends"][e - 1]
            sf[e]["ft"].append(ft)
            sf[e]["fi"].append(t["fisher"])
            sf[e]["total"].append(ft + t["fisher"])
        say(f"straightforward run {r + 1}: fine-tune {t['finetune']:.1f} s ({sf_epochs} epochs; epoch ends "
            f"{', '.join(f'{x:.1f}' for x in t['epoch_ends'])}), Fisher {t['fisher']:.1f} s")
    rows = []
    header = ("| implementation | epochs | Fisher | total s | fine-tune s | Fisher s | speed-up vs straightforward "
              "| useful GFLOP | FLOP-bound s | fraction of FLOP-bound |")
    rows += [header, "|" + "---|" * 10]
    agreement = None
    for e in epochs_list:
        st, sft, sfi = (statistics.median(sf[e][k]) for k in ("total", "ft", "fi"))
        f_ft, f_fi = flops(SMALL, 64, 128, e, "mc")
        bound = (f_ft + f_fi) / (rate * 1e9)
        rows.append(f"| straightforward | {e} | mc | {st:.1f} | {sft:.1f} | {sfi:.1f} | 1.0 | {(f_ft + f_fi) / 1e9:.0f} "
                    f"| {bound:.1f} | {bound / st:.2f} |")
        say(rows[-1])
        for fisher in ("mc", "mc_head_exact"):
            total, ft, fi, vectors = engine_runs(e, fisher, reps, batch, SMALL)
            f_ft, f_fi = flops(SMALL, 64, 128, e, fisher)
            bound = (f_ft + f_fi) / (rate * 1e9)
            note = "" if fisher == "mc" else " (vs its mc)"
            rows.append(f"| engine | {e} | {fisher} | {total:.1f} | {ft:.1f} | {fi:.1f} | {st / total:.1f}{note} "
                        f"| {(f_ft + f_fi) / 1e9:.0f} | {bound:.1f} | {bound / total:.2f} |")
            say(rows[-1])
            if fisher == "mc" and e == sf_epochs:
                noise = l1_difference(vectors[0], vectors[1]) if len(vectors) > 1 else float("nan")
                agreement = (l1_difference(vectors[0], sf_vector), noise)
    lines = rows + [""]
    if agreement is not None:
        line = (f"Agreement, {sf_epochs} epochs, mc, relative L1 difference ||a - b||_1 / ||b||_1 of the 51,601-entry "
                f"embeddings: engine vs straightforward, same seed: {agreement[0]:.1e}; engine seed 0 vs seed 1 "
                f"(Monte Carlo noise): {agreement[1]:.1e}. The same-seed difference is not float rounding alone: "
                "the fine-tuned weights differ in the last bits (fused AdamW and output layer, another matmul "
                "kernel), and a draw from a near-uniform 50,257-way softmax lands on a neighbouring token when its "
                "threshold is within an ulp of a CDF step, which changes that batch's "
                "squared gradient. With identical weights the draws are identical (tests: "
                "test_engine_equals_straightforward_implementation, test_fused.py).")
        say(line)
        lines.append(line)
    return lines


# ------------------------------------------------------------------------------------------------
# distances
# ------------------------------------------------------------------------------------------------


def embeddings(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 50):
        block = rng.random((min(50, n - i), d), dtype=np.float32)
        out[i : i + 50] = block**4 * np.float32(1e-9)  # heavy-tailed, Fisher-sized entries
    return out


def distance_section(reps: int, quick: bool) -> list[str]:
    n, d = (200, 135_000) if quick else (1000, 135_000)
    n_sub, n_loop = (100, 6) if quick else (300, 10)
    say(f"\n== distances: pdist on {n} x {d} float32 embeddings")
    E = embeddings(n, d)
    tracemalloc.start()
    t0 = time.perf_counter()
    D = pdist(E)
    full = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pairs = n * (n - 1) // 2
    say(f"pdist {n} rows: {full:.1f} s (1 run), peak traced allocation {peak / 2**20:.0f} MiB "
        f"(input {E.nbytes / 2**20:.0f} MiB, output {D.nbytes / 2**20:.0f} MiB)")
    sub = median_time(lambda: pdist(E[:n_sub]), reps)
    sub_pairs = n_sub * (n_sub - 1) // 2
    say(f"pdist {n_sub} rows: {sub:.2f} s (median of {reps}), {sub / sub_pairs * 1e3:.3f} ms per pair")
    loop = median_time(lambda: pairwise_loop(E[:n_loop]), reps)
    loop_pairs = n_loop * (n_loop - 1) // 2
    per_pair = loop / loop_pairs
    diff = float(np.abs(pairwise_loop(E[:n_loop]) - D[:n_loop, :n_loop]).max())
    say(f"per-pair loop {n_loop} rows: {loop:.2f} s (median of {reps}), {per_pair * 1e3:.1f} ms per pair, "
        f"extrapolated to {pairs} pairs: {per_pair * pairs:.0f} s; max |pdist - loop| = {diff:.1e}")
    return [
        "| method | rows x features | pairs | seconds | ms per pair | note |",
        "|---|---|---|---|---|---|",
        f"| pdist | {n} x {d} | {pairs} | {full:.1f} | {full / pairs * 1e3:.3f} | 1 run; peak traced allocation "
        f"{peak / 2**20:.0f} MiB besides the {E.nbytes / 2**20:.0f} MiB input |",
        f"| pdist | {n_sub} x {d} | {sub_pairs} | {sub:.2f} | {sub / sub_pairs * 1e3:.3f} | median of {reps} |",
        f"| per-pair loop | {n_loop} x {d} | {loop_pairs} | {loop:.2f} | {per_pair * 1e3:.1f} | median of {reps} |",
        f"| per-pair loop, extrapolated | {n} x {d} | {pairs} | {per_pair * pairs:.0f} | {per_pair * 1e3:.1f} | "
        f"{loop_pairs}-pair time x {pairs} / {loop_pairs}; not run |",
        "",
        f"pdist is {per_pair * pairs / full:.0f} times faster than the extrapolated loop; on the {n_loop}-row subset "
        f"the two agree to {diff:.1e}.",
    ]


# ------------------------------------------------------------------------------------------------
# GPU
# ------------------------------------------------------------------------------------------------


def gpu_section(reps: int) -> int:
    if not torch.cuda.is_available():
        say("--gpu: CUDA is not available on this machine; nothing to measure.")
        return 0
    name = torch.cuda.get_device_name(0)
    say(f"GPU: {name}, torch {torch.__version__}")
    batch = full_batch(512)
    config = bench_config(10, "mc", GPT2_SMALL, 512, "cuda")
    probe = load_probe(config)
    embed_batch(probe, full_batch(16), config.replace(batch_size=16, epochs=1), seed=0)  # warm-up
    lines = ["| probe | batch | epochs | Fisher | finetune | precision | s per batch | fine-tune s | Fisher s "
             "| 200 batches (extrapolated) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    variants = (
        ("mc", "full", "fp32"), ("mc_head_exact", "full", "fp32"), ("mc", "full", "bf16"), ("mc", "cached_body", "bf16"),
    )
    for fisher, finetune, precision in variants:
        total, ft, fi, vectors = engine_runs(
            10, fisher, reps, batch, GPT2_SMALL, "cuda", changes={"finetune": finetune, "precision": precision}
        )
        lines.append(f"| GPT-2-small shape, random | 512 x 128 | 10 | {fisher} | {finetune} | {precision} | {total:.1f} "
                     f"| {ft:.1f} | {fi:.1f} | {200 * total / 60:.1f} min |")
        say(lines[-1])
        assert all(np.isfinite(v).all() for v in vectors)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "BENCHMARKS-gpu.md").write_text(f"# GPU benchmark\n\n{name}, torch {torch.__version__}, "
                                           f"median of {reps}\n\n" + "\n".join(lines) + "\n")
    return 0


# ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 5 epochs, small distance problem")
    parser.add_argument("--gpu", action="store_true", help="GPT-2-small-shaped probe on CUDA")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3; 1 with --quick)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reps = args.reps or (1 if args.quick else 3)
    if args.gpu:
        return gpu_section(reps)

    started = time.perf_counter()
    info = machine()
    load_before = load_average()
    say(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads), "
        f"Python {info['python']}; load average before: {load_before}")
    rates = matmul_rates(reps)
    say(f"float32 matmul: 2048^3 {rates['square']:.0f} GFLOP/s; [1024 x 64] x [64 x 50257] {rates['logits']:.0f} GFLOP/s")
    emb_lines = embedding_section(reps, args.quick, rates["square"])
    dist_lines = distance_section(reps, args.quick)
    elapsed = time.perf_counter() - started
    load_after = load_average()
    say(f"\nload average after: {load_after}; benchmark took {elapsed / 60:.1f} min")

    command = "python benchmarks/run.py" + (" --quick" if args.quick else "") + (f" --reps {args.reps}" if args.reps else "")
    text = "\n".join([
        "# Benchmarks",
        "",
        f"Produced by `{command}` (see `benchmarks/run.py` for what is measured and how); every number below "
        "was printed by that run, and every ratio compares measurements of the same run.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']} ({info['threads']} threads), "
        f"Python {info['python']}.",
        f"- Load average (1 / 5 / 15 min) before: {load_before}; after: {load_after}. Other work on the machine "
        "slows every row, and unevenly: the rows ran one after the other (straightforward runs first) while the "
        "load changed, so compare rows with the load in mind.",
        f"- Run time: {elapsed / 60:.1f} min; medians of {reps} run(s) unless stated.",
        "",
        "## Matmul rate (float32)",
        "",
        "| product | GFLOP/s |",
        "|---|---|",
        f"| 2048 x 2048 x 2048 | {rates['square']:.0f} |",
        f"| [1024 x 64] x [64 x 50257] (a chunk of logits) | {rates['logits']:.0f} |",
        "",
        "## One batch embedding",
        "",
        "64 sequences x 128 tokens, no padding; random 2-layer n_embd-64 GPT-2 probe (128 positions, "
        "50,257-token vocabulary, dropout 0.1 active); AdamW on the tied head, loader batches of 8. The "
        "straightforward implementation has no closed-form-head estimator; the speed-up of mc_head_exact rows "
        "is against its mc row. The straightforward 5-epoch row is the end of epoch 5 plus the Fisher step "
        "of its 10-epoch runs.",
        "",
        f"Useful FLOPs: {FLOP_FORMULA} FLOP-bound time = useful FLOPs / the 2048^3 matmul rate above.",
        "",
        *emb_lines,
        "",
        "## Distances",
        "",
        "`divcoef_assets.core.distance.pdist` (task2vec_cosine) on random non-negative float32 embeddings of "
        "135,000 entries (the size of a GPT-2-base-shaped probe's embedding), against the plain per-pair loop "
        "`pairwise_loop` on a subset; the loop's time for all pairs is extrapolated, not measured.",
        "",
        *dist_lines,
        "",
    ])
    if args.quick or args.reps:
        out = ROOT / "benchmarks" / "out"
        out.mkdir(parents=True, exist_ok=True)
        path = out / ("BENCHMARKS-quick.md" if args.quick else "BENCHMARKS-reps.md")
    else:
        path = ROOT / "BENCHMARKS.md"
        text = keep_foreign_sections(path, text)  # sections written by the other scripts stay
    path.write_text(text)
    say(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
