"""The markdown summary of one coefficient shown in the Dagster UI: a table of the numbers and a
histogram of the pairwise batch distances, the image embedded as a PNG data URI.

Dagster 1.13 shows a markdown metadata value behind a "[Show Markdown]" button on the asset page;
the dialog it opens renders markdown tables and data-URI images (file or web URLs would need a
server the UI can reach; a data URI needs none). No Dagster imports here.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoefficientSummary:
    """What the table shows; None where a number was not measured."""

    dataset: str
    probe: str
    value: float
    ci_low: float | None
    ci_high: float | None
    noise_floor: float | None
    noise_corrected: float | None
    n_batches: int
    snapshot: str


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare "|" would split the cell


def histogram_png(distances: np.ndarray, value: float, noise_floor: float | None) -> bytes:
    """Histogram of the pairwise distances, the coefficient (their mean) and the noise floor marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), dpi=80)
    ax = fig.add_subplot()
    ax.hist(distances, bins=max(5, min(40, distances.size // 2)), color="#4c72b0")
    ax.axvline(value, color="#c44e52", label=f"coefficient {value:.4g}")
    if noise_floor is not None:
        ax.axvline(noise_floor, color="#55a868", linestyle="--", label=f"noise floor {noise_floor:.4g}")
    ax.set_xlabel("distance between two batches")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def coefficient_markdown(summary: CoefficientSummary, distances: np.ndarray) -> str:
    """The table, then the histogram of `distances` (the upper triangle of the distance matrix)."""
    interval = "—" if summary.ci_low is None or summary.ci_high is None else f"[{_g(summary.ci_low)}, {_g(summary.ci_high)}]"
    header = ("dataset", "probe", "value", "95% interval", "noise floor", "noise-corrected", "batches", "snapshot")
    row = (summary.dataset, summary.probe, _g(summary.value), interval, _g(summary.noise_floor), _g(summary.noise_corrected),
           str(summary.n_batches), summary.snapshot[:12])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(_cell(c) for c in row) + " |"]
    png = base64.b64encode(histogram_png(np.asarray(distances, dtype=float), summary.value, summary.noise_floor)).decode()
    return "\n".join(lines) + f"\n\n![pairwise distances](data:image/png;base64,{png})\n"
