"""The rules of the asset checks of `diversity_coefficient` (`checks` turns them into Dagster check
results; `report` shows them): properties of a new coefficient that the computation
does not guarantee, tracked per `dataset|probe` partition.

Properties that upstream code already guarantees (finite embeddings: the engine raises on NaN; a
symmetric zero-diagonal matrix: `pdist` builds one; a coefficient in [0, 1]: the distance is
bounded) are not checked: a check that cannot fail says nothing. What is checked can fail on
real data:

- `noise_floor_below_a_third`: the noise floor is at most a third of the coefficient (else the
  number is mostly estimator noise); not evaluated for the registry's lower_bound dataset, a
  calibration set whose coefficient is all noise by design;
- `between_bound_datasets`: the coefficient lies between the registry's lower- and upper-bound
  datasets' coefficients;
- `drift_from_previous_snapshot`: it moved by no more than its interval's half-width since the
  dataset's previous snapshot.

Bounds and drift compare only rows measured with the same instrument (`pipeline.comparable`: same
probe settings and weights, estimator and distance).

A check that has nothing to compare with yields no result, so the UI shows it as not evaluated
for that partition rather than passed: no noise repeats configured, a first snapshot, no interval,
or a bound dataset not yet audited with these settings. Audit order therefore never turns a
bounds check into a pass: it is evaluated against both bounds or not at all (a check evaluated
against a missing bound would pass whatever the value). `divcoef audit` audits the bound datasets
first so that every other dataset of the run is evaluated; a dataset audited before its bounds in
another run keeps "not evaluated" until it is audited again.

Each result's description names the dataset and the numbers that decided it; its metadata holds
the same numbers and the dataset and probe, so it reads the same on any partition's page. No
Dagster imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from divcoef_assets.pipeline import Neighbours
from divcoef_assets.storage import CoefficientRecord

NOISE_SHARE = "noise_floor_below_a_third"
COEFFICIENT_BETWEEN_BOUNDS = "between_bound_datasets"
COEFFICIENT_DRIFT = "drift_from_previous_snapshot"
MAX_NOISE_SHARE = 1 / 3

DESCRIPTIONS = {
    NOISE_SHARE: "Fails when the noise floor (mean distance between repeated embeddings of one batch) is above "
    "a third of the coefficient: the number is then mostly estimator noise. Not evaluated without noise repeats, nor for "
    "the registry's lower_bound dataset (a calibration set: one repeated token, whose coefficient is the noise floor "
    "by design).",
    COEFFICIENT_BETWEEN_BOUNDS: "Fails when the coefficient is below the registry's lower_bound dataset's or above its "
    "upper_bound dataset's, both measured with the same probe settings, weights, estimator and distance. Not "
    "evaluated until both bound datasets have been audited with those settings, nor for the bound datasets.",
    COEFFICIENT_DRIFT: "Fails when the coefficient moved by more than its 95% interval's half-width since the "
    "dataset's previous snapshot measured with the same probe settings, weights, estimator and distance. Not "
    "evaluated on a first snapshot or without an interval.",
}


@dataclass(frozen=True)
class Verdict:
    """An evaluated check: passed or failed, the sentence that says why, and its numbers."""

    check_name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NotEvaluated:
    """A check with nothing to compare with, and why (logged; no result is reported)."""

    check_name: str
    reason: str


Outcome = Verdict | NotEvaluated


def _g(x: float) -> str:
    return f"{x:.4g}"


def check_noise(record: CoefficientRecord, near: Neighbours) -> Outcome:
    if record.dataset == near.lower_name:
        return NotEvaluated(NOISE_SHARE, f"{record.dataset} is the lower_bound calibration set: its coefficient is the noise floor by design")
    if record.noise_floor is None:
        return NotEvaluated(NOISE_SHARE, f"{record.dataset}: no noise floor measured (noise_repeats: 0)")
    share = record.noise_floor / record.value if record.value > 0 else math.inf
    passed = share <= MAX_NOISE_SHARE
    return Verdict(
        check_name=NOISE_SHARE, passed=bool(passed),
        metadata={"value": record.value, "noise_floor": record.noise_floor, "noise_share": share if math.isfinite(share) else -1.0,
                  "max_noise_share": MAX_NOISE_SHARE},
        description=(
            f"{record.dataset}: noise floor {_g(record.noise_floor)} is {share:.2f} of the coefficient {_g(record.value)}"
            + ("" if passed else f", above {MAX_NOISE_SHARE:.2f}: use a lower-variance estimator or larger batches")
        ),
    )


def check_bounds(record: CoefficientRecord, near: Neighbours) -> Outcome:
    fp = record.probe_fingerprint[:12]
    if record.dataset in (near.lower_name, near.upper_name):
        return NotEvaluated(COEFFICIENT_BETWEEN_BOUNDS, f"{record.dataset} is itself a bound dataset")
    unregistered = [kind for kind, name in (("lower_bound", near.lower_name), ("upper_bound", near.upper_name)) if name is None]
    if unregistered:
        return NotEvaluated(COEFFICIENT_BETWEEN_BOUNDS, f"the registry has no {' or '.join(unregistered)} dataset")
    lower, upper = near.lower_bound, near.upper_bound
    if lower is None or upper is None:
        missing = [name for name, row in ((near.lower_name, lower), (near.upper_name, upper)) if row is None]
        return NotEvaluated(COEFFICIENT_BETWEEN_BOUNDS, f"bound dataset(s) {', '.join(map(str, missing))} not audited yet "
                            f"with probe '{record.probe}' at fingerprint {fp}; audit them, then {record.dataset} again")
    below, above = record.value < lower.value, record.value > upper.value
    verdict = (f"below the lower bound {lower.dataset} = {_g(lower.value)}" if below
               else f"above the upper bound {upper.dataset} = {_g(upper.value)}" if above
               else f"between {lower.dataset} = {_g(lower.value)} and {upper.dataset} = {_g(upper.value)}")
    return Verdict(
        check_name=COEFFICIENT_BETWEEN_BOUNDS, passed=not (below or above),
        metadata={"value": record.value, "lower_bound": lower.value, "upper_bound": upper.value,
                  "lower_bound_dataset": lower.dataset, "upper_bound_dataset": upper.dataset, "probe_fingerprint": record.probe_fingerprint},
        description=f"{record.dataset} = {_g(record.value)} is {verdict} (probe '{record.probe}', fingerprint {fp})",
    )


def check_drift(record: CoefficientRecord, near: Neighbours) -> Outcome:
    previous = near.previous
    if previous is None:
        return NotEvaluated(COEFFICIENT_DRIFT, f"{record.dataset}: first snapshot measured with these probe settings")
    if record.ci_low is None or record.ci_high is None:
        return NotEvaluated(COEFFICIENT_DRIFT, f"{record.dataset}: no interval to compare the change with")
    half = (record.ci_high - record.ci_low) / 2
    moved = abs(record.value - previous.value)
    passed = moved <= half
    return Verdict(
        check_name=COEFFICIENT_DRIFT, passed=bool(passed),
        metadata={"value": record.value, "previous": previous.value, "moved": moved, "interval_half_width": half,
                  "previous_snapshot": previous.snapshot_fingerprint, "snapshot": record.snapshot_fingerprint},
        description=(f"{record.dataset}: {_g(previous.value)} (snapshot {previous.snapshot_fingerprint[:12]}) -> {_g(record.value)} "
                     f"(snapshot {record.snapshot_fingerprint[:12]}): moved {_g(moved)}, "
                     + ("within" if passed else "more than") + f" the interval half-width {_g(half)}"),
    )


def evaluate(record: CoefficientRecord, near: Neighbours) -> list[Outcome]:
    """Every check of a new coefficient, in declaration order."""
    return [_with_keys(outcome, record) for outcome in (check_noise(record, near), check_bounds(record, near), check_drift(record, near))]


def _with_keys(outcome: Outcome, record: CoefficientRecord) -> Outcome:
    """The verdict's metadata with the dataset and probe it is about first."""
    if isinstance(outcome, NotEvaluated):
        return outcome
    return Verdict(outcome.check_name, outcome.passed, outcome.description,
                   {"dataset": record.dataset, "probe": record.probe, **outcome.metadata})
