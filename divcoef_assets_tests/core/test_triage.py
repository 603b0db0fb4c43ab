"""Per-batch triage: the farthest batch ranks first, with its documents and a preview."""

import numpy as np
import pytest

from divcoef_assets.core.triage import BatchDocuments, mean_distances, preview, rank_batches


def test_the_batch_far_from_the_others_ranks_first():
    matrix = np.full((5, 5), 0.1)
    matrix[3, :] = matrix[:, 3] = 0.8
    np.fill_diagonal(matrix, 0)
    docs = BatchDocuments(doc_indices=tuple((k, k + 10) for k in range(5)), labels=("a",) * 5,
                          texts=tuple((f"text of batch {k}", "second") for k in range(5)))
    ranked = rank_batches(matrix, docs)
    assert [o.batch_index for o in ranked][:1] == [3] and [o.rank for o in ranked] == [1, 2, 3, 4, 5]
    assert ranked[0].mean_distance == pytest.approx(0.8) and ranked[0].z_score > 1.5
    assert ranked[0].doc_indices == (3, 13) and ranked[0].preview == "text of batch 3 / second"
    assert mean_distances(matrix)[0] == pytest.approx((0.1 * 3 + 0.8) / 4)


def test_equal_batches_have_zero_z_and_previews_are_short():
    ranked = rank_batches(np.ones((3, 3)) - np.eye(3), BatchDocuments(((0,), (1,), (2,)), ("a", "b", "a")))
    assert all(o.z_score == 0 for o in ranked) and [o.batch_index for o in ranked] == [0, 1, 2]
    assert ranked[0].preview.startswith("(no texts")
    assert len(preview(["word " * 200])) == 160 and preview(["a\n\n b"]) == "a b"
    with pytest.raises(ValueError, match="2 batches"):
        rank_batches(np.zeros((1, 1)), BatchDocuments(((0,),), ("a",)))
