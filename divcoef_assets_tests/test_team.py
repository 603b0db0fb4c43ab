"""A team's set-up, as README "Running it for a team" writes it: the Dagster instance on a real
PostgreSQL server, the embeddings on a Ray cluster of two nodes (a head and a second node that
joined it with `ray start --address`), `divcoef audit --ray`, and `dagster-daemon` launching the
runs of the sensor and the schedule.

The README's lines run as written (in bash, from the repository's folder), with two
substitutions: its folder /tmp/divcoef-team is a fresh short temporary folder, and the registry,
data folder and DuckDB file are a tiny registry's (`DIVCOEF_*` variables). One set-up serves the
module: its `up` line and the audit run when the first test needs them, its `down` line when the
module ends, passed or failed; every process it started is then checked to be gone. The module
is skipped, saying why, where no PostgreSQL server is installed (`scripts/postgres.sh install`,
which `.ci/run` calls, installs Debian's) or the postgres / Ray extras are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from divcoef_assets.registry import REPO_ROOT
from divcoef_assets.storage import ResultsStore
from divcoef_assets_tests.ray_head import kill_session, loopback_only, session_processes
from divcoef_assets_tests.reliability.support import tiny_probe, write_jsonl

pytest.importorskip("dagster_postgres", reason="the postgres extra is not installed: pip install -e '.[postgres]'")
pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
    pytest.skip("no PostgreSQL server is installed (bash scripts/postgres.sh install installs Debian's)", allow_module_level=True)

README = REPO_ROOT / "README.md"
README_DIR = "/tmp/divcoef-team"
DATASETS = ["bible", "jargon"]


def team_lines() -> list[str]:
    """The command lines of the README's team block, comments stripped."""
    section = README.read_text().split("## Running it for a team", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def line_starting(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, f"the README's team block has {len(found)} lines starting {start!r}: {lines}"
    return found[0]


@dataclass(frozen=True)
class Team:
    folder: Path  # /tmp/divcoef-team of the README
    work: Path  # registry, corpora, data folder, DuckDB file
    env: dict[str, str]  # the tiny registry's variables; the README's env file adds the rest
    lines: list[str]  # the README's lines, the folder substituted
    audit_stdout: str
    audit_runs: list[tuple[str, str]]  # (job, status) of the runs the README's audit stored

    def bash(self, *lines: str, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
        script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
        if popen:
            return subprocess.Popen(["bash", "-c", script], cwd=REPO_ROOT, env=self.env, **popen)
        return subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=300)

    def sourced(self) -> dict[str, str]:
        """The variables of the README's env file."""
        text = (self.folder / "env").read_text()
        return dict(re.findall(r"^export (\w+)=(\S+)", text, flags=re.M))

    def session(self, node: str) -> int:
        return int((self.folder / f"{node}.sid").read_text())

    def instance(self):
        import dagster as dg

        os.environ["DAGSTER_PG_URL"] = self.sourced()["DAGSTER_PG_URL"]  # the instance settings name it
        return dg.DagsterInstance.from_config(self.sourced()["DAGSTER_HOME"])


@pytest.fixture(scope="module")
def team(tiny_gpt2_dir):
    folder = Path(tempfile.mkdtemp(prefix="team", dir="/tmp"))  # Ray's socket paths must stay short
    work = Path(tempfile.mkdtemp(prefix="team-work"))
    lines = [line.replace(README_DIR, str(folder)) for line in team_lines()]
    up, down = lines[0], lines[-1]
    assert up == f"bash scripts/team.sh up {folder}" and down == f"bash scripts/team.sh down {folder}", lines
    for seed, name in enumerate(DATASETS):
        write_jsonl(work / f"{name}.jsonl", n=24, seed=seed)
    (work / "registry.yaml").write_text(yaml.safe_dump({
        "default_probe": "tiny", "probes": {"tiny": tiny_probe(tiny_gpt2_dir)},
        "datasets": {name: {"source": "files", "path": f"{name}.jsonl"} for name in DATASETS},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "DIVCOEF_", "RAY_"))}
    env.update(DIVCOEF_REGISTRY=str(work / "registry.yaml"), DIVCOEF_DATA_DIR=str(work / "data"),
               DIVCOEF_DB=str(work / "results.duckdb"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    sessions: list[int] = []
    saved = os.environ.get("DAGSTER_PG_URL")
    team = Team(folder, work, env, lines, "", [])
    try:
        audit = line_starting(lines, ".venv/bin/divcoef audit")
        done = team.bash(up, line_starting(lines, ". "), audit)
        sessions = [team.session(node) for node in ("ray-head", "ray-second") if (folder / f"{node}.sid").exists()]
        assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        with team.instance() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            runs = sorted((r.job_name, r.status.value) for r in instance.get_runs())
        yield Team(folder, work, env, lines, done.stdout, runs)
    finally:
        data = (folder / "postgres" / "data-dir").read_text().strip() if (folder / "postgres" / "data-dir").exists() else None
        stopped = team.bash(down)
        if saved is None:
            os.environ.pop("DAGSTER_PG_URL", None)
        else:
            os.environ["DAGSTER_PG_URL"] = saved
        left = {sid: session_processes(sid) for sid in sessions}
        for sid in sessions:
            kill_session(sid)  # only if `down` failed to
        postgres = [int(p.name) for p in Path("/proc").iterdir() if data and p.name.isdigit() and _is_postgres_of(p, data)]
        for pid in postgres:  # the same
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert not any(left.values()), f"processes of the Ray nodes outlived `team.sh down`: {left}"
    assert data and not Path(data).exists(), f"PostgreSQL's data folder {data} outlived `team.sh down`"
    assert not postgres, f"PostgreSQL processes outlived `team.sh down`: {postgres}"


def _is_postgres_of(proc: Path, data: str) -> bool:
    try:
        return data in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _embedding_nodes(db: Path, dataset: str) -> list[str]:
    return [row[0] for row in ResultsStore(db).query("SELECT node_id FROM embeddings WHERE dataset = ?", [dataset])]


def _coefficient(db: Path, dataset: str) -> float:
    return ResultsStore(db).query("SELECT value FROM latest_coefficients WHERE dataset = ?", [dataset])[0][0]


def test_the_readme_audit_runs_on_postgres_and_embeds_on_both_ray_nodes(team):
    assert "1 of 1 datasets audited" in team.audit_stdout, team.audit_stdout
    nodes = _embedding_nodes(team.work / "results.duckdb", "jargon")
    assert len(nodes) == 3 and all(len(n) == 56 for n in nodes), nodes  # Ray node ids: 28 bytes in hex
    assert len(set(nodes)) == 2, f"the 3 batches were embedded on {len(set(nodes))} Ray node(s), not 2: {nodes}"

    # Read back from PostgreSQL right after the audit (the fixture checked the storage classes).
    assert team.audit_runs == [("audit", "SUCCESS"), ("cross_audit", "SUCCESS"), ("probe", "SUCCESS"), ("refresh_leaderboard", "SUCCESS")]
    home = Path(team.sourced()["DAGSTER_HOME"])
    assert not list(home.rglob("*.db")), "the instance wrote SQLite files beside PostgreSQL"


def test_killing_the_second_node_mid_audit_gives_the_same_coefficient_and_no_temporary_files(team, caplog):
    """jargon's audit job again, on the same cluster and instance, with its own data folder (so
    nothing is cached): every process of the second node is killed while it embeds a batch; that
    batch is embedded again on the head."""
    import dagster as dg

    from divcoef_assets.definitions import build_definitions
    from divcoef_assets.partitions import dataset_probe_key

    loopback_only()
    work = team.work / "kill"
    defs = build_definitions(registry_path=team.env["DIVCOEF_REGISTRY"], data_dir=str(work / "data"),
                             db_path=str(work / "results.duckdb"), embedding_backend="ray",
                             ray_address=team.sourced()["DIVCOEF_RAY_ADDRESS"])
    second = team.session("ray-second")
    killed: list[str] = []
    done = threading.Event()

    def kill_second_node_while_it_embeds() -> None:
        while not done.is_set():
            if any(title.startswith("ray::EmbeddingWorker.embed") for title in session_processes(second).values()):
                kill_session(second)
                killed.append("ray-second")
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_second_node_while_it_embeds, daemon=True)
    killer.start()
    try:
        with team.instance() as instance, caplog.at_level("WARNING", logger="divcoef_assets.ray_backend"):
            result = defs.resolve_job_def("audit").execute_in_process(
                partition_key=dataset_probe_key("jargon", "tiny"), instance=instance, raise_on_error=False)
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS  # stored in PostgreSQL
    finally:
        done.set()
        killer.join()
    assert killed, "the second node was never seen embedding, so it was not killed"
    assert "a Ray embedding worker was lost while embedding batch" in caplog.text
    db = work / "results.duckdb"
    assert _coefficient(db, "jargon") == pytest.approx(_coefficient(team.work / "results.duckdb", "jargon"), abs=1e-6)
    assert len(_embedding_nodes(db, "jargon")) == 3
    leftovers = [p for p in work.rglob("*") if p.name.startswith(".tmp") or ".tmp-" in p.name or p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    assert not session_processes(second)


def test_the_daemon_requests_runs_for_the_sensor_and_the_schedule(team):
    """The README's sensor, schedule and daemon lines. The schedule's start is moved back 8 days,
    so its last Monday 03:00 tick is due: it asks for bible (never audited), not for jargon
    (audited, unchanged); so does the registry sensor, which asks only for a dataset whose snapshot is
    missing or whose source changed. The run queue
    is held (`max_concurrent_runs: 0`: no run starts), so the test waits for no audit."""
    import dagster as dg
    from dagster._core.scheduler.instigation import ScheduleInstigatorData

    source = line_starting(team.lines, ". ")
    started = team.bash(source, line_starting(team.lines, ".venv/bin/dagster sensor start"),
                        line_starting(team.lines, ".venv/bin/dagster schedule start"))
    assert started.returncode == 0, started.stderr[-3000:]
    settings = Path(team.sourced()["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(settings.read_text())
    config["concurrency"]["runs"] = {"max_concurrent_runs": 0}
    settings.write_text(yaml.safe_dump(config))
    with team.instance() as instance:
        state = next(s for s in instance.all_instigator_state() if s.name == "weekly_reaudit")
        data = state.instigator_data
        instance.update_instigator_state(state.with_data(ScheduleInstigatorData(
            data.cron_schedule, start_timestamp=time.time() - 8 * 86400)))

    log = team.work / "daemon.log"
    with log.open("w") as out:
        daemon = team.bash(source, line_starting(team.lines, ".venv/bin/dagster-daemon run"), start_new_session=True,
                           stdout=out, stderr=subprocess.STDOUT)
    sensor_runs, schedule_runs = [], []
    try:
        deadline = time.monotonic() + 120
        with team.instance() as instance:
            while time.monotonic() < deadline and not (sensor_runs and schedule_runs):
                assert daemon.poll() is None, f"dagster-daemon ended (exit {daemon.returncode}): {log.read_text()[-3000:]}"
                sensor_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "registry_sensor"}))
                schedule_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": "weekly_reaudit"}))
                time.sleep(0.5)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        kill_session(daemon.pid)  # the daemon's code server and any run it launched
    assert sensor_runs and schedule_runs, f"runs of the sensor: {len(sensor_runs)}, of the schedule: {len(schedule_runs)}\n{log.read_text()[-3000:]}"
    assert [r.tags["dagster/partition"] for r in sensor_runs] == ["bible|tiny"]
    assert [r.tags["dagster/partition"] for r in schedule_runs] == ["bible|tiny"]
    assert all(r.job_name == "audit" for r in sensor_runs + schedule_runs)
    assert not session_processes(daemon.pid)
