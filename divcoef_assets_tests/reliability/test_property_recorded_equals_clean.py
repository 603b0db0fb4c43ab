"""Property: whatever sequence of registry edits and partial re-materializations a user makes,
every coefficient recorded in DuckDB equals a clean recomputation (empty cache, fresh folder)
with the settings and the corpus content recorded beside it.

Hypothesis draws the sequences: edits of the batch geometry, the sampling seed, estimator fields
and the corpus content, interleaved with materializations of the whole chain or of any suffix of
it (what the Dagster UI lets a user select). Steps may fail (a stale upstream is refused); they
must then write nothing, which the property checks too, since every row must still be exact.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from divcoef_assets.core.config import ProbeConfig

from .support import write_jsonl
from .test_correct_under_change import DOWNSTREAM_OF_BATCHES, FULL, Workspace, clean_value

SELECTIONS = [FULL, ["token_batches", *DOWNSTREAM_OF_BATCHES], DOWNSTREAM_OF_BATCHES,
              ["distance_matrix", "diversity_coefficient"], ["diversity_coefficient"]]
EDITS = st.one_of(
    st.tuples(st.just("seq_len"), st.sampled_from([8, 12])),
    st.tuples(st.just("batch_size"), st.sampled_from([4, 5])),
    st.tuples(st.just("n_batches"), st.sampled_from([3, 4])),
    st.tuples(st.just("seed"), st.sampled_from([0, 1])),
    st.tuples(st.just("epochs"), st.sampled_from([1, 2])),
    st.tuples(st.just("fisher"), st.sampled_from(["mc", "mc_head_exact"])),
    st.tuples(st.just("corpus"), st.integers(0, 3)),
)
# Each step edits one thing, then materializes the whole chain or a suffix of it.
OPERATIONS = st.lists(st.tuples(EDITS, st.integers(0, len(SELECTIONS) - 1)), min_size=1, max_size=3)


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS)
def test_every_recorded_coefficient_equals_a_clean_recomputation(small_probe_dir, operations):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ws = Workspace(folder, small_probe_dir)  # 16 positions: room for either seq_len drawn
        for (field, value), selection in [(("seed", 0), 0), *operations]:
            if field == "corpus":
                write_jsonl(folder / "a.jsonl", n=16, seed=value)
            else:
                ws.edit_probe(**{field: value})
            ws.materialize("corpus-a", SELECTIONS[selection])
        rows = ws.rows("corpus-a")
        assert rows, "the first full materialization always records a row"
        for k, row in enumerate(rows):
            config = ProbeConfig(**json.loads(row.config_json))
            clean = clean_value(row, ws.registry, ws.artifacts, folder / f"clean-{k}")
            assert row.value == pytest.approx(clean, rel=1e-6), (operations, row)
            assert row.n_batches == config.n_batches
