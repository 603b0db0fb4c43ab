"""Two `divcoef audit` started at once on a brand-new Dagster home both create the instance: its
SQLite storage is created and migrated by one process at a time (a file lock in the home), so
neither trips over the other's half-created tables ("table ... already exists")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROUNDS = 10

# Imports first (slow, uneven), then for each fresh home: both processes wait for each other at a
# barrier of marker files, then create the instance at the same moment.
CREATE_INSTANCES = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import dagster
    from divcoef_assets.default_audit import _instance

    me, other, out, homes = sys.argv[1], sys.argv[2], Path(sys.argv[3]), [Path(h) for h in sys.argv[4:]]
    results = []
    for home in homes:
        (home.parent / f"{home.name}.ready-{me}").touch()
        deadline = time.monotonic() + 120
        while not (home.parent / f"{home.name}.ready-{other}").exists() and time.monotonic() < deadline:
            time.sleep(0.0002)
        try:
            instance, _ = _instance(str(home))
            with instance:
                instance.get_runs(limit=1)
                instance.get_dynamic_partitions("dataset")
            results.append(None)
        except Exception as exc:
            results.append(f"{type(exc).__name__}: {exc}"[:500])
    out.write_text(json.dumps(results))
    """
)


def test_two_processes_create_a_fresh_instance_at_once(tmp_path):
    homes = [str(tmp_path / f"home{k}") for k in range(ROUNDS)]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    procs = [
        subprocess.Popen([sys.executable, "-c", CREATE_INSTANCES, me, other, str(tmp_path / f"{me}.json"), *homes],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for me, other in (("a", "b"), ("b", "a"))
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    errors = [e for me in "ab" for e in json.loads((tmp_path / f"{me}.json").read_text()) if e]
    assert errors == [], errors
