"""What the plots, tables, triage and baselines add to an audit's time (`DivcoefResource.reports`).

    python benchmarks/reports_overhead.py                                  # bible, fortunes, jargon
    python benchmarks/reports_overhead.py --datasets bible --reps 5 --keep /tmp/overhead

Runs the real `audit` job (Dagster, in process, an ephemeral instance) on shipped datasets with the
registry's default probe, everything in a temporary data folder (the probe is pretrained there
once, or reused from `--keep`). For each dataset:

1. one audit with reports off and an empty embedding cache: the full audit time T (every
   embedding computed; the probe already built);
2. `--reps` pairs of audits with the cache warm, reports off then on, alternating: the difference
   of each pair is what the reports cost (everything else in the pair is identical, and both
   runs read the same cached embeddings), and its median is the added time A.

It prints, per dataset, T, the warm times, A and the added share A / T: the audit with reports
on takes (T + A) / T of the audit without them. The issue's acceptance is at most 15% more.
The data folder keeps the audited results (DuckDB with baselines and triage), so
`DIVCOEF_DB=<keep>/divcoef.duckdb divcoef report` works on it afterwards.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dagster as dg  # noqa: E402

from divcoef_assets.definitions import build_definitions  # noqa: E402
from divcoef_assets.partitions import DATASET_DIMENSION, PROBE_DIMENSION, dataset_probe_key  # noqa: E402
from divcoef_assets.registry import load_registry  # noqa: E402
from run import load_average, machine, say  # noqa: E402

REGISTRY = ROOT / "data" / "registry.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bible", "fortunes", "jargon"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", help="data folder to use and keep (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("dagster", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="reports-overhead-"))
    folder.mkdir(parents=True, exist_ok=True)
    registry = load_registry(str(REGISTRY))
    probe = registry.default_probe
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DATASET_DIMENSION, list(args.datasets))
    instance.add_dynamic_partitions(PROBE_DIMENSION, [probe])
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

    def defs(reports: bool, cache: Path) -> dg.Definitions:
        return build_definitions(registry_path=str(REGISTRY), data_dir=str(folder), db_path=str(folder / "divcoef.duckdb"),
                                 cache_dir=str(cache), reports=reports)

    def audit(name: str, reports: bool, cache: Path) -> float:
        t0 = time.perf_counter()
        result = defs(reports, cache).resolve_job_def("audit").execute_in_process(
            partition_key=dataset_probe_key(name, probe), instance=instance, run_config=quiet)
        if not result.success:
            raise RuntimeError(f"the audit of {name} failed")
        return time.perf_counter() - t0

    say(f"machine: {machine()}; load average at start {load_average()}")
    t0 = time.perf_counter()
    assert defs(True, folder / "cache").resolve_job_def("probe").execute_in_process(partition_key=probe, instance=instance, run_config=quiet).success
    say(f"probe {probe}: ready in {time.perf_counter() - t0:.0f}s (pretrained here unless {folder} already held it)")
    rows = []
    for name in args.datasets:
        cold = folder / "cold-cache" / name
        shutil.rmtree(cold, ignore_errors=True)
        full = audit(name, False, cold)
        offs, ons = [], []
        for _ in range(args.reps):
            offs.append(audit(name, False, cold))
            ons.append(audit(name, True, cold))
        added = statistics.median(on - off for on, off in zip(ons, offs))
        rows.append((name, full, statistics.median(offs), statistics.median(ons), added))
        say(f"  {name}: full audit {full:.1f}s; warm off {statistics.median(offs):.2f}s, warm on {statistics.median(ons):.2f}s; "
            f"added {added:.2f}s = {100 * added / full:.1f}% (load average {load_average()})")
    say("")
    say(f"reports on vs off, probe {probe}, median of {args.reps} pairs:")
    say("| dataset | audit, reports off (s) | warm off (s) | warm on (s) | added by reports (s) | audit with reports / without |")
    say("|---|---|---|---|---|---|")
    for name, full, off, on, added in rows:
        say(f"| {name} | {full:.1f} | {off:.2f} | {on:.2f} | {added:.2f} | {(full + added) / full:.3f} |")
    total_full, total_added = sum(r[1] for r in rows), sum(r[4] for r in rows)
    say(f"all {len(rows)}: {(total_full + total_added) / total_full:.3f} (+{100 * total_added / total_full:.1f}%)")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
