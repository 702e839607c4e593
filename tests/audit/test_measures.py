"""Per-case audit measures against hand-computed values: signed offset and volume ratio (2-D, 3-D, anisotropic),
empty-mask conventions, the case aggregate, the montage slice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_ext.audit.measures import (
    aggregate_classes,
    case_measures,
    class_measures,
    disagreement_slice,
    image_diagonal_mm,
    signed_offset,
    volume_ratio,
)
from nnunet_ext.correction.boundary import boundary_offset


def _rows(shape, n_rows, axis=0):
    """A half-space mask: the first ``n_rows`` positions along ``axis`` (the array border is no boundary)."""
    mask = np.zeros(shape, bool)
    index = [slice(None)] * len(shape)
    index[axis] = slice(0, n_rows)
    mask[tuple(index)] = True
    return mask


@pytest.mark.parametrize(
    ("shape", "spacing", "axis", "n_label", "n_pred", "offset"),
    [
        ((20, 16), (0.7, 0.5), 0, 10, 7, 3 * 0.7),  # 2-D, label 3 rows larger across the 0.7 mm axis
        ((20, 16), (0.7, 0.5), 1, 12, 8, 4 * 0.5),  # 2-D, along the 0.5 mm axis
        ((20, 16), (0.7, 0.5), 0, 7, 10, -3 * 0.7),  # label smaller
        ((10, 12, 12), (2.5, 0.8, 0.8), 0, 6, 4, 2 * 2.5),  # 3-D, across the thick slices: 5 mm
        ((10, 16, 12), (2.5, 0.8, 0.8), 1, 10, 12, -2 * 0.8),  # 3-D, in-plane: -1.6 mm
        ((1, 20, 16), (999.0, 0.7, 0.5), 1, 10, 7, 3 * 0.7),  # a (1, H, W) slice: in-plane, 999 ignored
    ],
)
def test_flat_boundary_offset_and_volume_ratio_are_exact(shape, spacing, axis, n_label, n_pred, offset):
    label, prediction = _rows(shape, n_label, axis), _rows(shape, n_pred, axis)
    assert signed_offset(label, prediction, spacing) == pytest.approx(offset, abs=1e-12)
    assert volume_ratio(label, prediction) == pytest.approx(n_label / n_pred)
    # the calibrate convention with the sign flipped (prediction vs trusted label)
    assert signed_offset(label, prediction, spacing) == -boundary_offset(prediction, label, spacing)
    m = class_measures(label, prediction, spacing)
    assert m["offset_mm"] == pytest.approx(offset, abs=1e-12)
    assert (m["n_label"], m["n_pred"]) == (int(label.sum()), int(prediction.sum()))


def test_identical_masks_agree_perfectly():
    yy, xx = np.mgrid[:30, :30]
    disc = (yy - 15) ** 2 + (xx - 14) ** 2 < 64
    m = class_measures(disc, disc, (0.7, 0.5))
    assert m == {
        "Dice": 1.0,
        "HD95_mm": 0.0,
        "ASSD_mm": 0.0,
        "offset_mm": 0.0,
        "volume_ratio": 1.0,
        "n_label": int(disc.sum()),
        "n_pred": int(disc.sum()),
    }


def test_empty_mask_conventions():
    shape, spacing = (10, 20, 20), (2.5, 0.8, 0.8)
    diagonal = math.sqrt((9 * 2.5) ** 2 + 2 * (19 * 0.8) ** 2)
    assert image_diagonal_mm(shape, spacing) == pytest.approx(diagonal)
    assert image_diagonal_mm((1, 20, 20), (999.0, 0.8, 0.8)) == pytest.approx(math.sqrt(2) * 19 * 0.8)
    lesion = np.zeros(shape, bool)
    lesion[3:5, 5:9, 5:9] = True
    empty = np.zeros(shape, bool)

    missed = class_measures(lesion, empty, spacing)  # the model found nothing: label larger
    assert missed["Dice"] == 0 and missed["HD95_mm"] == missed["ASSD_mm"] == pytest.approx(diagonal)
    assert missed["offset_mm"] == pytest.approx(0.8) and missed["volume_ratio"] == math.inf

    unlabelled = class_measures(empty, lesion, spacing)  # the label lacks a found object
    assert unlabelled["offset_mm"] == pytest.approx(-0.8) and unlabelled["volume_ratio"] == 0.0
    assert unlabelled["HD95_mm"] == pytest.approx(diagonal)

    both = class_measures(empty, empty, spacing)
    assert both["Dice"] == 1 and both["HD95_mm"] == 0 and both["volume_ratio"] == 1
    assert math.isnan(both["offset_mm"])


def test_case_aggregate_over_present_classes():
    shape, spacing = (12, 16), (1.0, 1.0)
    label = np.zeros(shape, np.uint8)
    prediction = np.zeros(shape, np.uint8)
    label[:6] = 1  # class 1: label 2 rows larger (+2 mm)
    prediction[:4] = 1
    label[10:] = 2  # class 2: label 1 row smaller (-1 mm)
    prediction[9:] = 2
    measured = case_measures(label, prediction, spacing, [1, 2, 3])  # class 3 absent from both: ignored
    per = measured.per_class
    assert per["1"]["offset_mm"] == pytest.approx(2.0) and per["2"]["offset_mm"] == pytest.approx(-1.0)
    assert per["3"]["Dice"] == 1.0 and math.isnan(per["3"]["offset_mm"])
    agg = measured.aggregate
    assert agg["offset_mm"] == pytest.approx(0.5) and agg["abs_offset_mm"] == pytest.approx(1.5)
    assert agg["volume_ratio"] == pytest.approx((6 * 16 + 2 * 16) / (4 * 16 + 3 * 16))
    assert agg["Dice"] == pytest.approx(np.mean([2 * 4 / 10, 2 * 2 / 5]))
    # regions: a region is the union of its labels
    regions = case_measures(label, prediction, spacing, [(1, 2), 2])
    assert regions.per_class["(1, 2)"]["volume_ratio"] == pytest.approx(8 / 7)
    assert list(regions.per_class) == ["(1, 2)", "2"]


def test_no_foreground_anywhere_is_perfect_agreement():
    zeros = np.zeros((4, 5), np.uint8)
    agg = case_measures(zeros, zeros, (1.0, 1.0), [1]).aggregate
    assert agg == {
        "Dice": 1.0,
        "HD95_mm": 0.0,
        "ASSD_mm": 0.0,
        "offset_mm": 0.0,
        "abs_offset_mm": 0.0,
        "volume_ratio": 1.0,
    }
    assert (
        aggregate_classes(
            {
                "1": {
                    "n_label": 3,
                    "n_pred": 0,
                    "Dice": 0.0,
                    "HD95_mm": 9.0,
                    "ASSD_mm": 9.0,
                    "offset_mm": 1.0,
                    "volume_ratio": math.inf,
                }
            }
        )["volume_ratio"]
        == math.inf
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        case_measures(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8), (1, 1), [1])
    with pytest.raises(ValueError, match="classes is empty"):
        case_measures(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8), (1, 1), [])
    with pytest.raises(ValueError, match="spacing"):
        case_measures(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8), (1, 1, 1), [1])


def test_disagreement_slice_is_the_middle_of_the_largest_component():
    label = np.zeros((10, 8, 8), np.uint8)
    prediction = label.copy()
    label[4:7, 2:6, 2:6] = 1  # 48 voxels of disagreement over slices 4-6
    prediction[1, 0, 0] = 1  # one voxel at slice 1
    assert disagreement_slice(label, prediction) == 5
    assert disagreement_slice(label, label) == 5  # no disagreement: the middle of the label
    assert disagreement_slice(np.zeros((9, 2, 2)), np.zeros((9, 2, 2))) == 4
