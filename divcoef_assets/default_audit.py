"""The default audit: every registered dataset with the default probe, as Dagster runs.

    divcoef audit                     # what the README's run command does after set-up
    divcoef audit --probe rand-gpt2 --datasets bible fortunes
    divcoef audit --ray 127.0.0.1:6379  # the embeddings on a Ray cluster (README "Running it for a team")

Runs, against a persistent Dagster instance (`data/dagster_home` unless `DAGSTER_HOME` or
`--dagster-home` says otherwise, so `dagster dev` shows the history afterwards):

1. `probe` job for the default probe, or the registered probe `probe` (pretrains it here the first
   time; cached afterwards);
2. `audit` job for each dataset|probe partition, one run each, in registry order but the
   lower- and upper-bound datasets first (the other datasets' bounds checks compare with them);
3. `cross_audit` job for the probe, then the `refresh_leaderboard` job;

then prints the leaderboard *read back from DuckDB* (so the table is the stored records), in the
order of the UI and the report: real corpora most diverse first with tied groups, then the
calibration sets.
Datasets that fail are reported and the others still run; the exit code says whether all passed.
SIGINT (Ctrl-C) or SIGTERM stops the audit instead: the dataset in progress is stopped, nothing
more is run, it prints which datasets were audited, and exits with 130 or 143.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from divcoef_assets.tables import format_leaderboard

log = logging.getLogger(__name__)


def _project_home() -> Path:
    from divcoef_assets.registry import REPO_ROOT

    return REPO_ROOT / "data" / "dagster_home"


def _install_settings(home: Path) -> None:
    """Give a Dagster home without a dagster.yaml the project's (data/dagster_home/dagster.yaml:
    pools, run monitoring, no telemetry); an existing dagster.yaml is left as it is."""
    target = home / "dagster.yaml"
    source = _project_home() / "dagster.yaml"
    if target.exists() or not source.is_file():
        return
    tmp = home / f".tmp-dagster.yaml.{os.getpid()}"
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)
    log.info("Dagster instance settings copied from %s to %s", source, target)


@contextmanager
def _home_lock(home: Path):
    """An exclusive lock on `<home>/.instance.lock` while held: one process at a time creates or
    migrates the instance's SQLite storage (two at once on a new home fail with "table ... already
    exists"). Released when the holder exits, however it exits."""
    import fcntl

    with open(home / ".instance.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


AUDIT_TAG = "divcoef/audit"
PID_TAG = "divcoef/pid"
HOST_TAG = "divcoef/host"
_UNFINISHED = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def _run_tags() -> dict[str, str]:
    """Tags of every run this process starts: which `divcoef audit` process runs it, and where."""
    return {AUDIT_TAG: "default", PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def code_location() -> tuple[str, str]:
    """(module, code location name) of the project as `dagster dev` run in its folder loads it:
    pyproject.toml's `[tool.dagster]` `module_name` and `code_location_name`."""
    import tomllib

    from divcoef_assets.registry import REPO_ROOT

    settings = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["dagster"]
    return settings["module_name"], settings.get("code_location_name", settings["module_name"])


def job_origin(job_name: str):
    """The origin a run of `job_name` gets when `dagster dev` (in the project's folder) launches it
    from the project's code location, repository `__repository__`. Runs of `divcoef audit` carry it
    too, so the UI lists them with the location's other runs (the Overview timeline shows only runs
    with an origin)."""
    from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from divcoef_assets.registry import REPO_ROOT

    module, name = code_location()
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=module, working_directory=str(REPO_ROOT))
    return RemoteRepositoryOrigin(ManagedGrpcPythonEnvCodeLocationOrigin(target, name), "__repository__").get_job_origin(job_name)


@contextmanager
def _runs_with_origin(instance):
    """While active, every run `instance` creates for a job gets `job_origin` (`execute_in_process`
    takes no origin of its own)."""
    create = instance.create_run_for_job

    def with_origin(job_def, **kwargs):
        kwargs.setdefault("remote_job_origin", job_origin(job_def.name))
        return create(job_def, **kwargs)

    instance.create_run_for_job = with_origin
    try:
        yield instance
    finally:
        del instance.create_run_for_job


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def fail_abandoned_runs(instance) -> list[str]:
    """Fail the unfinished runs of `divcoef audit` processes on this machine that are gone (killed
    outright, so Dagster never recorded their end; the default run launcher cannot tell), and free
    the concurrency pool slots they held, which would otherwise block every later audit. Returns
    the run ids failed."""
    import dagster as dg

    failed = []
    records = instance.get_run_records(filters=dg.RunsFilter(
        statuses=[dg.DagsterRunStatus[s] for s in _UNFINISHED], tags={AUDIT_TAG: "default", HOST_TAG: socket.gethostname()},
    ))
    for record in records:
        run = record.dagster_run
        try:
            pid = int(run.tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        instance.report_run_failed(run, f"the divcoef audit process that ran it (pid {pid}) is gone; found by a later divcoef audit")
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    if failed:
        log.warning("marked %d run(s) of ended divcoef audit processes as failed: %s", len(failed), ", ".join(failed))
    return failed


def _instance(dagster_home: str | None):
    import dagster as dg

    home = Path(dagster_home or os.environ.get("DAGSTER_HOME") or _project_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    with _home_lock(home):
        _install_settings(home)
        instance = dg.DagsterInstance.get()  # creates and migrates the storage
        fail_abandoned_runs(instance)
    return instance, home


class StopSignals:
    """While active (in the main thread), SIGINT and SIGTERM ask the audit to stop instead of ending
    the process: `received()` is the first such signal, or None.

    During a Dagster run, Dagster's own handlers take both signals and stop the run's current step
    (it fails; every step writes its files atomically, so nothing is left half-written); they do
    not say which signal it was. Python writes the number of every signal it handles to the
    wake-up file descriptor, whoever's handler runs, so that is where both cases are read from."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._received: list[int] = []
        self._active = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set in the main thread
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._old_wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._old_handlers = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        for s, handler in self._old_handlers.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._read)
        os.close(self._write)
        self._active = False

    def _handle(self, signum: int, frame) -> None:
        self._received.append(signum)

    def received(self) -> int | None:
        if self._active:
            try:
                while chunk := os.read(self._read, 64):
                    self._received.extend(b for b in chunk if b in self.SIGNALS)
            except BlockingIOError:
                pass
        return self._received[0] if self._received else None


def _interrupted(signum: int, names: list[str], done: list[str], stopped: str | None) -> int:
    """Say what the interrupted audit did and did not do; the exit code is 128 + the signal."""
    rest = [n for n in names if n not in done and n != stopped]
    parts = [f"audit interrupted by {signal.Signals(signum).name}: {len(done)} of {len(names)} datasets audited"
             + (f" ({', '.join(done)})" if done else "")]
    if stopped:
        parts.append(f"{stopped} was stopped before its result was written")
    if rest:
        parts.append(f"not audited: {', '.join(rest)}")
    print("; ".join(parts) + ". Run `divcoef audit` again to finish.", flush=True)
    return 128 + signum


def run_default_audit(*, dagster_home: str | None = None, datasets: list[str] | None = None, registry_path: str = "",
                      data_dir: str = "", db_path: str = "", cache_dir: str = "", probe: str | None = None,
                      ray_address: str = "", log_level: str = "INFO") -> int:
    """Run the audit; `datasets` (None: all registered) and `probe` (None: the registry's default)
    are checked against the registry before anything is created or run (`ValueError` if unknown).
    With `ray_address`, batch embeddings are computed on that Ray cluster (`embedding_backend`
    "ray", task2vec_embeddings in the `gpu` pool); everything else runs here, as without it.

    SIGINT (Ctrl-C) or SIGTERM stops it: the dataset being audited is stopped, no other is started,
    and the return value is 130 (SIGINT) or 143 (SIGTERM). Dagster's event log lines reach the console
    from `log_level` up (INFO: the steps' own messages, without an event line per step transition)."""
    with StopSignals() as stop:
        return _audit(stop, dagster_home=dagster_home, datasets=datasets, registry_path=registry_path, data_dir=data_dir,
                      db_path=db_path, cache_dir=cache_dir, probe=probe, ray_address=ray_address, log_level=log_level)


def _audit(stop: StopSignals, *, dagster_home, datasets, registry_path, data_dir, db_path, cache_dir, probe, ray_address,
           log_level) -> int:
    from divcoef_assets.definitions import build_definitions
    from divcoef_assets.pipeline import bounds_first

    started = time.perf_counter()
    run_options = dict(raise_on_error=False, tags=_run_tags(), run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
    if datasets is not None and not datasets:
        raise ValueError("datasets is an empty list: name at least one registered dataset, or pass None for all")
    backend = dict(embedding_backend="ray", ray_address=ray_address) if ray_address else {}
    defs = build_definitions(registry_path=registry_path, data_dir=data_dir, db_path=db_path, cache_dir=cache_dir, **backend)
    divcoef = defs.resources["divcoef"]
    registry = divcoef.registry()
    if probe is None:
        probe = registry.default_probe
    elif probe not in registry.probes:
        raise ValueError(
            f"probe {probe!r} is not registered in {registry.path}; registered probes: {list(registry.probes)}"
        )
    names = list(registry.datasets) if datasets is None else list(datasets)
    unknown = [n for n in names if n not in registry.datasets]
    if unknown:
        raise ValueError(f"not registered: {unknown}; known datasets: {list(registry.datasets)}")
    names = bounds_first(registry, names)
    instance, home = _instance(dagster_home)
    with _runs_with_origin(instance):
        return _run_jobs(stop, defs, divcoef, registry, instance, home, names, probe, run_options, started, ray_address)


def _run_jobs(stop, defs, divcoef, registry, instance, home, names, probe, run_options, started, ray_address) -> int:
    from divcoef_assets.partitions import DATASET_DIMENSION, PROBE_DIMENSION, dataset_probe_key

    instance.add_dynamic_partitions(DATASET_DIMENSION, [n for n in registry.datasets if not instance.has_dynamic_partition(DATASET_DIMENSION, n)])
    # Only the probe being audited gets a partition: the catalog shows no "missing" partitions for
    # registered probes nobody has asked to run (the registry sensor adds all of them when turned on).
    if not instance.has_dynamic_partition(PROBE_DIMENSION, probe):
        instance.add_dynamic_partitions(PROBE_DIMENSION, [probe])
    log.info("default audit: probe %s, %d datasets, Dagster instance %s%s", probe, len(names), home,
             f", embeddings on the Ray cluster at {ray_address}" if ray_address else "")
    if stop.received():
        return _interrupted(stop.received(), names, [], None)

    result = defs.resolve_job_def("probe").execute_in_process(partition_key=probe, instance=instance, **run_options)
    if stop.received():
        print(f"probe {probe}: " + ("built" if result.success else "stopped"), flush=True)
        return _interrupted(stop.received(), names, [], None)
    if not result.success:
        log.error("building probe %s failed; see the run in `dagster dev`", probe)
        return 1
    failed, done = [], []
    for k, name in enumerate(names, start=1):
        if stop.received():
            return _interrupted(stop.received(), names, done, None)
        t0 = time.perf_counter()
        run = defs.resolve_job_def("audit").execute_in_process(
            partition_key=dataset_probe_key(name, probe), instance=instance, **run_options
        )
        status = "ok" if run.success else "FAILED"
        log.info("[%d/%d] %s|%s %s in %.0fs (total %.0fs)", k, len(names), name, probe, status, time.perf_counter() - t0, time.perf_counter() - started)
        if stop.received():
            if run.success:
                done.append(name)
            return _interrupted(stop.received(), names, done, None if run.success else name)
        if not run.success:
            failed.append(name)
        else:
            done.append(name)
    cross = defs.resolve_job_def("cross_audit").execute_in_process(partition_key=probe, instance=instance, **run_options)
    if stop.received():
        print("cross_diversity was " + ("computed" if cross.success else "stopped"), flush=True)
        return _interrupted(stop.received(), names, done, None)

    board = defs.resolve_job_def("refresh_leaderboard").execute_in_process(instance=instance, **run_options)
    if stop.received():
        return _interrupted(stop.received(), names, done, None)

    from divcoef_assets import presentation

    store = divcoef.store()
    leaders = presentation.probe_leaderboard(store, probe)
    noise = {r.dataset: r.noise_floor for r in store.latest_coefficients(probe)}
    print(format_leaderboard(leaders, noise, title=f"Task2Vec diversity leaderboard, probe {probe!r} (from DuckDB `latest_coefficients`)"))
    print("\n" + presentation.verdict(leaders))
    real = [n for n, spec in registry.datasets.items() if not spec.is_synthetic and not spec.is_mixture and n in names]
    cross_rows = store.query(
        "SELECT dataset_a, dataset_b, value, ci_low, ci_high FROM latest_cross_coefficients WHERE probe = ? "
        "AND list_contains(?, dataset_a) AND list_contains(?, dataset_b) ORDER BY 1, 2",
        [probe, real, real],
    )
    if cross_rows:
        print("\nCross-diversity of the real corpora:")
        for a, b, value, lo, hi in cross_rows:
            print(f"  {a} x {b}: {value:.4f} [{lo:.4f}, {hi:.4f}]")
    print(f"\n{len(names) - len(failed)} of {len(names)} datasets audited in {time.perf_counter() - started:.0f}s; "
          f"results in {store.db_path}; run history: DAGSTER_HOME={home} dagster dev -h 127.0.0.1")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    for job, outcome in (("cross_diversity", cross), ("leaderboard", board)):
        if not outcome.success:
            print(f"failed: {job} (see the run in `dagster dev`)", file=sys.stderr)
    return 1 if failed or not cross.success or not board.success else 0
