"""Dataset sources: typed specs and streaming text readers.

A registered dataset names where its documents come from. Five kinds of source exist:

- `files`: JSONL, Parquet, CSV or plain-text files (one path or a glob); JSONL, CSV and text
  files may be gzip-compressed (`.gz` after the format's suffix, e.g. `corpus.jsonl.gz`) and are
  decompressed as they stream, so compressed corpora can ship with the repository;
- `huggingface`: a Hugging Face dataset, from the hub or from a folder written by
  `Dataset.save_to_disk` (the project machines are offline, so the folder is the usual case);
- `duckdb`: one SELECT against a DuckDB database, opened read-only;
- `synthetic`: the paper's conceptual lower/upper bounds and GINC-style corpora, generated as
  token ids elsewhere (`core/synthetic.py`); they have no text;
- `mixture`: weighted components that are themselves registered text datasets.

Every reader streams: it holds one line, row group, CSV row or record batch at a time, so corpora
larger than memory and single enormous documents pass through (the tokenizer truncates later).
Bad input stops the read with an error that names the file and line (or row) and says what to
fix, because a silently skipped record would change the coefficient without anyone noticing.
Readers yield the documents as they are, empty ones included (`null` becomes ""): dropping and
counting empty documents is the snapshot's job (`core/snapshot.py`).

No Dagster here: the snapshot step reads a dataset through `iter_texts(spec, base_dir)`.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import itertools
import json
import logging
import math
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from divcoef_assets.core.fingerprint import digest

logger = logging.getLogger(__name__)

FileFormat = Literal["jsonl", "parquet", "csv", "text"]
FILE_FORMATS: tuple[str, ...] = ("jsonl", "parquet", "csv", "text")
TEXT_SPLITS: tuple[str, ...] = ("lines", "paragraphs")
SYNTHETIC_KINDS: tuple[str, ...] = ("lower_bound", "upper_bound", "ginc")
MIXTURE_MODES: tuple[str, ...] = ("interleave", "concat")
SOURCE_TYPES: tuple[str, ...] = ("files", "huggingface", "duckdb", "synthetic", "mixture")
# The longest line a JSON Lines or text file may have: the readers hold one line at a time, so
# this bounds their memory (a snapshot's peak is several times one document).
MAX_LINE_BYTES = 64 * 2**20
# Mixture weights are relative; a bound keeps their ratios, and the shares computed from them, exact
# in float64 and turns a typo'd exponent (1e60) into an error rather than a one-component mixture.
MAX_MIXTURE_WEIGHT = 1e6

_SUFFIX_FORMATS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
}
GZIP_SUFFIX = ".gz"
# Formats whose files may be gzip-compressed; Parquet compresses its pages itself and needs random access.
GZIP_FORMATS: tuple[str, ...] = ("jsonl", "csv", "text")
_GLOB_CHARS = re.compile(r"[*?\[]")
# A hub id is "name" or "owner/name"; anything else that is not an existing folder is a typo'd path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_BATCH_ROWS = 1024


class SourceError(Exception):
    """Base class of everything that can go wrong describing or reading a source."""


class SourceSpecError(SourceError, ValueError):
    """A source spec is malformed (unknown field, wrong type, impossible value)."""


class SourceDataError(SourceError, ValueError):
    """A source's content is unusable (malformed record, missing column, bad encoding)."""


class CorruptSourceError(SourceDataError):
    """A source file cannot be read at all (a corrupt Parquet footer or Arrow file); names the file."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A file, glob, folder or database that a source names does not exist."""


class HubUnavailableError(SourceError, ConnectionError):
    """The Hugging Face hub could not be reached."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SourceSpecError(message)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_optional_count(name: str, value: object) -> None:
    _require(value is None or _is_positive_int(value), f"{name} must be a positive integer, got {value!r}")


def _check_name(name: str, value: object) -> None:
    _require(isinstance(value, str) and value != "", f"{name} must be a non-empty string, got {value!r}")


def _is_gzip(path: str | Path) -> bool:
    return str(path).lower().endswith(GZIP_SUFFIX)


def _format_suffix(path: str) -> str:
    """The suffix that names a file's format: the last one, or the one before a final `.gz`."""
    name = Path(path).name.lower()
    if name.endswith(GZIP_SUFFIX):
        name = name[: -len(GZIP_SUFFIX)]
    return Path(name).suffix


@dataclass(frozen=True)
class FilesSource:
    """Documents from local files: one path or a glob, relative to the registry's folder."""

    type: ClassVar[str] = "files"
    is_synthetic: ClassVar[bool] = False  # True only for synthetic sources, whose documents are token ids
    path: str
    # Inferred from the path's suffix when omitted (.jsonl/.ndjson, .parquet/.pq, .csv, .txt/.text/.md),
    # looking past a final .gz (x.jsonl.gz is jsonl).
    format: FileFormat | None = None
    text_column: str = "text"  # JSONL key / Parquet or CSV column; unused for `text`
    # `text` format only: "lines" = each non-blank line is a document, "paragraphs" = blank-line separated.
    split: Literal["lines", "paragraphs"] = "lines"
    max_documents: int | None = None  # stop after this many records (None = all)

    def __post_init__(self) -> None:
        _check_name("path", self.path)
        if self.format is None:
            inferred = _SUFFIX_FORMATS.get(_format_suffix(self.path))
            _require(
                inferred is not None,
                f"cannot infer the format of {self.path!r} from its suffix; "
                f"set `format` to one of {', '.join(FILE_FORMATS)}",
            )
            object.__setattr__(self, "format", inferred)
        _require(
            self.format in FILE_FORMATS,
            f"format must be one of {', '.join(FILE_FORMATS)}, got {self.format!r}",
        )
        _require(
            self.format in GZIP_FORMATS or not _is_gzip(self.path),
            f"{self.path!r}: gzip-compressed files are read for the {', '.join(GZIP_FORMATS)} formats only; "
            "Parquet compresses internally: decompress the file and set a compression codec when writing it",
        )
        _check_name("text_column", self.text_column)
        _require(
            self.split in TEXT_SPLITS, f"split must be one of {', '.join(TEXT_SPLITS)}, got {self.split!r}"
        )
        _require(
            self.split == "lines" or self.format == "text",
            f"split applies to the `text` format only (this source is {self.format})",
        )
        _check_optional_count("max_documents", self.max_documents)


@dataclass(frozen=True)
class HuggingFaceSource:
    """A Hugging Face dataset: a hub id, or a folder written by `Dataset.save_to_disk`."""

    type: ClassVar[str] = "huggingface"
    is_synthetic: ClassVar[bool] = False
    path: str
    name: str | None = None  # the dataset config, e.g. "wikitext-103-raw-v1"
    split: str = "train"
    text_column: str = "text"
    streaming: bool | None = None  # hub ids only; None = stream (nothing is downloaded whole)
    max_documents: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("path", "split", "text_column"):
            _check_name(field_name, getattr(self, field_name))
        _require(self.name is None or (isinstance(self.name, str) and self.name != ""),
                 f"name must be a non-empty string, got {self.name!r}")
        _require(self.streaming is None or isinstance(self.streaming, bool),
                 f"streaming must be true or false, got {self.streaming!r}")
        _check_optional_count("max_documents", self.max_documents)


@dataclass(frozen=True)
class DuckDBSource:
    """Documents from one SELECT against a DuckDB database, opened read-only."""

    type: ClassVar[str] = "duckdb"
    is_synthetic: ClassVar[bool] = False
    database: str
    query: str
    text_column: str = "text"
    max_documents: int | None = None

    def __post_init__(self) -> None:
        _check_name("database", self.database)
        _check_name("query", self.query)
        _check_name("text_column", self.text_column)
        _check_optional_count("max_documents", self.max_documents)


@dataclass(frozen=True)
class SyntheticSource:
    """Token-id datasets: the conceptual bounds of the paper and GINC-style HMM mixtures.

    The GINC knobs are filled with their defaults for `ginc` and must stay unset otherwise, so two
    specs that generate the same data compare (and fingerprint) equal.
    """

    type: ClassVar[str] = "synthetic"
    is_synthetic: ClassVar[bool] = True
    kind: Literal["lower_bound", "upper_bound", "ginc"]
    n_sequences: int = 4096
    seed: int = 0
    n_concepts: int | None = None  # ginc: latent concepts (HMMs) in the mixture, default 8
    vocab_size: int | None = None  # ginc: emitted vocabulary, default 50
    n_states: int | None = None  # ginc: hidden states per HMM, default 10

    GINC_DEFAULTS: ClassVar[Mapping[str, int]] = {"n_concepts": 8, "vocab_size": 50, "n_states": 10}

    def __post_init__(self) -> None:
        _require(
            self.kind in SYNTHETIC_KINDS,
            f"kind must be one of {', '.join(SYNTHETIC_KINDS)}, got {self.kind!r}",
        )
        _require(
            _is_positive_int(self.n_sequences),
            f"n_sequences must be a positive integer, got {self.n_sequences!r}",
        )
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            f"seed must be a non-negative integer, got {self.seed!r}",
        )
        for knob, default in self.GINC_DEFAULTS.items():
            value = getattr(self, knob)
            if self.kind == "ginc":
                if value is None:
                    object.__setattr__(self, knob, default)
                else:
                    _require(_is_positive_int(value), f"{knob} must be a positive integer, got {value!r}")
            else:
                _require(value is None, f"{knob} applies to kind ginc only (this source is {self.kind})")


@dataclass(frozen=True)
class MixtureSource:
    """Weighted components, each a registered non-mixture text dataset.

    `interleave`: every batch draws from every component in proportion to the weights (the
    paper's Mix1/Mix2). `concat`: every batch comes from one component, chosen with the weights.
    That components exist and hold text is checked by the registry, which knows them.
    """

    type: ClassVar[str] = "mixture"
    is_synthetic: ClassVar[bool] = False
    components: tuple[str, ...]
    weights: tuple[float, ...]
    mode: Literal["interleave", "concat"] = "interleave"

    def __post_init__(self) -> None:
        for name in ("components", "weights"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _require(
            isinstance(self.components, tuple) and len(self.components) >= 1,
            f"components must be a non-empty list of dataset names, got {self.components!r}",
        )
        for component in self.components:
            _check_name("each component", component)
        _require(
            len(set(self.components)) == len(self.components),
            f"components repeat a name: {list(self.components)}",
        )
        _require(isinstance(self.weights, tuple), f"weights must be a list of numbers, got {self.weights!r}")
        _require(
            len(self.weights) == len(self.components),
            f"weights must have one number per component: "
            f"{len(self.components)} components, {len(self.weights)} weights",
        )
        for component, weight in zip(self.components, self.weights):
            _require(
                isinstance(weight, (int, float))
                and not isinstance(weight, bool)
                and (isinstance(weight, int) or math.isfinite(weight))
                and 0 < weight <= MAX_MIXTURE_WEIGHT,
                f"weight {weight!r} of component {component!r} is invalid: weights must be positive finite "
                f"numbers, > 0 and <= {MAX_MIXTURE_WEIGHT:g} (only their ratios matter: scale them down)",
            )
        _require(
            self.mode in MIXTURE_MODES, f"mode must be one of {', '.join(MIXTURE_MODES)}, got {self.mode!r}"
        )

    @property
    def weight_map(self) -> dict[str, float]:
        """Component name -> weight, in component order."""
        return dict(zip(self.components, (float(w) for w in self.weights)))


SourceSpec = FilesSource | HuggingFaceSource | DuckDBSource | SyntheticSource | MixtureSource
_SOURCE_CLASSES: dict[str, type] = {
    cls.type: cls for cls in (FilesSource, HuggingFaceSource, DuckDBSource, SyntheticSource, MixtureSource)
}


def source_to_dict(spec: SourceSpec) -> dict[str, Any]:
    """The spec as plain data, `source` first (the form the registry file uses)."""
    data: dict[str, Any] = {"source": spec.type}
    for key, value in dataclasses.asdict(spec).items():
        data[key] = list(value) if isinstance(value, tuple) else value
    return data


def source_fields(source_type: str) -> tuple[str, ...]:
    """The field names a source of `source_type` accepts."""
    if source_type not in _SOURCE_CLASSES:
        raise SourceSpecError(f"unknown source type {source_type!r}; known types: {', '.join(SOURCE_TYPES)}")
    return tuple(f.name for f in dataclasses.fields(_SOURCE_CLASSES[source_type]))


def parse_source(source_type: object, fields: Mapping[str, Any], *, where: str = "source") -> SourceSpec:
    """Build a spec from plain data (e.g. a YAML entry without its `source` key).

    Errors are `SourceSpecError`s prefixed with `where` (say, the registry file and entry).
    """
    if not isinstance(source_type, str) or source_type not in _SOURCE_CLASSES:
        raise SourceSpecError(
            f"{where}: unknown source type {source_type!r}; known types: {', '.join(SOURCE_TYPES)}"
        )
    allowed = source_fields(source_type)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise SourceSpecError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))} for a {source_type} source; "
            f"allowed: source, description, {', '.join(allowed)}"
        )
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
    try:
        return _SOURCE_CLASSES[source_type](**values)
    except SourceSpecError as exc:
        raise SourceSpecError(f"{where}: {exc}") from None
    except TypeError as exc:  # a required field is missing
        missing = [
            f.name
            for f in dataclasses.fields(_SOURCE_CLASSES[source_type])
            if f.default is dataclasses.MISSING and f.name not in fields
        ]
        raise SourceSpecError(
            f"{where}: a {source_type} source needs field(s) {', '.join(map(repr, missing))} ({exc})"
        ) from None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its key, where its documents come from, and a human description."""

    name: str
    source: SourceSpec
    description: str = ""

    @property
    def source_type(self) -> str:
        return self.source.type

    @property
    def is_synthetic(self) -> bool:
        return self.source.is_synthetic

    @property
    def is_mixture(self) -> bool:
        return isinstance(self.source, MixtureSource)

    def to_dict(self) -> dict[str, Any]:
        data = source_to_dict(self.source)
        data["description"] = self.description
        return data


# --------------------------------------------------------------------------- readers


def iter_texts(spec: SourceSpec | DatasetSpec, base_dir: str | Path) -> Iterator[str]:
    """Stream the documents of a text source, in source order, empty ones included.

    Relative paths resolve against `base_dir` (the registry file's folder). Synthetic sources
    have no text and mixtures are read through their components, so both are refused.
    """
    if isinstance(spec, DatasetSpec):
        spec = spec.source
    base = Path(base_dir)
    if isinstance(spec, FilesSource):
        texts = _iter_files(spec, base)
    elif isinstance(spec, HuggingFaceSource):
        texts = _iter_huggingface(spec, base)
    elif isinstance(spec, DuckDBSource):
        texts = _iter_duckdb(spec, base)
    elif isinstance(spec, SyntheticSource):
        raise SourceSpecError(
            f"a synthetic source ({spec.kind}) produces token ids, not texts: use core/synthetic.py"
        )
    elif isinstance(spec, MixtureSource):
        raise SourceSpecError("a mixture has no texts of its own: read each of its components")
    else:
        raise TypeError(f"not a source spec: {spec!r}")
    max_documents = getattr(spec, "max_documents", None)
    return itertools.islice(texts, max_documents) if max_documents else texts


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _check_text(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceDataError(
            f"{where}: the text is a {type(value).__name__} ({_preview(value)}), not a string; "
            "fix the record or point text_column at a string field"
        )
    if "\x00" in value:
        raise SourceDataError(
            f"{where}: the text contains a NUL character; is this a binary file? clean the record"
        )
    return value


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _matched_files(spec: FilesSource, base: Path) -> list[Path]:
    pattern = _resolve(spec.path, base)
    if _GLOB_CHARS.search(spec.path):
        matches = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise SourceNotFoundError(
                f"the glob {spec.path!r} (resolved to {pattern}) matches no files; check the path, "
                f"which is relative to {base}"
            )
        return files
    if not pattern.exists():
        raise SourceNotFoundError(
            f"file {spec.path!r} not found (resolved to {pattern}); check the path, which is relative to {base}"
        )
    if pattern.is_dir():
        raise SourceSpecError(
            f"{pattern} is a folder: use a glob such as '{spec.path.rstrip('/')}/*.{spec.format}'"
        )
    return [pattern]


def _iter_files(spec: FilesSource, base: Path) -> Iterator[str]:
    readers = {"jsonl": _iter_jsonl, "parquet": _iter_parquet, "csv": _iter_csv, "text": _iter_text}
    files = _matched_files(spec, base)
    logger.info("reading %d %s file(s) for %s", len(files), spec.format, spec.path)
    for path in files:
        yield from readers[str(spec.format)](path, spec)


def _raw_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file as bytes, newline kept; a `.gz` file is decompressed as it streams.

    A line is read with a bound (`MAX_LINE_BYTES`), so one enormous line cannot take the
    process's memory: a longer one stops with an error naming the file and line. A damaged gzip
    file (cut short, corrupt, or not gzip at all) stops with an error naming the file and the
    last line read whole, instead of a bare EOFError or zlib error.
    """
    gzipped = _is_gzip(path)
    lineno = 0
    with gzip.open(path, "rb") if gzipped else open(path, "rb") as handle:
        while True:
            try:
                raw = handle.readline(MAX_LINE_BYTES + 1)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise SourceDataError(
                    f"{path}: cannot decompress after line {lineno} ({type(exc).__name__}: {exc}); "
                    "the gzip file may be truncated or corrupt: copy or compress it again "
                    "(`gzip -t` checks a file)"
                ) from None
            if not raw:
                return
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise SourceDataError(
                    f"{path}, line {lineno}: longer than {MAX_LINE_BYTES // 2**20} MiB; one document per line is "
                    "limited to that size so memory stays bounded: split the document into several lines"
                )
            yield raw


def decode_line(raw: bytes, where: str, *, first: bool = False) -> str:
    """One line of a UTF-8 file as text (a byte-order mark dropped from the `first` line); a NUL
    byte or invalid UTF-8 stops with `where` (file and line) and what to do."""
    nul = raw.find(0)
    if nul >= 0:
        raise SourceDataError(f"{where}: NUL byte at column {nul + 1}; is this a binary file? clean it or pick the right format")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceDataError(f"{where}: invalid UTF-8 at byte {exc.start} of the line; re-encode the file as UTF-8") from None
    return line[1:] if first and line.startswith("\ufeff") else line


def jsonl_text(line: str, column: str, where: str) -> str:
    """The text field of one JSON Lines record (a non-blank line)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SourceDataError(
            f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); "
            "every line of a JSONL file must be one complete JSON object"
        ) from None
    if not isinstance(record, dict):
        raise SourceDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if column not in record:
        raise SourceDataError(f"{where}: no field {column!r}; the record has {sorted(record)}; set text_column to one of them")
    return _check_text(record[column], where)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, plain or gzip, newline kept; bad bytes stop with file and line."""
    for lineno, raw in enumerate(_raw_lines(path), start=1):
        yield lineno, decode_line(raw, f"{path}, line {lineno}", first=lineno == 1)


def _iter_jsonl(path: Path, spec: FilesSource) -> Iterator[str]:
    for lineno, line in _decoded_lines(path):
        if line.strip():
            yield jsonl_text(line, spec.text_column, f"{path}, line {lineno}")


def _iter_text(path: Path, spec: FilesSource) -> Iterator[str]:
    paragraph: list[str] = []
    for _, line in _decoded_lines(path):
        line = line.rstrip("\r\n")
        if spec.split == "lines":
            if line.strip():
                yield line
        elif line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def _iter_csv(path: Path, spec: FilesSource) -> Iterator[str]:
    # Python's csv module rather than pyarrow's streaming reader: it reports the physical line of a
    # bad row and takes a field of any size, where pyarrow fails on a row larger than its block.
    if csv.field_size_limit() < 2**31 - 1:
        csv.field_size_limit(2**31 - 1)
    lines = _decoded_lines(path)
    position = {"line": 0}

    def raw_lines() -> Iterator[str]:
        for lineno, line in lines:
            position["line"] = lineno
            yield line

    reader = csv.reader(raw_lines())
    try:
        header = next(reader)
    except StopIteration:
        raise SourceDataError(f"{path}: empty CSV file (no header row)") from None
    except csv.Error as exc:
        raise SourceDataError(f"{path}, line {position['line']}: bad CSV header ({exc})") from None
    if spec.text_column not in header:
        raise SourceDataError(
            f"{path}: no column {spec.text_column!r}; the header has {header}; set text_column to one of them"
        )
    index = header.index(spec.text_column)
    row = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SourceDataError(f"{path}, line {position['line']}: bad CSV ({exc})") from None
        row += 1
        if not fields:
            continue
        if len(fields) != len(header):
            raise SourceDataError(
                f"{path}, line {position['line']} (row {row}): {len(fields)} fields where the header has "
                f"{len(header)}; quote fields that contain commas or newlines"
            )
        yield _check_text(fields[index], f"{path}, line {position['line']}")


def _iter_parquet(path: Path, spec: FilesSource) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceDataError(
            f"{path}: not a readable Parquet file ({exc}); it may be truncated or corrupt: rewrite it"
        ) from None
    with parquet:
        schema = parquet.schema_arrow
        if spec.text_column not in schema.names:
            raise SourceDataError(
                f"{path}: no column {spec.text_column!r}; the file has {schema.names}; set text_column to one of them"
            )
        column_type = schema.field(spec.text_column).type
        # A dictionary-encoded column (a pandas Categorical written with pyarrow) holds strings too:
        # its batches are decoded to plain strings below.
        dictionary = pa.types.is_dictionary(column_type)
        value_type = column_type.value_type if dictionary else column_type
        if not (
            pa.types.is_string(value_type)
            or pa.types.is_large_string(value_type)
            or pa.types.is_string_view(value_type)
        ):
            raise SourceDataError(
                f"{path}, row 1: column {spec.text_column!r} holds {column_type} values, not strings; "
                "point text_column at a string column"
            )
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=[spec.text_column]):
                column = batch.column(0)
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                for value in column.to_pylist():
                    row += 1
                    yield _check_text(value, f"{path}, row {row}")
        except (pa.ArrowException, OSError) as exc:
            raise SourceDataError(
                f"{path}: reading failed after row {row} ({exc}); the file may be truncated or corrupt: rewrite it"
            ) from None


def _iter_huggingface(spec: HuggingFaceSource, base: Path) -> Iterator[str]:
    local = _resolve(spec.path, base)
    if local.is_dir():
        loaded = load_saved_dataset(spec, local)
        row = 0
        for batch in loaded.select_columns([spec.text_column]).iter(batch_size=_BATCH_ROWS):
            for value in batch[spec.text_column]:
                row += 1
                yield _check_text(value, f"{local}, row {row}")
        return
    if spec.path.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(spec.path):
        raise SourceNotFoundError(
            f"Hugging Face dataset folder {spec.path!r} not found (resolved to {local}); "
            f"a relative path is relative to {base}"
        )
    yield from _iter_hub(spec)


def load_saved_dataset(spec: HuggingFaceSource, local: Path) -> Any:
    """The split of a `save_to_disk` folder (memory-mapped), its text column checked."""
    import datasets
    import pyarrow as pa

    try:
        loaded = datasets.load_from_disk(str(local))
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"{local} is not a dataset folder written by Dataset.save_to_disk ({exc})") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        bad = _first_bad_arrow_file(local)
        raise CorruptSourceError(
            f"{bad or local}: cannot be read as an Arrow file of a save_to_disk folder ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); it may be truncated or corrupt: save the dataset again"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise SourceDataError(f"{local}: no split {spec.split!r}; the folder has {sorted(loaded)}")
        loaded = loaded[spec.split]
    if spec.text_column not in loaded.column_names:
        raise SourceDataError(
            f"{local}: no column {spec.text_column!r}; the dataset has {loaded.column_names}; set text_column to one of them"
        )
    return loaded


def _first_bad_arrow_file(folder: Path) -> Path | None:
    import pyarrow as pa

    for path in sorted(folder.rglob("*.arrow")):
        try:
            with pa.memory_map(str(path)) as source:
                pa.ipc.open_stream(source).read_all()
        except (pa.ArrowException, OSError):
            return path
    return None


def _hub_error(spec: HuggingFaceSource, exc: BaseException) -> HubUnavailableError:
    return HubUnavailableError(
        f"could not reach the Hugging Face hub for dataset {spec.path!r} ({exc}); these machines may be "
        "offline: save it with save_to_disk and point `path` at the folder"
    )


def _iter_hub(spec: HuggingFaceSource) -> Iterator[str]:
    import datasets

    streaming = True if spec.streaming is None else spec.streaming
    try:
        loaded = datasets.load_dataset(spec.path, spec.name, split=spec.split, streaming=streaming)
    except ConnectionError as exc:
        raise _hub_error(spec, exc) from exc
    except Exception as exc:  # unknown dataset, config or split: the library's message says which
        raise SourceDataError(
            f"could not load Hugging Face dataset {spec.path!r} ({type(exc).__name__}: {exc})"
        ) from exc
    row = 0
    try:
        for record in loaded:
            row += 1
            if spec.text_column not in record:
                raise SourceDataError(
                    f"Hugging Face dataset {spec.path!r}, row {row}: no column {spec.text_column!r}; "
                    f"the record has {sorted(record)}; set text_column to one of them"
                )
            yield _check_text(record[spec.text_column], f"Hugging Face dataset {spec.path!r}, row {row}")
    except ConnectionError as exc:
        raise _hub_error(spec, exc) from exc


def _nestable(statement: str) -> str:
    """The statement without what trails its last token (`;`, comments), so it can be nested as a subquery."""
    import duckdb

    tokens = duckdb.tokenize(statement)
    body = [i for i, (start, kind) in enumerate(tokens)
            if kind != duckdb.token_type.comment and not (kind == duckdb.token_type.operator and statement[start] == ";")]
    if not body or body[-1] + 1 == len(tokens):
        return statement.strip()
    return statement[:tokens[body[-1] + 1][0]].strip()


def _duckdb_connection(spec: DuckDBSource, base: Path, *, memory_limit: str | None = None) -> tuple[Any, str]:
    """A read-only connection to the source's database and its one SELECT statement, checked.

    `memory_limit` caps DuckDB's buffer pool (DuckDB's default is most of the machine's memory,
    and a scan of a large table keeps its blocks cached up to it)."""
    import duckdb

    from divcoef_assets.core.duckdb_files import NO_EXTENSION_AUTOLOAD, not_duckdb_reason

    database = _resolve(spec.database, base)
    if not database.is_file():
        raise SourceNotFoundError(
            f"DuckDB database {spec.database!r} not found (resolved to {database}); "
            f"a relative path is relative to {base}"
        )
    try:
        # Read-only and without file-system access: the query can read the database and nothing else.
        # Extension auto-install/auto-load are off: a SQLite file must not make DuckDB download a scanner.
        connection = duckdb.connect(
            str(database), read_only=True,
            config={"enable_external_access": False, **NO_EXTENSION_AUTOLOAD, **({"memory_limit": memory_limit} if memory_limit else {})},
        )
    except duckdb.Error as exc:
        reason = not_duckdb_reason(database)
        if reason is not None:
            raise SourceDataError(
                f"{database}: is {reason}, not a DuckDB database; point `database` at a DuckDB file "
                "(a duckdb source reads DuckDB databases only)"
            ) from None
        raise SourceDataError(f"{database}: cannot open the DuckDB database read-only ({exc})") from None
    try:
        try:
            statements = connection.extract_statements(spec.query)
        except duckdb.Error as exc:
            raise SourceDataError(f"{database}: the query does not parse ({exc})") from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise SourceDataError(
                f"{database}: the query must be exactly one SELECT statement, got {spec.query!r}"
            )
        query = _nestable(statements[0].query)
        try:
            probe = connection.execute(f"SELECT * FROM ({query}) LIMIT 0")
            columns = [d[0] for d in probe.description]
            probe.fetchall()  # finished: the connection takes the next statement
        except duckdb.Error as exc:
            raise SourceDataError(f"{database}: the query failed ({exc})") from None
        if spec.text_column not in columns:
            raise SourceDataError(
                f"{database}: the query returns no column {spec.text_column!r}; it returns {columns}; "
                "set text_column to one of them"
            )
    except BaseException:
        connection.close()
        raise
    return connection, query


def _iter_duckdb(spec: DuckDBSource, base: Path) -> Iterator[str]:
    import duckdb

    database = _resolve(spec.database, base)
    connection, query = _duckdb_connection(spec, base)
    try:
        try:
            cursor = connection.execute(query)
        except duckdb.Error as exc:
            raise SourceDataError(f"{database}: the query failed ({exc})") from None
        index = [d[0] for d in cursor.description].index(spec.text_column)
        row = 0
        while rows := cursor.fetchmany(_BATCH_ROWS):
            for record in rows:
                row += 1
                yield _check_text(record[index], f"{database}, query row {row}")
    finally:
        connection.close()


# ----------------------------------------------------------------------------- source versions


def local_paths(spec: SourceSpec | DatasetSpec, base_dir: str | Path) -> list[Path]:
    """The local files or folders reading `spec` would open, resolved by the reader's own rules
    (a hub dataset, a synthetic or a mixture source opens none of its own)."""
    source = spec.source if isinstance(spec, DatasetSpec) else spec
    base = Path(base_dir)
    if isinstance(source, FilesSource):
        return _matched_files(source, base)
    if isinstance(source, DuckDBSource):
        return [_resolve(source.database, base)]
    if isinstance(source, HuggingFaceSource):
        local = _resolve(source.path, base)
        return [local] if local.is_dir() else []
    return []


def _stat_entry(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path), st.st_ino, st.st_size, st.st_mtime_ns]


def _files_version(spec: FilesSource, base: Path) -> list[Any]:
    return [_stat_entry(p) for p in _matched_files(spec, base)]  # the reader's own resolution


def _duckdb_version(spec: DuckDBSource, base: Path) -> list[Any]:
    database = _resolve(spec.database, base)
    # Committed rows can sit in the write-ahead log until a checkpoint: it is part of the content.
    return [_stat_entry(p) if p.exists() else [str(p), "absent"] for p in (database, Path(f"{database}.wal"))]


def _huggingface_version(spec: HuggingFaceSource, base: Path) -> list[Any]:
    local = _resolve(spec.path, base)
    if local.is_dir():
        return [_stat_entry(p) for p in sorted(local.rglob("*")) if p.is_file()]
    return ["hub", spec.path]  # a hub dataset cannot be checked cheaply: its spec is its version


def _synthetic_version(spec: SyntheticSource, base: Path) -> list[Any]:
    return []  # generated from the spec alone


_VERSION_RULES: dict[type, Any] = {
    FilesSource: _files_version,
    DuckDBSource: _duckdb_version,
    HuggingFaceSource: _huggingface_version,
    SyntheticSource: _synthetic_version,
}


def source_version(spec: SourceSpec | DatasetSpec, base_dir: str | Path, *, component_versions: Sequence[str] = ()) -> str:
    """A cheap identity of what reading `spec` would return: the spec plus the identity (path,
    inode, size, modification time) of every file the reader would open, resolved by the
    reader's own rules. A mixture's version is its spec plus its components' versions, which
    the caller passes in `component_versions`.

    A source that cannot be resolved (a missing file, say) gets a version that names the
    problem, so it differs from any readable state and the reader reports the error itself.
    """
    source = spec.source if isinstance(spec, DatasetSpec) else spec
    if isinstance(source, MixtureSource):
        state: Any = list(component_versions)
    else:
        rule = _VERSION_RULES.get(type(source))
        if rule is None:
            raise SourceSpecError(f"no version rule for source type {type(source).__name__}: add one to _VERSION_RULES")
        try:
            state = rule(source, Path(base_dir))
        except (SourceError, OSError) as exc:
            state = ["unreadable", type(exc).__name__, str(exc)]
    return digest(source_to_dict(source), state)
