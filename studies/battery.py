"""Validity battery: does a probe's coefficient rank text by diversity? Eight properties, measured.

    .venv/bin/python studies/battery.py                                 # the shipped registry's default probe
    .venv/bin/python studies/battery.py --registry other.yaml --probe p # any registry: corpora are parameters

The real corpora are the registry's text datasets (files, Hugging Face or DuckDB sources, not
mixtures or synthetic ones). From them and from generated token data the battery builds the
datasets whose right order is known by construction, audits every one through the same chain as
the Dagster assets (`pipeline.audit_partition`, so the default audit's cached embeddings are
reused), and prints each property as holds / fails with its numbers and 95% intervals:

1. lower bound < every real corpus < upper bound;
2. GINC: Spearman >= 0.9 over latent concepts 1..32, and over vocabulary size 10..1000;
3. interleaved mixtures of k = 1, 2, 4, all real sources (equal weights): Spearman >= 0.9 in k,
   and the k = all mixture above every single source;
4. N distinct documents of the first corpus repeated (N = batch size, 4x, 32x, all): rising;
5. cross-diversity of every pair of real corpora above each one's own diversity;
6. noise floor <= 1/3 of the smallest real-corpus coefficient;
7. ranking of the real corpora stable across two seeds (Kendall tau >= 0.8);
8. rank correlation (Spearman, across the real corpora) with simple measures on a sample of
   each corpus's documents: compression, distinct-n, unigram entropy, Vendi over TF-IDF
   (reported, not required).

It writes `<out>/battery.json` and `<out>/battery.md` (the report as a Markdown table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from types import MappingProxyType


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scipy.stats import kendalltau, spearmanr  # noqa: E402

from divcoef_assets import paths, pipeline  # noqa: E402
from divcoef_assets.core.baselines import all_baselines  # noqa: E402
from divcoef_assets.core.distance import get_distance  # noqa: E402
from divcoef_assets.core.sampling import batch_indices  # noqa: E402
from divcoef_assets.core.snapshot import read_texts  # noqa: E402
from divcoef_assets.core.sources import (  # noqa: E402
    DatasetSpec,
    DuckDBSource,
    FilesSource,
    HuggingFaceSource,
    parse_source,
)
from divcoef_assets.core.tokenize import usable_texts  # noqa: E402
from divcoef_assets.registry import Registry, load_registry  # noqa: E402

log = logging.getLogger("battery")
CONCEPTS = (1, 2, 4, 8, 16, 32)
VOCABS = (10, 50, 200, 1000)
SYNTHETIC_SEQUENCES = 4096
BASELINE_SAMPLE = 512


@dataclasses.dataclass(frozen=True)
class Measured:
    value: float
    ci_low: float
    ci_high: float
    noise_floor: float | None

    def text(self) -> str:
        return f"{self.value:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}]"


def real_corpora(registry: Registry) -> list[str]:
    return [n for n, s in registry.datasets.items() if isinstance(s.source, (FilesSource, HuggingFaceSource, DuckDBSource))]


def constructed(registry: Registry, real: list[str], batch_size: int, work: Path) -> dict[str, DatasetSpec]:
    """The datasets whose order is known by construction, as registry entries."""
    specs: dict[str, DatasetSpec] = {}

    def add(name: str, source_type: str, fields: dict, description: str) -> None:
        specs[name] = DatasetSpec(name=name, source=parse_source(source_type, fields), description=description)

    add("battery-lower", "synthetic", {"kind": "lower_bound", "n_sequences": SYNTHETIC_SEQUENCES}, "one token repeated")
    add("battery-upper", "synthetic", {"kind": "upper_bound", "n_sequences": SYNTHETIC_SEQUENCES}, "uniform random tokens")
    for c in CONCEPTS:
        add(f"battery-ginc-c{c}", "synthetic", {"kind": "ginc", "n_sequences": SYNTHETIC_SEQUENCES, "n_concepts": c,
                                                "vocab_size": 50, "n_states": 10}, f"GINC, {c} concepts")
    for v in VOCABS:
        add(f"battery-ginc-v{v}", "synthetic", {"kind": "ginc", "n_sequences": SYNTHETIC_SEQUENCES, "n_concepts": 8,
                                                "vocab_size": v, "n_states": 10}, f"GINC, vocabulary {v}")
    for k in sorted({2, min(4, len(real)), len(real)}):
        if k >= 2:
            add(f"battery-mix-k{k}", "mixture", {"components": real[:k], "weights": [1] * k, "mode": "interleave"},
                f"equal-weight interleaved mixture of {k} corpora")
    first = usable_texts(text for _, text in registry.iter_dataset_texts(real[0]))
    work.mkdir(parents=True, exist_ok=True)
    for factor in (1, 4, 32):
        n = batch_size * factor
        if n >= len(first):
            continue
        path = work / f"repeat-{n}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(len(first)):
                fh.write(json.dumps({"text": first[i % n]}) + "\n")
        add(f"battery-repeat-{n}", "files", {"path": str(path), "format": "jsonl"}, f"{n} distinct documents of {real[0]} repeated")
    return specs


def spearman(x, y) -> float:
    return float(spearmanr(x, y).statistic)


def holds(flag: bool) -> str:
    return "**holds**" if flag else "**fails**"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=None, help="registry file (default: the shipped one or $DIVCOEF_REGISTRY)")
    parser.add_argument("--probe", default=None, help="registered probe (default: the registry's default)")
    parser.add_argument("--data-dir", default=None, help="artifacts and cache (default: $DIVCOEF_DATA_DIR or data/)")
    parser.add_argument("--second-seed", type=int, default=1)
    parser.add_argument("--distance", default=None,
                        help="score with this registered distance instead of the probe's (the embeddings are the same, "
                        "so they come from the cache); the probe is renamed <probe>-<distance>")
    parser.add_argument("--out", default=str(ROOT / "studies" / "out"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()

    base = load_registry(args.registry)
    probe = args.probe or base.default_probe
    config = base.probe(probe)
    if args.distance and args.distance != config.distance:
        get_distance(args.distance)
        config = dataclasses.replace(config, name=f"{probe}-{args.distance.replace('_', '-')}", distance=args.distance)
        base = dataclasses.replace(base, probes=MappingProxyType({**base.probes, config.name: config}))
        probe = config.name
    real = real_corpora(base)
    if len(real) < 2:
        raise SystemExit(f"the battery needs at least two real text corpora in {base.path}; found {real}")
    layout = pipeline.Layout(paths.artifacts_dir(args.data_dir), cache_root=paths.cache_dir(data=args.data_dir))
    extra = constructed(base, real, config.batch_size, layout.root / "battery")
    seeded = dataclasses.replace(config, name=f"{probe}-seed{args.second_seed}", seed=args.second_seed)
    registry = dataclasses.replace(base, datasets=MappingProxyType({**base.datasets, **extra}),
                                   probes=MappingProxyType({**base.probes, seeded.name: seeded}),
                                   allowed_roots=base.allowed_roots + ((layout.root / "battery").resolve(),) if base.allowed_roots else ())
    pipeline.probe_network(registry, probe, layout)

    seconds: list[float] = []  # per embedding, as computed (also when read back from the cache)

    def audit(name: str, probe_name: str = probe) -> Measured:
        outcome = pipeline.audit_partition(registry, name, probe_name, layout)
        seconds.extend(row.seconds_finetune + row.seconds_fisher for row in outcome.result.embeddings)
        r = outcome.record
        return Measured(r.value, r.ci_low, r.ci_high, r.noise_floor)

    res = {name: audit(name) for name in [*real, *extra]}
    res2 = {name: audit(name, seeded.name) for name in real}
    rows: list[tuple[str, str, str]] = []
    ok: dict[int, bool] = {}

    low, high = res["battery-lower"], res["battery-upper"]
    ok[1] = all(low.value < res[n].value < high.value for n in real)
    above = [n for n in real if res[n].value >= high.value]
    rows.append(("1", "lower bound < every real corpus < upper bound",
                 f"{holds(ok[1])}: lower {low.text()}, upper {high.text()}; real corpora {min(res[n].value for n in real):.4f} to "
                 f"{max(res[n].value for n in real):.4f}" + (f"; at or above the upper bound: {', '.join(above)}" if above else "")))

    rho_c = spearman(CONCEPTS, [res[f"battery-ginc-c{c}"].value for c in CONCEPTS])
    rho_v = spearman(VOCABS, [res[f"battery-ginc-v{v}"].value for v in VOCABS])
    ok[2] = rho_c >= 0.9 and rho_v >= 0.9
    rows.append(("2", "GINC: Spearman >= 0.9 over concepts and over vocabulary",
                 f"{holds(ok[2])}: concepts " + ", ".join(f"{c}: {res[f'battery-ginc-c{c}'].value:.4f}" for c in CONCEPTS)
                 + f" (Spearman {rho_c:.3f}); vocabulary " + ", ".join(f"{v}: {res[f'battery-ginc-v{v}'].value:.4f}" for v in VOCABS)
                 + f" (Spearman {rho_v:.3f})"))

    ks = [1] + [int(n.split("-k")[1]) for n in extra if n.startswith("battery-mix-k")]
    mix_values = [res[real[0]].value] + [res[f"battery-mix-k{k}"].value for k in ks[1:]]
    rho_k = spearman(ks, mix_values)
    top = res[f"battery-mix-k{len(real)}"]
    ok[3] = rho_k >= 0.9 and all(top.value > res[n].value for n in real)
    rows.append(("3", "mixtures of k sources rise with k; the all-source mixture above every source",
                 f"{holds(ok[3])}: " + ", ".join(f"k={k}: {v:.4f}" for k, v in zip(ks, mix_values))
                 + f" (Spearman {rho_k:.3f}); all {len(real)}: {top.text()} vs highest single source "
                 f"{max(res[n].value for n in real):.4f}"))

    repeats = sorted((int(n.rsplit("-", 1)[1]), n) for n in extra if n.startswith("battery-repeat-"))
    rep_values = [res[n].value for _, n in repeats] + [res[real[0]].value]
    ok[4] = all(a < b for a, b in zip(rep_values, rep_values[1:]))
    rows.append(("4", f"N distinct documents of {real[0]} repeated: rising in N",
                 f"{holds(ok[4])}: " + ", ".join(f"N={n}: {res[name].text()}" for n, name in repeats) + f", all: {res[real[0]].text()}"))

    cross, _ = pipeline.cross(registry, probe, layout)
    pairs = [p for p in cross.pairs if p.dataset_a in real and p.dataset_b in real]
    good = [p for p in pairs if p.value > max(res[p.dataset_a].value, res[p.dataset_b].value)]
    ok[5] = len(good) == len(pairs) > 0
    worst = min(pairs, key=lambda p: p.value - max(res[p.dataset_a].value, res[p.dataset_b].value))
    rows.append(("5", "cross-diversity of two corpora above each one's diversity",
                 f"{holds(ok[5])}: {len(good)} of {len(pairs)} pairs; closest: {worst.dataset_a} x {worst.dataset_b} "
                 f"{worst.value:.4f} [{worst.ci_low:.4f}, {worst.ci_high:.4f}] vs {res[worst.dataset_a].value:.4f}, "
                 f"{res[worst.dataset_b].value:.4f}"))

    floors = [res[n].noise_floor for n in real if res[n].noise_floor is not None]
    smallest = min(res[n].value for n in real)
    share = max(floors) / smallest if floors else float("nan")
    ok[6] = bool(floors) and share <= 1 / 3
    rows.append(("6", "noise floor <= 1/3 of the smallest real coefficient",
                 f"{holds(ok[6])}: largest noise floor {max(floors):.4f}, smallest coefficient {smallest:.4f}, share {share:.3f}"))

    tau = float(kendalltau([res[n].value for n in real], [res2[n].value for n in real]).statistic)
    ok[7] = tau >= 0.8
    rows.append(("7", f"ranking stable across seeds {config.seed} and {args.second_seed} (Kendall tau >= 0.8)",
                 f"{holds(ok[7])}: tau {tau:.3f}; seed {config.seed}: " + " < ".join(sorted(real, key=lambda n: res[n].value))
                 + f"; seed {args.second_seed}: " + " < ".join(sorted(real, key=lambda n: res2[n].value))))

    baselines = {}
    for name in real:
        snap = pipeline.snapshot(registry, name, layout, probe)
        docs = read_texts(snap.path, batch_indices(snap.n_documents, min(BASELINE_SAMPLE, snap.n_documents), 0, 12345))
        baselines[name] = all_baselines(docs)
    correlations = {m: spearman([res[n].value for n in real], [baselines[n][m] for n in real]) for m in baselines[real[0]]}
    rows.append(("8", "rank correlation with simple measures across the real corpora (reported)",
                 ", ".join(f"{m} {rho:+.2f}" for m, rho in correlations.items())))

    elapsed = time.perf_counter() - started
    header = [f"Validity battery, probe `{probe}` ({config.fingerprint()}), {len(real)} real corpora, {elapsed / 60:.1f} min, "
              f"median {statistics.median(seconds):.1f} s per embedding",
              "", "| # | property | result |", "|---|---|---|"]
    report = "\n".join(header + [f"| {a} | {b} | {c} |" for a, b, c in rows]
                       + ["", f"{sum(ok.values())} of 7 required properties hold."])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "battery.md").write_text(report + "\n", encoding="utf-8")
    (out / "battery.json").write_text(json.dumps({
        "probe": probe, "probe_fingerprint": config.fingerprint(), "real": real,
        "results": {n: dataclasses.asdict(m) for n, m in res.items()},
        "second_seed": {n: dataclasses.asdict(m) for n, m in res2.items()},
        "baselines": baselines, "correlations": correlations, "properties": {str(k): v for k, v in ok.items()},
        "seconds": elapsed, "seconds_per_embedding": statistics.median(seconds), "n_embeddings": len(seconds),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("name", "description")},
    }, indent=2, default=str), encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
