"""A real local Ray cluster for tests and benchmarks: `ray start --head` bound to 127.0.0.1, every
port chosen free, its files in a short temporary folder, always torn down.

`ray start` leaves its daemons (GCS, raylet, agents) in the new session it was started in, and the
raylet puts each worker in a process group of its own inside that session: teardown kills the
head's process group, then every process left in the session, so nothing outlives the cluster,
also when the code using it failed.

Ray maps 127.0.0.1 to the machine's outward address unless multi-node support is off
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read when Ray is imported); the cluster and this process
(the driver) both get that setting, so everything stays on the loopback interface.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    gcs_address: str  # host:port of the cluster's GCS, for ray.init
    session: int  # session id of every process of the cluster
    temp_dir: Path
    start: subprocess.Popen | None = None  # `ray start`, until it has returned

    @property
    def address(self) -> str:
        """The cluster's address, once `ray start` has returned (it starts in the background,
        so the caller can do other work meanwhile)."""
        if self.start is not None and self.start.returncode is None:
            out, _ = self.start.communicate(timeout=120)
            if self.start.returncode != 0:
                raise RuntimeError(f"ray start failed (exit {self.start.returncode}):\n{out[-3000:]}")
        return self.gcs_address

    def processes(self) -> dict[int, str]:
        """pid -> command line (as the process shows it) of every process of the cluster."""
        return session_processes(self.session)


def session_processes(session: int) -> dict[int, str]:
    """pid -> command line (as the process shows it) of every process in session `session`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ProcessLookupError):
            continue
    return found


def loopback_only() -> None:
    """Keep 127.0.0.1 as this process's address when it connects to a Ray cluster (the docstring above)."""
    os.environ.update(LOOPBACK_ONLY)
    if "ray" in sys.modules:  # imported already: its constants were read; set the one that matters
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def kill_session(session: int) -> None:
    """SIGKILL every process of session `session` (a Ray node started in a session of its own:
    its raylet, agents and workers), until none is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session, signal.SIGKILL)
    for _ in range(50):
        left = [p for p in session_processes(session) if p != os.getpid()]
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[RayHead]:
    """A single-node cluster on 127.0.0.1 for the duration of the block, running once its
    `address` has been read."""
    loopback_only()
    ray = Path(sys.executable).with_name("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # sockets live under it: keep the path short
    port = free_port()
    command = [
        str(ray), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        "--include-dashboard=false", f"--num-cpus={num_cpus}", "--num-gpus=0", f"--port={port}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
    ]
    start = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, **LOOPBACK_ONLY}, start_new_session=True)
    try:
        yield RayHead(f"127.0.0.1:{port}", start.pid, temp_dir, start)
    finally:
        with contextlib.suppress(Exception):
            import ray as ray_module

            ray_module.shutdown()
        if start.poll() is None:
            start.kill()
            start.communicate()
        kill_session(start.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
