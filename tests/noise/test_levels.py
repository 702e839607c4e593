from __future__ import annotations

import numpy as np
import pytest

from nnunet_ext.evaluation.io import LabelDefinition
from nnunet_ext.evaluation.metrics import dice, label_or_region_to_key, region_mask
from nnunet_ext.noise.corruptions import ellipsoid
from nnunet_ext.noise.levels import (
    LEVELS,
    PUBLISHED_LEVELS,
    MarkovNoise,
    MorphologyNoise,
    NoiseLevel,
    corrupt_label_map,
    get_level,
    nested_region_order,
)

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
    change = rec_a["change"]["1"]
    assert change["clean_voxels"] == int(seg2d.sum()) and change["noisy_voxels"] == int(a.sum())
    assert change["signed_change_voxels"] == int(a.sum()) - int(seg2d.sum())
    empty = np.zeros((8, 16, 16), dtype=np.uint8)
    out, rec = corrupt_label_map(empty, (1.0, 1.0, 1.0), LESION, LEVELS["severe"], rng)
    assert not out.any() and rec["dice"]["1"] == 1.0 and np.isnan(rec["foreground_mean_dice"])
    assert rec["change"]["1"]["clean_voxels"] == 0 and np.isnan(rec["change"]["1"]["relative_change"])


def test_level_validation():
    assert get_level("mild") is LEVELS["mild"]
    with pytest.raises(ValueError, match="unknown noise level"):
        get_level("extreme")
    with pytest.raises(ValueError, match="target_dice"):
        NoiseLevel("x", 1.2)
    with pytest.raises(ValueError, match="boundary_flip_prob"):
        NoiseLevel("x", 0.8, boundary_flip_prob=0.9)


def test_published_presets():
    assert sorted(PUBLISHED_LEVELS) == ["j1", "j2", "j3"]
    j1, j2, j3 = (get_level(k) for k in ("j1", "j2", "j3"))
    assert (j1.steps, j1.expand_prob, j1.flip_prob, j1.random_flip_prob) == (180, 0.8, 0.05, 0.2)
    assert (j1.blur_sigma, j1.blur_radius) == (2.0, 2)
    assert j2 == MarkovNoise("j2", 180, 0.2, 0.05, 0.2)
    assert j3 == MorphologyNoise("j3", (7.0, 9.0), 0.5)
    assert j1.as_dict() == {
        "kind": "markov",
        "name": "j1",
        "steps": 180,
        "expand_prob": 0.8,
        "flip_prob": 0.05,
        "random_flip_prob": 0.2,
        "blur_sigma": 2.0,
        "blur_radius": 2,
    }
    assert j3.as_dict()["kind"] == "morphology" and LEVELS["mild"].as_dict()["kind"] == "calibrated"
    with pytest.raises(ValueError, match="j1"):
        get_level("J4")


def test_published_level_validation():
    with pytest.raises(ValueError, match="expand_prob"):
        MarkovNoise("x", 10, 1.5, 0.05, 0.2)
    with pytest.raises(ValueError, match="steps"):
        MarkovNoise("x", -3, 0.5, 0.05, 0.2)
    with pytest.raises(ValueError, match="radius_voxels"):
        MorphologyNoise("x", (9.0, 7.0))
    with pytest.raises(ValueError, match="dilate_prob"):
        MorphologyNoise("x", (7.0, 9.0), dilate_prob=-0.5)


def _lungs_and_heart(lungs):
    """Lungs (label 1) and a heart (label 2) at the published 256 px."""
    seg = lungs().astype(np.uint8)
    seg[ellipsoid(seg.shape, (160, 128), (30.0, 38.0), (1.0, 1.0)) & (seg == 0)] = 2
    return seg


@pytest.mark.parametrize("name", ["j1", "j2"])
def test_markov_presets_on_a_label_map(lungs, name):
    seg = _lungs_and_heart(lungs)
    ld = LabelDefinition((1, 2), False, None)
    noisy, rec = corrupt_label_map(seg, (1.0, 1.0), ld, get_level(name), np.random.default_rng([0, 3]))
    again, _ = corrupt_label_map(seg, (1.0, 1.0), ld, get_level(name), np.random.default_rng([0, 3]))
    other, _ = corrupt_label_map(seg, (1.0, 1.0), ld, get_level(name), np.random.default_rng([1, 3]))
    np.testing.assert_array_equal(noisy, again)
    assert (noisy != other).any()
    sign = 1 if name == "j1" else -1
    for k in ("1", "2"):
        op = rec["operations"][k]["operations"][0]
        assert op["op"] == "markov_expand_shrink" and op["steps"] == 180 and op["random_flip_prob"] == 0.2
        change = rec["change"][k]
        assert change["relative_change"] == pytest.approx(change["noisy_voxels"] / change["clean_voxels"] - 1)
        assert sign * change["relative_change"] > 0.2 and sign * change["boundary_shift_mm"] > 5, change
        assert rec["dice"][k] == pytest.approx(dice(noisy == int(k), seg == int(k)))
    # The same process on the same slice stored as (1, H, W): singleton axes are dropped.
    flat, _ = corrupt_label_map(seg[None], (9.0, 1.0, 1.0), ld, get_level(name), np.random.default_rng([0, 3]))
    np.testing.assert_array_equal(flat[0], noisy)


def test_j3_preset_dilates_or_erodes_in_voxels(lungs):
    seg = lungs((128, 128)).astype(np.uint8)
    ops = set()
    for seed in range(6):
        _, rec = corrupt_label_map(seg, (2.0, 2.0), LESION, get_level("j3"), np.random.default_rng([seed, 0]))
        (op,) = rec["operations"]["1"]["operations"]
        assert 7.0 <= op["radius_voxels"] <= 9.0
        shift = rec["change"]["1"]["boundary_shift_mm"]
        # Radius in voxels: 7-9 voxels of 2 mm move the boundary by 14-18 mm (up to the digital boundary).
        assert (14.0 - 2.0 <= shift <= 18.0 + 2.0) if op["op"] == "dilate" else (-18.0 - 2.0 <= shift <= -14.0 + 2.0)
        assert (rec["change"]["1"]["relative_change"] > 0) == (op["op"] == "dilate")
        ops.add(op["op"])
    assert ops == {"dilate", "erode"}


def test_markov_on_nested_regions_stays_nested():
    seg, spacing = _brats_case()
    level = MarkovNoise("test", 8, 0.8, 0.3, 0.05)
    noisy, rec = corrupt_label_map(seg, spacing, BRATS, level, np.random.default_rng(2))
    assert set(np.unique(noisy)) <= {0, 1, 2, 3}
    regions = [region_mask(noisy, r) for r in BRATS.labels_or_regions]
    assert not (regions[1] & ~regions[0]).any() and not (regions[2] & ~regions[1]).any()
    assert rec["change"]["(1, 2, 3)"]["relative_change"] > 0
