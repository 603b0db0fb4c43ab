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


def format_leaderboard(board, noise: dict[str, float | None], *, title: str) -> str:
    """A `core.leaderboard.Leaderboard` as two plain-text blocks, the order of the UI and the report:
    the real corpora (rank, tied group, position between the bounds), then the calibration sets."""
    rows = [*board.corpora, *board.calibration]
    width = max([len("dataset"), *(len(r.entry.dataset) for r in rows)]) + 2

    def header(label: str) -> list[str]:
        text = (f"{'rank':>4} {'dataset':<{width}} {'diversity':>9} {'95% interval':>17} {label:>12} {'position':>8} "
                f"{'noise floor':>11} {'batches':>7}")
        return [text, "-" * len(text)]

    def line(r, first: str, label: str) -> str:
        e = r.entry
        interval = f"[{e.ci_low:.4f}, {e.ci_high:.4f}]" if e.ci_low == e.ci_low and e.ci_high == e.ci_high else "-"
        where = "-" if r.position is None else f"{r.position:.2f}"
        return (f"{first:>4} {e.dataset:<{width}} {e.value:>9.4f} {interval:>17} {label:>12} {where:>8} "
                f"{_number(noise.get(e.dataset)):>11} {e.n_batches:>7}")

    out = [title, "Real corpora, most diverse first (tied group: not shown to differ from the group's first corpus; "
           "position: 0 = lower bound, 1 = upper bound)", *header("tied group")]
    out += [line(r, str(r.rank), f"group {r.group}") for r in board.corpora] or ["  (no real corpus audited)"]
    out += ["", "Calibration sets (synthetic bounds, GINC, mixtures of the corpora), most diverse first", *header("kind")]
    out += [line(r, str(r.rank), r.entry.kind) for r in board.calibration] or ["  (none audited)"]
    return "\n".join(out)
