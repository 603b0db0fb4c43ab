"""Less work, validated: batches, time and validity of each option that makes an audit cheaper.

    .venv/bin/python studies/less_work.py [--target 0.002] [--loose-target 0.005] [--max-batches 48]

On the three real corpora (bible, fortunes, jargon) with the registry's default probe, this runs
the audit steps (the functions the Dagster assets call, the same artifact folder and embedding
cache as `divcoef audit`) for these variants of the default probe's config:

- `fixed`: the default estimator at a fixed `--max-batches` batches: the reference values;
- `sequential`: the default estimator with sequential stopping (`target_half_width`): batches are
  added until the 95% interval's half-width is at most `--target`; `sequential-loose` is the same
  at `--loose-target` (its embeddings are the first ones of `sequential`, from the cache);
- the Fisher estimators, each with sequential stopping to the same target, so the number of
  batches each needs for the same interval is measured: `mc` (the paper's), `mc_head_exact`,
  `mc_head_exact` + per-sequence squares (and the default adds 2 samples per position);
- `cached-body` (finetune "cached_body") and `bf16` (precision "bf16"), on the default estimator
  with sequential stopping.

For each it reports batches used, compute seconds (the embeddings' own fine-tune + Fisher time,
noise-floor repeats included), the coefficients with intervals, their change against `fixed`, the
noise floor and the noise share, and whether the corpora keep the reference's order (a pair
counts only when its reference intervals are disjoint). The sequential runs go first, so their
times are measured on embeddings they compute themselves; `fixed` then reuses the cached first
batches and adds the rest. Writes studies/out/less_work.json and the "Less work: validity"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from divcoef_assets import pipeline  # noqa: E402
from divcoef_assets.registry import load_registry  # noqa: E402
from sections import replace_section  # noqa: E402

log = logging.getLogger("less_work")
REAL = ("bible", "fortunes", "jargon")
SECTION = "Less work: validity"

# name -> (changes to the default probe's config, what the option changes)
VARIANTS: dict[str, tuple[dict, str]] = {
    "sequential": ({}, "sequential stopping, default estimator"),
    "mc": ({"fisher": "mc", "fisher_squares": "loader_batch", "fisher_samples": 1},
           "the paper's Monte Carlo Fisher (1 sample, squares per loader batch)"),
    "head-exact": ({"fisher": "mc_head_exact", "fisher_squares": "loader_batch", "fisher_samples": 1},
                   "closed-form output-layer term"),
    "head-exact-seq": ({"fisher": "mc_head_exact", "fisher_squares": "sequence", "fisher_samples": 1},
                       "closed-form term + per-sequence squares"),
    "cached-body": ({"finetune": "cached_body"}, "head fine-tuned on cached body features"),
    "bf16": ({"precision": "bf16"}, "mixed precision (bfloat16 products)"),
}
DEFAULT_VARIANTS = tuple(VARIANTS)


def run_variant(registry, probe: str, layout) -> dict:
    out = {}
    for name in REAL:
        outcome = pipeline.audit_partition(registry, name, probe, layout)
        coef = dataclasses.asdict(outcome.record)
        rows = outcome.result.embeddings
        seconds = [r.seconds_finetune + r.seconds_fisher for r in rows]
        coef.update(
            n_batches=outcome.distances.n_batches, n_embeddings=len(rows), compute_seconds=float(sum(seconds)),
            seconds_per_embedding=float(statistics.median(seconds)),
            half_width=(coef["ci_high"] - coef["ci_low"]) / 2,
        )
        out[name] = coef
        log.info("%s %s: %.4f [%.4f, %.4f] with %d batches", probe, name, coef["value"], coef["ci_low"], coef["ci_high"], coef["n_batches"])
    return out


def ordered_pairs(res: dict) -> list[tuple[str, str]]:
    """Pairs (a, b) with a < b whose intervals are disjoint."""
    pairs = []
    for a in REAL:
        for b in REAL:
            if res[a]["ci_high"] < res[b]["ci_low"]:
                pairs.append((a, b))
    return pairs


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.002, help="interval half-width to stop at")
    parser.add_argument("--loose-target", type=float, default=0.005, help="a second, looser target for the default estimator")
    parser.add_argument("--max-batches", type=int, default=48, help="cap for stopping, and the fixed reference's size")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=DEFAULT_VARIANTS)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "studies" / "out"))
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()

    base = load_registry()
    default = base.default_probe
    config = base.probe(default)
    probes = {}
    for variant in args.variants:
        changes, _ = VARIANTS[variant]
        probes[variant] = dataclasses.replace(
            config, name=f"{default}-lw-{variant}", target_half_width=args.target, n_batches=args.max_batches, **changes
        )
    probes["fixed"] = dataclasses.replace(config, name=f"{default}-lw-fixed", n_batches=args.max_batches)
    probes["sequential-loose"] = dataclasses.replace(
        config, name=f"{default}-lw-sequential-loose", target_half_width=args.loose_target, n_batches=args.max_batches
    )
    VARIANTS["sequential-loose"] = ({}, f"sequential stopping at half-width {args.loose_target}, default estimator")
    registry = dataclasses.replace(base, probes=MappingProxyType({**base.probes, **{p.name: p for p in probes.values()}}))
    layout = pipeline.Layout(Path(args.data_dir).resolve() / "artifacts")
    pipeline.probe_network(registry, default, layout)

    results = {}
    order = [*args.variants, "fixed", "sequential-loose"]
    for variant in order:  # sequential runs first: they compute their own embeddings
        results[variant] = run_variant(registry, probes[variant].name, layout)
    ref = results["fixed"]
    ref_pairs = ordered_pairs(ref)
    ref_seconds = statistics.median(ref[n]["seconds_per_embedding"] for n in REAL)

    summary = {}
    for variant, res in results.items():
        floors = [res[n]["noise_floor"] for n in REAL]
        share = max(floors) / min(res[n]["value"] for n in REAL)
        kept = [p for p in ref_pairs if res[p[0]]["value"] < res[p[1]]["value"]]
        summary[variant] = {
            "batches": {n: res[n]["n_batches"] for n in REAL},
            "compute_seconds": sum(res[n]["compute_seconds"] for n in REAL),
            "seconds_per_embedding": statistics.median(res[n]["seconds_per_embedding"] for n in REAL),
            "noise_share": share,
            "change": {n: res[n]["value"] - ref[n]["value"] for n in REAL},
            "change_corrected": {n: res[n]["noise_corrected"] - ref[n]["noise_corrected"] for n in REAL},
            "covers_reference": {n: res[n]["ci_low"] <= ref[n]["value"] <= res[n]["ci_high"] for n in REAL},
            # batches the target would need where the cap stopped first, by half-width ~ 1 / sqrt(batches)
            "batches_needed_estimate": {
                n: res[n]["n_batches"] * (res[n]["half_width"] / args.target) ** 2
                for n in REAL if res[n]["half_width"] > args.target
            } if variant not in ("fixed", "sequential-loose") else {},
            "order": sorted(REAL, key=lambda n: res[n]["value"]),
            "separated_pairs_kept": f"{len(kept)}/{len(ref_pairs)}",
        }

    cmd = "python studies/less_work.py" + (f" --target {args.target}" if args.target != 0.002 else "") + (
        f" --loose-target {args.loose_target}" if args.loose_target != 0.005 else "") + (
        f" --max-batches {args.max_batches}" if args.max_batches != 48 else "") + (
        f" --variants {' '.join(args.variants)}" if tuple(args.variants) != DEFAULT_VARIANTS else "")
    elapsed = time.perf_counter() - started
    lines = [
        f"Produced by `{cmd}` ({elapsed / 60:.0f} min, {cpu_name()}, nothing else running; after the rows above) "
        f"with the default probe `{default}` ({config.batch_size} x {config.seq_len}-token batches, {config.epochs} "
        f"fine-tune epochs) on bible, fortunes and jargon. `fixed` is the default estimator at {args.max_batches} "
        f"batches: the reference. Every other row stops when the 95% interval's half-width is at most "
        f"{args.target} ({args.loose_target} for `sequential-loose`; at least {config.min_batches} batches, at most "
        f"{args.max_batches}). Seconds are the "
        "embeddings' own fine-tune + Fisher time (2 noise-floor repeats per corpus included), medians per "
        "embedding; \"change\" is the coefficient minus `fixed`'s (noise-corrected change in brackets); the noise "
        "share is the largest noise floor over the smallest coefficient; \"order kept\" counts the pairs of corpora "
        "whose `fixed` intervals are disjoint and that keep their order.",
        "",
        "| variant | what it changes | batches bible / fortunes / jargon | s per embedding | compute s, 3 corpora "
        "| fixed's time / this | coefficients bible / fortunes / jargon | change (noise-corrected) | noise share | order kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in ["fixed", "sequential-loose", *args.variants]:
        res, s = results[variant], summary[variant]
        what = "reference: default estimator, fixed batches" if variant == "fixed" else VARIANTS[variant][1]
        batches = " / ".join(str(s["batches"][n]) for n in REAL)
        coefs = " / ".join(f"{res[n]['value']:.4f} [{res[n]['ci_low']:.4f}, {res[n]['ci_high']:.4f}]" for n in REAL)
        change = " / ".join(f"{s['change'][n]:+.4f} ({s['change_corrected'][n]:+.4f})" for n in REAL)
        ratio = summary["fixed"]["compute_seconds"] / s["compute_seconds"]
        lines.append(
            f"| {variant} | {what} | {batches} | {s['seconds_per_embedding']:.2f} | {s['compute_seconds']:.0f} "
            f"| {ratio:.2f} | {coefs} | {change} | {s['noise_share']:.3f} | {s['separated_pairs_kept']} |"
        )
    for label in ("sequential-loose", "sequential"):
        seq = results.get(label)
        if seq is None:
            continue
        saved = [200 - seq[n]["n_batches"] for n in REAL]
        lines += [
            "",
            f"`{label}` against the paper's fixed 200 batches: "
            + ", ".join(f"{n} stopped at {seq[n]['n_batches']} (half-width {seq[n]['half_width']:.4f})" for n in REAL)
            + f", i.e. {sum(saved)} of 600 batch embeddings not computed, about "
            f"{sum(saved) * ref_seconds / 60:.0f} min at this probe's {ref_seconds:.2f} s per embedding. "
            + "Its interval covers `fixed`'s value: "
            + ", ".join(f"{n} {'yes' if summary[label]['covers_reference'][n] else 'no'}" for n in REAL)
            + ".",
        ]
    capped = {v: summary[v]["batches_needed_estimate"] for v in args.variants if summary[v]["batches_needed_estimate"]}
    for variant, needed in capped.items():
        lines += [
            "",
            f"`{variant}` did not reach half-width {args.target} within {args.max_batches} batches for "
            + ", ".join(f"{n} (half-width {results[variant][n]['half_width']:.4f})" for n in needed)
            + "; with the half-width shrinking as 1 / sqrt(batches) it would need about "
            + ", ".join(f"{needed[n]:.0f}" for n in needed) + " batches.",
        ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "less_work.json").write_text(json.dumps({
        "probe": default, "target": args.target, "max_batches": args.max_batches, "results": results,
        "summary": summary, "seconds": elapsed,
    }, indent=2, default=str))
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", SECTION, text)
        print(f"wrote the {SECTION!r} section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
