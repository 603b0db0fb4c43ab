"""Validity study: does the default probe's coefficient behave as the paper says, on real text?

    .venv/bin/python studies/validity.py            # after (or instead of) `divcoef audit`

Runs the audit steps (the same functions the Dagster assets call, the same artifact folder and
embedding cache, so nothing the default audit computed is computed again) for the registry's
datasets with the default probe, plus a second seed for the three real corpora, and reports six
properties with their numbers and 95% intervals:

1. lower bound < every real corpus < upper bound;
2. GINC: the coefficient rises with the number of latent concepts (Spearman >= 0.9) and with the
   vocabulary size;
3. cross-diversity of two different corpora exceeds the diversity of each; in the concatenated
   set, between-source distances exceed within-source ones (plotted);
4. noise floor <= 1/3 of the smallest real-corpus coefficient;
5. an interleaved 3:1 mixture scores at least as high as its larger component;
6. the ranking of the three corpora is the same for two seeds.

Writes studies/out/validity.json and studies/out/concat_distances.png; prints the report.
A property that fails is reported as failing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from divcoef_assets import pipeline  # noqa: E402
from divcoef_assets.core.snapshot import mixture_batch_indices, source_index  # noqa: E402
from divcoef_assets.registry import load_registry  # noqa: E402

log = logging.getLogger("validity")
REAL = ("bible", "fortunes", "jargon")
GINC_CONCEPTS = ("ginc-c1", "ginc-c2", "ginc-c4", "ginc-c8", "ginc-c16", "ginc-c32")
GINC_VOCAB = ("ginc-v10", "ginc-v50", "ginc-v200", "ginc-v1000")


def spearman(x, y) -> float:
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def audit(registry, name, probe, layout) -> pipeline.AuditOutcome:
    return pipeline.audit_partition(registry, name, probe, layout)


def fmt(c) -> str:
    return f"{c.value:.4f} [{c.ci_low:.4f}, {c.ci_high:.4f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "studies" / "out"))
    parser.add_argument("--second-seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()

    base = load_registry()
    probe = base.default_probe
    config = base.probe(probe)
    seeded = dataclasses.replace(config, name=f"{probe}-seed{args.second_seed}", seed=args.second_seed)
    registry = dataclasses.replace(base, probes=MappingProxyType({**base.probes, seeded.name: seeded}))
    layout = pipeline.Layout(Path(args.data_dir).resolve() / "artifacts")
    pipeline.probe_network(registry, probe, layout)

    names = ("lower-bound", "upper-bound", *REAL, *GINC_CONCEPTS, *GINC_VOCAB, "mix-bible-jargon", "concat-bible-jargon")
    outcomes = {name: audit(registry, name, probe, layout) for name in names}
    res = {name: o.record for name, o in outcomes.items()}
    res2 = {name: audit(registry, name, seeded.name, layout).record for name in REAL}
    report, ok = [], {}

    low, high = res["lower-bound"], res["upper-bound"]
    ok[1] = all(low.value < res[n].value < high.value for n in REAL)
    report.append(f"1. lower {fmt(low)} < " + ", ".join(f"{n} {fmt(res[n])}" for n in REAL) + f" < upper {fmt(high)}: {'PASS' if ok[1] else 'FAIL'}")

    concepts = [int(n.split("c")[-1]) for n in GINC_CONCEPTS]
    rho_c = spearman(concepts, [res[n].value for n in GINC_CONCEPTS])
    vocab = [int(n.split("v")[-1]) for n in GINC_VOCAB]
    rho_v = spearman(vocab, [res[n].value for n in GINC_VOCAB])
    ok[2] = rho_c >= 0.9 and rho_v > 0
    report.append(
        "2. GINC concepts " + ", ".join(f"{c}: {fmt(res[n])}" for c, n in zip(concepts, GINC_CONCEPTS))
        + f"; Spearman {rho_c:.3f}. Vocabulary " + ", ".join(f"{v}: {fmt(res[n])}" for v, n in zip(vocab, GINC_VOCAB))
        + f"; Spearman {rho_v:.3f}: {'PASS' if ok[2] else 'FAIL'}"
    )

    cross = pipeline.cross(registry, probe, layout)
    pairs = {(p.dataset_a, p.dataset_b): p for p in cross.pairs}
    cross_lines, cross_ok = [], True
    for a, b in (("bible", "fortunes"), ("bible", "jargon"), ("fortunes", "jargon")):
        p = pairs[(a, b)]
        passed = p.value > max(res[a].value, res[b].value)
        cross_ok &= passed
        cross_lines.append(f"cross({a}, {b}) {p.value:.4f} [{p.ci_low:.4f}, {p.ci_high:.4f}] vs {res[a].value:.4f}, {res[b].value:.4f}")
    concat = outcomes["concat-bible-jargon"]
    D = concat.result.matrix
    sources = source_index(concat.snapshot.path)
    spec = registry.dataset("concat-bible-jargon").source
    origin = [sources[mixture_batch_indices(sources, spec.weight_map, spec.mode, config.batch_size, i, config.seed)[0]] for i in range(D.shape[0])]
    iu = np.triu_indices(D.shape[0], k=1)
    same = np.array([origin[i] == origin[j] for i, j in zip(*iu)])
    within, between = D[iu][same], D[iu][~same]
    split_ok = within.size > 0 and between.size > 0 and between.mean() > within.mean()
    ok[3] = bool(cross_ok and split_ok)
    report.append(
        "3. " + "; ".join(cross_lines) + f". Concatenated set: within-source mean {within.mean():.4f} (n={within.size}), "
        f"between-source mean {between.mean():.4f} (n={between.size}): {'PASS' if ok[3] else 'FAIL'}"
    )

    floors = {n: res[n].noise_floor for n in REAL}
    smallest = min(res[n].value for n in REAL)
    share = max(floors.values()) / smallest
    ok[4] = share <= 1 / 3
    report.append(
        "4. noise floors " + ", ".join(f"{n} {floors[n]:.4f}" for n in REAL)
        + f"; smallest real coefficient {smallest:.4f}; noise share {share:.3f} (target <= 0.333): {'PASS' if ok[4] else 'FAIL'}"
    )

    mix = res["mix-bible-jargon"]
    larger = "bible"  # the component with weight 3
    ok[5] = mix.value >= res[larger].value
    report.append(f"5. mix 3:1 bible:jargon {fmt(mix)} vs bible {fmt(res[larger])}, jargon {fmt(res['jargon'])}: {'PASS' if ok[5] else 'FAIL'}")

    rank1 = sorted(REAL, key=lambda n: res[n].value)
    rank2 = sorted(REAL, key=lambda n: res2[n].value)
    ok[6] = rank1 == rank2
    report.append(
        f"6. seed {config.seed}: " + " < ".join(f"{n} {res[n].value:.4f}" for n in rank1)
        + f"; seed {seeded.seed}: " + " < ".join(f"{n} {res2[n].value:.4f}" for n in rank2) + f": {'PASS' if ok[6] else 'FAIL'}"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "validity.json").write_text(json.dumps({
        "probe": probe, "probe_fingerprint": config.fingerprint(), "results": {n: dataclasses.asdict(r) for n, r in res.items()},
        "second_seed": {n: dataclasses.asdict(r) for n, r in res2.items()}, "cross": [dataclasses.asdict(p) for p in cross.pairs], "within_source": within.tolist(), "between_source": between.tolist(),
        "properties": {str(k): v for k, v in ok.items()}, "seconds": time.perf_counter() - started,
    }, indent=2, default=str))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        bins = np.linspace(min(D[iu].min(), 0), D[iu].max(), 30)
        ax.hist(within, bins=bins, alpha=0.6, label=f"within source (mean {within.mean():.3f})")
        ax.hist(between, bins=bins, alpha=0.6, label=f"between sources (mean {between.mean():.3f})")
        ax.set_xlabel("Task2Vec distance between batches")
        ax.set_ylabel("pairs")
        ax.set_title("concat-bible-jargon: distances by batch origin")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "concat_distances.png", dpi=120)
    except ImportError:
        log.warning("matplotlib is not installed: no plot")

    print(f"Validity study, probe {probe} ({config.fingerprint()}), {time.perf_counter() - started:.0f}s")
    for line in report:
        print(line)
    print(f"{sum(ok.values())} of 6 properties hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
