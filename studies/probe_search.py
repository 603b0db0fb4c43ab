"""Probe search: the validity battery for every candidate probe, and one results table.

    .venv/bin/python studies/probe_search.py                        # every candidate in studies/probe_search.yaml
    .venv/bin/python studies/probe_search.py --only local-gpt2 bpe8k-4x128
    .venv/bin/python studies/probe_search.py --table-only           # the table from the runs already made

A candidate is a probe of the shipped registry with some fields changed (its depth and width,
pretraining budget or data, batch geometry, fine-tune epochs, estimator) or scored with another
distance; `studies/probe_search.yaml` lists them. Each runs `studies/battery.py` against the
shipped registry plus the candidates (written to `data/probe-search-registry.yaml`, next to the
shipped one so its relative paths mean the same), in one data folder, so an embedding that two
candidates share (same batch, weights, estimator and seed) is computed once. Writes
`<out>/<candidate>/battery.{json,md}` and `<out>/results.md`: per candidate the seven required
properties (holds or fails, with the number that decided), the rank correlations of property 8,
and the median seconds per embedding as measured in that run (the load of the machine at the time
enters it; `benchmarks/probe_cost.py` measures cost on a quiet machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "studies"))

import battery  # noqa: E402

from divcoef_assets.core.atomic import write_text_atomic  # noqa: E402

log = logging.getLogger("probe_search")
SHIPPED = ROOT / "data" / "registry.yaml"
CANDIDATES = ROOT / "studies" / "probe_search.yaml"
MERGED = ROOT / "data" / "probe-search-registry.yaml"


def candidates(path: Path = CANDIDATES) -> dict[str, dict]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), dict):
        raise SystemExit(f"{path}: expected a mapping `candidates: {{name: {{base, changes, distance, note}}}}`")
    return data["candidates"]


def merged_registry(cands: dict[str, dict]) -> Path:
    """The shipped registry with one probe per candidate that changes fields."""
    registry = yaml.safe_load(SHIPPED.read_text())
    for name, cand in cands.items():
        if not cand.get("changes"):
            continue
        base = cand.get("base")
        if base not in registry["probes"]:
            raise SystemExit(f"{CANDIDATES}: candidate {name!r} names base probe {base!r}, which {SHIPPED} does not register")
        probe = copy.deepcopy(registry["probes"][base])
        for key, value in cand["changes"].items():
            if value is None:
                probe.pop(key, None)
            else:
                probe[key] = value
        probe["description"] = cand.get("note", name)
        registry["probes"][name] = probe
    write_text_atomic(MERGED, "# Written by studies/probe_search.py: the shipped registry plus the search's candidates.\n"
                      + yaml.safe_dump(registry, sort_keys=False))
    return MERGED


def _cell(ok: bool, text: str) -> str:
    return ("holds" if ok else "**fails**") + (f": {text}" if text else "")


def row(name: str, cand: dict, result: dict) -> list[str]:
    res, real, props = result["results"], result["real"], result["properties"]
    values = [res[n]["value"] for n in real]
    floors = [res[n]["noise_floor"] for n in real if res[n]["noise_floor"] is not None]
    second = [result["second_seed"][n]["value"] for n in real]
    from scipy.stats import kendalltau, spearmanr

    concepts = [res[f"battery-ginc-c{c}"]["value"] for c in battery.CONCEPTS]
    mixes = sorted((int(n.split("-k")[1]), r["value"]) for n, r in res.items() if n.startswith("battery-mix-k"))
    cells = [
        _cell(props["1"], f"upper {res['battery-upper']['value']:.4f} vs real {min(values):.4f}-{max(values):.4f}"),
        _cell(props["2"], f"concepts rho {spearmanr(battery.CONCEPTS, concepts).statistic:.2f}"),
        _cell(props["3"], f"k rho {spearmanr([1] + [k for k, _ in mixes], [res[real[0]]['value']] + [v for _, v in mixes]).statistic:.2f}, "
                          f"all {mixes[-1][1]:.4f} vs top {max(values):.4f}"),
        _cell(props["4"], ""),
        _cell(props["5"], ""),
        _cell(props["6"], f"share {max(floors) / min(values):.2f}" if floors else "no noise floor"),
        _cell(props["7"], f"tau {kendalltau(values, second).statistic:.2f}"),
    ]
    rhos = result["correlations"]
    return [name, cand.get("note", ""), *cells, f"{sum(props.values())}/7",
            f"{statistics.mean(rhos.values()):+.2f}", f"{result['seconds_per_embedding']:.1f}"]


def table(cands: dict[str, dict], out: Path) -> str:
    header = ["candidate", "what it changes", "1 bounds", "2 GINC", "3 mixtures", "4 repeats", "5 cross",
              "6 noise", "7 seeds", "holds", "8 mean rho", "s / embedding"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, cand in cands.items():
        path = out / name / "battery.json"
        if not path.exists():
            lines.append(f"| {name} | {cand.get('note', '')} | not run |" + " |" * (len(header) - 3))
            continue
        lines.append("| " + " | ".join(row(name, cand, json.loads(path.read_text()))) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="candidates to run (default: all)")
    parser.add_argument("--data-dir", default=None, help="artifacts and cache (default: $DIVCOEF_DATA_DIR or data/)")
    parser.add_argument("--out", default=str(ROOT / "studies" / "out" / "probe_search"))
    parser.add_argument("--table-only", action="store_true", help="write the table from the runs already made")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cands = candidates()
    unknown = sorted(set(args.only or ()) - set(cands))
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; {CANDIDATES} has {', '.join(cands)}")
    out = Path(args.out)
    if not args.table_only:
        registry = merged_registry(cands)
        for name in args.only or list(cands):
            cand = cands[name]
            probe = name if cand.get("changes") else cand["base"]
            argv_b = ["--registry", str(registry), "--probe", probe, "--out", str(out / name)]
            argv_b += ["--data-dir", args.data_dir] if args.data_dir else []
            argv_b += ["--distance", cand["distance"]] if cand.get("distance") else []
            log.info("candidate %s: battery %s", name, " ".join(argv_b))
            battery.main(argv_b)
    text = table(cands, out)
    write_text_atomic(out / "results.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
