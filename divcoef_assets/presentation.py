"""What people see of an audit: markdown tables and embedded plots, for the Dagster UI and the report.

The assets attach the tables (`core.markdown.Table`) as `MetadataValue.table`, which the asset page
shows inline, and the plots as `MetadataValue.md` holding a PNG `data:` URI, which it shows
behind "[Show Markdown]" (Dagster 1.13 renders markdown metadata in a dialog, images included), and
`divcoef_assets.report` puts the same pieces in its HTML file, so the UI and the report never
disagree. Every number goes through `core.markdown.sig` (4 significant digits).

Inputs are the typed records of `pipeline` and rows read back from the results store; the figures
come from `core.plots`, the batch ranking from `core.triage`. No Dagster imports.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence

import numpy as np

from divcoef_assets import pipeline
from divcoef_assets.core import leaderboard as lb
from divcoef_assets.core import markdown as md
from divcoef_assets.core import plots
from divcoef_assets.core.audit import DiversityResult
from divcoef_assets.core.baselines import Baseline
from divcoef_assets.core.triage import BatchOutlier
from divcoef_assets.records import CrossRecord, DistancesRecord, LeaderboardRow
from divcoef_assets.storage import CoefficientRecord, CrossCoefficientRecord, ResultsStore

log = logging.getLogger(__name__)

TOP_OUTLIERS = 5


def heatmap_note(probe: str, high: float) -> str:
    return (f"Colour scale 0 to {md.sig(high)}, shared by the heatmaps of every dataset audited with probe {probe} "
            "(the largest batch distance among them): equal colours are equal distances across datasets.")


def distance_heatmap(dist: DistancesRecord, *, scale: tuple[float, float] | None = None) -> str:
    """The distance matrix of `dist` as a heatmap, grouped by source when batches come from
    several; noise-repeat batches marked; `scale`: the probe's shared colour scale."""
    rows = pipeline.recorded_embeddings(dist.embeddings)
    matrix = pipeline.read_matrix(dist.path)
    try:
        labels = pipeline.batch_documents(dist.embeddings, rows, texts=False).labels
    except (pipeline.StaleUpstreamError, pipeline.ArtifactError, OSError) as exc:
        log.warning("distance heatmap of %s without source labels: %s", dist.dataset, exc)
        labels = (dist.dataset,) * matrix.shape[0]
    repeated = sorted({r.batch_index for r in rows if r.repeat > 0})
    note = heatmap_note(dist.probe, scale[1]) if scale is not None else ""
    png = plots.distance_heatmap(matrix, labels, repeated, title=f"{dist.dataset} | {dist.probe}: batch distances", scale=scale, scale_note=note)
    return md.image(f"{dist.dataset} batch distances", png)


def coefficient_table(record: CoefficientRecord) -> md.Table:
    """Value, interval, noise floor, noise-corrected value, batches, probe and snapshot."""
    return md.Table(
        ("diversity", "95% interval", "noise floor", "noise-corrected", "batches", "probe", "snapshot"),
        ((record.value, md.interval(record.ci_low, record.ci_high), "-" if record.noise_floor is None else record.noise_floor,
          "-" if record.noise_corrected is None else record.noise_corrected, record.n_batches,
          f"{record.probe} ({record.probe_fingerprint[:12]})", record.snapshot_fingerprint[:16]),),
    )


def distance_histogram(record: CoefficientRecord, result: DiversityResult, labels: Sequence[str]) -> str:
    png = plots.distance_histogram(result.matrix, labels, value=record.value, ci_low=record.ci_low, ci_high=record.ci_high,
                                   noise_floor=record.noise_floor, title=f"{record.dataset} | {record.probe}: pairwise distances")
    return md.image(f"{record.dataset} pairwise distances", png)


def _point(r: CoefficientRecord) -> plots.TrendPoint:
    return plots.TrendPoint(r.computed_at, r.value, r.ci_low, r.ci_high, r.snapshot_fingerprint, r.probe_fingerprint)


def history(store: ResultsStore, record: CoefficientRecord) -> list[plots.TrendPoint]:
    """The recorded measurements of `record`'s dataset and probe, with `record` in place of the
    row it will replace (same snapshot and probe fingerprint), before it is recorded."""
    def same(r: CoefficientRecord) -> bool:
        return (r.snapshot_fingerprint, r.probe_fingerprint) == (record.snapshot_fingerprint, record.probe_fingerprint)

    return [_point(r) for r in store.coefficients(dataset=record.dataset, probe=record.probe) if not same(r)] + [_point(record)]


def trend(points: Sequence[plots.TrendPoint], *, dataset: str = "", probe: str = "") -> str:
    title = f"{dataset} | {probe}: coefficient over snapshots" if dataset else "coefficient over snapshots"
    return md.image(title, plots.coefficient_trend(points, title=title))


OUTLIER_HEADER = ("rank", "batch", "mean distance to others", "z", "source", "documents (snapshot rows)", "preview")


def outlier_row(rank: int, batch: int, mean_distance: float, z: float, source: str, doc_indices: Sequence[int], preview: str) -> tuple:
    ids = ", ".join(str(d) for d in list(doc_indices)[:12]) + (" ..." if len(doc_indices) > 12 else "")
    return (rank, batch, mean_distance, f"{z:+.2f}", source, ids, preview)


def outlier_table(outliers: Sequence[BatchOutlier], top: int = TOP_OUTLIERS) -> md.Table:
    """The batches farthest from the rest, with their documents (snapshot rows) and a preview."""
    return md.Table(OUTLIER_HEADER, tuple(outlier_row(o.rank, o.batch_index, o.mean_distance, o.z_score, o.label, o.doc_indices, o.preview)
                                          for o in list(outliers)[:top]))


def baseline_table(baselines: Sequence[Baseline]) -> md.Table:
    return md.Table(("measure", "value", "95% interval over batches", "batches"),
                    tuple((b.metric, b.value, md.interval(b.ci_low, b.ci_high), b.n_batches) for b in baselines))


def same_probe_coefficients(store: ResultsStore, probe: str, probe_fingerprint: str) -> list[CoefficientRecord]:
    """Each dataset's newest coefficient measured with these probe settings and weights."""
    return [r for r in store.latest_coefficients(probe) if r.probe_fingerprint == probe_fingerprint]


def ranked(records: Sequence[CoefficientRecord]) -> list[CoefficientRecord]:
    """Most diverse first, ties by name: the order of `core.leaderboard.ordered`, so every view agrees."""
    return sorted(records, key=lambda r: (-r.value, r.dataset))


RANKING_HEADER = ("rank", "dataset", "diversity", "95% interval", "noise floor", "noise-corrected", "batches")


def ranking_table(records: Sequence[CoefficientRecord]) -> md.Table:
    """Every dataset's coefficient, interval and noise floor, most diverse first."""
    return md.Table(RANKING_HEADER, tuple(
        (k, r.dataset, r.value, md.interval(r.ci_low, r.ci_high), "-" if r.noise_floor is None else r.noise_floor,
         "-" if r.noise_corrected is None else r.noise_corrected, r.n_batches)
        for k, r in enumerate(ranked(records), start=1)))


def cross_matrix(pairs: Sequence[CrossCoefficientRecord], own: dict[str, CoefficientRecord]) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """Names, the [k, k] matrix (own diversity on the diagonal, NaN where not measured) and the
    same cells as 'value [low, high]' text, the diagonal marked '(own)' (plain text: Dagster's
    table metadata shows markdown emphasis literally)."""
    names = sorted({p.dataset_a for p in pairs} | {p.dataset_b for p in pairs} | set(own))
    where = {n: k for k, n in enumerate(names)}
    values = np.full((len(names), len(names)), math.nan)
    cells = [["-"] * len(names) for _ in names]
    for name, r in own.items():
        k = where[name]
        values[k, k] = r.value
        cells[k][k] = f"{md.sig(r.value)} {md.interval(r.ci_low, r.ci_high)} (own)"
    for p in pairs:
        a, b = where[p.dataset_a], where[p.dataset_b]
        values[a, b] = values[b, a] = p.value
        cells[a][b] = cells[b][a] = f"{md.sig(p.value)} {md.interval(p.ci_low, p.ci_high)}"
    return names, values, cells


def cross_table(pairs: Sequence[CrossCoefficientRecord], own: dict[str, CoefficientRecord]) -> md.Table:
    names, _, cells = cross_matrix(pairs, own)
    return md.Table(("dataset", *names), tuple((n, *row) for n, row in zip(names, cells)))


def cross_views(store: ResultsStore, record: CrossRecord) -> dict[str, md.Table | str]:
    """The cross matrix as a table and a heatmap, for the probe settings and weights of `record`
    (the ranking is the leaderboard asset's)."""
    if not record.pairs:
        return {}
    measured = record.pairs[0].probe_fingerprint
    own_rows = same_probe_coefficients(store, record.probe, measured)
    own = {r.dataset: r for r in own_rows if r.dataset in record.datasets}
    names, values, _ = cross_matrix(record.pairs, own)
    title = f"probe {record.probe}: cross-diversity (diagonal: own diversity)"
    return {
        "cross_matrix": cross_table(record.pairs, own),
        "cross_heatmap": md.image(title, plots.cross_heatmap(names, values, title=title)),
    }


# ----------------------------------------------------------------------------- leaderboard

def dataset_kinds(store: ResultsStore) -> dict[str, str]:
    """Each recorded dataset's leaderboard kind (`core.leaderboard.kind_of`), from DuckDB `datasets`."""
    return {dataset: lb.kind_of(source_type, json.loads(spec_json))
            for dataset, source_type, spec_json in store.query("SELECT dataset, source_type, spec_json FROM datasets")}


def newest_fingerprints(store: ResultsStore) -> dict[str, str]:
    """probe -> the probe fingerprint (settings and weights) of its newest coefficient."""
    return dict(store.query(
        "SELECT probe, probe_fingerprint FROM latest_coefficients "
        "QUALIFY row_number() OVER (PARTITION BY probe ORDER BY computed_at DESC) = 1 ORDER BY probe"))


def build_leaderboard(records: Sequence[CoefficientRecord], kinds: dict[str, str]) -> lb.Leaderboard:
    """The leaderboard of coefficients measured with one probe fingerprint."""
    return lb.build([lb.Entry(r.dataset, r.value, math.nan if r.stderr is None else r.stderr,
                              math.nan if r.ci_low is None else r.ci_low, math.nan if r.ci_high is None else r.ci_high,
                              r.n_batches, kinds.get(r.dataset, "corpus")) for r in records])


def probe_leaderboard(store: ResultsStore, probe: str, fingerprint: str | None = None) -> lb.Leaderboard:
    """`probe`'s leaderboard over the datasets measured with `fingerprint` (default: that of its
    newest coefficient), so every number on it was measured with one instrument."""
    fingerprint = fingerprint or newest_fingerprints(store).get(probe, "")
    return build_leaderboard(same_probe_coefficients(store, probe, fingerprint), dataset_kinds(store))


def _position(p: float | None) -> str:
    return "-" if p is None else f"{p:.2f}"


LEADERBOARD_HEADER = ("rank", "dataset", "diversity", "95% interval", "tied group", "statistically tied with",
                      "position between bounds (0 lower, 1 upper)", "batches")
CALIBRATION_HEADER = ("dataset", "calibration set", "diversity", "95% interval", "position between bounds (0 lower, 1 upper)", "batches")
CALIBRATION_KINDS = {"lower_bound": "lower bound (synthetic)", "upper_bound": "upper bound (synthetic)", "ginc": "GINC (synthetic)",
                     "mixture": "mixture of registered corpora"}


def leaderboard_table(board: lb.Leaderboard) -> md.Table:
    """The real corpora, most diverse first, with interval, tied group and place between the bounds."""
    return md.Table(LEADERBOARD_HEADER, tuple(
        (r.rank, r.entry.dataset, r.entry.value, md.interval(r.entry.ci_low, r.entry.ci_high), f"group {r.group}",
         ", ".join(r.tied_with) or "none", _position(r.position), r.entry.n_batches) for r in board.corpora))


def calibration_table(board: lb.Leaderboard) -> md.Table:
    """The calibration sets (bounds, GINC, mixtures), most diverse first: a separate block."""
    return md.Table(CALIBRATION_HEADER, tuple(
        (r.entry.dataset, CALIBRATION_KINDS.get(r.entry.kind, r.entry.kind), r.entry.value,
         md.interval(r.entry.ci_low, r.entry.ci_high), _position(r.position), r.entry.n_batches) for r in board.calibration))


def verdict(board: lb.Leaderboard) -> str:
    """One paragraph: the leading corpus, whether its lead is real, how many tied groups, and
    where the corpora sit between the bounds."""
    if not board.corpora:
        return "No real corpus audited with this probe yet."
    top = board.corpora[0]
    groups = board.groups()
    first = groups[0]
    lead = (f"Most diverse: {top.entry.dataset} {md.sig(top.entry.value)} {md.interval(top.entry.ci_low, top.entry.ci_high)}; "
            + ("its lead is real (every other corpus is statistically below it)." if len(first) == 1
               else f"statistically tied with {', '.join(first[1:])} (tied group 1)."))
    parts = [lead, f"{len(board.corpora)} real corpora in {len(groups)} tied group{'s' if len(groups) != 1 else ''}: "
             + "; ".join(f"group {k}: {', '.join(g)}" for k, g in enumerate(groups, start=1)) + "."]
    positions = [r.position for r in board.corpora if r.position is not None]
    if board.lower is not None and board.upper is not None and positions:
        parts.append(f"On the scale from the lower bound {board.lower.dataset} ({md.sig(board.lower.value)}) = 0 to the upper bound "
                     f"{board.upper.dataset} ({md.sig(board.upper.value)}) = 1, the real corpora lie between "
                     f"{min(positions):.2f} and {max(positions):.2f}.")
    else:
        parts.append("No position between the bounds: audit the registry's lower_bound and upper_bound datasets with this probe.")
    return " ".join(parts)


def leaderboard_rows(probe: str, board: lb.Leaderboard) -> list[LeaderboardRow]:
    return [LeaderboardRow(probe, r.entry.dataset, r.entry.kind, r.rank, r.entry.value, r.entry.ci_low, r.entry.ci_high,
                           r.group, r.tied_with, r.position) for r in (*board.corpora, *board.calibration)]


def leaderboard_title(probe: str) -> str:
    return f"probe {probe}: real corpora, coloured by tied group"


def leaderboard_png(probe: str, board: lb.Leaderboard) -> bytes:
    """The real corpora's coefficients with intervals, most diverse on top, coloured by tied group."""
    return plots.ranked_bars([plots.Ranked(r.entry.dataset, r.entry.value, r.entry.ci_low, r.entry.ci_high, None, group=r.group)
                              for r in board.corpora], title=leaderboard_title(probe))


def leaderboard_chart(probe: str, board: lb.Leaderboard) -> str:
    return md.image(leaderboard_title(probe), leaderboard_png(probe, board))
