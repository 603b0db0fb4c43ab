"""What people see: plots and tables on the materializations, the triage and baseline tables and
views in DuckDB, and the HTML report, all from one tiny audit materialized in a temporary folder."""

from __future__ import annotations

import base64
import io
import re

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from divcoef_assets import cli
from divcoef_assets.core import plots
from divcoef_assets.core.atomic import _umask
from divcoef_assets.core.baselines import TEXT_METRICS
from divcoef_assets.core.markdown import sig
from divcoef_assets.core.snapshot import read_texts
from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.storage import ResultsStore
from divcoef_assets_tests.reliability.support import tiny_probe, write_registry
from divcoef_assets_tests.test_assets import _write_corpus

DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
NUMBER = re.compile(r"\d+\.\d+(?:e[-+]?\d+)?")


def _significant_digits(number: str) -> int:
    return len(number.split("e")[0].replace(".", "").lstrip("0"))


class Audit:
    def __init__(self, folder, probe_dir):
        self.folder = folder
        _write_corpus(folder / "a.jsonl", 0)
        _write_corpus(folder / "b.jsonl", 1)
        self.registry = write_registry(folder, {
            "corpus-a": {"source": "files", "path": "a.jsonl"},
            "corpus-b": {"source": "files", "path": "b.jsonl"},
            "cat": {"source": "mixture", "components": ["corpus-a", "corpus-b"], "weights": [1, 1], "mode": "concat"},
            "lower-bound": {"source": "synthetic", "kind": "lower_bound", "n_sequences": 64},
        }, {"tiny": tiny_probe(probe_dir, n_batches=4, noise_repeats=2, noise_batches=1)})
        self.db = folder / "r.duckdb"
        self.store = ResultsStore(self.db)
        self.instance = dg.DagsterInstance.ephemeral()
        self.instance.add_dynamic_partitions("dataset", ["corpus-a", "cat", "lower-bound"])
        self.instance.add_dynamic_partitions("probe", ["tiny"])
        self.metadata: dict[tuple[str, str], dict] = {}

    def defs(self, reports=True):
        return build_definitions(registry_path=str(self.registry), data_dir=str(self.folder / "data"), db_path=str(self.db), reports=reports)

    def run(self, job: str, key: str | None, reports=True) -> dict[tuple[str, str], dict]:
        result = self.defs(reports).resolve_job_def(job).execute_in_process(partition_key=key, instance=self.instance)
        assert result.success
        return {(e.materialization.asset_key.path[-1], key): {k: _plain(v) for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}


def _plain(value):
    """Table metadata as a list of rows (dicts of text), anything else as its value."""
    if isinstance(value, dg.TableMetadataValue):
        return [dict(r.data) for r in value.records]
    return value.value


@pytest.fixture(scope="module")
def audit(tmp_path_factory, tiny_gpt2_dir):
    a = Audit(tmp_path_factory.mktemp("reports"), tiny_gpt2_dir)
    for name in ("corpus-a", "cat", "lower-bound"):
        a.metadata.update(a.run("audit", dataset_probe_key(name, "tiny")))
    a.metadata.update(a.run("cross_audit", "tiny"))
    a.metadata.update(a.run("refresh_leaderboard", None))
    a.reports_off = a.run("audit", dataset_probe_key("corpus-a", "tiny"), reports=False)
    return a


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in DATA_URI.findall(text)]


def _assert_real_plot(png: bytes) -> None:
    import matplotlib.image

    assert 3_000 < len(png) < 400_000, len(png)
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100 and pixels.shape[1] >= plots.MIN_WIDTH_PX, pixels.shape
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


@pytest.mark.parametrize("asset, dataset, entries", [
    ("distance_matrix", "corpus-a", ["heatmap"]),
    ("distance_matrix", "cat", ["heatmap"]),
    ("distance_matrix", "lower-bound", ["heatmap"]),
    ("diversity_coefficient", "corpus-a", ["histogram", "trend"]),
    ("diversity_coefficient", "cat", ["histogram"]),
    ("cross_diversity", None, ["cross_heatmap"]),
    ("leaderboard", "", ["tiny: chart"]),
])
def test_each_plot_is_a_real_image(audit, asset, dataset, entries):
    key = "tiny" if dataset is None else None if dataset == "" else dataset_probe_key(dataset, "tiny")
    metadata = audit.metadata[(asset, key)]
    for entry in entries:
        images = _images(metadata[entry])
        assert len(images) == 1, entry
        _assert_real_plot(images[0])


def test_mixture_histogram_splits_pairs_by_source():
    groups = plots.pair_groups(["bible", "bible", "jargon", "jargon", "bible"])
    assert {k: len(v) for k, v in groups.items()} == {"within bible": 3, "within jargon": 1, "bible vs jargon": 6}
    matrix = np.full((4, 4), 0.9)
    matrix[:2, :2] = matrix[2:, 2:] = 0.1
    np.fill_diagonal(matrix, 0)
    order = plots.batch_order(matrix[[0, 2, 1, 3]][:, [0, 2, 1, 3]], ["x"] * 4)
    assert sorted(order[:2].tolist()) in ([0, 2], [1, 3])  # hierarchical order keeps the blocks together


def test_metadata_reads_as_people_read_it(audit, tmp_path):
    key = dataset_probe_key("corpus-a", "tiny")
    record = audit.store.latest_coefficient("corpus-a", "tiny")
    meta = audit.metadata[("diversity_coefficient", key)]
    [summary] = meta["summary"]
    assert summary["diversity"] == sig(record.value) and summary["noise floor"] == sig(record.noise_floor)
    assert summary["95% interval"] == f"[{sig(record.ci_low)}, {sig(record.ci_high)}]"
    assert summary["noise-corrected"] == sig(record.noise_corrected) and summary["batches"] == "4"
    assert summary["snapshot"] == record.snapshot_fingerprint[:16] and summary["probe"].startswith("tiny")
    assert meta["value"] == float(sig(record.value))
    cross = audit.metadata[("cross_diversity", "tiny")]
    pair = next(p for p in audit.store.latest_cross_coefficients("tiny") if {p.dataset_a, p.dataset_b} == {"corpus-a", "cat"})
    row_a = next(row for row in cross["cross_matrix"] if row["dataset"] == "corpus-a")
    assert row_a["cat"] == f"{sig(pair.value)} [{sig(pair.ci_low)}, {sig(pair.ci_high)}]"
    assert row_a["corpus-a"] == f"{sig(record.value)} [{sig(record.ci_low)}, {sig(record.ci_high)}] (own)"  # the diagonal
    board = audit.metadata[("leaderboard", None)]
    assert [row["dataset"] for row in board["tiny: real corpora"]] == ["corpus-a"] and board["tiny: real corpora"][0]["tied group"] == "group 1"
    calibration = board["tiny: calibration sets"]
    values = [float(row["diversity"]) for row in calibration]
    assert {row["dataset"] for row in calibration} == {"cat", "lower-bound"} and values == sorted(values, reverse=True)
    assert "Most diverse: corpus-a" in board["tiny: verdict"]
    assert "**" not in str(audit.metadata)
    for (asset, _), entries in audit.metadata.items():
        for name, value in entries.items():
            text = DATA_URI.sub("", str(value))
            assert all(_significant_digits(n) <= 4 for n in NUMBER.findall(text)), (asset, name, text[:300])


def test_reports_off_leaves_out_plots_and_keeps_rows(audit):
    key = dataset_probe_key("corpus-a", "tiny")
    assert "heatmap" not in audit.reports_off[("distance_matrix", key)]
    assert "histogram" not in audit.reports_off[("diversity_coefficient", key)]
    assert "heatmap" in audit.metadata[("distance_matrix", key)]
    # the same measurement again without reports: its baselines and triage rows stay as they were
    assert audit.store.query("SELECT count(*) FROM latest_baselines WHERE dataset = 'corpus-a'")[0][0] == len(TEXT_METRICS) + 1
    assert audit.store.query("SELECT count(*) FROM coefficients WHERE dataset = 'corpus-a'")[0][0] == 1


def test_batch_outliers_lead_to_the_documents(audit):
    rows = audit.store.query(
        "SELECT batch_index, rank, mean_distance, z_score, source, doc_indices, preview FROM latest_batch_outliers "
        "WHERE dataset = 'corpus-a' ORDER BY rank")
    assert [r[1] for r in rows] == [1, 2, 3, 4]
    distances = audit.store.query("SELECT i, j, distance FROM distances WHERE dataset = 'corpus-a' AND probe = 'tiny'")
    matrix = np.zeros((4, 4))
    for i, j, d in distances:
        matrix[i, j] = d
    means = matrix.sum(axis=1) / 3
    assert rows[0][0] == int(np.argmax(means)) and rows[0][2] == pytest.approx(means.max())
    assert rows[0][3] > 0 > rows[-1][3]
    snapshot = next((audit.folder / "data" / "artifacts" / "snapshots" / "corpus-a").glob("*.parquet"))
    for batch, _, _, _, source, docs, preview in rows:
        assert source == "corpus-a" and len(docs) == 4
        assert preview.startswith(" ".join(read_texts(snapshot, docs[:1])[0].split())[:40])
    batches = next((audit.folder / "data" / "artifacts" / "token_batches" / "corpus-a").glob("*.parquet"))
    table = pq.read_table(batches, columns=["batch_index", "doc_index"]).to_pydict()
    assert [d for b, d in zip(table["batch_index"], table["doc_index"]) if b == rows[0][0]] == list(rows[0][5])
    meta = audit.metadata[("diversity_coefficient", dataset_probe_key("corpus-a", "tiny"))]
    top = meta["outlier_batches"][0]
    assert top["rank"] == "1" and top["batch"] == str(rows[0][0]) and top["preview"] == rows[0][6]
    assert top["documents (snapshot rows)"] == ", ".join(str(d) for d in rows[0][5])
    baselines = {row["measure"]: row for row in meta["baselines"]}
    assert set(baselines) == set(TEXT_METRICS) | {"vendi_task2vec"}
    sources = {r[0] for r in audit.store.query("SELECT DISTINCT source FROM batch_outliers WHERE dataset = 'cat'")}
    assert sources <= {"corpus-a", "corpus-b"}  # a concatenation's batches each come from one component


def test_baselines_rank_and_correlate_across_datasets(audit):
    metrics = {r[0] for r in audit.store.query("SELECT metric FROM baselines WHERE dataset = 'corpus-a'")}
    assert metrics == set(TEXT_METRICS) | {"vendi_task2vec"}
    assert {r[0] for r in audit.store.query("SELECT metric FROM baselines WHERE dataset = 'lower-bound'")} == {"vendi_task2vec"}
    low, value, high = audit.store.query(
        "SELECT ci_low, value, ci_high FROM latest_baselines WHERE dataset = 'corpus-a' AND metric = 'distinct_2'")[0]
    assert low < value < high
    ranks = audit.store.query("SELECT dataset, value, rank FROM baseline_ranks WHERE metric = 'distinct_1' ORDER BY rank")
    assert [r[2] for r in ranks] == [1, 2] and [r[1] for r in ranks] == sorted((r[1] for r in ranks), reverse=True)
    pairs = audit.store.query(
        "SELECT c.value, b.value FROM latest_baselines b JOIN latest_coefficients c USING (dataset, probe) WHERE b.metric = 'vendi_task2vec'")
    expected = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    rho, n = audit.store.query("SELECT spearman, n_datasets FROM baseline_correlations WHERE metric = 'vendi_task2vec'")[0]
    assert n == 3 and rho == pytest.approx(expected)


def test_report_is_one_self_contained_html_file(audit, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert cli.main(["report", "--db", str(audit.db), "--out", str(out)]) == 0
    text = out.read_text()
    sections = ('<h3 id="verdict">Verdict</h3>', "<h4>Leaderboard: real corpora</h4>", "<h4>Calibration sets", "<h4>Checks</h4>",
                "<h4>Bounds</h4>", '<h3 id="details">Details</h3>', "<h4>Cross-diversity</h4>", "<h4>Baselines</h4>",
                "Spearman rank correlation", "<h4>Outlier batches</h4>", "<h4>Batch distances</h4>")
    assert [text.index(section) for section in sections] == sorted(text.index(section) for section in sections)  # the verdict first
    assert "noise_floor_below_a_third" in text and "**" not in text and "shared by the heatmaps" in text
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # the mode of any file the user writes, not mkstemp's 0600
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "<script" not in text
    images = _images(text)
    assert len(images) == 2 + 3  # leaderboard chart, cross heatmap, one heatmap per dataset
    _assert_real_plot(images[0])
    for name in ("corpus-a", "cat", "lower-bound"):
        assert name in text
    assert cli.main(["report", "--db", str(audit.db), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "Spearman with the coefficient" in printed and "| corpus-a |" in printed
