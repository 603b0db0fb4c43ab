"""registry_sensor: keeps the dataset and probe partitions equal to the registry.

Each tick loads the registry; when its fingerprint differs from the cursor, partitions of newly
registered datasets/probes are added, those of removed ones deleted, and one audit run is
requested per new dataset (default probe). The cursor is the registry fingerprint plus the
dataset names already requested, so a dataset is requested once, however often the sensor ticks.
"""


import json

import dagster as dg

from divcoef_assets.jobs import audit_job
from divcoef_assets.partitions import DATASET_DIMENSION, PROBE_DIMENSION, dataset_probe_key
from divcoef_assets.resources import DivcoefResource


@dg.sensor(job=audit_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def registry_sensor(context: dg.SensorEvaluationContext, divcoef: DivcoefResource):
    registry = divcoef.registry()
    cursor = json.loads(context.cursor) if context.cursor else {"fingerprint": None, "requested": []}
    if cursor["fingerprint"] == registry.fingerprint():
        return dg.SkipReason(f"registry unchanged ({registry.fingerprint()})")
    datasets, probes = set(registry.datasets), set(registry.probes)
    have_datasets = set(context.instance.get_dynamic_partitions(DATASET_DIMENSION))
    have_probes = set(context.instance.get_dynamic_partitions(PROBE_DIMENSION))
    requests = []
    if datasets - have_datasets:
        requests.append(dg.AddDynamicPartitionsRequest(DATASET_DIMENSION, sorted(datasets - have_datasets)))
    if probes - have_probes:
        requests.append(dg.AddDynamicPartitionsRequest(PROBE_DIMENSION, sorted(probes - have_probes)))
    if have_datasets - datasets:
        requests.append(dg.DeleteDynamicPartitionsRequest(DATASET_DIMENSION, sorted(have_datasets - datasets)))
    if have_probes - probes:
        requests.append(dg.DeleteDynamicPartitionsRequest(PROBE_DIMENSION, sorted(have_probes - probes)))
    new = sorted(datasets - set(cursor["requested"]))
    runs = [
        dg.RunRequest(run_key=f"register-{name}-{registry.default_probe}", partition_key=dataset_probe_key(name, registry.default_probe))
        for name in new
    ]
    context.log.info(f"registry {registry.fingerprint()}: {len(new)} new dataset(s) {new}")
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=requests,
        cursor=json.dumps({"fingerprint": registry.fingerprint(), "requested": sorted(set(cursor["requested"]) | set(new))}),
    )
