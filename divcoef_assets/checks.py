"""Asset checks of `diversity_coefficient`, tracked per `dataset|probe` partition: the rules of
`check_rules` (what each check means, when it is not evaluated) as Dagster check specs and results.

A check that has nothing to compare with, or that a calibration set is exempt from, yields no
result, so the UI shows it as not evaluated for that partition rather than passed.

Dagster logs every selected check an op did not report as "did not yield or return expected
outputs"; for a check that was not evaluated (logged with its reason) that line is a false alarm,
so `quiet_not_evaluated` drops it for exactly those checks.
"""

from __future__ import annotations

import ast
import logging
import re
import warnings

import dagster as dg

from divcoef_assets import check_rules
from divcoef_assets.check_rules import COEFFICIENT_BETWEEN_BOUNDS, COEFFICIENT_DRIFT, MAX_NOISE_SHARE, NOISE_SHARE, NotEvaluated
from divcoef_assets.pipeline import Neighbours
from divcoef_assets.storage import CoefficientRecord

__all__ = ["COEFFICIENT_BETWEEN_BOUNDS", "COEFFICIENT_DRIFT", "MAX_NOISE_SHARE", "NOISE_SHARE", "NotEvaluated", "check_specs", "evaluate", "quiet_not_evaluated"]


def check_specs(asset: str, partitions_def: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """The three checks, each partitioned like the asset so their status is kept per partition."""
    with warnings.catch_warnings():
        # Partitioned check specs are a preview feature of Dagster 1.13; the warning is its label.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [dg.AssetCheckSpec(name, asset=asset, description=text, partitions_def=partitions_def)
                for name, text in check_rules.DESCRIPTIONS.items()]


def evaluate(record: CoefficientRecord, near: Neighbours) -> list[dg.AssetCheckResult | NotEvaluated]:
    """Every check of a new coefficient, in declaration order, as Dagster results (WARN severity)."""
    return [outcome if isinstance(outcome, NotEvaluated) else dg.AssetCheckResult(
        check_name=outcome.check_name, passed=outcome.passed, severity=dg.AssetCheckSeverity.WARN,
        metadata=outcome.metadata, description=outcome.description) for outcome in check_rules.evaluate(record, near)]


_OMITTED = re.compile(r"did not yield or return expected outputs (\{[^}]*\})")


class _DropNotEvaluated(logging.Filter):
    """Drops Dagster's "did not yield or return expected outputs {...}" line when every output it
    names is a check that was not evaluated; any other omitted output is still logged."""

    def __init__(self, outputs: frozenset[str]):
        super().__init__()
        self.outputs = outputs

    def filter(self, record: logging.LogRecord) -> bool:
        found = _OMITTED.search(str(record.msg))
        if found is None:
            return True
        try:
            named = ast.literal_eval(found[1])
        except (ValueError, SyntaxError):
            return True
        return not (isinstance(named, set) and named <= self.outputs)


def quiet_not_evaluated(context: dg.AssetExecutionContext, check_names: set[str]) -> None:
    """Call at the end of the op, with the selected checks that were not evaluated."""
    if check_names:
        outputs = frozenset(context.assets_def.get_output_name_for_asset_check_key(dg.AssetCheckKey(context.asset_key, name))
                            for name in check_names)
        context.log.addFilter(_DropNotEvaluated(outputs))
