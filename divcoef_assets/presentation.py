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

import logging
import math
from collections.abc import Sequence

import numpy as np

from divcoef_assets import pipeline
from divcoef_assets.core import markdown as md
from divcoef_assets.core import plots
from divcoef_assets.core.audit import DiversityResult
from divcoef_assets.core.baselines import Baseline
from divcoef_assets.core.triage import BatchOutlier
from divcoef_assets.records import CrossRecord, DistancesRecord
from divcoef_assets.storage import CoefficientRecord, CrossCoefficientRecord, ResultsStore

log = logging.getLogger(__name__)

TOP_OUTLIERS = 5


def distance_heatmap(dist: DistancesRecord) -> str:
    """The distance matrix of `dist` as a heatmap, grouped by source when batches come from
    several; noise-repeat batches marked."""
    rows = pipeline.recorded_embeddings(dist.embeddings)
    matrix = pipeline.read_matrix(dist.path)
    try:
        labels = pipeline.batch_documents(dist.embeddings, rows, texts=False).labels
    except (pipeline.StaleUpstreamError, pipeline.ArtifactError, OSError) as exc:
        log.warning("distance heatmap of %s without source labels: %s", dist.dataset, exc)
        labels = (dist.dataset,) * matrix.shape[0]
    repeated = sorted({r.batch_index for r in rows if r.repeat > 0})
    png = plots.distance_heatmap(matrix, labels, repeated, title=f"{dist.dataset} | {dist.probe}: batch distances")
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
    return sorted(records, key=lambda r: -r.value)


RANKING_HEADER = ("rank", "dataset", "diversity", "95% interval", "noise floor", "noise-corrected", "batches")


def ranking_table(records: Sequence[CoefficientRecord]) -> md.Table:
    """Every dataset's coefficient, interval and noise floor, most diverse first."""
    return md.Table(RANKING_HEADER, tuple(
        (k, r.dataset, r.value, md.interval(r.ci_low, r.ci_high), "-" if r.noise_floor is None else r.noise_floor,
         "-" if r.noise_corrected is None else r.noise_corrected, r.n_batches)
        for k, r in enumerate(ranked(records), start=1)))


def ranking_chart(records: Sequence[CoefficientRecord], *, title: str, highlight: str | None = None) -> str:
    png = plots.ranked_bars([plots.Ranked(r.dataset, r.value, r.ci_low, r.ci_high, r.noise_floor) for r in records],
                            title=title, highlight=highlight)
    return md.image(title, png)


def cross_matrix(pairs: Sequence[CrossCoefficientRecord], own: dict[str, CoefficientRecord]) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """Names, the [k, k] matrix (own diversity on the diagonal, NaN where not measured) and the
    same cells as 'value [low, high]' text."""
    names = sorted({p.dataset_a for p in pairs} | {p.dataset_b for p in pairs} | set(own))
    where = {n: k for k, n in enumerate(names)}
    values = np.full((len(names), len(names)), math.nan)
    cells = [["-"] * len(names) for _ in names]
    for name, r in own.items():
        k = where[name]
        values[k, k] = r.value
        cells[k][k] = f"**{md.sig(r.value)}** {md.interval(r.ci_low, r.ci_high)}"
    for p in pairs:
        a, b = where[p.dataset_a], where[p.dataset_b]
        values[a, b] = values[b, a] = p.value
        cells[a][b] = cells[b][a] = f"{md.sig(p.value)} {md.interval(p.ci_low, p.ci_high)}"
    return names, values, cells


def cross_table(pairs: Sequence[CrossCoefficientRecord], own: dict[str, CoefficientRecord]) -> md.Table:
    names, _, cells = cross_matrix(pairs, own)
    return md.Table(("dataset", *names), tuple((n, *row) for n, row in zip(names, cells)))


def cross_views(store: ResultsStore, record: CrossRecord) -> dict[str, md.Table | str]:
    """The cross matrix as a table and a heatmap, and every dataset's coefficient ranked (table
    and chart), all for the probe settings and weights of `record`."""
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
        "ranking": ranking_table(own_rows),
        "ranking_chart": ranking_chart(own_rows, title=f"probe {record.probe}: every audited dataset"),
    }
