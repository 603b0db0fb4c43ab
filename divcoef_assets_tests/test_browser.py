"""The Dagster UI in a real browser, and registering a dataset while it runs.

Two real corpora and the lower-bound calibration set are audited with a tiny probe into a
temporary Dagster home that has the project's dagster.yaml, the leaderboard is materialized and
`divcoef report` writes the HTML report; then the README's `dagster dev -h 127.0.0.1` line starts
the UI from the repository's folder (DAGSTER_HOME pointed at the temporary home, a free port), and
headless Chromium (Debian's `chromium`, driven by Playwright; scripts/browser.sh installs it) opens:

- the `diversity_coefficient` page of one partition: the summary table renders inline (a "noise
  floor" column, the stored value to 4 significant digits), the distance histogram opens from its
  "[Show Markdown]" as a decoded PNG <img> at least 900 px wide, and no "Join the Dagster
  community" dialog appears (the project's dagster.yaml turns it off);
- the `leaderboard` asset page and the report: the real corpora come before the calibration set,
  the tied groups are shown, and no literal `**` appears.

Then `divcoef register` adds a third corpus to the registry while the server runs: its partition
appears and the registry sensor requests exactly one run, for it alone.

The screenshots are written to the test's tmp_path and copied to $DIVCOEF_TEST_ARTIFACTS (default
divcoef_assets_tests/artifacts/, git-ignored).

Skipped, with the reason, only where no Chromium is installed (scripts/browser.sh could not
install it). The server's whole process tree is stopped whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from divcoef_assets.cli import main as divcoef
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


DATASETS = ("corpus-a", "corpus-b", "lower-bound")


def _registry(folder: Path, probe_dir: Path) -> dict[str, str]:
    """A registry of two corpora, the lower-bound calibration set and one probe, and a Dagster home
    with the project's dagster.yaml; returns the environment the server and the runs share."""
    write_word_corpora(folder, {"a": WORDS, "b": WORDS[:4], "c": WORDS[3:]}, n=40, words_per_text=(4, 14))
    (folder / "registry.yaml").write_text(yaml.safe_dump({
        "default_probe": "tiny",
        "probes": {"tiny": {"model": str(probe_dir), "init": "pretrained", "seq_len": 16, "batch_size": 8, "n_batches": 5,
                            "epochs": 1, "noise_repeats": 2, "noise_batches": 1}},
        "datasets": {"corpus-a": {"source": "files", "path": "a.jsonl"}, "corpus-b": {"source": "files", "path": "b.jsonl"},
                     "lower-bound": {"source": "synthetic", "kind": "lower_bound", "n_sequences": 64}},
    }))
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "data" / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # storage created before the server opens it
        instance.add_dynamic_partitions("dataset", list(DATASETS))
        instance.add_dynamic_partitions("probe", ["tiny"])
    return {"DIVCOEF_REGISTRY": str(folder / "registry.yaml"), "DIVCOEF_DATA_DIR": str(folder / "data"),
            "DIVCOEF_DB": str(folder / "r.duckdb"), "DAGSTER_HOME": str(home)}


def _audit(env: dict[str, str]) -> float:
    """Every registered dataset audited (bounds first) and the leaderboard materialized into the
    Dagster home; returns corpus-a's coefficient."""
    defs = build_definitions(registry_path=env["DIVCOEF_REGISTRY"], data_dir=env["DIVCOEF_DATA_DIR"], db_path=env["DIVCOEF_DB"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        values = {}
        for name in ("lower-bound", "corpus-a", "corpus-b"):
            result = defs.resolve_job_def("audit").execute_in_process(partition_key=dataset_probe_key(name, "tiny"), instance=instance)
            assert result.success
            values[name] = result.output_for_node("diversity_coefficient").value
        assert defs.resolve_job_def("refresh_leaderboard").execute_in_process(instance=instance).success
        return values["corpus-a"]


def _wait(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout}s:\n{log.read_text()[-3000:]}")


def _assert_leaderboard_text(text: str, where: str) -> None:
    """Real corpora first, the calibration set after them, tied groups shown, no markdown emphasis."""
    assert "**" not in text, where
    assert "group 1" in text and "tied" in text, where
    first_corpus = min(text.index("corpus-a"), text.index("corpus-b"))
    assert first_corpus < text.index("lower-bound"), where
    assert max(text.index("corpus-a"), text.index("corpus-b")) < text.index("lower-bound", first_corpus), where


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


def test_the_ui_shows_the_audit_and_leaderboard_and_a_registered_dataset_is_audited_alone(tmp_path, tiny_gpt2_dir, monkeypatch):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    env = _registry(tmp_path, tiny_gpt2_dir)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    value = f"{_audit(env):.4g}"  # before the server starts: its registry sensor finds every snapshot current
    report = tmp_path / "report.html"
    assert divcoef(["report", "--out", str(report)]) == 0
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster-dev.log"
    readme = (REPO_ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("DAGSTER_HOME=$PWD/data/dagster_home") and "dagster dev -h" in x)
    command = line.replace("$PWD/data/dagster_home", env["DAGSTER_HOME"]) + f" -p {port}"  # the README's line, on a free port
    server_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as out:
        server = subprocess.Popen(["bash", "-c", command], stdout=out, stderr=subprocess.STDOUT, env=server_env,
                                  cwd=REPO_ROOT, start_new_session=True)
    shots = [tmp_path / "diversity_coefficient.png", tmp_path / "leaderboard.png", tmp_path / "report.png"]
    try:
        _wait_for_server(url, server, log, timeout=90)
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
                page.locator("td", has_text=value).first.wait_for(timeout=30_000)  # the partition's own materialization
                cells = page.locator("td").all_inner_texts()
                assert value in cells, cells[:40]
                page.locator("tr", has_text="histogram").get_by_text("[Show Markdown]").first.click()
                dialog = page.locator("[role=dialog]", has=page.locator(".dagster-markdown"))
                dialog.wait_for(timeout=10_000)
                image = dialog.locator("img[src^='data:image/png;base64,']")
                assert image.count() == 1
                image.wait_for()
                width, height = image.evaluate("e => e.complete ? [e.naturalWidth, e.naturalHeight] : [0, 0]")
                assert width >= 900 and height >= 300, (width, height)
                page.screenshot(path=str(shots[0]))
                assert page.get_by_text(COMMUNITY).count() == 0

                page.goto(f"{url}/assets/leaderboard", wait_until="networkidle")
                page.locator("tr", has_text="corpus-a").first.wait_for(timeout=30_000)
                _assert_leaderboard_text(page.locator("body").inner_text(), "leaderboard asset page")
                page.screenshot(path=str(shots[1]), full_page=True)

                page.goto(report.as_uri())
                text = page.locator("body").inner_text()
                _assert_leaderboard_text(text, "report")
                assert text.index("Verdict") < text.index("Details")
                page.screenshot(path=str(shots[2]))
            finally:
                browser.close()

        # Registering a dataset while the server runs: a partition for it, and one run, for it alone.
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            assert divcoef(["register", "corpus-c", str(tmp_path / "c.jsonl"), "--format", "jsonl"]) == 0
            _wait(lambda: instance.has_dynamic_partition("dataset", "corpus-c"), 90, "no partition corpus-c", log)
            sensor_runs = lambda: instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "registry_sensor"}))  # noqa: E731
            _wait(sensor_runs, 60, "the registry sensor requested no run", log)
            time.sleep(3)  # the runs of one tick are submitted one after the other
            runs = sensor_runs()
            assert [r.tags.get("dagster/partition") for r in runs] == ["corpus-c|tiny"], [r.tags for r in runs]
    finally:
        _stop(server)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            if shot.exists():
                shutil.copyfile(shot, ARTIFACTS / shot.name)
    assert all(shot.stat().st_size > 10_000 for shot in shots)
