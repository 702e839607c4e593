from __future__ import annotations

import numpy as np
import pytest

from nnunet_ext.evaluation.io import LabelDefinition
from nnunet_ext.evaluation.metrics import dice, label_or_region_to_key, region_mask
from nnunet_ext.noise.corruptions import ellipsoid
from nnunet_ext.noise.levels import LEVELS, NoiseLevel, corrupt_label_map, get_level, nested_region_order

LESION = LabelDefinition((1,), False, None)
BRATS = LabelDefinition(((1, 2, 3), (2, 3), (3,)), True, (1, 2, 3))


@pytest.mark.parametrize(
    ("spacing", "radius_mm"),
    [((2.5, 0.8, 0.8), (3.0, 6.0)), ((1.0, 1.0, 1.0), (6.0, 11.0))],
    ids=["aniso-small-lesions", "iso-large-lesions"],
)
def test_levels_hit_their_target_dice(lesion_seg, spacing, radius_mm):
    shape = (24, 48, 48)
    segs = [lesion_seg(np.random.default_rng([99, i]), shape, spacing, radius_mm) for i in range(5)]
    for name, level in LEVELS.items():
        dices = []
        for i, seg in enumerate(segs):
            noisy, rec = corrupt_label_map(seg, spacing, LESION, level, np.random.default_rng([0, i]))
            assert rec["dice"]["1"] == pytest.approx(dice(noisy == 1, seg == 1))
            dices.append(rec["foreground_mean_dice"])
        assert abs(np.mean(dices) - level.target_dice) < 0.05, (name, dices)


def test_multi_label_keeps_values_and_targets():
    shape, spacing = (20, 48, 48), (2.0, 1.0, 1.0)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[ellipsoid(shape, (10, 16, 16), (12.0, 10.0, 10.0), spacing)] = 1
    seg[ellipsoid(shape, (10, 32, 32), (10.0, 9.0, 9.0), spacing)] = 2
    ld = LabelDefinition((1, 2), False, None)
    noisy, rec = corrupt_label_map(seg, spacing, ld, LEVELS["moderate"], np.random.default_rng(0))
    assert noisy.dtype == seg.dtype and set(np.unique(noisy)) <= {0, 1, 2}
    for k in ("1", "2"):
        assert abs(rec["dice"][k] - 0.8) < 0.1


def _brats_case(shape=(24, 48, 48), spacing=(1.5, 1.0, 1.0)):
    seg = np.zeros(shape, dtype=np.uint8)
    seg[ellipsoid(shape, (12, 24, 24), (14.0, 14.0, 14.0), spacing)] = 1  # edema
    seg[ellipsoid(shape, (12, 24, 25), (8.0, 8.0, 8.0), spacing)] = 2  # necrosis / non-enhancing
    seg[ellipsoid(shape, (12, 26, 26), (4.5, 4.5, 4.5), spacing)] = 3  # enhancing
    return seg, spacing


def test_regions_outermost_first_stay_nested(monkeypatch):
    import nnunet_ext.noise.levels as levels_module

    produced = []
    original = levels_module.corrupt_mask

    def recording(clean, rng, spacing, level, allowed=None):
        noisy, rec = original(clean, rng, spacing, level, allowed)
        produced.append((clean.copy(), noisy.copy(), None if allowed is None else allowed.copy()))
        return noisy, rec

    monkeypatch.setattr(levels_module, "corrupt_mask", recording)
    seg, spacing = _brats_case()
    noisy, rec = corrupt_label_map(seg, spacing, BRATS, LEVELS["moderate"], np.random.default_rng(5))
    assert set(np.unique(noisy)) <= {0, 1, 2, 3}
    assert list(rec["operations"]) == ["(1, 2, 3)", "(2, 3)", "(3,)"]  # outermost first
    for i, region in enumerate(BRATS.labels_or_regions):
        clean, corrupted, allowed = produced[i]
        np.testing.assert_array_equal(clean, region_mask(seg, region))
        # The re-encoded map has exactly the corrupted regions, each inside its corrupted parent.
        np.testing.assert_array_equal(region_mask(noisy, region), corrupted)
        if i == 0:
            assert allowed is None
        else:
            np.testing.assert_array_equal(allowed, produced[i - 1][1])
            assert not (corrupted & ~produced[i - 1][1]).any()
        # Clipping is part of the calibration, so inner regions still land near the target.
        assert abs(rec["dice"][label_or_region_to_key(region)] - 0.8) < 0.1, rec["dice"]


def test_nested_region_order_and_rejection():
    shuffled = LabelDefinition(((3,), (1, 2, 3), (2, 3)), True, (3, 1, 2))
    assert [v for _, v in nested_region_order(shuffled)] == [1, 2, 3]
    overlapping = LabelDefinition(((1, 2), (2, 3)), True, (1, 3))
    with pytest.raises(NotImplementedError, match="not nested"):
        nested_region_order(overlapping)
    wrong_class = LabelDefinition(((1, 2, 3), (2, 3), (3,)), True, (1, 3, 2))
    with pytest.raises(NotImplementedError, match="not nested"):
        nested_region_order(wrong_class)


def test_2d_and_singleton_axis_and_empty():
    rng = np.random.default_rng(0)
    seg2d = np.zeros((64, 64), dtype=np.uint8)
    seg2d[ellipsoid(seg2d.shape, (30, 30), (12.0, 9.0), (1.0, 1.0))] = 1
    a, rec_a = corrupt_label_map(seg2d, (1.0, 1.0), LESION, LEVELS["mild"], np.random.default_rng(1))
    b, rec_b = corrupt_label_map(seg2d[None], (5.0, 1.0, 1.0), LESION, LEVELS["mild"], np.random.default_rng(1))
    np.testing.assert_array_equal(a, b[0])
    assert abs(rec_a["dice"]["1"] - 0.9) < 0.05
    empty = np.zeros((8, 16, 16), dtype=np.uint8)
    out, rec = corrupt_label_map(empty, (1.0, 1.0, 1.0), LESION, LEVELS["severe"], rng)
    assert not out.any() and rec["dice"]["1"] == 1.0 and np.isnan(rec["foreground_mean_dice"])


def test_level_validation():
    assert get_level("mild") is LEVELS["mild"]
    with pytest.raises(ValueError, match="unknown noise level"):
        get_level("extreme")
    with pytest.raises(ValueError, match="target_dice"):
        NoiseLevel("x", 1.2)
    with pytest.raises(ValueError, match="boundary_flip_prob"):
        NoiseLevel("x", 0.8, boundary_flip_prob=0.9)
