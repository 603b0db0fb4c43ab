"""The README's promises: its SQL examples run against a materialized database, and the
commands it names exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import yaml

from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.storage import ResultsStore

README = Path(__file__).resolve().parents[1] / "README.md"


def _sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_sql_examples_return_the_expected_rows(tmp_path, tiny_gpt2_dir):
    rng = np.random.default_rng(0)
    for name, words in (("a", ["red", "green", "blue", "cyan"]), ("b", ["one", "two", "three", "four", "five", "six"])):
        with open(tmp_path / f"{name}.jsonl", "w") as fh:
            for _ in range(30):
                fh.write(json.dumps({"text": " ".join(rng.choice(words, size=10))}) + "\n")
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
    assert len(blocks) == 4
    latest, history, cross, embeddings = (store.query(sql) for sql in blocks)
    assert {row[0] for row in latest} == {"corpus-a", "corpus-b"} and latest[0][1] >= latest[1][1]
    assert all(lo <= value <= hi for _, value, lo, hi, _, _ in latest)
    assert len(history) == 2
    assert len(cross) == 1 and cross[0][2] > 0
    assert sorted(row[0] for row in embeddings) == ["corpus-a", "corpus-b"] and all(row[1] == 4 for row in embeddings)


def test_readme_commands_exist():
    text = README.read_text()
    root = README.parent
    for script in ("scripts/audit.sh", "scripts/test.sh"):
        assert script in text and (root / script).exists()
    ci = (root / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_readme_command_lines_parse():
    """Every `divcoef` example in the README's command-line section is accepted by the parser."""
    import shlex

    from divcoef_assets.cli import build_parser

    block = re.search(r"## Command line\n\n```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line for line in block.splitlines() if line.startswith("divcoef ") and "--help" not in line]
    assert len(lines) >= 3
    for line in lines:
        build_parser().parse_args(shlex.split(line)[1:])  # an unknown flag exits (fails the test)
