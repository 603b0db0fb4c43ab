"""`divcoef`: the diversity coefficient from the command line.

    divcoef diversity corpus.jsonl --probe gpt2 --batch-size 64 --n-batches 20
    divcoef diversity corpus.jsonl --target-half-width 0.005 --n-batches 200 --precision bf16
    divcoef cross a.jsonl b.parquet --text-column body
    divcoef audit                      # the default audit as a Dagster job (see README)
    divcoef -v audit                   # ... with Dagster's DEBUG event lines
    divcoef audit --probe rand-gpt2 --datasets bible jargon
    divcoef audit --ray 127.0.0.1:6379  # ... with the embeddings on a Ray cluster (or DIVCOEF_RAY_ADDRESS)
    divcoef report --out report.html   # every result in one self-contained HTML file
    divcoef report --markdown          # the baseline table with rank correlations
    divcoef register my-corpus corpora/my.jsonl --format jsonl   # check a dataset, add it to the registry

Files are JSON Lines, Parquet, CSV or plain text (one document per line), or a glob of them;
`--text-column` names the field that holds the text. Results print as a table, or as JSON with
`--json`. Progress goes to stderr.

torch uses as many threads as there are free cores when the command starts (the core count less
the load average), or `DIVCOEF_TORCH_THREADS` when set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from divcoef_assets.tables import TableRow, format_table

log = logging.getLogger("divcoef")


def _add_probe_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("probe and estimator (override the probe's registry values)")
    g.add_argument("--probe", help="probe name in the registry, or a model hub id / local folder (default: the registry's default probe)")
    g.add_argument("--init", choices=["pretrained", "random"])
    g.add_argument("--batch-size", type=int)
    g.add_argument("--n-batches", type=int)
    g.add_argument("--seq-len", type=int)
    g.add_argument("--epochs", type=int)
    g.add_argument("--fisher", choices=["mc", "mc_head_exact"])
    g.add_argument("--fisher-samples", type=int)
    g.add_argument("--fisher-squares", choices=["loader_batch", "sequence"])
    g.add_argument("--finetune", choices=["full", "cached_body"], help="cached_body: fine-tune the head on the body's features, computed once")
    g.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: mixed precision (bfloat16 products, float32 sums)")
    g.add_argument("--target-half-width", type=float, help="sequential stopping: add batches (up to --n-batches) until the 95%% interval is this narrow")
    g.add_argument("--min-batches", type=int, help="sequential stopping: batches before the first check")
    g.add_argument("--reference-compat", action="store_true", default=None, help="reproduce the official code's quirks")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--cache-dir", help="embedding cache (default $DIVCOEF_CACHE or data/artifacts/cache/embeddings)")
    g.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", default="text", help="field holding the text (JSONL/Parquet/CSV)")
    parser.add_argument("--format", choices=["jsonl", "parquet", "csv", "text"], help="default: from the file suffix")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="divcoef", description="Task2Vec diversity coefficient of text corpora.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("diversity", help="diversity coefficient of one corpus")
    p.add_argument("path", help="file or glob")
    _add_source_options(p)
    _add_probe_options(p)

    p = sub.add_parser("cross", help="cross-diversity of two corpora (and the diversity of each)")
    p.add_argument("path_a")
    p.add_argument("path_b")
    _add_source_options(p)
    _add_probe_options(p)

    p = sub.add_parser("audit", help="materialize the default audit job and print its table")
    p.add_argument("--dagster-home", help="Dagster instance folder (default data/dagster_home)")
    p.add_argument("--datasets", nargs="*", help="only these registered datasets (at least one; omit the flag for all)")
    p.add_argument("--probe", help="a probe registered in the registry (default: the registry's default probe)")
    p.add_argument("--cache-dir", help="embedding cache (default $DIVCOEF_CACHE or data/artifacts/cache/embeddings)")
    p.add_argument("--ray", metavar="ADDRESS", default=os.environ.get("DIVCOEF_RAY_ADDRESS", ""),
                   help="compute the embeddings on the Ray cluster at ADDRESS (ray://head:10001, or head:6379 on a node "
                        "of the cluster; default $DIVCOEF_RAY_ADDRESS; unset: in this process)")

    p = sub.add_parser("register", help="check a text dataset and add it to the registry (data/registry.yaml or $DIVCOEF_REGISTRY)")
    p.add_argument("name", help="dataset key: lowercase letters, digits, - and _")
    p.add_argument("path", help="file or glob (relative to the current folder; written relative to the registry's folder)")
    p.add_argument("--format", choices=["jsonl", "parquet", "csv", "text"], help="default: from the file suffix")
    p.add_argument("--text-column", default="text", help="field holding the text (JSONL/Parquet/CSV)")
    p.add_argument("--description", default="", help="what the dataset is")
    p.add_argument("--registry", help="registry file (default $DIVCOEF_REGISTRY or data/registry.yaml)")

    p = sub.add_parser("report", help="write every audited result as one self-contained HTML file")
    p.add_argument("--db", help="results database (default $DIVCOEF_DB or data/divcoef.duckdb)")
    p.add_argument("--out", default="divcoef-report.html", help="HTML file to write (default: divcoef-report.html)")
    p.add_argument("--probe", help="only this probe (default: every probe with results)")
    p.add_argument("--markdown", action="store_true", help="print the baseline table (markdown) instead of writing HTML")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    keys = (
        "init", "batch_size", "n_batches", "seq_len", "epochs", "fisher", "fisher_samples", "fisher_squares", "finetune",
        "precision", "target_half_width", "min_batches", "reference_compat", "seed", "device",
    )
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _read(path: str, args: argparse.Namespace) -> list[str]:
    from divcoef_assets.core.sources import FilesSource, iter_texts

    spec = FilesSource(path=path, format=args.format, text_column=args.text_column)
    return list(iter_texts(spec, Path.cwd()))


def _row(name: str, result) -> tuple[TableRow, dict]:
    """A DiversityResult as a table row and as JSON."""
    e = result.estimate
    noise = None if result.noise is None else result.noise.value
    return TableRow(name, e.value, e.ci_low, e.ci_high, noise, result.noise_corrected, e.n_batches), {"dataset": name, **result.to_dict()}


def _cross_row(name: str, cross) -> tuple[TableRow, dict]:
    e = cross.estimate
    return TableRow(name, e.value, e.ci_low, e.ci_high, None, None, e.n_batches), {"dataset": name, **e.to_dict(), "distance": cross.distance}


def _progress(done: int, total: int, seconds: float) -> None:
    print(f"\r  embedding {done}/{total} ({seconds:.1f}s)", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _quiet_audit_console() -> None:
    """What `divcoef audit` leaves out of its console output unless -v: the storage migration
    messages of every new run (alembic, INFO) and Dagster's warnings about the beta and preview
    APIs the project uses (addressed to its developers)."""
    import warnings

    import dagster as dg

    logging.getLogger("alembic").setLevel(logging.WARNING)
    for category in (dg.BetaWarning, dg.PreviewWarning):
        warnings.filterwarnings("ignore", category=category)


def _report(args: argparse.Namespace) -> int:
    from divcoef_assets import paths, report
    from divcoef_assets.storage import ResultsStore

    db = paths.db_path(args.db)
    if not db.exists():
        raise FileNotFoundError(f"results database {db} does not exist; run `divcoef audit` first or pass --db")
    if args.markdown:
        print(report.markdown_baselines(report.collect(ResultsStore(db), args.probe, heatmaps=False)))
        return 0
    print(report.write_report(db, args.out, probe=args.probe))
    return 0


def _register(args: argparse.Namespace) -> int:
    from divcoef_assets.register import register

    done = register(args.name, args.path, fmt=args.format, text_column=args.text_column, description=args.description,
                    registry_path=args.registry)
    print(f"registered {done.name} in {done.registry}: {done.entry['path']} ({done.n_documents} documents)")
    if done.n_documents < done.batch_size:
        print(f"warning: {done.n_documents} documents is fewer than one batch of the default probe ({done.batch_size}); "
              "its audit will fail until the dataset has more documents", file=sys.stderr)
    print("audit it: `divcoef audit --datasets " + done.name + "`, or with `dagster dev` running the registry sensor requests its run")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "report":
            return _report(args)
        if args.command == "register":
            return _register(args)
        from divcoef_assets.threads import configure_torch_threads

        configure_torch_threads()
        if args.command == "audit":
            if args.datasets is not None and not args.datasets:
                raise ValueError(
                    "--datasets was given without a dataset: name at least one registered dataset, "
                    "or drop the flag to audit them all"
                )
            from divcoef_assets.default_audit import run_default_audit

            if not args.verbose:
                _quiet_audit_console()
            return run_default_audit(dagster_home=args.dagster_home, datasets=args.datasets, probe=args.probe,
                                     cache_dir=args.cache_dir or "", ray_address=args.ray,
                                     log_level="DEBUG" if args.verbose else "INFO")
        from divcoef_assets.api import cross_diversity_coefficient, diversity_coefficient

        common = dict(probe=args.probe, cache_dir=args.cache_dir, progress=_progress, **_overrides(args))
        if args.command == "diversity":
            result = diversity_coefficient(_read(args.path, args), **common)
            rows = [_row(Path(args.path).stem, result)]
        else:
            cross, a, b = cross_diversity_coefficient(_read(args.path_a, args), _read(args.path_b, args), **common)
            label = f"cross({Path(args.path_a).stem}, {Path(args.path_b).stem})"
            rows = [_row(Path(args.path_a).stem, a), _row(Path(args.path_b).stem, b), _cross_row(label, cross)]
    except (ValueError, OSError, ArithmeticError) as exc:
        print(f"divcoef: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the audit's own handling starts, or in another command
        print("divcoef: interrupted", file=sys.stderr)
        return 130
    if args.json:
        data = [as_json for _, as_json in rows]
        print(json.dumps(data if len(data) > 1 else data[0], indent=2, default=str))
    else:
        print(format_table([table_row for table_row, _ in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
