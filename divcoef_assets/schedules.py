"""weekly_reaudit: re-snapshot registered corpora whose source changed, and recompute only those.

A snapshot is expensive only to read, but a corpus that did not change needs no new run at all.
Each tick computes every dataset's cheap *source version* (`core.sources.source_version`: the
identity of every file the reader would open, a DuckDB file and its write-ahead log, a synthetic
spec) and compares it with the version recorded
on the partition's latest `dataset_snapshot` materialization. Only changed or never-audited
datasets get a run; inside a run, unchanged batches come from the embedding cache anyway.
"""


import dagster as dg

from divcoef_assets.jobs import audit_job
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.pipeline import registry_source_version
from divcoef_assets.resources import DivcoefResource

SNAPSHOT_KEY = dg.AssetKey("dataset_snapshot")


def recorded_version(instance: dg.DagsterInstance, partition: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SNAPSHOT_KEY, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    entry = records[0].asset_materialization.metadata.get("source_version")
    return None if entry is None else entry.value


def changed_requests(instance: dg.DagsterInstance, divcoef: DivcoefResource, tick: str) -> list[dg.RunRequest]:
    registry = divcoef.registry()
    probe = registry.default_probe
    requests = []
    for name in registry.datasets:
        key = dataset_probe_key(name, probe)
        now = registry_source_version(registry, name)
        if recorded_version(instance, str(key)) != now:
            requests.append(dg.RunRequest(run_key=f"reaudit-{name}-{probe}-{now}-{tick}", partition_key=key, tags={"reaudit": "weekly"}))
    return requests


@dg.schedule(job=audit_job, cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_reaudit(context: dg.ScheduleEvaluationContext, divcoef: DivcoefResource):
    tick = context.scheduled_execution_time.strftime("%Y%m%d") if context.scheduled_execution_time else "manual"
    requests = changed_requests(context.instance, divcoef, tick)
    if not requests:
        return dg.SkipReason("no registered corpus changed since its last snapshot")
    return requests
