"""The one printer of coefficient tables, for `divcoef diversity/cross` and `divcoef audit`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableRow:
    label: str
    value: float
    ci_low: float | None
    ci_high: float | None
    noise_floor: float | None
    noise_corrected: float | None
    n_batches: int


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(rows: list[TableRow], *, label: str = "dataset", title: str | None = None) -> str:
    width = max([len(label), *(len(r.label) for r in rows)]) + 2
    header = f"{label:<{width}} {'diversity':>9} {'95% interval':>17} {'noise floor':>11} {'corrected':>9} {'batches':>7}"
    lines = ([title] if title else []) + [header, "-" * len(header)]
    for r in rows:
        interval = f"[{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low is not None and r.ci_high is not None else "-"
        lines.append(f"{r.label:<{width}} {r.value:>9.4f} {interval:>17} {_number(r.noise_floor):>11} "
                     f"{_number(r.noise_corrected):>9} {r.n_batches:>7}")
    return "\n".join(lines)
