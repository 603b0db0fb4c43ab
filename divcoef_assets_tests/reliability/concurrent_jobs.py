"""Audit jobs for the concurrency tests, configured from the environment so that other
processes (a second run, the multiprocess executor's step processes) rebuild the same job.

    DAGSTER_HOME=... DIVCOEF_REGISTRY=... DIVCOEF_DATA_DIR=... DIVCOEF_DB=... \\
        python -m divcoef_assets_tests.reliability.concurrent_jobs <dataset> <probe>

runs the audit of one partition in process against the persistent instance in DAGSTER_HOME
and prints a JSON line with the outcome.
"""

from __future__ import annotations

import json
import os
import sys

import dagster as dg

from divcoef_assets.definitions import build_definitions
from divcoef_assets.jobs import AUDIT_ASSETS
from divcoef_assets.partitions import dataset_probe_key, dataset_probe_partitions


def _definitions(**job_options) -> dg.Definitions:
    base = build_definitions(
        registry_path=os.environ["DIVCOEF_REGISTRY"], data_dir=os.environ["DIVCOEF_DATA_DIR"], db_path=os.environ["DIVCOEF_DB"]
    )
    job = dg.define_asset_job("audit", selection=dg.AssetSelection.assets(*AUDIT_ASSETS),
                              partitions_def=dataset_probe_partitions, **job_options)
    return dg.Definitions(assets=base.assets, jobs=[job], resources=base.resources)


def multiprocess_audit_job() -> dg.JobDefinition:
    """The audit job on Dagster's multiprocess executor (a reconstructable target). Steps start
    from a forkserver that has imported the package once, so each step skips the imports."""
    executor = dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["divcoef_assets.definitions"]}}}
    )
    return _definitions(executor_def=executor).resolve_job_def("audit")


def partition_tags(dataset: str, probe: str) -> dict[str, str]:
    return {"dagster/partition": str(dataset_probe_key(dataset, probe)),
            "dagster/partition/dataset": dataset, "dagster/partition/probe": probe}


def run_partition(dataset: str, probe: str, env: dict[str, str] | None = None, result_path: str | None = None) -> int:
    """Audit one partition in this process (the target of the concurrent processes); the outcome
    goes to stdout and, when given, to `result_path` as JSON."""
    os.environ.update(env or {})
    job = _definitions().resolve_job_def("audit")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(partition_key=dataset_probe_key(dataset, probe), instance=instance, raise_on_error=False)
    errors = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            errors.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    outcome = json.dumps({"dataset": dataset, "success": result.success, "errors": errors})
    print(outcome, flush=True)
    if result_path:
        with open(result_path, "w", encoding="utf-8") as fh:
            fh.write(outcome)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(run_partition(*sys.argv[1:3]))
