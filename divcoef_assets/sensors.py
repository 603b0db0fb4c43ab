"""registry_sensor: registering a dataset audits that dataset alone.

Each tick loads the registry and

- keeps the dataset and probe partitions equal to it: a newly registered dataset or probe gets its
  partition (nothing runs because of that alone), a removed one loses it;
- requests one audit run (default probe) for each dataset whose snapshot is missing or whose
  cheap source version (`core.sources.source_version`, as the weekly schedule compares it) differs
  from the one recorded on its latest `dataset_snapshot` materialization; nothing for the others.

The run key is `register-<dataset>-<probe>-<source version>`, and Dagster launches a run key once
per sensor: a dataset whose run is in progress, or failed, is not requested again on every tick,
only after its source changes. The sensor runs by default, so `dagster dev` picks up an edit of
the registry on its next tick (every 15 s).
"""

import dagster as dg

from divcoef_assets.jobs import audit_job
from divcoef_assets.partitions import DATASET_DIMENSION, PROBE_DIMENSION, dataset_probe_key
from divcoef_assets.pipeline import registry_source_version
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.schedules import recorded_version

INTERVAL_S = 15


def partition_requests(instance: dg.DagsterInstance, datasets: set[str], probes: set[str]) -> list:
    """Add and delete requests that make the dynamic partitions equal to the registry's keys."""
    have_datasets = set(instance.get_dynamic_partitions(DATASET_DIMENSION))
    have_probes = set(instance.get_dynamic_partitions(PROBE_DIMENSION))
    requests: list = []
    for dimension, want, have in ((DATASET_DIMENSION, datasets, have_datasets), (PROBE_DIMENSION, probes, have_probes)):
        if want - have:
            requests.append(dg.AddDynamicPartitionsRequest(dimension, sorted(want - have)))
    for dimension, want, have in ((DATASET_DIMENSION, datasets, have_datasets), (PROBE_DIMENSION, probes, have_probes)):
        if have - want:
            requests.append(dg.DeleteDynamicPartitionsRequest(dimension, sorted(have - want)))
    return requests


def audit_requests(instance: dg.DagsterInstance, divcoef: DivcoefResource) -> list[dg.RunRequest]:
    """One run per registered dataset whose snapshot (default probe) is missing or whose source changed."""
    registry = divcoef.registry()
    probe = registry.default_probe
    requests = []
    for name in registry.datasets:
        key = dataset_probe_key(name, probe)
        now = registry_source_version(registry, name)
        if recorded_version(instance, str(key)) != now:
            requests.append(dg.RunRequest(run_key=f"register-{name}-{probe}-{now}", partition_key=key, tags={"divcoef/registered": name}))
    return requests


@dg.sensor(job=audit_job, minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING)
def registry_sensor(context: dg.SensorEvaluationContext, divcoef: DivcoefResource):
    registry = divcoef.registry()
    partitions = partition_requests(context.instance, set(registry.datasets), set(registry.probes))
    runs = audit_requests(context.instance, divcoef)
    if not partitions and not runs:
        return dg.SkipReason(f"registry {registry.fingerprint()}: partitions up to date, every snapshot current")
    context.log.info(f"registry {registry.fingerprint()}: audit requested for {[r.partition_key for r in runs]}")
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=partitions)
