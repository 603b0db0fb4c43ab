"""torch's thread count follows the cores that are free, or DIVCOEF_TORCH_THREADS."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from divcoef_assets import threads
from divcoef_assets.resources import DivcoefResource


@pytest.fixture()
def machine(monkeypatch):
    """Pretend to be a machine with `cores` cores, `allowed` of them usable, under `load`."""

    def set_machine(cores: int, load: float, allowed: int | None = None) -> None:
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        monkeypatch.setattr(threads, "busy_cpus", lambda interval_s=0.3: load)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(allowed if allowed is not None else cores)), raising=False)

    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    return set_machine


@pytest.mark.parametrize(
    ("cores", "load", "allowed", "expected"),
    [
        (2, 0.0, None, 2),  # idle: every core
        (2, 0.4, None, 2),  # rounds the load
        (2, 1.0, None, 1),
        (2, 6.7, None, 1),  # overloaded: still one thread
        (16, 3.2, None, 13),
        (16, 0.0, 4, 4),  # bounded by the cores this process may use
        (16, 14.0, 4, 2),
    ],
)
def test_threads_are_the_free_cores(machine, cores, load, allowed, expected):
    machine(cores, load, allowed)
    assert threads.torch_threads() == expected


def test_the_environment_variable_wins(machine, monkeypatch):
    machine(2, 6.0)
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.torch_threads() == 3
    assert threads.torch_threads({threads.THREADS_ENV: " 5 "}) == 5
    assert threads.torch_threads({threads.THREADS_ENV: ""}) == 1  # empty: as if unset


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_environment_variable_is_refused(value):
    with pytest.raises(ValueError, match=threads.THREADS_ENV):
        threads.torch_threads({threads.THREADS_ENV: value})


def test_busy_cores_are_measured_now_not_averaged(monkeypatch):
    samples = iter([(1000, 4000), (1150, 4200)])  # (busy, total) jiffies: 150 of 200 busy
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # a stale average is ignored
    assert threads.busy_cpus(interval_s=0) == pytest.approx(1.5)


def test_no_load_information_means_every_usable_core(monkeypatch):
    def no_load():
        raise OSError("no load average")

    monkeypatch.setattr(threads, "_cpu_times", lambda: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", no_load)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert threads.free_cpus() == 3


def test_configure_sets_torch_and_ensure_keeps_it(machine, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_configured", None)
    try:
        machine(8, 7.0)
        assert threads.ensure_torch_threads() == 1
        assert torch.get_num_threads() == 1
        machine(8, 0.0)
        assert threads.ensure_torch_threads() == 1  # once per process
        monkeypatch.setenv(threads.THREADS_ENV, "2")
        assert threads.configure_torch_threads() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_module_does_not_import_dagster():
    import subprocess
    import sys

    code = "import sys, divcoef_assets.threads; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture()
def fresh_process_state(monkeypatch):
    """As if nothing had set torch's threads yet in this process; torch's count restored after."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_configured", None)
    yield torch
    torch.set_num_threads(before)


def test_the_command_line_sets_the_threads_first(fresh_process_state, monkeypatch, tmp_path, capsys):
    from divcoef_assets.cli import main

    torch = fresh_process_state
    torch.set_num_threads(2)
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    assert main(["diversity", str(tmp_path / "missing.jsonl")]) == 2  # fails after the threads are set
    assert torch.get_num_threads() == 1
    monkeypatch.setenv(threads.THREADS_ENV, "many")
    assert main(["diversity", str(tmp_path / "missing.jsonl")]) == 2
    assert f"{threads.THREADS_ENV}='many'" in capsys.readouterr().err


def test_a_dagster_run_sets_the_threads_once(fresh_process_state, monkeypatch):
    torch = fresh_process_state
    torch.set_num_threads(2)
    monkeypatch.setenv(threads.THREADS_ENV, "1")

    @dg.asset
    def uses_divcoef(divcoef: DivcoefResource) -> int:
        return torch.get_num_threads()

    result = dg.materialize([uses_divcoef], resources={"divcoef": DivcoefResource()})
    assert result.output_for_node("uses_divcoef") == 1
    monkeypatch.setenv(threads.THREADS_ENV, "2")
    result = dg.materialize([uses_divcoef], resources={"divcoef": DivcoefResource()})
    assert result.output_for_node("uses_divcoef") == 1  # already set in this process
