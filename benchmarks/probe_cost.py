"""Seconds per Task2Vec embedding of registered probes, on the same corpus, one probe after another.

    .venv/bin/python benchmarks/probe_cost.py                               # local-gpt2 and small-gpt2
    .venv/bin/python benchmarks/probe_cost.py --probes local-gpt2 --dataset jargon --batches 6

Each probe embeds the first `--batches` token batches of `--dataset` that its own settings draw
(so each probe reads its own tokenizer's ids of the same documents), without the embedding cache:
every embedding is computed. A probe pretrained here is built first (its
pretraining time is reported apart). Prints the median seconds per embedding (fine-tune, Fisher)
and the ratio to the first probe; run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from divcoef_assets import paths, pipeline  # noqa: E402
from divcoef_assets.core.audit import embedding_seed  # noqa: E402
from divcoef_assets.core.probe import load_probe_for  # noqa: E402
from divcoef_assets.core.task2vec import embed_batch  # noqa: E402
from divcoef_assets.core.tokenize import load_tokenizer  # noqa: E402
from divcoef_assets.registry import load_registry  # noqa: E402
from divcoef_assets.threads import configure_torch_threads  # noqa: E402

log = logging.getLogger("probe_cost")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", nargs="+", default=["local-gpt2", "small-gpt2"])
    parser.add_argument("--dataset", default="bible")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--registry", default=None)
    parser.add_argument("--data-dir", default=None, help="where probes pretrained here are kept (default: data/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    threads = configure_torch_threads()
    registry = load_registry(args.registry)
    rows, first = [], None
    layout = pipeline.Layout(paths.artifacts_dir(args.data_dir), cache_root=paths.cache_dir(data=args.data_dir))
    for name in args.probes:
        started = time.perf_counter()
        record = pipeline.probe_network(registry, name, layout)
        built = time.perf_counter() - started
        config = pipeline.resolve_model(registry.probe(name), layout)
        snap = pipeline.snapshot(registry, args.dataset, layout, name)
        batches = pipeline.draw_batches(snap, config.replace(n_batches=max(args.batches, 3)))[: args.batches]
        tokenizer = load_tokenizer(config.tokenizer)
        probe = load_probe_for(config, tokenizer)
        out = [embed_batch(probe, batch, config, seed=embedding_seed(config.seed, i, 0)) for i, batch in enumerate(batches)]
        fine = [r.seconds_finetune for r in out]
        fisher = [r.seconds_fisher for r in out]
        total = statistics.median(a + b for a, b in zip(fine, fisher))
        first = first or total
        n_params = sum(p.numel() for p in probe.model.parameters())
        rows.append([name, f"{n_params / 1e6:.2f}M", str(tokenizer.vocab_size), f"{config.batch_size} x {config.seq_len}",
                     f"{statistics.median(fine):.2f}", f"{statistics.median(fisher):.2f}", f"{total:.2f}", f"{total / first:.2f}",
                     f"{built:.0f}" if record.built_here else "shipped"])
    print(f"Seconds per embedding, median of {args.batches} batches of {args.dataset}, torch threads {threads}")
    header = ["probe", "parameters", "vocabulary", "batch", "fine-tune s", "Fisher s", "total s", "vs first", "build s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
