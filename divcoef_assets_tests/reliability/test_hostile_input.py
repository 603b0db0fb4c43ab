"""Hostile or careless input fails early, with an error that names the file, entry or setting and
says what to do. Nothing here computes an embedding or trains a probe: every case is refused (or
accepted) before any work starts."""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.registry import RegistryError, load_registry

# ----------------------------------------------------------------------------- 1. ProbeConfig


@pytest.mark.parametrize("field", ["lr", "adam_eps", "weight_decay", "target_half_width"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_probe_config_refuses_non_finite_numbers(field, value):
    with pytest.raises(ValueError, match=rf"invalid probe config 'p': {field} must be a finite non-negative number"):
        ProbeConfig(name="p", **{field: value})


def test_probe_config_device_must_be_a_known_form():
    for device in ("tpu9", "gpu", "cuda:", "cuda:x", "CPU", "cuda:0 ", ""):
        with pytest.raises(ValueError, match=r"device must be one of cpu, auto, cuda, cuda:N, mps") as caught:
            ProbeConfig(name="p", device=device)
        assert repr(device) in str(caught.value)
    for device in ("cpu", "auto", "cuda", "cuda:0", "cuda:12", "mps"):
        assert ProbeConfig(name="p", device=device).device == device


@pytest.mark.parametrize("seq_len", [1, 4, 7])
def test_probe_config_refuses_seq_len_below_8(seq_len):
    with pytest.raises(ValueError, match=rf"seq_len must be at least 8, got {seq_len}: .*degenerate Fisher"):
        ProbeConfig(name="p", seq_len=seq_len)
    assert ProbeConfig(name="p", seq_len=8).seq_len == 8


@pytest.mark.parametrize("n_batches", [1, 2])
def test_probe_config_refuses_fewer_than_3_batches(n_batches):
    with pytest.raises(ValueError, match=rf"n_batches must be at least 3, got {n_batches}: .*jackknife"):
        ProbeConfig(name="p", n_batches=n_batches)
    assert ProbeConfig(name="p", n_batches=3).n_batches == 3
    with pytest.raises(ValueError, match=r"min_batches must be an integer >= 3"):
        ProbeConfig(name="p", min_batches=2)


def test_probe_config_checks_happen_on_replace_too():
    config = ProbeConfig(name="p")
    with pytest.raises(ValueError, match="n_batches must be at least 3"):
        config.replace(n_batches=2)
    with pytest.raises(ValueError, match="lr must be a finite non-negative number"):
        config.replace(lr=math.inf)


# ----------------------------------------------------------------------------- 2. registry YAML


def _registry(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_registry_reads_numbers_that_yaml_left_as_strings(tmp_path):
    # YAML 1.1 reads 5e-5 (no dot) as the string "5e-5"; quoted numbers are strings too.
    path = _registry(tmp_path, """
        default_probe: p
        probes:
          p:
            model: gpt2
            lr: 5e-5
            adam_eps: 1e-8
            weight_decay: "0.01"
            target_half_width: 5e-3
            n_batches: "40"
            batch_size: 1e2
            seq_len: " 64 "
        datasets: {}
    """)
    probe = load_registry(path).probe("p")
    assert (probe.lr, probe.adam_eps, probe.weight_decay, probe.target_half_width) == (5e-5, 1e-8, 0.01, 5e-3)
    assert (probe.n_batches, probe.batch_size, probe.seq_len) == (40, 100, 64)
    assert all(isinstance(v, int) for v in (probe.n_batches, probe.batch_size, probe.seq_len))
    assert probe == ProbeConfig(name="p", lr=5e-5, adam_eps=1e-8, weight_decay=0.01, target_half_width=5e-3,
                                n_batches=40, batch_size=100, seq_len=64)


@pytest.mark.parametrize(("field", "value", "what"), [
    ("lr", "fast", "not a number"),
    ("n_batches", "many", "not a number"),
    ("batch_size", "12.5", "not a whole number"),
])
def test_registry_refuses_a_non_numeric_string_naming_file_probe_and_field(tmp_path, field, value, what):
    path = _registry(tmp_path, f"""
        default_probe: p
        probes:
          p:
            model: gpt2
            {field}: "{value}"
        datasets: {{}}
    """)
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    message = str(caught.value)
    for fragment in (str(path), "probe 'p'", f"field `{field}`", repr(value), what):
        assert fragment in message, (fragment, message)


def test_registry_refuses_an_alias_naming_its_line(tmp_path):
    path = _registry(tmp_path, """
        default_probe: p
        probes:
          p:
            model: gpt2
            lr: 0.001
            weight_decay: *rate
        datasets: {}
    """)
    with pytest.raises(RegistryError, match=r"registry .*registry\.yaml, line 6: YAML alias \*rate: anchors and aliases"):
        load_registry(path)


def test_registry_refuses_anchors_and_merge_keys(tmp_path):
    path = _registry(tmp_path, """
        default_probe: p
        probes:
          base: &base
            model: gpt2
          p:
            <<: *base
            lr: 0.001
        datasets: {}
    """)
    with pytest.raises(RegistryError, match=r"line 3: YAML anchor &base: .*write the values out in full"):
        load_registry(path)


def test_registry_rejects_an_alias_bomb_before_expanding_it(tmp_path):
    # "billion laughs": 9 levels of 9 aliases expand to 9**9 strings in anything that walks the tree
    # (the probe fingerprint's json.dumps would), though the composed graph itself is small.
    levels = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, 10):
        levels.append(f"    l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]")
    text = "default_probe: p\nprobes:\n  p:\n    model: gpt2\n    extra:\n  " + "\n  ".join(levels) + "\ndatasets: {}\n"
    path = tmp_path / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(RegistryError, match=r"line 6: YAML anchor &l0"):
        load_registry(path)
    assert time.perf_counter() - started < 1.0


# ----------------------------------------------------------------------------- 3. mixture weights


@pytest.mark.parametrize("weight", ["1.5e+7", "2000000", "0", "-1", ".nan", ".inf", "-.inf", "heavy"])
def test_mixture_weight_must_be_finite_positive_and_at_most_a_million(tmp_path, weight):
    path = _registry(tmp_path, f"""
        default_probe: p
        probes:
          p: {{model: gpt2}}
        datasets:
          a: {{source: files, path: a.jsonl}}
          b: {{source: files, path: b.jsonl}}
          mix: {{source: mixture, components: [a, b], weights: [1, {weight}]}}
    """)
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    message = str(caught.value)
    for fragment in (str(path), "dataset 'mix'", "of component 'b' is invalid", "> 0 and <= 1e+06"):
        assert fragment in message, (fragment, message)
    assert "weight " + repr(yaml.safe_load(weight)) in message


def test_mixture_weights_up_to_a_million_are_accepted(tmp_path):
    from divcoef_assets.core.sources import MixtureSource

    assert MixtureSource(components=("a", "b"), weights=(1e6, 1e-3)).weight_map == {"a": 1e6, "b": 1e-3}
    with pytest.raises(ValueError, match=r"weight 1000000\.5 of component 'a' is invalid"):
        MixtureSource(components=("a", "b"), weights=(1e6 + 0.5, 1))


# ----------------------------------------------------------------------------- 4. dictionary-encoded Parquet


def test_parquet_text_column_written_from_a_pandas_categorical_is_read(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    from divcoef_assets.core.sources import FilesSource, iter_texts

    texts = ["the cat sat", "on the mat", "the cat sat", None, "a dog barked"]
    frame = pd.DataFrame({"text": pd.Categorical(texts), "id": range(len(texts))})
    frame.to_parquet(tmp_path / "cat.parquet", engine="pyarrow")
    assert str(pq.read_schema(tmp_path / "cat.parquet").field("text").type).startswith("dictionary<values=string")
    got = list(iter_texts(FilesSource(path="cat.parquet"), tmp_path))
    assert got == ["the cat sat", "on the mat", "the cat sat", "", "a dog barked"]
    assert all(type(text) is str for text in got)


# ----------------------------------------------------------------------------- 5. DuckDB files


def _sqlite_file(path: Path) -> Path:
    import sqlite3

    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE posts (body TEXT)")
        connection.execute("INSERT INTO posts VALUES ('hello')")
    connection.close()
    return path


@pytest.fixture
def duckdb_configs(monkeypatch):
    """The config of every duckdb.connect call made while the test runs."""
    import duckdb

    seen: list[dict] = []
    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        seen.append(dict(kwargs.get("config") or {}))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)
    return seen


NO_AUTOLOAD = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


NOT_DUCKDB = {
    "sqlite": "is a SQLite database, not a DuckDB database",
    "text": "is a file without the DuckDB header, not a DuckDB database",
    "empty": "is empty (0 bytes), not a DuckDB database",
}


def _not_duckdb(path, kind: str) -> None:
    """A file at `path` that DuckDB cannot open: a SQLite database, a text file or nothing."""
    if kind == "sqlite":
        _sqlite_file(path)
    else:
        path.write_text("" if kind == "empty" else "id,body\n1,hello\n")


@pytest.mark.parametrize("kind", ["sqlite", "text", "empty"])
def test_duckdb_source_on_a_file_that_is_not_duckdb(tmp_path, duckdb_configs, kind):
    from divcoef_assets.core.sources import DuckDBSource, SourceDataError, iter_texts

    reason = NOT_DUCKDB[kind]
    path = tmp_path / "forum.db"
    _not_duckdb(path, kind)
    with pytest.raises(SourceDataError) as caught:
        list(iter_texts(DuckDBSource(database="forum.db", query="SELECT body AS text FROM posts"), tmp_path))
    message = str(caught.value)
    assert str(path) in message and reason in message, message
    assert "download" not in message.lower() and "install" not in message.lower()
    assert duckdb_configs and all(NO_AUTOLOAD.items() <= config.items() for config in duckdb_configs)


def test_duckdb_source_still_reads_a_duckdb_database(tmp_path, duckdb_configs):
    import duckdb

    from divcoef_assets.core.sources import DuckDBSource, iter_texts

    with duckdb.connect(str(tmp_path / "f.duckdb")) as connection:
        connection.execute("CREATE TABLE posts AS SELECT 'hello' AS body")
    duckdb_configs.clear()
    spec = DuckDBSource(database="f.duckdb", query="SELECT body AS text FROM posts")
    assert list(iter_texts(spec, tmp_path)) == ["hello"]
    assert len(duckdb_configs) == 1 and NO_AUTOLOAD.items() <= duckdb_configs[0].items()


@pytest.mark.parametrize("kind", ["sqlite", "text"])
def test_results_store_on_a_file_that_is_not_duckdb(tmp_path, duckdb_configs, kind):
    from divcoef_assets.storage import ResultsStore, StoreFileError

    reason = NOT_DUCKDB[kind]
    path = tmp_path / "results.duckdb"
    _not_duckdb(path, kind)
    before = path.read_bytes()
    store = ResultsStore(path, lock_timeout_s=0)
    for action in (store.ensure_schema, lambda: store.coefficients()):
        with pytest.raises(StoreFileError) as caught:
            action()
        message = str(caught.value)
        assert str(path) in message and reason in message, message
        assert "download" not in message.lower()
    assert path.read_bytes() == before  # left alone
    assert duckdb_configs and all(config == NO_AUTOLOAD for config in duckdb_configs)


def test_results_store_reports_a_zero_byte_database_and_says_to_delete_it(tmp_path):
    from divcoef_assets.storage import ResultsStore, StoreFileError

    path = tmp_path / "results.duckdb"
    path.touch()  # what a crash on a full disk can leave
    store = ResultsStore(path, lock_timeout_s=0)
    with pytest.raises(StoreFileError, match=r"results store .*results\.duckdb is an empty \(0-byte\) file.*holds no "
                                             r"data.*delete it"):
        store.ensure_schema()
    assert path.exists() and path.stat().st_size == 0  # reported, not removed behind the user's back
    path.unlink()
    store.ensure_schema()
    assert store.coefficients() == []


# ----------------------------------------------------------------------------- 6. truncated snapshot


def _snapshot(tmp_path: Path) -> Path:
    from divcoef_assets.core.snapshot import write_snapshot

    path = tmp_path / "snapshot.parquet"
    texts = [("a" if i % 2 else "b", f"document {i} " + "word " * (i % 17)) for i in range(400)]
    write_snapshot(texts, path, chunk_rows=50)
    return path


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_snapshot_names_the_file_and_says_to_rematerialize(tmp_path, keep):
    from divcoef_assets.core.snapshot import CorruptSnapshotError, read_texts, source_index

    path = _snapshot(tmp_path)
    assert len(read_texts(path, [0, 399])) == 2
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])  # a copy or a write cut short
    for read in (lambda: read_texts(path, [0, 1, 399]), lambda: source_index(path)):
        with pytest.raises(CorruptSnapshotError) as caught:
            read()
        message = str(caught.value)
        assert str(path) in message and "truncated or corrupt" in message, message
        assert "re-materialize the dataset_snapshot asset" in message, message


def test_snapshot_with_garbled_data_pages_names_the_file(tmp_path):
    from divcoef_assets.core.snapshot import CorruptSnapshotError, read_texts, source_index

    path = _snapshot(tmp_path)
    data = bytearray(path.read_bytes())
    data[4 : len(data) - 2048] = b"\xa5" * (len(data) - 2052)  # pages overwritten, footer intact
    path.write_bytes(bytes(data))
    for read in (lambda: read_texts(path, list(range(0, 400, 7))), lambda: source_index(path)):
        with pytest.raises(CorruptSnapshotError, match=r"snapshot .*snapshot\.parquet cannot be read.*re-materialize"):
            read()


# ----------------------------------------------------------------------------- 7. CLI and probe names


def _one_probe_registry(tmp_path: Path) -> Path:
    return _registry(tmp_path, """
        default_probe: p
        probes:
          p: {model: gpt2}
          q: {model: gpt2, seq_len: 64}
        datasets:
          a: {source: files, path: a.jsonl}
    """)


@pytest.fixture
def fake_audit(monkeypatch):
    """Replaces run_default_audit: records its keyword arguments, runs nothing."""
    import divcoef_assets.default_audit as default_audit

    calls: list[dict] = []

    def fake(**kwargs):
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(default_audit, "run_default_audit", fake)
    return calls


def test_cli_audit_refuses_an_empty_datasets_list(fake_audit, capsys):
    from divcoef_assets.cli import main

    assert main(["audit", "--datasets"]) == 2
    err = capsys.readouterr().err
    assert "--datasets" in err and "name at least one registered dataset" in err and "drop the flag" in err
    assert fake_audit == []


def test_cli_audit_passes_probe_and_accepts_cache_dir(fake_audit, tmp_path):
    from divcoef_assets.cli import main

    assert main(["audit", "--probe", "q", "--cache-dir", str(tmp_path / "cache"), "--datasets", "a"]) == 0
    assert main(["audit"]) == 0
    assert [(call["probe"], call["datasets"]) for call in fake_audit] == [("q", ["a"]), (None, None)]


def test_default_audit_checks_probe_and_datasets_before_any_work(tmp_path, monkeypatch):
    from divcoef_assets.default_audit import run_default_audit

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    common = dict(dagster_home=str(tmp_path / "home"), registry_path=str(_one_probe_registry(tmp_path)),
                  data_dir=str(tmp_path / "data"), db_path=str(tmp_path / "r.duckdb"))
    with pytest.raises(ValueError, match=r"probe 'ghost' is not registered in .*registry\.yaml; registered probes: \['p', 'q'\]"):
        run_default_audit(probe="ghost", **common)
    with pytest.raises(ValueError, match="datasets is an empty list: name at least one registered dataset"):
        run_default_audit(datasets=[], probe="q", **common)
    assert not (tmp_path / "home").exists() and not (tmp_path / "data").exists() and not (tmp_path / "r.duckdb").exists()


def test_cli_audit_with_an_unregistered_probe_exits_2(tmp_path, monkeypatch, capsys):
    from divcoef_assets.cli import main

    monkeypatch.setenv("DIVCOEF_REGISTRY", str(_one_probe_registry(tmp_path)))
    monkeypatch.setenv("DIVCOEF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["audit", "--probe", "ghost", "--dagster-home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "probe 'ghost' is not registered" in err and "registered probes: ['p', 'q']" in err
    assert not (tmp_path / "home").exists()


def test_resolve_probe_refuses_a_name_that_is_neither_registered_nor_a_model(tmp_path, monkeypatch):
    from divcoef_assets.api import resolve_probe

    monkeypatch.setenv("DIVCOEF_REGISTRY", str(_one_probe_registry(tmp_path)))
    monkeypatch.chdir(tmp_path)
    for typo in ("ghost", "local-gtp2", "P"):
        with pytest.raises(ValueError, match=rf"probe '{typo}' is not registered; registered probes: \['p', 'q'\]"):
            resolve_probe(typo)
    (tmp_path / "my-model").mkdir()
    assert resolve_probe("q").seq_len == 64 and resolve_probe(None).name == "p"
    assert resolve_probe("my-model").model == "my-model"  # an existing local folder
    assert resolve_probe(str(tmp_path / "elsewhere")).model == str(tmp_path / "elsewhere")  # a path: checked at load
    assert resolve_probe("org/model").model == "org/model"  # shaped like a hub id
    assert resolve_probe("gpt2").model == "gpt2" and resolve_probe("distilgpt2").model == "distilgpt2"  # bare hub ids
    assert resolve_probe("arch:gpt2", init="random").model == "arch:gpt2"  # an architecture, randomly initialised
