"""The leaderboard: which corpus is most diverse, and which leads are real.

Given each dataset's coefficient with its delete-one-batch jackknife standard error (the
`stderr` of `core.coefficient.diversity_from_matrix`), this module orders the datasets, splits
the real corpora from the calibration sets, finds the groups that are statistically tied and
places every corpus between the lower- and upper-bound datasets on a 0-1 scale.

Pairwise test of a difference. Two datasets' batches are drawn independently, so the variance of
the difference of their coefficients is the sum of the two jackknife variances:

    d = v_a - v_b,   se_d = sqrt(se_a^2 + se_b^2),

with Welch-Satterthwaite degrees of freedom from (n_a - 1) and (n_b - 1). The two are *tied*
when |d| <= t_{df, 0.975} * se_d, i.e. the 95% interval of the difference contains 0 (no
correction for multiple comparisons: a tie is "not shown to differ", the cautious reading).

Tied groups. Walking down the ranking (most diverse first), a group starts at the highest
corpus not yet in a group and takes in every following corpus tied with that group's leader.
So a group is the leader and everything not shown to be below it; a corpus may also be tied
with members of the group above, which the per-corpus `tied_with` lists.

Position between the bounds: (v - lower) / (upper - lower), the lower bound at 0 and the upper
bound at 1; outside [0, 1] when a value lies outside the bounds. No Dagster imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from divcoef_assets.core.coefficient import student_t_quantile

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Entry:
    """One dataset's coefficient as the leaderboard reads it."""

    dataset: str
    value: float
    stderr: float  # jackknife over batches; NaN when undefined
    ci_low: float
    ci_high: float
    n_batches: int
    kind: str  # "corpus" (real text), or a calibration kind: "lower_bound", "upper_bound", "ginc", "mixture", ...


@dataclass(frozen=True)
class Difference:
    """The test of v_a - v_b."""

    a: str
    b: str
    difference: float
    stderr: float
    df: float
    half_width: float  # of the difference's 95% interval
    tied: bool


@dataclass(frozen=True)
class Row:
    rank: int
    entry: Entry
    group: int  # 1 = the leading group; 0 for calibration sets
    tied_with: tuple[str, ...]
    position: float | None  # between the bounds, 0 = lower, 1 = upper; None without both bounds


@dataclass(frozen=True)
class Leaderboard:
    corpora: tuple[Row, ...]  # real corpora, most diverse first
    calibration: tuple[Row, ...]  # bounds, GINC, mixtures, most diverse first
    lower: Entry | None
    upper: Entry | None

    def groups(self) -> list[list[str]]:
        """The tied groups of the real corpora, leading group first."""
        out: list[list[str]] = []
        for row in self.corpora:
            if row.group > len(out):
                out.append([])
            out[row.group - 1].append(row.entry.dataset)
        return out


def difference(a: Entry, b: Entry, confidence: float = CONFIDENCE) -> Difference:
    """Two-sample test of a's coefficient minus b's from their jackknife errors (independent batches)."""
    d = a.value - b.value
    var_a, var_b = a.stderr**2, b.stderr**2
    if not (math.isfinite(var_a) and math.isfinite(var_b)) or a.n_batches < 2 or b.n_batches < 2:
        return Difference(a.dataset, b.dataset, d, math.nan, math.nan, math.nan, tied=True)
    se = math.sqrt(var_a + var_b)
    denominator = var_a**2 / (a.n_batches - 1) + var_b**2 / (b.n_batches - 1)
    df = max(1.0, (var_a + var_b) ** 2 / denominator) if denominator > 0 else float(min(a.n_batches, b.n_batches) - 1)
    half = student_t_quantile((1 + confidence) / 2, df) * se
    return Difference(a.dataset, b.dataset, d, se, df, half, tied=abs(d) <= half)


def position(value: float, lower: Entry | None, upper: Entry | None) -> float | None:
    if lower is None or upper is None or upper.value <= lower.value:
        return None
    return (value - lower.value) / (upper.value - lower.value)


def ordered(entries: Sequence[Entry]) -> list[Entry]:
    """Most diverse first; ties in value by name, so every view orders alike."""
    return sorted(entries, key=lambda e: (-e.value, e.dataset))


def build(entries: Sequence[Entry], confidence: float = CONFIDENCE) -> Leaderboard:
    """The leaderboard of `entries` (one per dataset, all measured with one probe)."""
    names = [e.dataset for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"one entry per dataset, got {sorted(n for n in set(names) if names.count(n) > 1)} more than once")
    lower = next((e for e in entries if e.kind == "lower_bound"), None)
    upper = next((e for e in entries if e.kind == "upper_bound"), None)
    corpora = ordered([e for e in entries if e.kind == "corpus"])
    tests = {(a.dataset, b.dataset): difference(a, b, confidence) for a in corpora for b in corpora if a is not b}
    group_of: dict[str, int] = {}
    for k, leader in enumerate(corpora):
        if leader.dataset in group_of:
            continue
        group = len(set(group_of.values())) + 1
        group_of[leader.dataset] = group
        for other in corpora[k + 1:]:
            if other.dataset not in group_of and tests[(leader.dataset, other.dataset)].tied:
                group_of[other.dataset] = group
    rows = tuple(
        Row(rank, e, group_of[e.dataset], tuple(o.dataset for o in corpora if o is not e and tests[(e.dataset, o.dataset)].tied),
            position(e.value, lower, upper))
        for rank, e in enumerate(corpora, start=1)
    )
    calibration = tuple(Row(rank, e, 0, (), position(e.value, lower, upper))
                        for rank, e in enumerate(ordered([e for e in entries if e.kind != "corpus"]), start=1))
    return Leaderboard(rows, calibration, lower, upper)


def kind_of(source_type: str, spec: dict) -> str:
    """A registered dataset's leaderboard kind from its source type and spec (as DuckDB `datasets`
    stores them): "corpus" for text read from files, Hugging Face or DuckDB; the synthetic kind
    ("lower_bound", "upper_bound", "ginc") or "mixture" for the calibration sets."""
    if source_type == "synthetic":
        return str(spec.get("kind", "synthetic"))
    if source_type == "mixture":
        return "mixture"
    return "corpus"
