"""Asset checks: properties of a new coefficient that the computation does not guarantee.

Each function returns a `dg.AssetCheckResult` for the partition just materialized. Properties
that upstream code already guarantees (finite embeddings: the engine raises on NaN; a symmetric
zero-diagonal matrix: `pdist` builds one; a coefficient in [0, 1]: the distance is bounded) are
not checked: a check that cannot fail says nothing. What is checked can fail on real data:

- the noise floor is small against the coefficient (else the number is mostly estimator noise);
- the coefficient lies between the probe's lower- and upper-bound datasets;
- it moved by no more than its interval since the dataset's previous snapshot.

Bounds and drift compare only rows measured with the same probe settings and weights.
"""

from __future__ import annotations

import math

import dagster as dg

from divcoef_assets.pipeline import Neighbours
from divcoef_assets.storage import CoefficientRecord

NOISE_SHARE = "noise_floor_below_a_third"
COEFFICIENT_BETWEEN_BOUNDS = "between_bound_datasets"
COEFFICIENT_DRIFT = "drift_from_previous_snapshot"
MAX_NOISE_SHARE = 1 / 3


def check_noise(record: CoefficientRecord) -> dg.AssetCheckResult:
    if record.noise_floor is None:
        return dg.AssetCheckResult(check_name=NOISE_SHARE, passed=True, metadata={"noise_floor": "not measured"},
                                   description="no noise repeats configured (noise_repeats: 0)")
    share = record.noise_floor / record.value if record.value > 0 else math.inf
    passed = share <= MAX_NOISE_SHARE
    return dg.AssetCheckResult(
        check_name=NOISE_SHARE, passed=bool(passed), severity=dg.AssetCheckSeverity.WARN,
        metadata={"value": record.value, "noise_floor": record.noise_floor, "noise_share": share if math.isfinite(share) else -1.0},
        description=(
            f"{record.dataset}: noise floor {record.noise_floor:.4g} is {share:.2f} of the coefficient {record.value:.4g}"
            + ("" if passed else f" (above {MAX_NOISE_SHARE:.2f}: use a lower-variance estimator or larger batches)")
        ),
    )


def check_bounds(record: CoefficientRecord, near: Neighbours) -> dg.AssetCheckResult:
    known = {k: v for k, v in (("lower_bound", near.lower_bound), ("upper_bound", near.upper_bound)) if v is not None}
    below = near.lower_bound is not None and record.value < near.lower_bound[1]
    above = near.upper_bound is not None and record.value > near.upper_bound[1]
    if not known:
        text = f"{record.dataset}: no bound dataset audited with these probe settings yet; nothing to compare"
    else:
        parts = [f"{kind} {name} = {value:.4g}" for kind, (name, value) in known.items()]
        verdict = "below the lower bound" if below else "above the upper bound" if above else "within"
        text = f"{record.dataset} = {record.value:.4g}: {verdict} ({', '.join(parts)})"
    return dg.AssetCheckResult(
        check_name=COEFFICIENT_BETWEEN_BOUNDS, passed=not (below or above), severity=dg.AssetCheckSeverity.WARN,
        metadata={"value": record.value, **{k: v[1] for k, v in known.items()}, "bounds_known": len(known)},
        description=text,
    )


def check_drift(record: CoefficientRecord, near: Neighbours) -> dg.AssetCheckResult:
    if near.previous is None:
        return dg.AssetCheckResult(check_name=COEFFICIENT_DRIFT, passed=True, metadata={"previous": "none"},
                                   description=f"{record.dataset}: first snapshot measured with these probe settings")
    half = (record.ci_high - record.ci_low) / 2 if record.ci_high is not None and record.ci_low is not None else math.nan
    limit = half if math.isfinite(half) else math.inf
    moved = abs(record.value - near.previous)
    return dg.AssetCheckResult(
        check_name=COEFFICIENT_DRIFT, passed=bool(moved <= limit), severity=dg.AssetCheckSeverity.WARN,
        metadata={"value": record.value, "previous": near.previous, "moved": moved, "interval_half_width": half if math.isfinite(half) else -1.0},
        description=f"{record.dataset}: {near.previous:.4g} -> {record.value:.4g} (moved {moved:.4g}, interval half-width {half:.4g})",
    )
