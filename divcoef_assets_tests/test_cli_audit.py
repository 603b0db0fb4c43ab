"""The headline command, end to end: `divcoef audit` in a subprocess on a tiny registry (two JSON
Lines datasets, two tiny random GPT-2 probes, everything in a temporary folder), once as is and
once with `--probe` and `--cache-dir`; what it prints, what lands in DuckDB and in the cache."""

from __future__ import annotations

import re

import pytest

from divcoef_assets.storage import ResultsStore
from divcoef_assets_tests.conftest import save_tiny_gpt2
from divcoef_assets_tests.reliability.support import tiny_probe
from divcoef_assets_tests.tiny_audit import TinyAudit

DATASETS = ["corpus-a", "corpus-b"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-audit")
    probes = {
        "tiny": tiny_probe(save_tiny_gpt2(folder / "tiny-probe", n_embd=8, n_positions=16, seed=0)),
        "other": tiny_probe(save_tiny_gpt2(folder / "other-probe", n_embd=8, n_positions=16, seed=1)),
        "unused": tiny_probe(folder / "tiny-probe", epochs=2),  # registered, never audited
    }
    audit = TinyAudit(folder, probes, DATASETS)
    plain = audit.run()
    audit.stdout.rename(folder / "plain.stdout.txt")
    audit.stderr.rename(folder / "plain.stderr.txt")
    cache = folder / "my-cache"
    flagged = audit.run("--probe", "other", "--cache-dir", str(cache))
    return audit, cache, plain, flagged


def _table_rows(stdout: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^\s*\d+\s+(\S+)\s+(-?\d+\.\d{4})\s+\[", stdout, flags=re.M)}


def test_divcoef_audit_prints_both_datasets_and_stores_them(audited):
    audit, _, (code, out, err), _ = audited
    assert code == 0, err[-3000:]
    assert "probe 'tiny'" in out
    rows = _table_rows(out)
    assert sorted(rows) == DATASETS, out
    assert list(rows.values()) == sorted(rows.values(), reverse=True)  # most diverse first, as in the UI and the report
    assert "Real corpora, most diverse first" in out and "group 1" in out and "Most diverse:" in out
    assert "2 of 2 datasets audited" in out
    stored = dict(ResultsStore(audit.db).query("SELECT dataset, value FROM latest_coefficients WHERE probe = 'tiny'"))
    assert sorted(stored) == DATASETS
    for name in DATASETS:
        assert rows[name] == pytest.approx(stored[name], abs=5e-5)  # the table is read back from DuckDB
    cross = ResultsStore(audit.db).query("SELECT dataset_a, dataset_b FROM latest_cross_coefficients WHERE probe = 'tiny'")
    assert cross == [("corpus-a", "corpus-b")]
    default_cache = audit.data / "artifacts" / "cache" / "embeddings"
    assert list(default_cache.rglob("*.safetensors"))


def test_probe_and_cache_dir_options(audited):
    audit, cache, _, (code, out, err) = audited
    assert code == 0, err[-3000:]
    assert "probe 'other'" in out
    assert sorted(_table_rows(out)) == DATASETS
    store = ResultsStore(audit.db)
    assert sorted(store.query("SELECT dataset FROM latest_coefficients WHERE probe = 'other'")) == [(d,) for d in DATASETS]
    assert store.query("SELECT count(*) FROM latest_coefficients")[0][0] == 4  # both probes, both datasets
    # the other probe's embeddings went to --cache-dir, and only there
    assert len(list(cache.rglob("*.safetensors"))) == 2 * 3  # 2 datasets x 3 batches, no noise repeats
    default_cache = audit.data / "artifacts" / "cache" / "embeddings"
    assert len(list(default_cache.rglob("*.safetensors"))) == 2 * 3  # the first audit's, nothing added


def test_the_console_shows_dagster_at_info_and_above_only(audited):
    audit, _, (_, plain_out, plain_err), (_, out, err) = audited
    for text in (plain_out, plain_err, out, err):
        assert " - DEBUG - " not in text
        assert "alembic" not in text and "BetaWarning" not in text
    assert " - INFO - " in plain_err  # the steps' own messages still show
    assert "embedding 1/3" in plain_err


def test_checks_not_evaluated_are_not_logged_as_missing_outputs(audited):
    import dagster as dg

    audit, _, (_, plain_out, plain_err), (_, out, err) = audited
    assert "check noise_floor_below_a_third not evaluated" in plain_err  # the reason is logged instead
    for text in (plain_out, plain_err, out, err):
        assert "did not yield" not in text
    with dg.instance_for_test(temp_dir=str(audit.home)) as instance:
        runs = instance.get_runs()
        assert runs
        stored = [entry.user_message for run in runs for entry in instance.all_logs(run.run_id)]
        assert any("not evaluated" in message for message in stored)
        assert not [message for message in stored if "did not yield" in message]


def test_a_broken_dataset_is_counted_once_and_the_others_are_audited(tmp_path, tiny_gpt2_dir):
    audit = TinyAudit.with_probe(tmp_path, tiny_gpt2_dir, ["good", "broken"])
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": \n')  # a malformed line
    code, out, err = audit.run()
    assert code == 1
    assert "1 of 2 datasets audited" in out and "failed: broken" in err
    assert sorted(_table_rows(out)) == ["good"]


def test_only_the_audited_probe_gets_a_partition(audited):
    import dagster as dg

    audit, *_ = audited
    with dg.instance_for_test(temp_dir=str(audit.home)) as instance:
        assert sorted(instance.get_dynamic_partitions("probe")) == ["other", "tiny"]  # not "unused"
        assert sorted(instance.get_dynamic_partitions("dataset")) == DATASETS
        runs = instance.get_runs()
        assert runs and all(r.remote_job_origin is not None and r.remote_job_origin.location_name == "divcoef_assets"
                            and r.remote_job_origin.repository_origin.repository_name == "__repository__" for r in runs)
        assert {r.job_name for r in runs} >= {"probe", "audit", "cross_audit", "refresh_leaderboard"}
