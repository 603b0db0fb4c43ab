"""The README's promises: its SQL examples run against a materialized database, and the
commands it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
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


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _command_lines() -> list[str]:
    block = re.search(r"## Command line\n\n```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("divcoef ")]


def _tiny_twin_registry(folder: Path) -> Path:
    """The shipped registry's names (default probe `local-gpt2`, `rand-gpt2`, the real corpora),
    each made tiny: a probe pretrained here for a few steps, a 1-layer random probe, small batches."""
    corpora = README.parent / "data" / "corpora"
    small = {"seq_len": 16, "batch_size": 4, "n_batches": 3, "epochs": 1, "loader_batch_size": 4, "noise_repeats": 2, "noise_batches": 1}
    registry = folder / "registry.yaml"
    registry.write_text(yaml.safe_dump({
        "default_probe": "local-gpt2",
        "probes": {
            "local-gpt2": {"pretrain": {"corpus": ["jargon"], "max_documents": 50, "n_layer": 1, "n_embd": 8, "n_head": 2,
                                        "n_positions": 64, "block_len": 32, "batch_size": 2, "steps": 3, "seed": 0},
                           "fisher": "mc_head_exact", **small},
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
    assert (tmp_path / "other-cache").is_dir() and "<h3>Baselines</h3>" in (tmp_path / "divcoef-report.html").read_text()
    blocks = _python_blocks()
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert 0 < namespace["result"].value < 1 and namespace["cross"].value > 0
    assert namespace["from_tokens"].estimate.n_batches == 3 and namespace["early"].estimate.n_batches >= 5


def test_readme_command_lines_parse():
    """Every `divcoef` example in the README's command-line section is accepted by the parser."""
    import shlex

    from divcoef_assets.cli import build_parser

    block = re.search(r"## Command line\n\n```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line for line in block.splitlines() if line.startswith("divcoef ") and "--help" not in line]
    assert len(lines) >= 3
    for line in lines:
        build_parser().parse_args(shlex.split(line)[1:])  # an unknown flag exits (fails the test)
