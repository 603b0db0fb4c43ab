"""The README's promises: every code block runs as written.

- SQL: against a materialized database;
- the command-line section, `divcoef report --markdown`, the Python API example, `bash
  scripts/audit.sh` and the `dagster job execute` block: from the repository's folder against a
  registry with the shipped names made tiny (the shipped default probe with small batches), in tmp;
- the registry and run-config YAML: loaded by the registry loader and validated against the audit
  job's config schema;
- `dagster dev -h 127.0.0.1`: started by the browser check (test_browser.py);
- `bash scripts/test.sh`: run by `.ci/run` (checked below), which is how the suite itself runs.

Not run here, with the reason: the Ray section's cluster commands (a Ray head on the fixed port
6379 of a shared machine; test_ray.py runs the same job on a Ray head of its own) and the
PostgreSQL storage block (needs a PostgreSQL server and dagster-postgres).
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.storage import ResultsStore

from .conftest import write_word_corpora

README = Path(__file__).resolve().parents[1] / "README.md"


def _sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_sql_examples_return_the_expected_rows(tmp_path, tiny_gpt2_dir):
    write_word_corpora(tmp_path, {"a": ["red", "green", "blue", "cyan"], "b": ["one", "two", "three", "four", "five", "six"]})
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({
        "default_probe": "local-gpt2",
        "probes": {"local-gpt2": {"model": str(tiny_gpt2_dir), "seq_len": 16, "batch_size": 8, "n_batches": 3,
                                  "epochs": 1, "noise_repeats": 2, "noise_batches": 1}},
        "datasets": {"corpus-a": {"source": "files", "path": "a.jsonl"}, "corpus-b": {"source": "files", "path": "b.jsonl"}},
    }))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("dataset", ["corpus-a", "corpus-b"])
    instance.add_dynamic_partitions("probe", ["local-gpt2"])
    defs = build_definitions(registry_path=str(registry), data_dir=str(tmp_path / "data"), db_path=str(tmp_path / "r.duckdb"))
    for dataset in ("corpus-a", "corpus-b"):
        assert defs.resolve_job_def("audit").execute_in_process(partition_key=dataset_probe_key(dataset, "local-gpt2"), instance=instance).success
    assert defs.resolve_job_def("cross_audit").execute_in_process(partition_key="local-gpt2", instance=instance).success

    store = ResultsStore(tmp_path / "r.duckdb")
    blocks = _sql_blocks()
    assert len(blocks) == 6
    latest, history, cross, correlations, outliers, embeddings = (store.query(sql) for sql in blocks)
    assert {row[0] for row in latest} == {"corpus-a", "corpus-b"} and latest[0][1] >= latest[1][1]
    assert all(lo <= value <= hi for _, value, lo, hi, _, _ in latest)
    assert len(history) == 2
    assert len(cross) == 1 and cross[0][2] > 0
    assert {row[0] for row in correlations} >= {"distinct_1", "vendi_tfidf", "vendi_task2vec"} and all(row[1] == 2 for row in correlations)
    assert [(row[0], row[1]) for row in outliers] == [("corpus-a", 1), ("corpus-a", 2), ("corpus-b", 1), ("corpus-b", 2)]
    assert all(len(row[4]) == 8 and row[5] for row in outliers)
    assert sorted(row[0] for row in embeddings) == ["corpus-a", "corpus-b"] and all(row[1] == 4 for row in embeddings)


def test_readme_commands_exist():
    text = README.read_text()
    root = README.parent
    for script in ("scripts/audit.sh", "scripts/test.sh"):
        assert script in text and (root / script).exists()
    ci = (root / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def _bash_block(starting: str) -> str:
    """The README's bash block that contains a line starting with `starting` (indented or not)."""
    blocks = [textwrap.dedent(b) for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)]
    found = [b for b in blocks if any(line.startswith(starting) for line in b.splitlines())]
    assert len(found) == 1, (starting, len(found))
    return found[0]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _command_lines() -> list[str]:
    block = re.search(r"## Command line\n\n```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("divcoef ")]


def _tiny_twin_registry(folder: Path) -> Path:
    """The shipped registry's names (default probe `local-gpt2`, `rand-gpt2`, the real corpora),
    each made tiny: the shipped default probe (its 8192-id vocabulary) with small batches, a
    1-layer random probe."""
    corpora = README.parent / "data" / "corpora"
    shipped = str(README.parent / "data" / "probes" / "local-gpt2")
    small = {"seq_len": 16, "batch_size": 4, "n_batches": 3, "epochs": 1, "loader_batch_size": 4, "noise_repeats": 2, "noise_batches": 1}
    registry = folder / "registry.yaml"
    registry.write_text(yaml.safe_dump({
        "default_probe": "local-gpt2",
        "probes": {
            "local-gpt2": {"model": shipped, "tokenizer": shipped, "fisher": "mc_head_exact", **small},
            "rand-gpt2": {"model": "arch:gpt2", "init": "random", "fisher": "mc", **small,
                          "extra": {"config": {"n_layer": 1, "n_embd": 8, "n_head": 2, "n_positions": 64, "vocab_size": 50257}}},
        },
        "datasets": {name: {"source": "files", "path": str(corpora / file)}
                     for name, file in (("bible", "bible_kjv.jsonl.gz"), ("jargon", "jargon.jsonl.gz"))},
    }))
    return registry


def test_readme_python_and_command_line_examples_run_as_written(tmp_path, monkeypatch, capsys):
    """After `divcoef audit`, every `divcoef` line and the Python example of the README run as
    written, from the repository's folder, against a registry with the shipped names made tiny."""
    import shlex

    from divcoef_assets.cli import main

    monkeypatch.chdir(README.parent)
    monkeypatch.setenv("DIVCOEF_REGISTRY", str(_tiny_twin_registry(tmp_path)))
    monkeypatch.setenv("DIVCOEF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    lines = _command_lines()
    assert any(line.startswith("divcoef audit") for line in lines) and any("diversity" in line for line in lines)
    for line in lines:
        args = [str(tmp_path / "other-cache") if a == "/tmp/divcoef-cache" else str(tmp_path / a[5:]) if a.startswith("/tmp/") else a
                for a in shlex.split(line)[1:]]
        try:
            code = main(args)
        except SystemExit as exc:  # --help
            code = exc.code
        assert code == 0, (line, capsys.readouterr().err[-2000:])
    assert (tmp_path / "other-cache").is_dir() and "<h4>Baselines</h4>" in (tmp_path / "divcoef-report.html").read_text()
    blocks = _python_blocks()
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert 0 < namespace["result"].value < 1 and namespace["cross"].value > 0
    assert namespace["from_tokens"].estimate.n_batches == 3 and namespace["early"].estimate.n_batches >= 5
    assert namespace["ids"].max() < 8192  # valid for the shipped default probe's vocabulary
    outside = namespace["ids"].copy()
    outside[1, 2] = 50256
    with pytest.raises(ValueError, match=r"outside the probe's vocabulary of 8192 \(probe 'local-gpt2'\): tokens\[1, 2\] = 50256"):
        namespace["diversity_coefficient"](tokens=outside)

    # The shell blocks, as written, from the repository's folder: the run history goes to the tmp
    # home instead of data/dagster_home (the only change), everything else as a user types it.
    home = str(tmp_path / "dagster_home")
    env = {**os.environ, "DIVCOEF_REGISTRY": os.environ["DIVCOEF_REGISTRY"], "DIVCOEF_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": home,
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": f"{README.parent / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    printed = []
    audit_line = next(line for line in _bash_block("bash scripts/audit.sh").splitlines() if line.startswith("bash scripts/audit.sh"))
    for block in (audit_line, _bash_block(".venv/bin/dagster job execute -m divcoef_assets.definitions")):  # test.sh: .ci/run
        script = block.replace("$PWD/data/dagster_home", home)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=README.parent, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (block, done.stdout[-2000:], done.stderr[-3000:])
        printed.append(done.stdout + done.stderr)
    assert "Real corpora, most diverse first" in printed[0] and "RUN_SUCCESS" in printed[1]
    for line in _bash_block(".venv/bin/divcoef register").splitlines():  # into the tiny registry
        assert main(shlex.split(line)[1:]) == 0, capsys.readouterr().err[-2000:]
    assert "my-notes:" in Path(os.environ["DIVCOEF_REGISTRY"]).read_text()


def test_readme_command_lines_parse():
    """Every `divcoef` example in the README's command-line section is accepted by the parser."""
    import shlex

    from divcoef_assets.cli import build_parser

    block = re.search(r"## Command line\n\n```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line for line in block.splitlines() if line.startswith("divcoef ") and "--help" not in line]
    assert len(lines) >= 3
    for line in lines:
        build_parser().parse_args(shlex.split(line)[1:])  # an unknown flag exits (fails the test)


def _yaml_blocks() -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)]


def test_readme_yaml_blocks_load(tmp_path):
    """The registering example merged into a copy of the shipped registry loads (with the files it
    names present), and the Ray run config is valid for the audit job; the PostgreSQL block is the
    instance storage a deployment writes (needs a server: not run)."""
    from divcoef_assets.registry import load_registry

    registering, postgres, run_config = _yaml_blocks()
    example = yaml.safe_load(registering)
    shipped = yaml.safe_load((README.parent / "data" / "registry.yaml").read_text())
    for section in ("datasets", "probes"):
        shipped[section].update(example[section])
    shipped.pop("allowed_roots")
    shipped["probes"]["local-gpt2"]["model"] = shipped["probes"]["local-gpt2"]["tokenizer"] = str(README.parent / "data" / "probes" / "local-gpt2")
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "mine.jsonl").write_text('{"text": "a document"}\n')
    for name, spec in shipped["datasets"].items():
        if spec.get("source") == "files" and name not in example["datasets"]:
            spec["path"] = str(README.parent / "data" / spec["path"])  # the shipped corpora, where they are
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(shipped))
    registry = load_registry(tmp_path / "registry.yaml")
    assert set(example["datasets"]) <= set(registry.datasets) and registry.probe("my-probe").batch_size == 128
    assert registry.dataset("my-mix").source.components == ("bible", "jargon")
    assert "postgres" in yaml.safe_load(postgres)["storage"]
    assert dg.validate_run_config(build_definitions().resolve_job_def("audit"), yaml.safe_load(run_config))
