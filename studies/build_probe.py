"""Build the shipped default probe: a byte-level BPE tokenizer and a small GPT-2 trained on it.

    .venv/bin/python studies/build_probe.py                      # rebuilds data/probes/local-gpt2
    .venv/bin/python studies/build_probe.py --out /tmp/p --steps 300 --vocab 8192

The probe is trained once by this command and shipped in `data/probes/local-gpt2` (a few MB), so
the default audit loads it instead of pretraining: a clone needs no model hub and spends none of
its audit time on training. Everything it reads is in the repository: the corpora named by
`--corpus` (registered text datasets of `--registry`), every usable document of each, in registry
order. The recipe (tokenizer vocabulary, architecture, optimiser steps, seed) is stated in the
folder's `pretrain.json`; the same command and arguments give the same tokenizer, and the same
weights bit for bit on the same machine and torch version (the run is seeded, the budget is a step
count, not a time, and torch uses every usable core whatever the load, since the thread count
changes how sums are ordered). BENCHMARKS.md ("Probe search") says why this recipe was chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from divcoef_assets.core.atomic import atomic_path  # noqa: E402
from divcoef_assets.core.fingerprint import texts_digest  # noqa: E402
from divcoef_assets.core.pretrain import PretrainConfig, pretrain_probe, train_tokenizer  # noqa: E402
from divcoef_assets.core.tokenize import load_tokenizer, usable_texts  # noqa: E402
from divcoef_assets.registry import load_registry  # noqa: E402
from divcoef_assets.threads import configure_torch_threads, usable_cpus  # noqa: E402

log = logging.getLogger("build_probe")

SHIPPED_CORPORA = ("bible", "fortunes", "jargon", "debian-docs", "perl-docs", "postgres-docs", "sqlite-docs")
RECIPE = PretrainConfig(n_layer=2, n_embd=64, n_head=2, n_positions=128, block_len=128, batch_size=16, steps=1000,
                        lr=3e-3, warmup_steps=20, weight_decay=0.01, dropout=0.0, seed=0)
VOCAB = 8192


def build(out: Path, *, registry_path: str | None, corpora: list[str], vocab: int, config: PretrainConfig) -> dict:
    registry = load_registry(registry_path)
    texts: list[str] = []
    for name in corpora:
        if name not in registry.datasets:
            raise SystemExit(f"--corpus {name!r} is not a dataset of {registry.path}")
        texts += usable_texts(text for _, text in registry.iter_dataset_texts(name))
    log.info("%d documents from %s", len(texts), ", ".join(corpora))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="build-probe-") as work:
        staged_tokenizer = train_tokenizer(texts, vocab, Path(work) / "tokenizer")
        tokenizer = load_tokenizer(str(staged_tokenizer))
        result = pretrain_probe(texts, tokenizer, config, Path(work) / "model", corpus_fingerprint=texts_digest(texts))
        with atomic_path(out, directory=True) as tmp:
            for folder in (Path(work) / "model", staged_tokenizer):
                for path in folder.iterdir():
                    shutil.copy2(path, tmp / path.name)
            meta = json.loads((tmp / "pretrain.json").read_text())
            meta.update(tokenizer_vocab=vocab, corpora=list(corpora), n_documents=len(texts),
                        build_command="studies/build_probe.py", build_seconds=time.perf_counter() - started)
            (tmp / "pretrain.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    log.info("probe written to %s: loss %.3f -> %.3f over %d steps, %.0f s", out, result.first_loss, result.final_loss,
             result.steps, time.perf_counter() - started)
    return meta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "data" / "probes" / "local-gpt2"))
    parser.add_argument("--registry", default=None, help="registry whose datasets --corpus names (default: the shipped one)")
    parser.add_argument("--corpus", nargs="+", default=list(SHIPPED_CORPORA))
    parser.add_argument("--vocab", type=int, default=VOCAB, help="tokenizer vocabulary size")
    for field in ("n_layer", "n_embd", "n_head", "steps", "batch_size", "seed"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(RECIPE, field))
    parser.add_argument("--lr", type=float, default=RECIPE.lr)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    configure_torch_threads(usable_cpus())
    config = dataclasses.replace(RECIPE, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, steps=args.steps,
                                 batch_size=args.batch_size, seed=args.seed, lr=args.lr)
    meta = build(Path(args.out), registry_path=args.registry, corpora=args.corpus, vocab=args.vocab, config=config)
    print(json.dumps({k: meta[k] for k in ("final_loss", "first_loss", "n_corpus_tokens", "build_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
