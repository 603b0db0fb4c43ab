"""Rows of `save_to_disk` folders read by positioned reads agree with pyarrow, or are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from divcoef_assets.core import arrow_ipc, sampler
from divcoef_assets.core.sampler import sample_pool
from divcoef_assets.core.sources import CorruptSourceError, HuggingFaceSource, SourceNotFoundError


def texts(n: int) -> list[str | None]:
    return [None if i % 11 == 3 else ("" if i % 13 == 5 else f"doc {i} é " + "w" * (i % 9)) for i in range(n)]


def every_row(column: arrow_ipc.SavedColumn) -> list[str | None]:
    values = column.read_rows(range(column.num_rows))
    return [values[r] for r in range(column.num_rows)]


@pytest.mark.parametrize("large", [False, True])
def test_rows_match_pyarrow_after_columns_of_many_types(tmp_path: Path, large: bool) -> None:
    import datasets

    n = 2500
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "flag": pa.array([i % 2 == 0 for i in range(n)]),
        "tags": pa.array([[f"t{i}"] * (i % 3) for i in range(n)], pa.list_(pa.string())),
        "meta": pa.array([{"a": i, "b": str(i)} for i in range(n)]),
        "lang": pa.array(["en", "fr"] * (n // 2)).dictionary_encode(),
        "nothing": pa.nulls(n),
        "text": pa.array(texts(n), pa.large_string() if large else pa.string()),
        "after": pa.array([float(i) for i in range(n)]),
    })
    datasets.Dataset(table).save_to_disk(str(tmp_path / "hf"), max_shard_size="40KB")
    assert len(list((tmp_path / "hf").glob("*.arrow"))) > 1
    column = arrow_ipc.open_saved_column(tmp_path / "hf", "train", "text")
    assert column.num_rows == n and every_row(column) == texts(n)
    rows = np.random.default_rng(0).choice(n, 50, replace=False).tolist()
    assert column.read_rows(rows) == {r: texts(n)[r] for r in rows}


def test_a_dataset_dict_split_and_empty_batches_are_read(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a", "b", "c"]}),
        "test": datasets.Dataset.from_dict({"text": ["x", "y"]}),
    }).save_to_disk(str(folder))
    assert every_row(arrow_ipc.open_saved_column(folder, "test", "text")) == ["x", "y"]
    with pytest.raises(arrow_ipc.Unsupported, match="no split 'valid'"):
        arrow_ipc.open_saved_column(folder, "valid", "text")

    schema = pa.schema([("text", pa.string())])
    plain = tmp_path / "plain"
    datasets.Dataset.from_dict({"text": ["one"]}).save_to_disk(str(plain))
    arrow = next(plain.glob("*.arrow"))
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([], pa.string())], schema=schema))
        writer.write_batch(pa.record_batch([pa.array(["one", "two"])], schema=schema))
        writer.write_batch(pa.record_batch([pa.array([], pa.string())], schema=schema))
        writer.write_batch(pa.record_batch([pa.array(["three"])], schema=schema))
    assert every_row(arrow_ipc.open_saved_column(plain, "train", "text")) == ["one", "two", "three"]


def test_compressed_files_and_missing_columns_are_refused_and_the_sampler_reads_them_through_datasets(
    tmp_path: Path,
) -> None:
    import datasets

    folder = tmp_path / "hf"
    values = [f"doc {i}" for i in range(400)]
    datasets.Dataset.from_dict({"text": values}).save_to_disk(str(folder))
    spec = HuggingFaceSource(path="hf")
    plain = sample_pool(spec, tmp_path, seed=1, k=30)
    with pytest.raises(arrow_ipc.Unsupported, match="no column 'body'"):
        arrow_ipc.open_saved_column(folder, "train", "body")

    arrow = next(folder.glob("*.arrow"))
    table = pa.ipc.open_stream(arrow.read_bytes()).read_all()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=100)
    with pytest.raises(arrow_ipc.Unsupported, match="compressed"):
        arrow_ipc.open_saved_column(folder, "train", "text")
    assert sample_pool(spec, tmp_path, seed=1, k=30) == plain


def test_a_file_cut_after_its_headers_were_walked_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    folder = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": [f"doc {i} " * 20 for i in range(2000)]}).save_to_disk(str(folder))
    arrow = next(folder.glob("*.arrow"))
    walked = arrow_ipc.open_saved_column(folder, "train", "text")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 3])
    with pytest.raises(arrow_ipc.Unsupported, match=rf"{arrow.name}: the file ends before byte"):
        walked.read_rows([1999])
    monkeypatch.setattr(sampler.arrow_ipc, "open_saved_column", lambda *args: walked)
    with pytest.raises(CorruptSourceError, match=rf"a drawn row cannot be read: .*{arrow.name}: the file ends"):
        sample_pool(HuggingFaceSource(path="hf"), tmp_path, seed=0, k=1000)


def test_a_data_file_missing_from_the_folder_is_refused_and_the_sampler_names_it(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(100)]}).save_to_disk(str(folder))
    arrow = next(folder.glob("*.arrow"))
    arrow.unlink()
    with pytest.raises(arrow_ipc.Unsupported, match=arrow.name):
        arrow_ipc.open_saved_column(folder, "train", "text")
    with pytest.raises(SourceNotFoundError, match=rf"hf is not a dataset folder .*{arrow.name}"):
        sample_pool(HuggingFaceSource(path="hf"), tmp_path, seed=0, k=10)
