"""The leaderboard's statistics: the difference test, tied groups, the bounds scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divcoef_assets.core.coefficient import diversity_from_matrix
from divcoef_assets.core.leaderboard import Entry, build, difference, kind_of, position


def entry(name, value, stderr=0.001, n=8, kind="corpus"):
    return Entry(name, value, stderr, value - 2 * stderr, value + 2 * stderr, n, kind)


def test_difference_sums_the_jackknife_variances_and_uses_welch_degrees_of_freedom():
    a, b = entry("a", 0.12, 0.003, n=8), entry("b", 0.10, 0.004, n=11)
    d = difference(a, b)
    assert d.difference == pytest.approx(0.02) and d.stderr == pytest.approx(0.005)
    welch = 0.005**4 / (0.003**4 / 7 + 0.004**4 / 10)
    assert d.df == pytest.approx(welch)
    assert d.half_width > 1.96 * 0.005 and d.tied is (0.02 <= d.half_width)
    assert difference(entry("a", 0.12, 0.001), entry("b", 0.10, 0.001)).tied is False
    assert difference(entry("a", 0.101, 0.002), entry("b", 0.10, 0.002)).tied is True
    undefined = difference(entry("a", 0.5, math.nan), entry("b", 0.1))
    assert undefined.tied and math.isnan(undefined.stderr)  # no error estimate: not shown to differ


def test_difference_agrees_with_the_jackknife_of_simulated_matrices():
    rng = np.random.default_rng(0)

    def matrix(level, n=10):
        x = rng.normal(level, 0.01, size=(n, n))
        m = np.triu(np.abs(x), 1)
        return m + m.T

    a, b = diversity_from_matrix(matrix(0.30)), diversity_from_matrix(matrix(0.10))
    ea, eb = (Entry(k, e.value, e.stderr, e.ci_low, e.ci_high, e.n_batches, "corpus") for k, e in (("a", a), ("b", b)))
    assert difference(ea, eb).tied is False and difference(ea, ea).tied is True


def test_groups_split_where_the_leader_is_shown_to_differ_and_calibration_is_apart():
    entries = [entry("p", 0.118), entry("q", 0.1175), entry("r", 0.115), entry("s", 0.105), entry("t", 0.1045),
               entry("lower", 0.001, kind="lower_bound"), entry("upper", 0.331, kind="upper_bound"),
               entry("g", 0.05, kind="ginc"), entry("mix", 0.30, kind="mixture")]
    board = build(entries)
    assert [r.entry.dataset for r in board.corpora] == ["p", "q", "r", "s", "t"]
    assert [r.entry.dataset for r in board.calibration] == ["upper", "mix", "g", "lower"]
    assert board.groups() == [["p", "q", "r"], ["s", "t"]]
    rows = {r.entry.dataset: r for r in board.corpora}
    assert rows["r"].tied_with == ("p", "q") and rows["s"].tied_with == ("t",)
    assert rows["p"].position == pytest.approx((0.118 - 0.001) / 0.33)
    assert board.lower.dataset == "lower" and all(r.group == 0 for r in board.calibration)


def test_position_without_both_bounds_is_none_and_duplicates_are_refused():
    assert position(0.1, None, entry("u", 0.3)) is None
    assert position(0.4, entry("l", 0.0), entry("u", 0.2)) == pytest.approx(2.0)  # above the upper bound
    assert all(r.position is None for r in build([entry("a", 0.1), entry("b", 0.2)]).corpora)
    with pytest.raises(ValueError, match="one entry per dataset"):
        build([entry("a", 0.1), entry("a", 0.2)])


def test_kind_of_registered_sources():
    assert kind_of("files", {}) == "corpus" and kind_of("duckdb", {}) == "corpus"
    assert kind_of("synthetic", {"kind": "ginc"}) == "ginc" and kind_of("mixture", {}) == "mixture"
