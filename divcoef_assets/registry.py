"""The registry: which datasets can be audited and with which probes, read from one YAML file.

Format (`data/registry.yaml`; another file via `DIVCOEF_REGISTRY` or `load_registry(path)`):

    default_probe: gpt2            # a key of `probes`: the probe used when none is named
    probes:                        # probe key -> ProbeConfig fields (core/config.py), `name` implied
      gpt2:
        model: gpt2                # hub id or local folder (relative to this file's folder)
        init: pretrained
        batch_size: 512
        n_batches: 200
        epochs: 10
    datasets:                      # dataset key -> `source` type, optional `description`, source fields
      bible:
        source: files              # files | huggingface | duckdb | synthetic | mixture
        description: King James Bible
        path: corpora/bible_kjv.jsonl.gz   # file or glob; .gz files are decompressed as read
        format: jsonl              # jsonl | parquet | csv | text; inferred from the suffix if omitted
        text_column: text
      wikitext:
        source: huggingface
        path: saved/wikitext-103   # a save_to_disk folder, or a hub id (needs the network)
        name: wikitext-103-raw-v1
        split: train
      forum:
        source: duckdb
        database: forum.duckdb
        query: SELECT body AS text FROM posts WHERE lang = 'en'
      ginc-c8:
        source: synthetic
        kind: ginc                 # lower_bound | upper_bound | ginc
        n_sequences: 4096
        n_concepts: 8              # ginc only, with vocab_size, n_states
      mix:
        source: mixture
        components: [bible, wikitext]   # registered text datasets, no mixtures
        weights: [3, 1]
        mode: interleave           # interleave | concat

Field lists per source type are the dataclasses in `core/sources.py`. Keys of datasets and probes
follow `keys.validate_key` (they become partition keys, paths and SQL values).

Relative paths (files `path`, huggingface folders, duckdb `database`) are resolved against the
folder that contains the registry file, so the file means the same thing from any working
directory; specs keep the paths as written (`Registry.base_dir` resolves them), so the registry's
fingerprint does not depend on where the repository was cloned. A probe `model` or `tokenizer`
that names an existing folder relative to the registry is made absolute, since the probe loader
has no base folder of its own.

Every problem raises `RegistryError` naming the file and the entry; YAML keys that repeat raise
too, with their line, instead of the later one silently winning. YAML anchors and aliases
(`&name`, `*name`, `<<: *name`) are refused with their line as soon as the parser meets them,
before anything is expanded, so an alias bomb costs nothing. Numbers of numeric probe fields may be
written as strings (`lr: 5e-5` is a string to YAML 1.1, which wants `5.0e-5`): a string that
parses as a number is taken as that number, any other string is an error naming the field.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.fingerprint import digest
from divcoef_assets.core.sources import (
    SOURCE_TYPES,
    DatasetSpec,
    MixtureSource,
    SourceSpecError,
    iter_texts,
    local_paths,
    parse_source,
)
from divcoef_assets.keys import InvalidKeyError, validate_key

logger = logging.getLogger(__name__)

REGISTRY_ENV = "DIVCOEF_REGISTRY"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGISTRY_PATH = REPO_ROOT / "data" / "registry.yaml"
_TOP_LEVEL = ("default_probe", "allowed_roots", "probes", "datasets")
_PROBE_FIELDS = tuple(f.name for f in dataclasses.fields(ProbeConfig) if f.name != "name")
# Numeric probe fields, by annotation (core/config.py uses postponed annotations, so these are strings).
_PROBE_INT_FIELDS = frozenset(f.name for f in dataclasses.fields(ProbeConfig) if f.type == "int")
_PROBE_FLOAT_FIELDS = frozenset(f.name for f in dataclasses.fields(ProbeConfig) if f.type == "float")


class RegistryError(ValueError):
    """The registry file is missing or malformed; the message names the file and the entry."""


class _AnchorRefusedError(yaml.YAMLError):
    """The registry uses a YAML anchor or alias; `line` is 1-based."""

    def __init__(self, what: str, line: int) -> None:
        super().__init__(what)
        self.what = what
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice, and any anchor or alias.

    Anchors and aliases are refused while the document is composed, node by node, at the first
    one met: nothing is expanded, so a "billion laughs" alias bomb is rejected at once.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _AnchorRefusedError(f"alias *{event.anchor}", event.start_mark.line + 1)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _AnchorRefusedError(f"anchor &{anchor}", event.start_mark.line + 1)
        return super().compose_node(parent, index)


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {seen[key]} and {line})", key_node.start_mark
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


@dataclass(frozen=True)
class Registry:
    """Registered datasets and probes, loaded from `path`."""

    path: Path
    datasets: Mapping[str, DatasetSpec]
    probes: Mapping[str, ProbeConfig]
    default_probe: str
    # Folders every dataset file must lie in, symlinks resolved (empty: no restriction).
    allowed_roots: tuple[Path, ...] = ()

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the registry are resolved against."""
        return self.path.parent

    def dataset(self, name: str) -> DatasetSpec:
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(
                f"dataset {name!r} is not registered in {self.path}; known: {', '.join(self.datasets)}"
            ) from None

    def probe(self, name: str | None = None) -> ProbeConfig:
        """The probe `name`, or the default probe when `name` is None."""
        name = self.default_probe if name is None else name
        try:
            return self.probes[name]
        except KeyError:
            raise KeyError(
                f"probe {name!r} is not registered in {self.path}; known: {', '.join(self.probes)}"
            ) from None

    def iter_dataset_texts(self, name: str) -> Iterator[tuple[str, str]]:
        """(source, text) pairs of a text dataset, ready for `core.snapshot.write_snapshot`.

        A mixture yields each component in turn, labelled with the component's name, so the
        snapshot can sample batches by component.
        """
        spec = self.dataset(name)
        if spec.is_synthetic:
            raise ValueError(f"dataset {name!r} is synthetic: it has token ids, not texts")
        if isinstance(spec.source, MixtureSource):
            for component in spec.source.components:
                self.check_allowed(component)
                for text in iter_texts(self.datasets[component], self.base_dir):
                    yield component, text
            return
        self.check_allowed(name)
        for text in iter_texts(spec, self.base_dir):
            yield name, text

    def check_allowed(self, name: str) -> None:
        """Refuse a dataset whose files (symlinks resolved) lie outside `allowed_roots`."""
        if not self.allowed_roots:
            return
        paths = local_paths(self.dataset(name), self.base_dir)
        paths += [f for p in paths if p.is_dir() for f in p.rglob("*") if f.is_file()]  # every file of a folder
        for path in paths:
            real = path.resolve()
            if not any(real.is_relative_to(root) for root in self.allowed_roots):
                raise RegistryError(
                    f"registry {self.path}, dataset {name!r}: {path} resolves to {real}, outside the allowed roots "
                    f"{[str(r) for r in self.allowed_roots]}; move the data under one of them or add its folder to "
                    "`allowed_roots` (whoever edits the registry decides what the audit may read)"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_probe": self.default_probe,
            "probes": {name: probe.to_dict() for name, probe in self.probes.items()},
            "datasets": {name: spec.to_dict() for name, spec in self.datasets.items()},
        }

    def fingerprint(self) -> str:
        """16-hex digest of what is registered (not of where the file lives)."""
        return digest(self.to_dict())


def default_registry_path() -> Path:
    """`$DIVCOEF_REGISTRY` when set, else `<repo>/data/registry.yaml`."""
    override = os.environ.get(REGISTRY_ENV)
    return Path(override).expanduser() if override else DEFAULT_REGISTRY_PATH


def load_registry(path: str | Path | None = None) -> Registry:
    """Load and validate a registry file (`None`: see `default_registry_path`)."""
    path = Path(path).expanduser() if path is not None else default_registry_path()
    path = path.resolve()
    if not path.is_file():
        raise RegistryError(
            f"registry file {path} not found; create it or set {REGISTRY_ENV} to an existing file"
        )
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _AnchorRefusedError as exc:
        raise RegistryError(
            f"registry {path}, line {exc.line}: YAML {exc.what}: anchors and aliases (&name, *name, <<: *name) "
            "are not allowed in the registry; write the values out in full"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RegistryError(f"registry {path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RegistryError(f"registry {path}: the top level must be a mapping with {', '.join(_TOP_LEVEL)}")
    unknown = sorted(map(str, set(data) - set(_TOP_LEVEL)))
    if unknown:
        raise RegistryError(
            f"registry {path}: unknown top-level key(s) {unknown}; allowed: {', '.join(_TOP_LEVEL)}"
        )

    probes = {name: _parse_probe(path, name, entry) for name, entry in _section(path, data, "probes").items()}
    datasets = {
        name: _parse_dataset(path, name, entry) for name, entry in _section(path, data, "datasets").items()
    }
    _check_mixtures(path, datasets)
    for name, probe in probes.items():
        for corpus in probe.extra.get("pretrain", {}).get("corpus", []):
            if corpus not in datasets or datasets[corpus].is_synthetic:
                raise RegistryError(
                    f"registry {path}, probe {name!r}: pretrain corpus {corpus!r} is not a registered text dataset"
                )

    default_probe = data.get("default_probe")
    if default_probe is None:
        raise RegistryError(f"registry {path}: `default_probe` is missing; set it to one of {list(probes)}")
    if default_probe not in probes:
        raise RegistryError(
            f"registry {path}: default_probe {default_probe!r} is not among the probes {list(probes)}"
        )
    registry = Registry(
        path=path,
        datasets=MappingProxyType(datasets),
        probes=MappingProxyType(probes),
        default_probe=default_probe,
        allowed_roots=_allowed_roots(path, data.get("allowed_roots")),
    )
    logger.debug("loaded registry %s: %d datasets, %d probes", path, len(datasets), len(probes))
    return registry


def _allowed_roots(path: Path, value: object) -> tuple[Path, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"registry {path}: `allowed_roots` must be a non-empty list of folders, got {value!r}")
    roots = tuple((path.parent / Path(v).expanduser()).resolve() for v in value)
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise RegistryError(f"registry {path}: allowed_roots {missing} are not folders")
    return roots


def _section(path: Path, data: Mapping[str, Any], section: str) -> dict[str, Any]:
    entries = data.get(section) or {}
    if not isinstance(entries, dict):
        raise RegistryError(f"registry {path}: `{section}` must be a mapping of key -> entry")
    what = section[:-1]
    for name in entries:
        try:
            validate_key(name, what)
        except InvalidKeyError as exc:
            raise RegistryError(f"registry {path}, {section}: {exc}") from None
    return entries


def _parse_probe(path: Path, name: str, entry: object) -> ProbeConfig:
    where = f"registry {path}, probe {name!r}"
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: expected a mapping of ProbeConfig fields, got {entry!r}")
    fields = dict(entry)
    if "name" in fields and fields.pop("name") != name:
        raise RegistryError(f"{where}: `name` is the entry's key; remove the `name` field")
    if "pretrain" in fields:
        # A probe pretrained here by the probe_network asset: its spec lives in `extra`, which is
        # part of the probe fingerprint, and its weights in the artifact folder ("pretrain:" model).
        pretrain = fields.pop("pretrain")
        if not isinstance(pretrain, dict) or not isinstance(pretrain.get("corpus"), list) or not pretrain["corpus"]:
            raise RegistryError(f"{where}: `pretrain` needs a `corpus` list of registered text datasets")
        fields["extra"] = {**dict(fields.get("extra") or {}), "pretrain": pretrain}
        if fields.setdefault("model", f"pretrain:{name}") != f"pretrain:{name}":
            raise RegistryError(f"{where}: a probe with `pretrain` is built here; leave `model` out")
    unknown = sorted(map(str, set(fields) - set(_PROBE_FIELDS)))
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(_PROBE_FIELDS)}")
    for key in sorted(_PROBE_INT_FIELDS | _PROBE_FLOAT_FIELDS):
        if isinstance(fields.get(key), str):
            fields[key] = _number_from_string(where, key, fields[key], integer=key in _PROBE_INT_FIELDS)
    for key in ("model", "tokenizer"):
        value = fields.get(key)
        if isinstance(value, str) and value.startswith((".", "~")):
            fields[key] = str((path.parent / Path(value).expanduser()).resolve())
    try:
        return ProbeConfig(name=name, **fields)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{where}: {exc}") from None


def _number_from_string(where: str, key: str, value: str, *, integer: bool) -> int | float:
    """A numeric probe field written as a string (`lr: 5e-5` is one, to YAML 1.1) as its number."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise RegistryError(f"{where}: field `{key}` is {value!r}, which is not a number; write {kind}") from None
    if not integer:
        return number
    try:
        return int(text)
    except ValueError:
        pass
    if not number.is_integer():
        raise RegistryError(f"{where}: field `{key}` is {value!r}, which is not a whole number; write an integer")
    return int(number)


def _parse_dataset(path: Path, name: str, entry: object) -> DatasetSpec:
    where = f"registry {path}, dataset {name!r}"
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: expected a mapping with `source` and its fields, got {entry!r}")
    fields = dict(entry)
    if "source" not in fields:
        raise RegistryError(f"{where}: missing `source`; one of {', '.join(SOURCE_TYPES)}")
    source_type = fields.pop("source")
    description = fields.pop("description", "") or ""
    if not isinstance(description, str):
        raise RegistryError(f"{where}: description must be a string, got {description!r}")
    try:
        source = parse_source(source_type, fields, where=where)
    except SourceSpecError as exc:
        raise RegistryError(str(exc)) from None
    return DatasetSpec(name=name, source=source, description=description)


def _check_mixtures(path: Path, datasets: Mapping[str, DatasetSpec]) -> None:
    for name, spec in datasets.items():
        if not isinstance(spec.source, MixtureSource):
            continue
        where = f"registry {path}, dataset {name!r}"
        for component in spec.source.components:
            if component not in datasets:
                raise RegistryError(
                    f"{where}: component {component!r} is not a registered dataset; known: {', '.join(datasets)}"
                )
            kind = datasets[component]
            if kind.is_mixture:
                raise RegistryError(
                    f"{where}: component {component!r} is itself a mixture; mixtures do not nest"
                )
            if kind.is_synthetic:
                raise RegistryError(
                    f"{where}: component {component!r} is synthetic; a mixture's components must be text datasets"
                )
