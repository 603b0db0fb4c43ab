"""`divcoef audit` stopped with SIGTERM or Ctrl-C (SIGINT) while it audits its first dataset: it
stops there, starts no other dataset, says what was and was not audited, exits 143 or 130, and
leaves no result, temporary file, unfinished run or pool slot behind."""

from __future__ import annotations

import signal

import dagster as dg
import pytest

from divcoef_assets.storage import ResultsStore
from divcoef_assets_tests.tiny_audit import TinyAudit

DATASETS = ["first", "second", "third"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_audit_after_the_current_dataset(tmp_path, small_probe_dir, sig, code):
    # 40 batches: the first dataset takes several seconds to embed, long enough to be stopped in it
    audit = TinyAudit.with_probe(tmp_path, small_probe_dir, DATASETS, n_batches=40)
    proc = audit.start()
    try:
        audit.wait_for(proc, "first|tiny: embedding 1/40")
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = audit.stdout.read_text(), audit.stderr.read_text()
    assert proc.returncode == code, err[-3000:]
    assert (f"audit interrupted by {sig.name}: 0 of 3 datasets audited; first was stopped before its result was "
            "written; not audited: second, third.") in out, out
    assert "second|tiny" not in err and "third|tiny" not in err  # never started

    if audit.db.exists():
        assert ResultsStore(audit.db).query("SELECT count(*) FROM coefficients")[0][0] == 0
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []

    with dg.DagsterInstance.from_config(str(audit.home)) as instance:
        runs = instance.get_runs()
        audited = sorted(r.tags.get("dagster/partition", "") for r in runs if r.job_name == "audit")
        assert audited == ["first|tiny"]
        assert [r.job_name for r in runs if r.job_name == "cross_audit"] == []
        assert all(r.is_finished for r in runs), [(r.job_name, r.status) for r in runs]
        assert instance.event_log_storage.get_concurrency_run_ids() == set()
