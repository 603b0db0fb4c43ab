"""The Dagster UI in a real browser: one tiny `dataset|probe` partition materialized into a
temporary Dagster home that has the project's dagster.yaml, `dagster dev` started on 127.0.0.1 on
a free port, and the `diversity_coefficient` asset page of that partition opened in headless
Chromium (Debian's `chromium`, driven by Playwright; scripts/browser.sh installs it).

Asserted from the DOM: the materialization's summary table renders inline (a "noise floor"
column, the stored value to 4 significant digits) and the distance histogram opens from its
"[Show Markdown]" as a decoded PNG <img>; no "Join the Dagster community" dialog appears (the project's
dagster.yaml turns it off). The screenshot is written to the test's tmp_path and copied to
$DIVCOEF_TEST_ARTIFACTS (default divcoef_assets_tests/artifacts/, git-ignored).

Skipped, with the reason, only where no Chromium is installed (scripts/browser.sh could not
install it). The server's whole process tree is stopped whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.registry import REPO_ROOT

from .conftest import write_word_corpora

ARTIFACTS = Path(os.environ.get("DIVCOEF_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
COMMUNITY = "Join the Dagster community"


def _chromium() -> str:
    found = os.environ.get("DIVCOEF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on PATH and scripts/browser.sh could not install Debian's chromium (needs root and apt-get)")
    return found


def _registry(folder: Path, probe_dir: Path) -> dict[str, str]:
    """A registry of one dataset and one probe, and a Dagster home with the project's dagster.yaml;
    returns the environment the server and the run share."""
    write_word_corpora(folder, {"a": WORDS}, n=40, words_per_text=(4, 14))
    (folder / "registry.yaml").write_text(yaml.safe_dump({
        "default_probe": "tiny",
        "probes": {"tiny": {"model": str(probe_dir), "init": "pretrained", "seq_len": 16, "batch_size": 8, "n_batches": 5,
                            "epochs": 1, "noise_repeats": 2, "noise_batches": 1}},
        "datasets": {"corpus-a": {"source": "files", "path": "a.jsonl"}},
    }))
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "data" / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # storage created before the server opens it
        instance.add_dynamic_partitions("dataset", ["corpus-a"])
        instance.add_dynamic_partitions("probe", ["tiny"])
    return {"DIVCOEF_REGISTRY": str(folder / "registry.yaml"), "DIVCOEF_DATA_DIR": str(folder / "data"),
            "DIVCOEF_DB": str(folder / "r.duckdb"), "DAGSTER_HOME": str(home)}


def _materialize_one_partition(env: dict[str, str]) -> float:
    """corpus-a|tiny materialized into the Dagster home; returns the coefficient."""
    defs = build_definitions(registry_path=env["DIVCOEF_REGISTRY"], data_dir=env["DIVCOEF_DATA_DIR"], db_path=env["DIVCOEF_DB"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        result = defs.resolve_job_def("audit").execute_in_process(partition_key=dataset_probe_key("corpus-a", "tiny"), instance=instance)
        assert result.success
        return result.output_for_node("diversity_coefficient").value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group and every descendant (its code server runs in a group
    of its own), then SIGKILL to whatever is left after 3 s."""
    import psutil

    try:
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for process in tree:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=3)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    server.wait(timeout=10)


def _wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"dagster dev exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"dagster dev did not answer on {url} within {timeout}s:\n{log.read_text()[-3000:]}")


def test_the_asset_page_shows_the_summary_table_and_plot(tmp_path, tiny_gpt2_dir):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    env = _registry(tmp_path, tiny_gpt2_dir)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster-dev.log"
    server_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-m", "divcoef_assets.definitions"],
            stdout=out, stderr=subprocess.STDOUT, env=server_env, cwd=tmp_path, start_new_session=True,
        )
    shot = tmp_path / "diversity_coefficient.png"
    try:
        value = f"{_materialize_one_partition(env):.4g}"  # while the server starts; the UI reads the run from the instance
        _wait_for_server(url, server, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/assets/diversity_coefficient?view=partitions&partition=corpus-a%7Ctiny", wait_until="networkidle")
                summary = page.locator("tr", has_text="noise floor").first  # the summary, an inline table
                summary.wait_for(timeout=30_000)
                assert page.get_by_text(COMMUNITY).count() == 0, "the community sign-up dialog is shown"
                headers = summary.locator("th").all_inner_texts()
                assert "noise floor" in headers, headers
                cells = page.locator("td").all_inner_texts()
                assert value in cells, cells[:40]
                page.locator("tr", has_text="histogram").get_by_text("[Show Markdown]").first.click()
                dialog = page.locator("[role=dialog]", has=page.locator(".dagster-markdown"))
                dialog.wait_for(timeout=10_000)
                image = dialog.locator("img[src^='data:image/png;base64,']")
                assert image.count() == 1
                image.wait_for()
                width, height = image.evaluate("e => e.complete ? [e.naturalWidth, e.naturalHeight] : [0, 0]")
                assert width >= 200 and height >= 100, (width, height)
                page.screenshot(path=str(shot))
                assert page.get_by_text(COMMUNITY).count() == 0
            finally:
                browser.close()
    finally:
        _stop(server)
        if shot.exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, ARTIFACTS / shot.name)
    assert shot.stat().st_size > 10_000
