"""Noise floor against coefficient for one probe and one Fisher estimator on the real corpora.

    .venv/bin/python studies/noise_estimators.py PROBE_FOLDER --fisher mc_head_exact \
        --squares sequence --samples 2 [--epochs 2 --batch-size 32 --seq-len 64 --n-batches 6]

For bible, fortunes and jargon (data/corpora) prints the diversity coefficient with its
interval, the noise floor (distance between two embeddings of the same batch, 2 batches), the
noise-corrected value, the cross-diversity of bible and jargon, and the noise share (largest
noise floor / smallest coefficient). Used to choose the default probe's estimator.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from divcoef_assets.api import diversity_coefficient  # noqa: E402
from divcoef_assets.core.audit import cross_summarize  # noqa: E402
from divcoef_assets.core.config import ProbeConfig  # noqa: E402

CORPORA = ROOT / "data" / "corpora"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="probe folder (save_pretrained) or hub id")
    parser.add_argument("--fisher", default="mc_head_exact", choices=["mc", "mc_head_exact"])
    parser.add_argument("--squares", default="loader_batch", choices=["loader_batch", "sequence"])
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--n-batches", type=int, default=6)
    parser.add_argument("--cache-dir", default=str(ROOT / "studies" / "out" / "cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = ProbeConfig(
        name="study", model=args.model, fisher=args.fisher, fisher_squares=args.squares, fisher_samples=args.samples,
        epochs=args.epochs, batch_size=args.batch_size, seq_len=args.seq_len, n_batches=args.n_batches,
        noise_repeats=2, noise_batches=2,
    )
    results = {}
    started = time.time()
    for name in ("bible_kjv", "fortunes", "jargon"):
        with gzip.open(CORPORA / f"{name}.jsonl.gz", "rt", encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for line in fh]
        r = diversity_coefficient(texts, probe=config, cache_dir=args.cache_dir)
        results[name] = r
        print(f"{name:10s} div {r.value:.4f} [{r.estimate.ci_low:.4f},{r.estimate.ci_high:.4f}] noise {r.noise.value:.4f} "
              f"corr {r.noise_corrected:.4f}  t={time.time() - started:.0f}s", flush=True)
    cross = cross_summarize(config, results["bible_kjv"].embeddings, results["jargon"].embeddings)
    share = max(r.noise.value for r in results.values()) / min(r.value for r in results.values())
    print(f"cross bible-jargon {cross.value:.4f}; noise share {share:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
