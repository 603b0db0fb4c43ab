"""The asset checks of `diversity_coefficient` on a tiny materialized partition: each reported per
`dataset|probe` partition, each with a passing and a failing case, the bounds and drift checks
comparing only rows measured with the same instrument, and a check with nothing to compare with
reporting nothing instead of passing.

Rows of the bound datasets and of a previous snapshot are written into DuckDB beside the real
measurement, with values chosen around the measured one, so that pass and fail do not depend on
what a tiny random probe happens to measure."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import dagster as dg
import pytest
import yaml
from dagster._core.storage.event_log.base import PartitionKeyFilter

from divcoef_assets import check_rules, checks
from divcoef_assets.assets.coefficients import diversity_coefficient
from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.pipeline import Neighbours, bounds_first
from divcoef_assets.registry import load_registry
from divcoef_assets.storage import CoefficientRecord, ResultsStore

from .conftest import write_word_corpora

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
ASSET = dg.AssetKey("diversity_coefficient")


class Audit:
    """corpus-a, a lower- and an upper-bound dataset registered; only corpus-a is ever materialized."""

    def __init__(self, folder, probe_dir):
        write_word_corpora(folder, {"a": WORDS}, n=40, words_per_text=(4, 14))
        (folder / "registry.yaml").write_text(yaml.safe_dump({
            "default_probe": "tiny",
            "probes": {"tiny": {"model": str(probe_dir), "init": "pretrained", "seq_len": 16, "batch_size": 8, "n_batches": 4,
                                "epochs": 1, "noise_repeats": 2, "noise_batches": 1}},
            "datasets": {
                "lower": {"source": "synthetic", "kind": "lower_bound", "n_sequences": 64},
                "corpus-a": {"source": "files", "path": "a.jsonl"},
                "upper": {"source": "synthetic", "kind": "upper_bound", "n_sequences": 64},
            },
        }))
        self.defs = build_definitions(registry_path=str(folder / "registry.yaml"), data_dir=str(folder / "data"),
                                      db_path=str(folder / "r.duckdb"))
        self.store = ResultsStore(folder / "r.duckdb")
        self.instance = dg.DagsterInstance.ephemeral()
        self.instance.add_dynamic_partitions("dataset", ["lower", "corpus-a", "upper"])
        self.instance.add_dynamic_partitions("probe", ["tiny"])
        self.ran = False

    def run(self) -> tuple[CoefficientRecord, dict[str, dg.AssetCheckEvaluation]]:
        """Materialize corpus-a|tiny: the whole chain the first time, then the coefficient (with
        its checks) alone from the stored distances."""
        selection = [ASSET] if self.ran else None
        self.ran = True
        result = self.defs.resolve_job_def("audit").execute_in_process(
            partition_key=dataset_probe_key("corpus-a", "tiny"), instance=self.instance, asset_selection=selection)
        assert result.success
        return result.output_for_node("diversity_coefficient"), {e.check_name: e for e in result.get_asset_check_evaluations()}

    def add_row(self, like: CoefficientRecord, **changes) -> None:
        self.store.upsert_coefficient(dataclasses.replace(like, **changes))

    def status(self, check: str, partition: str):
        latest = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(ASSET, check)], partition_filter=PartitionKeyFilter(key=partition))
        record = latest.get(dg.AssetCheckKey(ASSET, check))
        return record.status.value if record else None


@pytest.fixture()
def audit(tmp_path, tiny_gpt2_dir):
    return Audit(tmp_path, tiny_gpt2_dir)


def test_checks_are_declared_per_partition_and_a_check_without_reference_reports_nothing(audit):
    record, evaluations = audit.run()
    specs = list(diversity_coefficient.check_specs)
    assert len(specs) == 3 and all(spec.partitions_def == diversity_coefficient.partitions_def for spec in specs)
    # First snapshot, bounds not audited: only the noise check has something to compare.
    assert set(evaluations) == {checks.NOISE_SHARE}
    assert evaluations[checks.NOISE_SHARE].partition == "corpus-a|tiny"
    assert audit.status(checks.NOISE_SHARE, "corpus-a|tiny") in ("SUCCEEDED", "FAILED")
    assert audit.status(checks.NOISE_SHARE, "lower|tiny") is None  # tracked per partition
    assert audit.status(checks.COEFFICIENT_BETWEEN_BOUNDS, "corpus-a|tiny") not in ("SUCCEEDED", "FAILED")
    assert audit.status(checks.COEFFICIENT_DRIFT, "corpus-a|tiny") not in ("SUCCEEDED", "FAILED")


def test_noise_check_fails_above_the_share_and_passes_below(audit, monkeypatch):
    monkeypatch.setattr(check_rules, "MAX_NOISE_SHARE", 0.0)
    record, evaluations = audit.run()
    failed = evaluations[checks.NOISE_SHARE]
    assert record.noise_floor is not None and record.noise_floor > 0
    assert not failed.passed
    assert "corpus-a" in failed.description and f"{record.noise_floor:.4g}" in failed.description and "above" in failed.description
    assert audit.status(checks.NOISE_SHARE, "corpus-a|tiny") == "FAILED"
    monkeypatch.setattr(check_rules, "MAX_NOISE_SHARE", 1e9)
    _, evaluations = audit.run()
    assert evaluations[checks.NOISE_SHARE].passed
    assert audit.status(checks.NOISE_SHARE, "corpus-a|tiny") == "SUCCEEDED"


def test_bounds_check_compares_only_rows_of_the_same_probe_fingerprint(audit):
    record, _ = audit.run()
    v = record.value
    audit.add_row(record, dataset="lower", snapshot_fingerprint="lo", value=v / 2)
    _, evaluations = audit.run()
    assert checks.COEFFICIENT_BETWEEN_BOUNDS not in evaluations  # one bound only: not evaluated, not passed

    audit.add_row(record, dataset="upper", snapshot_fingerprint="up", value=min(1.0, v * 2))
    _, evaluations = audit.run()
    passed = evaluations[checks.COEFFICIENT_BETWEEN_BOUNDS]
    assert passed.passed and passed.partition == "corpus-a|tiny"
    assert "between lower" in passed.description and "upper" in passed.description

    later = record.computed_at + timedelta(days=1)
    audit.add_row(record, dataset="upper", snapshot_fingerprint="up2", value=v / 4, computed_at=later)
    # Newer upper-bound rows that would pass, measured with another probe setting or distance: ignored.
    audit.add_row(record, dataset="upper", snapshot_fingerprint="up3", value=1.0, probe_fingerprint="other", computed_at=later + timedelta(days=1))
    audit.add_row(record, dataset="upper", snapshot_fingerprint="up4", value=1.0, distance="euclidean", computed_at=later + timedelta(days=1))
    _, evaluations = audit.run()
    failed = evaluations[checks.COEFFICIENT_BETWEEN_BOUNDS]
    assert not failed.passed
    assert f"corpus-a = {v:.4g}" in failed.description and f"above the upper bound upper = {v / 4:.4g}" in failed.description
    assert failed.metadata["upper_bound"].value == pytest.approx(v / 4)
    assert audit.status(checks.COEFFICIENT_BETWEEN_BOUNDS, "corpus-a|tiny") == "FAILED"


def test_drift_check_fails_on_a_move_beyond_the_interval_and_passes_within(audit):
    record, _ = audit.run()
    half = (record.ci_high - record.ci_low) / 2
    assert half > 0
    earlier = record.computed_at - timedelta(days=2)
    audit.add_row(record, snapshot_fingerprint="old", value=record.value + half / 2, computed_at=earlier)
    _, evaluations = audit.run()
    passed = evaluations[checks.COEFFICIENT_DRIFT]
    assert passed.passed and passed.partition == "corpus-a|tiny" and "within" in passed.description

    far = record.value + 3 * half if record.value + 3 * half <= 1 else record.value - 3 * half
    audit.add_row(record, snapshot_fingerprint="older", value=far, computed_at=earlier + timedelta(days=1))
    # A later previous snapshot measured with another distance would pass: it is not compared.
    audit.add_row(record, snapshot_fingerprint="other-distance", value=record.value, distance="euclidean",
                  computed_at=earlier + timedelta(days=1, hours=1))
    _, evaluations = audit.run()
    failed = evaluations[checks.COEFFICIENT_DRIFT]
    assert not failed.passed
    assert "corpus-a" in failed.description and f"{far:.4g} (snapshot older" in failed.description
    assert "more than the interval half-width" in failed.description
    assert audit.status(checks.COEFFICIENT_DRIFT, "corpus-a|tiny") == "FAILED"


def test_checks_on_their_own_numbers():
    def record(value, noise=0.01, lo=None, hi=None, dataset="d", estimator="e"):
        return CoefficientRecord(dataset=dataset, probe="p", snapshot_fingerprint="ab", probe_fingerprint="cd", value=value,
                                 ci_low=lo, ci_high=hi, noise_floor=noise, n_batches=5, n_pairs=10, estimator_fingerprint=estimator)

    near = Neighbours(previous=record(0.10), lower_name="lower", upper_name="upper",
                      lower_bound=record(0.02, dataset="lower"), upper_bound=record(0.2, dataset="upper"))
    assert check_rules.check_bounds(record(0.1), near).passed
    assert not check_rules.check_bounds(record(0.01), near).passed
    assert isinstance(check_rules.check_bounds(record(0.1, dataset="lower"), near), checks.NotEvaluated)
    unregistered = dataclasses.replace(near, upper_name=None, upper_bound=None)
    assert "no upper_bound dataset" in check_rules.check_bounds(record(0.1), unregistered).reason
    assert isinstance(check_rules.check_drift(record(0.1), near), checks.NotEvaluated)  # no interval
    assert isinstance(check_rules.check_noise(record(0.1, noise=None), near), checks.NotEvaluated)
    # the lower-bound calibration set is all noise by design: exempt, and the description says so
    assert not check_rules.check_noise(record(0.01, noise=0.01), near).passed
    exempt = check_rules.check_noise(record(0.01, noise=0.01, dataset="lower"), near)
    assert isinstance(exempt, checks.NotEvaluated) and "calibration set" in exempt.reason
    assert "lower_bound dataset (a calibration set" in check_rules.DESCRIPTIONS[checks.NOISE_SHARE]
    verdicts = [v for v in check_rules.evaluate(record(0.1), near) if not isinstance(v, checks.NotEvaluated)]
    assert verdicts and all(list(v.metadata)[:2] == ["dataset", "probe"] and v.metadata["dataset"] == "d" for v in verdicts)


def test_the_audit_order_puts_the_bound_datasets_first(tmp_path, tiny_gpt2_dir):
    Audit(tmp_path, tiny_gpt2_dir)
    registry = load_registry(tmp_path / "registry.yaml")
    assert bounds_first(registry, ["corpus-a", "upper", "lower"]) == ["upper", "lower", "corpus-a"]
    assert bounds_first(registry, ["corpus-a"]) == ["corpus-a"]


def test_only_checks_not_evaluated_are_left_out_of_the_missing_outputs_line():
    import logging

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("dagster", logging.INFO, __file__, 1, message, None, None)

    drop = checks._DropNotEvaluated(frozenset({"diversity_coefficient_drift", "diversity_coefficient_noise"}))
    assert not drop.filter(record("op 'diversity_coefficient' did not yield or return expected outputs {'diversity_coefficient_drift'}."))
    assert drop.filter(record("op 'diversity_coefficient' did not yield or return expected outputs {'diversity_coefficient_drift', 'result'}."))
    assert drop.filter(record("check drift_from_previous_snapshot not evaluated: first snapshot"))
