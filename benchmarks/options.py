"""Speed per embedding of the options that do less work: finetune "cached_body" and precision "bf16".

    python benchmarks/options.py            # about 10 minutes on a 2-core machine
    python benchmarks/options.py --reps 1   # one repetition each

Times one batch embedding (medians of `--reps`, 3 by default), the paper's Monte Carlo Fisher,
for two probe shapes, each with the four combinations of the two options:
- the benchmark probe of `benchmarks/run.py`: random 2-layer n_embd-64 GPT-2, 64 x 128 tokens,
  10 fine-tune epochs (the faithful setting), where the 50,257-way output layer is nearly all of
  the work;
- a random GPT-2-small-shaped probe (12 layers, n_embd 768), 16 x 128 tokens, 2 epochs, where the
  body is most of the fine-tune's work (a CPU-sized stand-in for the paper's probe).
Every ratio is against the float32, full-fine-tune row of the same shape in the same run. The
"distance" column is the Task2Vec distance between the option's embedding and the float32 full
one for the same batch and seed, next to the distance between two seeds of the float32 full
embedding (the Monte Carlo noise): an option whose distance is well below the noise changes the
embedding less than a re-draw does. What the options do to coefficients is measured by
`studies/less_work.py`. Writes the "Less work: speed per embedding" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from divcoef_assets.core.distance import pdist  # noqa: E402
from run import GPT2_SMALL, SMALL, engine_runs, full_batch, load_average, machine, say  # noqa: E402
from sections import replace_section  # noqa: E402

SECTION = "Less work: speed per embedding"
OPTIONS = (
    ("full", "fp32"),
    ("cached_body", "fp32"),
    ("full", "bf16"),
    ("cached_body", "bf16"),
)
SHAPES = (
    ("2-layer n_embd-64", SMALL, 64, 10),
    ("GPT-2-small shape", GPT2_SMALL, 16, 2),
)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(pdist(np.stack([a, b]))[0, 1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    info = machine()
    load_before = load_average()
    say(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}; load average before: {load_before}")
    rows = [
        "| probe | batch | epochs | finetune | precision | s per embedding | fine-tune s | Fisher s | speed-up "
        "| distance to float32 full, same seed | Monte Carlo noise (seed 0 vs 1) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, shape, batch_size, epochs in SHAPES:
        batch = full_batch(batch_size)
        base_total, base_vectors = None, None
        for finetune, precision in OPTIONS:
            total, ft, fi, vectors = engine_runs(
                epochs, "mc", args.reps, batch, shape, changes={"finetune": finetune, "precision": precision}
            )
            if base_total is None:
                base_total, base_vectors = total, vectors
                noise = distance(vectors[0], vectors[1]) if len(vectors) > 1 else float("nan")
            d = distance(vectors[0], base_vectors[0])
            rows.append(
                f"| {label} | {batch_size} x 128 | {epochs} | {finetune} | {precision} | {total:.1f} | {ft:.1f} | {fi:.1f} "
                f"| {base_total / total:.2f} | {d:.3f} | {noise:.3f} |"
            )
            say(rows[-1])
    elapsed = time.perf_counter() - started
    load_after = load_average()
    command = "python benchmarks/options.py" + (f" --reps {args.reps}" if args.reps != 3 else "")
    text = "\n".join([
        f"Produced by `{command}` ({elapsed / 60:.1f} min; {info['cpu']}, {info['cores']} cores, torch "
        f"{info['torch']}; load average before {load_before}, after {load_after}). One batch embedding with the "
        f"paper's Monte Carlo Fisher, median of {args.reps}; random probes, no padding, dropout 0.1 active. "
        "Speed-up is against the float32 full-fine-tune row of the same probe in this run. The two distances put "
        "the options' change to the embedding next to the Monte Carlo noise (see `benchmarks/options.py`); their "
        "effect on coefficients is in \"Less work: validity\".",
        "",
        *rows,
    ])
    say(f"\nbenchmark took {elapsed / 60:.1f} min; load average after: {load_after}")
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", SECTION, text)
        say(f"wrote the {SECTION!r} section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
