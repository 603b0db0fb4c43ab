"""A `divcoef audit` killed outright leaves its run STARTED and, with the project's one-slot
concurrency pools, its pool slot taken: the next `divcoef audit` would wait for that slot forever.
The next audit fails such runs (their process is gone) and frees their slots; runs of live
processes, and runs of other machines, are left alone."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import dagster as dg

from divcoef_assets.default_audit import AUDIT_TAG, HOST_TAG, PID_TAG, _instance


def _add_run(instance: dg.DagsterInstance, pid: int, host: str | None = None) -> str:
    run_id = str(uuid.uuid4())
    tags = {AUDIT_TAG: "default", PID_TAG: str(pid), HOST_TAG: host or socket.gethostname()}
    instance.run_storage.add_run(dg.DagsterRun(job_name="audit", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags))
    return run_id


def test_the_next_audit_fails_the_runs_of_killed_audits_and_frees_their_slots(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        instance, home = _instance(str(tmp_path / "home"))
        with instance:
            storage = instance.event_log_storage
            killed = _add_run(instance, gone.pid)
            running = _add_run(instance, alive.pid)
            elsewhere = _add_run(instance, gone.pid, host="another-machine")
            storage.initialize_concurrency_limit_to_default("duckdb_writer")
            assert storage.claim_concurrency_slot("duckdb_writer", killed, "diversity_coefficient").is_claimed
            assert not storage.claim_concurrency_slot("duckdb_writer", "a-later-run", "diversity_coefficient").is_claimed
            storage.free_concurrency_slot_for_step("a-later-run", "diversity_coefficient")  # stop waiting

        again, _ = _instance(str(home))  # what the next `divcoef audit` does first
        with again:
            status = {run_id: again.get_run_by_id(run_id).status for run_id in (killed, running, elsewhere)}
            assert status == {killed: dg.DagsterRunStatus.FAILURE, running: dg.DagsterRunStatus.STARTED,
                              elsewhere: dg.DagsterRunStatus.STARTED}
            assert killed not in again.event_log_storage.get_concurrency_run_ids()
            assert again.event_log_storage.claim_concurrency_slot("duckdb_writer", "a-later-run", "diversity_coefficient").is_claimed
    finally:
        alive.kill()
        alive.wait()
