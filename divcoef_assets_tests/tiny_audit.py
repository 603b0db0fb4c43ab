"""`divcoef audit` on a tiny registry in a temporary folder: small JSON Lines datasets, tiny random
GPT-2 probes saved there, and every path (registry, data, DuckDB file, Dagster home) inside it, so
a test can run the real command line in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from divcoef_assets.registry import REPO_ROOT
from divcoef_assets_tests.reliability.support import tiny_probe, write_jsonl


class TinyAudit:
    def __init__(self, folder: Path, probes: dict[str, dict], datasets: list[str], *, n_documents: int = 24):
        self.folder = folder
        self.datasets = list(datasets)
        for seed, name in enumerate(self.datasets):
            write_jsonl(folder / f"{name}.jsonl", n=n_documents, seed=seed)
        self.registry = folder / "registry.yaml"
        self.registry.write_text(yaml.safe_dump({
            "default_probe": next(iter(probes)),
            "probes": probes,
            "datasets": {name: {"source": "files", "path": f"{name}.jsonl"} for name in self.datasets},
        }))
        self.data = folder / "data"
        self.db = folder / "results.duckdb"
        self.home = folder / "dagster_home"
        self.stdout = folder / "stdout.txt"
        self.stderr = folder / "stderr.txt"

    @classmethod
    def with_probe(cls, folder: Path, probe_dir: Path, datasets: list[str], **probe_overrides) -> TinyAudit:
        return cls(folder, {"tiny": tiny_probe(probe_dir, **probe_overrides)}, datasets)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DIVCOEF_CACHE")}
        env.update(
            DIVCOEF_REGISTRY=str(self.registry), DIVCOEF_DATA_DIR=str(self.data), DIVCOEF_DB=str(self.db),
            HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]),
        )
        return env

    def start(self, *args: str) -> subprocess.Popen:
        """`divcoef audit --dagster-home <home> *args` in a subprocess; output to stdout.txt, stderr.txt."""
        command = [sys.executable, "-m", "divcoef_assets.cli", "audit", "--dagster-home", str(self.home), *args]
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            return subprocess.Popen(command, stdout=out, stderr=err, env=self.env(), cwd=self.folder)

    def run(self, *args: str, timeout: float = 600) -> tuple[int, str, str]:
        proc = self.start(*args)
        proc.wait(timeout=timeout)
        return proc.returncode, self.stdout.read_text(), self.stderr.read_text()

    def wait_for(self, proc: subprocess.Popen, text: str, timeout: float = 300) -> None:
        """Until `text` shows in the command's stderr (fails if the command ends first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr.read_text():
                return
            if proc.poll() is not None:
                raise AssertionError(f"the audit ended (exit {proc.returncode}) before {text!r}:\n{self.stderr.read_text()[-3000:]}")
            time.sleep(0.05)
        proc.kill()
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.stderr.read_text()[-3000:]}")
