"""The figures of an audit, as PNG bytes: what a curator looks at to see why a corpus scores what it scores.

- `distance_heatmap`: the batch-by-batch distance matrix. Batches are grouped by source when the
  dataset has more than one (a concatenation's batches each come from one component), otherwise
  put in hierarchical-clustering order (average linkage, scipy), so blocks of similar batches show
  as squares. Batches embedded more than once (the noise repeats) are marked with '*'.
- `distance_histogram`: the pairwise distances, split by source pair when batches come from
  different sources (within A, within B, A-B), with the coefficient, its 95% interval and the
  noise floor marked.
- `cross_heatmap`: cross-diversity of every pair of datasets, each dataset's own diversity on the
  diagonal.
- `coefficient_trend`: a dataset's coefficient with its interval over its snapshots.
- `ranked_bars`: coefficients with their intervals (and noise floors), ranked, coloured by tied group when given.

Every function is pure: arrays and labels in, PNG bytes out (matplotlib's Agg backend, no display).
Figures are at least `MIN_WIDTH_PX` wide with labels of at least 10 pt, so they read at full size
in a browser. No Dagster imports.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
MIN_WIDTH_PX = 900
_WIDTH = 10.0  # inches: 1000 px at DPI
SMALL, LABEL, TITLE = 10, 11, 13  # font sizes (pt)
_CMAP = "viridis"


@dataclass(frozen=True)
class Ranked:
    """One bar of `ranked_bars`."""

    label: str
    value: float
    ci_low: float | None
    ci_high: float | None
    noise_floor: float | None
    group: int = 0  # tied group (1 = leading); bars of one group share a colour


@dataclass(frozen=True)
class TrendPoint:
    """One measurement of `coefficient_trend`."""

    computed_at: datetime
    value: float
    ci_low: float | None
    ci_high: float | None
    snapshot: str
    probe_fingerprint: str


def _png(fig) -> bytes:
    """The whole figure (its full width: no tight crop), laid out to leave room for a bottom note."""
    buffer = io.BytesIO()
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def batch_order(matrix: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Grouped by source label (then batch index) when there are several labels, else the
    leaf order of average-linkage clustering of the distances."""
    n = matrix.shape[0]
    if len(set(labels)) > 1:
        return np.array(sorted(range(n), key=lambda i: (labels[i], i)))
    if n < 3:
        return np.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    symmetric = (matrix + matrix.T) / 2
    np.fill_diagonal(symmetric, 0.0)
    return leaves_list(linkage(squareform(np.clip(symmetric, 0, None), checks=False), method="average"))


def distance_heatmap(matrix: np.ndarray, labels: Sequence[str], repeated: Sequence[int] = (), *, title: str = "",
                     scale: tuple[float, float] | None = None, scale_note: str = "") -> bytes:
    """Heatmap of the [n, n] batch distances; `labels[i]` is batch i's source, `repeated` the
    batches with noise repeats (marked '*'). `scale` (low, high) is the colour scale, shared by
    every dataset of a probe so that colours compare across datasets; `scale_note` says so under
    the plot. Without it the scale is this matrix's own range."""
    matrix = np.asarray(matrix, dtype=float)
    n = matrix.shape[0]
    order = batch_order(matrix, labels)
    shown = matrix[np.ix_(order, order)]
    off = shown[~np.eye(n, dtype=bool)]
    fig, ax = plt.subplots(figsize=(_WIDTH, 8.2))
    low, high = scale if scale is not None else (float(off.min()) if off.size else 0, float(off.max()) if off.size else 1)
    image = ax.imshow(shown, cmap=_CMAP, vmin=low, vmax=high)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("distance", fontsize=LABEL)
    bar.ax.tick_params(labelsize=SMALL)
    if scale_note:
        fig.text(0.5, 0.005, scale_note, ha="center", va="bottom", fontsize=SMALL)
    marks = set(int(i) for i in repeated)
    names = [f"{'*' if int(i) in marks else ''}{int(i)}" for i in order]
    step = max(1, n // 16)
    ticks = np.arange(0, n, step)
    ax.set_xticks(ticks, [names[t] for t in ticks], fontsize=SMALL, rotation=90)
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=SMALL)
    groups = [labels[i] for i in order]
    if len(set(groups)) > 1:
        for k in range(1, n):
            if groups[k] != groups[k - 1]:
                ax.axhline(k - 0.5, color="white", lw=1.5)
                ax.axvline(k - 0.5, color="white", lw=1.5)
        ax.set_xlabel("batch (grouped by source: " + ", ".join(dict.fromkeys(groups)) + ")", fontsize=LABEL)
    else:
        ax.set_xlabel("batch (hierarchical order)", fontsize=LABEL)
    ax.set_title((title + ("\n* = batch with noise repeats" if marks else "")).strip(), fontsize=TITLE)
    return _png(fig)


def pair_groups(labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Upper-triangle pair indices (i < j) grouped as 'within A' or 'A-B' by the batches' labels."""
    n = len(labels)
    i, j = np.triu_indices(n, k=1)
    keys = [f"within {labels[a]}" if labels[a] == labels[b] else " vs ".join(sorted((labels[a], labels[b]))) for a, b in zip(i, j)]
    groups: dict[str, list[int]] = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    return {key: np.asarray(v) for key, v in sorted(groups.items())}


def distance_histogram(
    matrix: np.ndarray, labels: Sequence[str], *, value: float, ci_low: float | None, ci_high: float | None,
    noise_floor: float | None, title: str = "",
) -> bytes:
    """Histogram of the pairwise distances (split by source pair when there are several
    sources), with the coefficient, its interval and the noise floor marked."""
    matrix = np.asarray(matrix, dtype=float)
    upper = matrix[np.triu_indices(matrix.shape[0], k=1)]
    fig, ax = plt.subplots(figsize=(_WIDTH, 5.5))
    edges = np.histogram_bin_edges(np.concatenate([upper, [value] + ([noise_floor] if noise_floor is not None else [])]), bins=20)
    groups = pair_groups(labels) if len(set(labels)) > 1 else {"all pairs": np.arange(upper.size)}
    ax.hist([upper[idx] for idx in groups.values()], bins=edges, stacked=True, label=list(groups), alpha=0.85)
    if ci_low is not None and ci_high is not None and np.isfinite([ci_low, ci_high]).all():
        ax.axvspan(ci_low, ci_high, color="black", alpha=0.12, label="95% interval")
    ax.axvline(value, color="black", lw=2, label=f"coefficient {value:.4g}")
    if noise_floor is not None:
        ax.axvline(noise_floor, color="red", lw=1.5, ls="--", label=f"noise floor {noise_floor:.4g}")
    ax.set_xlabel("distance between two batches", fontsize=LABEL)
    ax.set_ylabel("pairs", fontsize=LABEL)
    ax.tick_params(labelsize=SMALL)
    ax.legend(fontsize=SMALL, loc="best")
    ax.set_title(title, fontsize=TITLE)
    return _png(fig)


def cross_heatmap(names: Sequence[str], matrix: np.ndarray, *, title: str = "") -> bytes:
    """[k, k] cross-diversity (off the diagonal) and own diversity (diagonal) of `names`; NaN
    cells (not measured) are left blank."""
    matrix = np.asarray(matrix, dtype=float)
    k = len(names)
    side = max(_WIDTH, 2.5 + 0.5 * k)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    masked = np.ma.masked_invalid(matrix)
    image = ax.imshow(masked, cmap=_CMAP)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("(cross-)diversity", fontsize=LABEL)
    bar.ax.tick_params(labelsize=SMALL)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=SMALL)
    ax.set_yticks(range(k), names, fontsize=SMALL)
    if k <= 12:
        finite = matrix[np.isfinite(matrix)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0
        for a in range(k):
            for b in range(k):
                if np.isfinite(matrix[a, b]):
                    ax.text(b, a, f"{matrix[a, b]:.3g}", ha="center", va="center", fontsize=SMALL,
                            color="white" if matrix[a, b] < middle else "black")
    ax.set_title(title or "cross-diversity (diagonal: own diversity)", fontsize=TITLE)
    return _png(fig)


def coefficient_trend(points: Sequence[TrendPoint], *, title: str = "") -> bytes:
    """The coefficient with its interval at each measurement, oldest first; points measured with
    different probe settings or weights get different markers."""
    points = sorted(points, key=lambda p: p.computed_at)
    fig, ax = plt.subplots(figsize=(_WIDTH, 4.5))
    x = np.arange(len(points))
    kinds = list(dict.fromkeys(p.probe_fingerprint for p in points))
    markers = "osD^v<>"
    for n, kind in enumerate(kinds):
        idx = [k for k, p in enumerate(points) if p.probe_fingerprint == kind]
        values = np.array([points[k].value for k in idx])
        low = np.array([points[k].ci_low if points[k].ci_low is not None else points[k].value for k in idx])
        high = np.array([points[k].ci_high if points[k].ci_high is not None else points[k].value for k in idx])
        # A row written by another tool can have its value outside its interval: bars never go negative.
        yerr = [np.clip(values - low, 0, None), np.clip(high - values, 0, None)]
        ax.errorbar(x[idx], values, yerr=yerr, fmt=markers[n % len(markers)], capsize=3,
                    label=f"probe {kind[:8]}")
    if len(points) > 1:
        ax.plot(x, [p.value for p in points], color="grey", lw=0.8, zorder=0)
    ax.set_xticks(x, [f"{p.computed_at:%Y-%m-%d}\n{p.snapshot[:8]}" for p in points], fontsize=SMALL)
    ax.set_ylabel("coefficient (95% interval)", fontsize=LABEL)
    ax.tick_params(axis="y", labelsize=SMALL)
    if len(kinds) > 1:
        ax.legend(fontsize=SMALL)
    ax.set_title(title or "coefficient over snapshots", fontsize=TITLE)
    return _png(fig)


def ranked_bars(rows: Sequence[Ranked], *, title: str = "") -> bytes:
    """Horizontal bars of every row's value, highest on top, with its interval and noise floor;
    rows with a tied group get that group's colour (and a legend entry)."""
    rows = sorted(rows, key=lambda r: (r.value, r.label))  # bottom to top: the highest on top
    fig, ax = plt.subplots(figsize=(_WIDTH, 1.5 + 0.4 * max(len(rows), 3)))
    y = np.arange(len(rows))
    values = np.array([r.value for r in rows])
    low = np.array([r.ci_low if r.ci_low is not None else r.value for r in rows])
    high = np.array([r.ci_high if r.ci_high is not None else r.value for r in rows])
    palette = plt.get_cmap("tab10")
    if any(r.group for r in rows):
        for group in sorted({r.group for r in rows}):
            idx = [k for k, r in enumerate(rows) if r.group == group]
            ax.barh(y[idx], values[idx], xerr=[(values - low)[idx], (high - values)[idx]], color=palette((group - 1) % 10),
                    capsize=3, alpha=0.85, label=f"tied group {group}")
    else:
        ax.barh(y, values, xerr=[values - low, high - values], color="tab:blue", capsize=3, alpha=0.85, label="coefficient")
    floors = [(k, r.noise_floor) for k, r in enumerate(rows) if r.noise_floor is not None]
    if floors:
        ax.scatter([f for _, f in floors], [k for k, _ in floors], marker="|", s=120, color="red", label="noise floor", zorder=3)
    ax.set_yticks(y, [r.label for r in rows], fontsize=LABEL)
    ax.tick_params(axis="x", labelsize=SMALL)
    ax.set_xlabel("diversity coefficient (95% interval)", fontsize=LABEL)
    ax.legend(fontsize=SMALL, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars, never over them
    ax.set_title(title, fontsize=TITLE)
    return _png(fig)
