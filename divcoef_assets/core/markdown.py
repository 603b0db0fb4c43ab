"""Numbers and tables as people read them: 4 significant digits, intervals, markdown tables.

One formatter for every place a number is shown (Dagster metadata, the HTML report, the README
table), so `0.047412345678901234` is always written `0.04741` and an interval always
`[0.04412, 0.05071]`. Images go into markdown as `data:` URIs, which Dagster's metadata viewer
and the HTML report both render without fetching anything. No Dagster imports.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass


def sig(value: float | int | None, digits: int = 4) -> str:
    """`value` to `digits` significant digits; '-' for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}g}"


def rounded(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits, still a float (for typed metadata)."""
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


def interval(low: float | None, high: float | None) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "-"
    return f"[{sig(low)}, {sig(high)}]"


def text(value: object) -> str:
    """A table cell as text: numbers by `sig`, anything else as str on one line."""
    out = sig(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    return out.replace("\n", " ")


def _cell(value: object) -> str:
    return text(value).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numbers formatted by `sig`, pipes escaped."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Table:
    """A table to show: a header and rows of numbers or text (formatted when shown)."""

    header: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]

    def markdown(self) -> str:
        return table(self.header, self.rows)

    def text_rows(self) -> list[list[str]]:
        return [[text(v) for v in row] for row in self.rows]


def image(title: str, png: bytes) -> str:
    """A PNG as a markdown image with a base64 `data:` URI (no file, no network)."""
    alt = title.replace("[", "(").replace("]", ")")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
