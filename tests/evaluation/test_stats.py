from __future__ import annotations

import math

import pytest
from scipy import stats

from nnunet_ext.evaluation.stats import paired_tests


def test_hand_example():
    # Differences a - b = 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5) -> t = 3 / (sqrt(2.5) / sqrt(5)) = 3 * sqrt(2), df 4.
    # Wilcoxon: all 5 differences positive -> W- = 0, exact two-sided p = 2 / 2**5 = 0.0625.
    b = {"c0": 0.5, "c1": 0.4, "c2": 0.3, "c3": 0.2, "c4": 0.1}
    a = {k: v + d for (k, v), d in zip(b.items(), [1, 2, 3, 4, 5])}
    r = paired_tests(a, b)
    assert r.n_pairs == 5 and r.n_dropped_nan == 0 and r.n_unpaired == 0
    assert r.mean_difference == pytest.approx(3.0)
    assert r.mean_b == pytest.approx(0.3) and r.mean_a == pytest.approx(3.3)
    assert r.t_statistic == pytest.approx(3 * math.sqrt(2))
    assert r.t_pvalue == pytest.approx(2 * stats.t.sf(3 * math.sqrt(2), df=4))
    assert r.wilcoxon_statistic == 0.0
    assert r.wilcoxon_pvalue == pytest.approx(0.0625)


def test_pairs_by_case_id_not_order():
    a = {"x": 1.0, "y": 2.0, "z": 4.0}
    b = {"z": 1.0, "x": 1.0, "y": 1.0}
    assert paired_tests(a, b).mean_difference == pytest.approx((0 + 1 + 3) / 3)


def test_nan_pairs_dropped_consistently():
    b = {"c0": 0.5, "c1": 0.4, "c2": 0.3, "c3": 0.2, "c4": 0.1}
    a = {k: v + d for (k, v), d in zip(b.items(), [1, 2, 3, 4, 5])}
    ref = paired_tests(a, b)
    a2 = {**a, "c5": math.nan, "c6": 7.0}
    b2 = {**b, "c5": 1.0, "c6": math.nan}
    r = paired_tests(a2, b2)
    assert r.n_dropped_nan == 2 and r.n_pairs == 5
    assert r.as_dict() | {"n_dropped_nan": 0} == ref.as_dict()


def test_unpaired_cases():
    a, b = {"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0.0, "b": 0.5, "d": 9.0}
    with pytest.raises(ValueError, match=r"only in a: \['c'\].*only in b: \['d'\]"):
        paired_tests(a, b)
    r = paired_tests(a, b, missing="drop")
    assert r.n_unpaired == 2 and r.n_pairs == 2
    with pytest.raises(ValueError, match="missing"):
        paired_tests(a, b, missing="ignore")


def test_degenerate_inputs_give_nan_not_errors():
    r = paired_tests({"a": 1.0}, {"a": 0.0})
    assert r.n_pairs == 1 and math.isnan(r.t_pvalue)
    r = paired_tests({}, {})
    assert r.n_pairs == 0 and math.isnan(r.mean_a) and math.isnan(r.wilcoxon_pvalue)
