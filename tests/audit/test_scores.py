"""Disagreement scores and ranks against hand-ranked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_ext.audit.scores import disagreement_scores, rank_fractions, ranks


def test_rank_fractions_average_ties_and_rank_nan_last():
    got = rank_fractions(np.array([3.0, 1.0, 1.0, math.nan]))
    np.testing.assert_allclose(got, [3 / 4, 1.5 / 4, 1.5 / 4, 4 / 4])


def test_rank_score_is_the_mean_rank_fraction_of_three_criteria():
    rows = [
        {"Dice": 0.9, "HD95_mm": 2.0, "abs_offset_mm": 0.1, "loss": 0.3},
        {"Dice": 0.5, "HD95_mm": 1.0, "abs_offset_mm": 3.0, "loss": 0.9},
        {"Dice": 0.7, "HD95_mm": 9.0, "abs_offset_mm": math.nan, "loss": math.nan},
    ]
    # 1 - Dice: 0.1, 0.5, 0.3 -> ranks 1, 3, 2; HD95: 2, 1, 3; |offset|: 1, 2, 3 (NaN largest)
    expected = np.array([(1 + 2 + 1) / 9, (3 + 1 + 2) / 9, (2 + 3 + 3) / 9])
    np.testing.assert_allclose(disagreement_scores(rows, "rank"), expected)
    np.testing.assert_allclose(disagreement_scores(rows, "dice"), [0.1, 0.5, 0.3])
    np.testing.assert_allclose(disagreement_scores(rows, "loss"), [0.3, 0.9, math.nan])
    assert disagreement_scores([], "rank").size == 0
    with pytest.raises(ValueError, match="unknown disagreement score 'iou'"):
        disagreement_scores(rows, "iou")


def test_ranks_highest_first_ties_by_case_nan_last():
    assert ranks([0.2, 0.9, math.nan, 0.2], ["d", "a", "b", "c"]) == [3, 1, 4, 2]
