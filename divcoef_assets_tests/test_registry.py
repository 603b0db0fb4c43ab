"""The registry file: the shipped one loads and points at real data; bad entries say where."""

from __future__ import annotations

import glob
import shutil
import textwrap
from pathlib import Path

import pytest

from divcoef_assets.core.sources import FilesSource, MixtureSource, SyntheticSource, iter_texts
from divcoef_assets.registry import (
    DEFAULT_REGISTRY_PATH,
    REGISTRY_ENV,
    RegistryError,
    load_registry,
)

GOOD = """\
default_probe: small
probes:
  small:
    model: gpt2
    init: random
    batch_size: 8
    n_batches: 4
    epochs: 1
datasets:
  notes:
    source: files
    description: a few notes
    path: corpus/notes.jsonl
  extra:
    source: files
    path: corpus/extra.txt
  ginc:
    source: synthetic
    kind: ginc
    n_concepts: 2
  mix:
    source: mixture
    components: [notes, extra]
    weights: [1, 1]
"""


def write_registry(folder: Path, text: str = GOOD) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus").mkdir(exist_ok=True)
    (folder / "corpus" / "notes.jsonl").write_text('{"text": "note one"}\n{"text": "note two"}\n')
    (folder / "corpus" / "extra.txt").write_text("extra line\n")
    path = folder / "registry.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the shipped file


def test_shipped_registry_loads_with_the_expected_entries() -> None:
    registry = load_registry(DEFAULT_REGISTRY_PATH)
    expected = {
        "bible",
        "fortunes",
        "jargon",
        "debian-docs",
        "perl-docs",
        "postgres-docs",
        "sqlite-docs",
        "lower-bound",
        "upper-bound",
        "ginc-c1",
        "ginc-c2",
        "ginc-c4",
        "ginc-c8",
        "ginc-c16",
        "ginc-c32",
        "ginc-v10",
        "ginc-v200",
        "ginc-v1000",
        "mix-bible-jargon",
        "concat-bible-jargon",
    }
    assert set(registry.datasets) == expected
    assert registry.default_probe == "local-gpt2"
    default = registry.probe()
    assert default.model.endswith("data/probes/local-gpt2") and default.fisher == "mc_head_exact"
    assert default.tokenizer == default.model and default.init == "pretrained"
    assert registry.probe("small-gpt2").extra["pretrain"]["corpus"] == ["bible", "fortunes", "jargon"]
    assert registry.probe("rand-gpt2").init == "random"
    gpt2 = registry.probe("gpt2")
    assert (
        gpt2.model,
        gpt2.init,
        gpt2.batch_size,
        gpt2.seq_len,
        gpt2.n_batches,
        gpt2.epochs,
        gpt2.fisher,
    ) == ("gpt2", "pretrained", 512, 128, 200, 10, "mc")
    concepts = [registry.datasets[f"ginc-c{c}"].source.n_concepts for c in (1, 2, 4, 8, 16, 32)]
    assert concepts == [1, 2, 4, 8, 16, 32]
    vocabularies = [registry.datasets[name].source.vocab_size for name in ("ginc-v10", "ginc-c8", "ginc-v200", "ginc-v1000")]
    assert vocabularies == [10, 50, 200, 1000]
    specs = [spec.source for spec in registry.datasets.values() if spec.is_synthetic]
    assert len(specs) == len(set(specs)), "a synthetic specification is registered twice"
    mix = registry.datasets["mix-bible-jargon"].source
    assert isinstance(mix, MixtureSource) and mix.weight_map == {"bible": 3.0, "jargon": 1.0}
    assert mix.mode == "interleave" and registry.datasets["concat-bible-jargon"].source.mode == "concat"


def test_every_shipped_file_dataset_exists() -> None:
    registry = load_registry(DEFAULT_REGISTRY_PATH)
    corpora = (DEFAULT_REGISTRY_PATH.parent / "corpora").resolve()
    files = [spec for spec in registry.datasets.values() if isinstance(spec.source, FilesSource)]
    assert [spec.name for spec in files] == [
        "bible", "fortunes", "jargon", "debian-docs", "perl-docs", "postgres-docs", "sqlite-docs"
    ]
    for spec in files:
        matches = glob.glob(str(registry.base_dir / spec.source.path))
        assert matches, f"{spec.name}: {spec.source.path} matches nothing under {registry.base_dir}"
        assert all(Path(m).resolve().parent == corpora for m in matches)
        first = next(iter_texts(spec, registry.base_dir))
        assert isinstance(first, str) and first.strip(), f"{spec.name}: the first document is empty"


def test_shipped_mixture_reads_components_with_labels() -> None:
    registry = load_registry(DEFAULT_REGISTRY_PATH)
    labels = set()
    for source, text in registry.iter_dataset_texts("mix-bible-jargon"):
        labels.add(source)
        assert isinstance(text, str)
    assert labels == {"bible", "jargon"}


def test_default_path_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    assert load_registry().path == DEFAULT_REGISTRY_PATH.resolve()
    path = write_registry(tmp_path / "cfg")
    monkeypatch.setenv(REGISTRY_ENV, str(path))
    assert load_registry().path == path.resolve()


# ----------------------------------------------------------------------------- a local registry


def test_relative_paths_resolve_against_the_registry_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_registry(tmp_path / "cfg")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    registry = load_registry(path)
    assert registry.base_dir == path.parent.resolve()
    assert list(registry.iter_dataset_texts("notes")) == [("notes", "note one"), ("notes", "note two")]
    assert list(registry.iter_dataset_texts("mix")) == [
        ("notes", "note one"),
        ("notes", "note two"),
        ("extra", "extra line"),
    ]
    with pytest.raises(ValueError, match="synthetic"):
        list(registry.iter_dataset_texts("ginc"))
    assert isinstance(registry.datasets["ginc"].source, SyntheticSource)
    assert registry.datasets["notes"].description == "a few notes"


def test_fingerprint_is_stable_location_free_and_content_sensitive(tmp_path: Path) -> None:
    first = load_registry(write_registry(tmp_path / "one"))
    second = load_registry(write_registry(tmp_path / "two"))
    assert first.fingerprint() == second.fingerprint() == load_registry(first.path).fingerprint()
    changed = load_registry(
        write_registry(tmp_path / "three", GOOD.replace("n_concepts: 2", "n_concepts: 3"))
    )
    assert changed.fingerprint() != first.fingerprint()


def test_relative_probe_model_folder_becomes_absolute(tmp_path: Path) -> None:
    text = GOOD.replace("model: gpt2", "model: ./probes/tiny")
    registry = load_registry(write_registry(tmp_path / "cfg", text))
    assert registry.probe("small").model == str((tmp_path / "cfg" / "probes" / "tiny").resolve())


def test_lookups_of_unknown_names_list_the_known_ones(tmp_path: Path) -> None:
    registry = load_registry(write_registry(tmp_path / "cfg"))
    with pytest.raises(KeyError, match="dataset 'nope' is not registered.*notes, extra"):
        registry.dataset("nope")
    with pytest.raises(KeyError, match="probe 'big' is not registered.*small"):
        registry.probe("big")


# ----------------------------------------------------------------------------- errors


BAD_CASES = [
    (
        "unknown-source",
        "    source: files\n",
        "    source: ftp\n",
        r"dataset 'notes': unknown source type 'ftp'; known types: files, huggingface, duckdb, synthetic, mixture",
    ),
    (
        "unknown-probe-field",
        "    epochs: 1\n",
        "    epochs: 1\n    learning_rate: 0.1\n",
        r"probe 'small': unknown field\(s\) \['learning_rate'\]; allowed: model",
    ),
    (
        "zero-batch",
        "batch_size: 8",
        "batch_size: 0",
        r"probe 'small': .*batch_size must be a positive integer",
    ),
    (
        "negative-batch",
        "batch_size: 8",
        "batch_size: -3",
        r"probe 'small': .*batch_size must be a positive integer",
    ),
    (
        "unknown-dataset-field",
        "    path: corpus/notes.jsonl\n",
        "    path: corpus/notes.jsonl\n    colum: body\n",
        r"dataset 'notes': unknown field\(s\) 'colum' for a files source",
    ),
    ("bad-dataset-key", "  notes:\n", "  Notes.v2:\n", r"datasets: invalid dataset key 'Notes.v2'"),
    ("bad-probe-key", "  small:\n", "  small probe:\n", r"probes: invalid probe key 'small probe'"),
    ("numeric-key", "  extra:\n", "  2024:\n", r"invalid dataset key 2024: expected a string.*quote it"),
    (
        "unknown-component",
        "[notes, extra]",
        "[notes, missing]",
        r"dataset 'mix': component 'missing' is not a registered dataset",
    ),
    (
        "synthetic-component",
        "[notes, extra]",
        "[notes, ginc]",
        r"dataset 'mix': component 'ginc' is synthetic",
    ),
    (
        "weights-length",
        "weights: [1, 1]",
        "weights: [1]",
        r"dataset 'mix': weights must have one number per component",
    ),
    (
        "missing-source",
        "    source: files\n    description: a few notes\n",
        "    description: a few notes\n",
        r"dataset 'notes': missing `source`",
    ),
    (
        "missing-required",
        "    path: corpus/extra.txt\n",
        "    format: text\n",
        r"dataset 'extra': a files source needs field\(s\) 'path'",
    ),
    (
        "default-probe",
        "default_probe: small",
        "default_probe: large",
        r"default_probe 'large' is not among the probes \['small'\]",
    ),
    ("no-default-probe", "default_probe: small\n", "", r"`default_probe` is missing"),
    ("top-level", "probes:\n", "probe_list: 1\nprobes:\n", r"unknown top-level key\(s\) \['probe_list'\]"),
    ("duplicate", "  extra:\n", "  notes:\n", r"key 'notes' appears twice \(lines 10 and 14\)"),
    (
        "name-mismatch",
        "    init: random\n",
        "    init: random\n    name: other\n",
        r"probe 'small': `name` is the entry's key",
    ),
    ("bad-yaml", "datasets:\n", "datasets: [\n", r"not valid YAML"),
]


@pytest.mark.parametrize("case, old, new, message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_registry_entries_raise_naming_file_and_entry(
    tmp_path: Path, case: str, old: str, new: str, message: str
) -> None:
    assert old in GOOD, case
    path = write_registry(tmp_path / "cfg", GOOD.replace(old, new, 1))
    with pytest.raises(RegistryError, match=message) as info:
        load_registry(path)
    assert str(path.resolve()) in str(info.value)


def test_mixture_of_mixtures_is_refused(tmp_path: Path) -> None:
    text = GOOD + "  mix2:\n    source: mixture\n    components: [mix, notes]\n    weights: [1, 2]\n"
    with pytest.raises(RegistryError, match="dataset 'mix2': component 'mix' is itself a mixture"):
        load_registry(write_registry(tmp_path / "cfg", text))


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(
        RegistryError, match=rf"registry file {tmp_path}/absent.yaml not found.*{REGISTRY_ENV}"
    ):
        load_registry(tmp_path / "absent.yaml")


def test_empty_and_non_mapping_registries(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(RegistryError, match="default_probe` is missing"):
        load_registry(tmp_path / "empty.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(RegistryError, match="top level must be a mapping"):
        load_registry(tmp_path / "list.yaml")


def test_registry_can_be_copied_with_its_data(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    registry = load_registry(tmp_path / "b" / "registry.yaml")
    assert [t for _, t in registry.iter_dataset_texts("notes")] == ["note one", "note two"]
    assert path.exists()


def test_pretrain_probe_entries_are_validated(tmp_path) -> None:
    path = tmp_path / "registry.yaml"
    base = "datasets:\n  a:\n    source: files\n    path: a.jsonl\n  low:\n    source: synthetic\n    kind: lower_bound\n"
    path.write_text("default_probe: p\nprobes:\n  p:\n    pretrain:\n      corpus: [low]\n" + base)
    with pytest.raises(RegistryError, match="not a registered text dataset"):
        load_registry(path)
    path.write_text("default_probe: p\nprobes:\n  p:\n    model: gpt2\n    pretrain:\n      corpus: [a]\n" + base)
    with pytest.raises(RegistryError, match="leave `model` out"):
        load_registry(path)
    path.write_text("default_probe: p\nprobes:\n  p:\n    pretrain:\n      corpus: [a]\n      steps: 5\n" + base)
    probe = load_registry(path).probe("p")
    assert probe.model == "pretrain:p" and probe.extra["pretrain"]["steps"] == 5
