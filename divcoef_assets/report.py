"""`divcoef report`: every audited result in one self-contained HTML file, for people who never open Dagster.

Built only from the results database (DuckDB) and the Parquet files its views point at, so it
can be regenerated at any time without computing anything. For each probe (the probe settings
and weights of its newest coefficient) it opens with the verdict:

- the leaderboard of the real corpora, most diverse first, with 95% intervals, statistically tied
  groups and each corpus's position between the bounds (`core.leaderboard`, the order of the UI
  and of `divcoef audit`), then the calibration sets (bounds, GINC, mixtures) in their own table;
- the check results of every dataset (`check_rules`, the rules of the Dagster asset checks);
- the bound datasets (synthetic lower and upper bounds) and which datasets fall outside them;

then the details:

- every dataset with its noise floor;
- the cross-diversity matrix, own diversity on the diagonal (table with intervals and heatmap);
- the baseline measures of each dataset's batches and their Spearman rank correlation with the
  coefficient (DuckDB `latest_baselines`, `baseline_correlations`);
- the batches farthest from the rest in each dataset, with document ids and previews
  (`latest_batch_outliers`);
- each dataset's batch distance heatmap (the `distances` view), all on one colour scale.

Plots are PNGs inside the file as base64 `data:` URIs and the style sheet is inline: the file
opens offline and links to nothing. `markdown_baselines` renders the baseline table that the
README quotes. No Dagster imports.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np

from divcoef_assets import check_rules, presentation
from divcoef_assets.core import leaderboard as lb
from divcoef_assets.core import markdown as md
from divcoef_assets.core import plots
from divcoef_assets.core.atomic import write_text_atomic
from divcoef_assets.core.baselines import EMBEDDING_METRICS, TEXT_METRICS
from divcoef_assets.storage import CoefficientRecord, CrossCoefficientRecord, ResultsStore

log = logging.getLogger(__name__)

METRICS = TEXT_METRICS + EMBEDDING_METRICS
LEADERBOARD_NOTE = ("Most diverse first. Two corpora are statistically tied when the 95% interval of the difference of their "
                    "coefficients (jackknife over batches, independent batches) contains 0; a tied group is a corpus and every "
                    "lower one tied with it. Position: 0 = the lower-bound dataset, 1 = the upper-bound dataset.")
TOP_OUTLIERS = 3


@dataclass(frozen=True)
class BaselineCell:
    value: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class ProbeSection:
    """What the report shows for one probe, measured with one probe fingerprint."""

    probe: str
    probe_fingerprint: str
    coefficients: tuple[CoefficientRecord, ...]
    cross: tuple[CrossCoefficientRecord, ...]
    baselines: dict[str, dict[str, BaselineCell]] = field(default_factory=dict)  # dataset -> metric -> cell
    correlations: tuple[tuple[str, int, float | None], ...] = ()  # metric, datasets, Spearman
    outliers: tuple[tuple, ...] = ()  # rows of latest_batch_outliers (rank <= TOP_OUTLIERS)
    bounds: dict[str, str] = field(default_factory=dict)  # "lower_bound"/"upper_bound" -> dataset
    heatmaps: dict[str, bytes] = field(default_factory=dict)  # dataset -> PNG
    left_out: tuple[str, ...] = ()  # datasets whose newest coefficient used other probe settings
    board: lb.Leaderboard | None = None
    checks: tuple[tuple[str, str, str], ...] = ()  # dataset, check, "passed: ..." / "FAILED: ..." / "not evaluated: ..."
    heatmap_scale: float | None = None  # the shared colour scale's top


def _optional(store: ResultsStore, sql: str, params: Sequence) -> list[tuple]:
    """Rows of a query on tables a database made by an older version may lack ([] then)."""
    try:
        return store.query(sql, params)
    except duckdb.CatalogException as exc:
        log.info("report: %s", str(exc).splitlines()[0])
        return []


def _bound_kinds(store: ResultsStore) -> dict[str, str]:
    kinds = {}
    for dataset, spec_json in store.query("SELECT dataset, spec_json FROM datasets ORDER BY dataset"):
        spec = json.loads(spec_json)
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind in ("lower_bound", "upper_bound") and kind not in kinds:
            kinds[kind] = dataset
    return kinds


def _distances(store: ResultsStore, probe: str, dataset: str) -> np.ndarray | None:
    rows = _optional(store, "SELECT i, j, distance FROM distances WHERE probe = ? AND dataset = ?", [probe, dataset])
    if not rows:
        return None
    n = max(max(i, j) for i, j, _ in rows) + 1
    matrix = np.zeros((n, n))
    for i, j, d in rows:
        matrix[i, j] = d
    return matrix


def _heatmap(store: ResultsStore, probe: str, dataset: str, matrix: np.ndarray, high: float) -> bytes:
    n = matrix.shape[0]
    sources = dict(_optional(store, "SELECT batch_index, source FROM latest_batch_outliers WHERE probe = ? AND dataset = ?", [probe, dataset]))
    labels = [sources.get(k, dataset) for k in range(n)]
    repeated = [r[0] for r in _optional(store, "SELECT DISTINCT batch_index FROM embeddings WHERE probe = ? AND dataset = ? AND repeat > 0", [probe, dataset])]
    return plots.distance_heatmap(matrix, labels, repeated, title=f"{dataset}: batch distances", scale=(0.0, high))


def _check_results(store: ResultsStore, records: Sequence[CoefficientRecord], bounds: dict[str, str]) -> tuple[tuple[str, str, str], ...]:
    """Every dataset's checks by the rules of the Dagster asset checks, against the rows in DuckDB."""
    from divcoef_assets.pipeline import neighbours_of

    out = []
    for record in records:
        near = neighbours_of(store, record, bounds)
        for outcome in check_rules.evaluate(record, near):
            if isinstance(outcome, check_rules.NotEvaluated):
                out.append((record.dataset, outcome.check_name, f"not evaluated: {outcome.reason}"))
            else:
                out.append((record.dataset, outcome.check_name, ("passed: " if outcome.passed else "FAILED: ") + outcome.description))
    return tuple(out)


def collect(store: ResultsStore, probe: str | None = None, *, heatmaps: bool = True) -> list[ProbeSection]:
    """One section per probe (or only `probe`), each for the probe fingerprint of its newest coefficient."""
    newest = store.query(
        "SELECT probe, probe_fingerprint FROM latest_coefficients "
        "QUALIFY row_number() OVER (PARTITION BY probe ORDER BY computed_at DESC) = 1 ORDER BY probe"
    )
    bounds = _bound_kinds(store)
    kinds = presentation.dataset_kinds(store)
    sections = []
    for name, fingerprint in newest:
        if probe is not None and name != probe:
            continue
        latest = store.latest_coefficients(name)
        coefficients = tuple(presentation.ranked([r for r in latest if r.probe_fingerprint == fingerprint]))
        board = presentation.build_leaderboard(coefficients, kinds)
        measured = {r.dataset for r in coefficients}
        cross = tuple(p for p in store.latest_cross_coefficients(name)
                      if p.probe_fingerprint == fingerprint and p.dataset_a in measured and p.dataset_b in measured)
        key = [name, fingerprint]
        cells: dict[str, dict[str, BaselineCell]] = {}
        for dataset, metric, value, low, high in _optional(
                store, "SELECT dataset, metric, value, ci_low, ci_high FROM latest_baselines WHERE probe = ? AND probe_fingerprint = ?", key):
            cells.setdefault(dataset, {})[metric] = BaselineCell(value, low, high)
        correlations = tuple(_optional(
            store, "SELECT metric, n_datasets, spearman FROM baseline_correlations WHERE probe = ? AND probe_fingerprint = ?", key))
        order = {m: k for k, m in enumerate(METRICS)}
        correlations = tuple(sorted(correlations, key=lambda row: order.get(row[0], len(order))))
        outliers = tuple(_optional(
            store, "SELECT dataset, rank, batch_index, mean_distance, z_score, source, doc_indices, preview FROM latest_batch_outliers "
            "WHERE probe = ? AND probe_fingerprint = ? AND rank <= ? ORDER BY dataset, rank", [*key, TOP_OUTLIERS]))
        maps, high = {}, None
        if heatmaps:
            matrices = {r.dataset: m for r in coefficients if (m := _distances(store, name, r.dataset)) is not None}
            high = max((float(m.max()) for m in matrices.values()), default=None)
            maps = {dataset: _heatmap(store, name, dataset, m, high) for dataset, m in matrices.items()}
        measured_bounds = {k: v for k, v in bounds.items() if v in measured}
        sections.append(ProbeSection(
            probe=name, probe_fingerprint=fingerprint, coefficients=coefficients, cross=cross, baselines=cells,
            correlations=correlations, outliers=outliers, bounds=measured_bounds,
            heatmaps=maps, left_out=tuple(sorted({r.dataset for r in latest} - measured)), board=board,
            checks=_check_results(store, coefficients, measured_bounds), heatmap_scale=high,
        ))
    return sections


# ----------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; max-width: 40em; }
img { margin: 0.5em 1em 0.5em 0; max-width: 100%; }
.note { color: #666; font-size: 0.9em; }
.verdict { font-size: 1.05em; background: #f6f8fa; border-left: 4px solid #4a7; padding: 0.5em 1em; }
.scroll { overflow-x: auto; max-width: 100%; }
.gallery img { width: 30em; }
td.failed { color: #b00; font-weight: bold; }
"""


def _cell(value: object) -> str:
    text = md.sig(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    return html.escape(text)


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, text_columns: Sequence[int] = (0,)) -> str:
    def cls(k: int) -> str:
        return ' class="text"' if k in text_columns else ""

    head = "".join(f"<th{cls(k)}>{_cell(h)}</th>" for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(k)}>{_cell(v)}</td>" for k, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _parts(table: md.Table) -> tuple[Sequence[str], Sequence[Sequence[object]]]:
    return table.header, table.rows


def html_image(title: str, png: bytes) -> str:
    import base64

    return f'<img alt="{html.escape(title)}" title="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _baseline_rows(section: ProbeSection, *, intervals: bool) -> tuple[list[str], list[list]]:
    metrics = [m for m in METRICS if any(m in cells for cells in section.baselines.values())]
    header = ["dataset", "diversity", *metrics]
    rows = []
    for r in section.coefficients:
        cells = section.baselines.get(r.dataset, {})
        row: list = [r.dataset, f"{md.sig(r.value)} {md.interval(r.ci_low, r.ci_high)}" if intervals else r.value]
        for m in metrics:
            c = cells.get(m)
            row.append("-" if c is None else (f"{md.sig(c.value)} {md.interval(c.ci_low, c.ci_high)}" if intervals and c.ci_low is not None else c.value))
        rows.append(row)
    return header, rows


def _bounds_html(section: ProbeSection) -> str:
    if not section.bounds:
        return '<p class="note">No bound dataset (synthetic lower_bound / upper_bound) was audited with these probe settings.</p>'
    value = {r.dataset: r for r in section.coefficients}
    rows, outside = [], []
    for kind in ("lower_bound", "upper_bound"):
        name = section.bounds.get(kind)
        if name is None:
            continue
        b = value[name]
        rows.append([kind.replace("_", " "), name, b.value, md.interval(b.ci_low, b.ci_high)])
    low = value[section.bounds["lower_bound"]].value if "lower_bound" in section.bounds else -np.inf
    high = value[section.bounds["upper_bound"]].value if "upper_bound" in section.bounds else np.inf
    bound_names = set(section.bounds.values())
    outside = [f"{r.dataset} ({md.sig(r.value)})" for r in section.coefficients if r.dataset not in bound_names and not low <= r.value <= high]
    note = ("Every other dataset lies between the bounds." if not outside
            else "Outside the bounds: " + ", ".join(outside) + ".")
    return html_table(["bound", "dataset", "diversity", "95% interval"], rows, text_columns=(0, 1)) + f"<p>{html.escape(note)}</p>"


def _section_html(section: ProbeSection) -> str:
    parts = [f'<h2 id="probe-{html.escape(section.probe)}">Probe {html.escape(section.probe)}</h2>',
             f'<p class="note">probe fingerprint (settings and weights) {html.escape(section.probe_fingerprint)}; '
             f"{len(section.coefficients)} datasets measured with it"
             + (f"; left out (newest coefficient measured with other settings): {html.escape(', '.join(section.left_out))}" if section.left_out else "")
             + "</p>"]
    records = list(section.coefficients)
    board = section.board or presentation.build_leaderboard(records, {})
    parts += ['<h3 id="verdict">Verdict</h3>', f'<p class="verdict">{html.escape(presentation.verdict(board))}</p>',
              "<h4>Leaderboard: real corpora</h4>", f'<p class="note">{html.escape(LEADERBOARD_NOTE)}</p>',
              html_table(*_parts(presentation.leaderboard_table(board)), text_columns=(1, 4, 5))]
    if board.corpora:
        parts.append(html_image(presentation.leaderboard_title(section.probe), presentation.leaderboard_png(section.probe, board)))
    parts += ["<h4>Calibration sets (synthetic bounds, GINC, mixtures)</h4>",
              '<p class="note">Data made to calibrate the scale, not corpora to rank: kept out of the leaderboard.</p>',
              html_table(*_parts(presentation.calibration_table(board)), text_columns=(0, 1))]
    parts += ["<h4>Checks</h4>", '<p class="note">The asset checks of every dataset, by the rules the Dagster checks use '
              "(a check with nothing to compare with, or that a calibration set is exempt from, is not evaluated).</p>",
              html_table(["dataset", "check", "result"], list(section.checks), text_columns=(0, 1, 2))]
    parts += ["<h4>Bounds</h4>", _bounds_html(section), '<h3 id="details">Details</h3>', "<h4>Every dataset</h4>",
              '<p class="note">Coefficient with its 95% jackknife interval over batches; the noise floor is the distance between '
              "two embeddings of the same batch, and the noise-corrected value the coefficient minus it.</p>",
              html_table(*_parts(presentation.ranking_table(records)), text_columns=(1,))]
    parts.append("<h4>Cross-diversity</h4>")
    if section.cross:
        own = {r.dataset: r for r in records}
        names, values, _ = presentation.cross_matrix(section.cross, own)
        parts += [html_table(*_parts(presentation.cross_table(section.cross, own))),
                  html_image("cross-diversity", plots.cross_heatmap(names, values))]
    else:
        parts.append('<p class="note">No cross-diversity measured with these probe settings (materialize cross_diversity).</p>')
    parts.append("<h4>Baselines</h4>")
    if section.baselines:
        header, rows = _baseline_rows(section, intervals=True)
        parts += ['<p class="note">Simple measures of the same batches\' documents: mean over batches with a 95% interval '
                  "(vendi_task2vec: one value over the batch embeddings). Higher = more diverse for every measure.</p>",
                  html_table(header, rows), "<h5>Spearman rank correlation with the coefficient</h5>",
                  html_table(["measure", "datasets", "Spearman"], [[m, n, "-" if rho is None else f"{rho:+.2f}"] for m, n, rho in section.correlations])]
    else:
        parts.append('<p class="note">No baselines recorded (audits run with reports off, or before baselines existed).</p>')
    parts.append("<h4>Outlier batches</h4>")
    if section.outliers:
        rows = [[dataset, *presentation.outlier_row(rank, batch, mean, z, source, docs, preview)]
                for dataset, rank, batch, mean, z, source, docs, preview in section.outliers]
        parts += [f'<p class="note">Per dataset, the {TOP_OUTLIERS} batches farthest from the others (mean distance, z-score among '
                  "the batches), with the snapshot rows of their documents and the start of their texts.</p>",
                  html_table(["dataset", *presentation.OUTLIER_HEADER], rows, text_columns=(0, 5, 6, 7))]
    else:
        parts.append('<p class="note">No batch triage recorded.</p>')
    if section.heatmaps:
        parts += ["<h4>Batch distances</h4>", f'<p class="note">{html.escape(presentation.heatmap_note(section.probe, section.heatmap_scale or 0.0))}</p>',
                  '<div class="gallery">']
        parts += [html_image(f"{name} batch distances", png) for name, png in section.heatmaps.items()]
        parts.append("</div>")
    return "\n".join(parts)


def render_html(sections: Sequence[ProbeSection], *, source: str, generated_at: datetime | None = None) -> str:
    when = (generated_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    toc = " | ".join(f'<a href="#probe-{html.escape(s.probe)}">{html.escape(s.probe)}</a>' for s in sections)
    body = "\n".join(_section_html(s) for s in sections) or "<p>Nothing audited yet.</p>"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Diversity audit report</title>'
            f"<style>{_STYLE}</style></head><body>\n<h1>Diversity audit report</h1>\n"
            f'<p class="note">Task2Vec diversity coefficients from {html.escape(source)}, {when}. Compare only numbers '
            f"measured with the same probe.</p>\n<p>{toc}</p>\n{body}\n</body></html>\n")


def markdown_baselines(sections: Sequence[ProbeSection]) -> str:
    """Per probe: each dataset's coefficient and baselines, and their rank correlations."""
    out = []
    for s in sections:
        header, rows = _baseline_rows(s, intervals=False)
        rho = {m: r for m, _, r in s.correlations}
        rows.append(["**Spearman with the coefficient**", "", *[("-" if rho.get(m) is None else f"{rho[m]:+.2f}") for m in header[2:]]])
        out += [f"Probe `{s.probe}` ({s.probe_fingerprint}), {len(s.coefficients)} datasets:", "", md.table(header, rows), ""]
    return "\n".join(out) if out else "Nothing audited yet."


def write_report(db_path: str | Path, out: str | Path, *, probe: str | None = None) -> Path:
    """Write the HTML report of the results database `db_path` to `out` (atomically)."""
    store = ResultsStore(db_path)
    text = render_html(collect(store, probe), source=str(Path(db_path)))
    return write_text_atomic(out, text)
