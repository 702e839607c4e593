from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from nnunet_ext.evaluation.metrics import (
    BRATS_EMPTY_DISTANCE_MM,
    METRIC_KEYS,
    METRIC_KEYS_2D,
    assd,
    both_empty_metrics,
    compute_case_metrics,
    crop_to_joint_bbox,
    dice,
    hd95,
    label_or_region_to_key,
    mask_metrics,
    metric_keys,
    rve,
    sensitivity,
    specificity,
    surface,
    surface_distances,
)

medpy_surface_distances = getattr(medpy_binary, "__surface_distances")


def _box(shape, center, half_widths):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(c - h, c + h + 1) for c, h in zip(center, half_widths))] = True
    return mask


def _brute_force_directed(src, dst, spacing):
    """Independent reference: all-pairs distances between surface voxel centres, in mm."""
    ps = np.argwhere(surface(src)) * np.asarray(spacing)
    pd = np.argwhere(surface(dst)) * np.asarray(spacing)
    return np.sqrt(((ps[:, None, :] - pd[None, :, :]) ** 2).sum(-1)).min(axis=1)


def _random_blobs(rng, shape, n=3):
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    return noise > np.quantile(noise, 1 - 0.04 * n)


# ---------------------------------------------------------------- counts: hand values


def test_count_metrics_hand_values():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    ref = np.array([0, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    # TP 2, FP 1, FN 2, TN 5
    assert dice(pred, ref) == pytest.approx(4 / 7)
    assert rve(pred, ref) == pytest.approx(0.25)
    assert sensitivity(pred, ref) == pytest.approx(0.5)
    assert specificity(pred, ref) == pytest.approx(5 / 6)
    m = mask_metrics(pred, ref, [0.5])
    assert (m["TP"], m["FP"], m["FN"], m["TN"], m["n_pred"], m["n_ref"]) == (2, 1, 2, 5, 3, 4)
    assert m["IoU"] == pytest.approx(2 / 5)
    assert m["volume_pred_mm3"] == pytest.approx(1.5)
    assert m["volume_ref_mm3"] == pytest.approx(2.0)
    assert list(m) == list(METRIC_KEYS)


def test_count_metric_identities():
    rng = np.random.default_rng(0)
    a = rng.random((6, 7, 8)) > 0.6
    b = rng.random((6, 7, 8)) > 0.6
    assert dice(a, a) == 1.0 and rve(a, a) == 0.0
    assert dice(a, b) == pytest.approx(dice(b, a))
    assert sensitivity(a | b, b) == 1.0  # S ⊇ G
    assert specificity(a & b, b) == 1.0  # S ⊆ G
    shifted = np.roll(a, 2, axis=0)
    assert rve(shifted, a) == 0.0  # volume only, overlap does not matter


# ---------------------------------------------------------------- empty-mask conventions (METHODS §7)


def test_both_empty():
    e = np.zeros((4, 5, 6), dtype=bool)
    sp = (2.5, 0.8, 0.8)
    assert dice(e, e) == 1.0
    assert hd95(e, e, sp) == 0.0 and hd95(e, e, sp, brats_empty=True) == 0.0
    assert assd(e, e, sp) == 0.0
    assert math.isnan(rve(e, e))
    assert math.isnan(sensitivity(e, e))
    assert specificity(e, e) == 1.0
    m = mask_metrics(e, e, sp)
    assert m == pytest.approx(both_empty_metrics(e.size, 2.5 * 0.8 * 0.8), nan_ok=True)


@pytest.mark.parametrize("pred_empty", [True, False])
def test_exactly_one_empty(pred_empty):
    full = _box((9, 9, 9), (4, 4, 4), (2, 2, 2))
    empty = np.zeros_like(full)
    pred, ref = (empty, full) if pred_empty else (full, empty)
    sp = (1.0, 1.0, 3.0)
    assert dice(pred, ref) == 0.0
    assert math.isnan(hd95(pred, ref, sp)) and math.isnan(assd(pred, ref, sp))
    assert hd95(pred, ref, sp, brats_empty=True) == BRATS_EMPTY_DISTANCE_MM
    assert assd(pred, ref, sp, brats_empty=True) == BRATS_EMPTY_DISTANCE_MM
    assert BRATS_EMPTY_DISTANCE_MM == pytest.approx(math.sqrt(240**2 + 240**2 + 155**2), abs=1e-5)
    if pred_empty:
        assert rve(pred, ref) == 1.0 and sensitivity(pred, ref) == 0.0 and specificity(pred, ref) == 1.0
    else:
        assert math.isnan(rve(pred, ref)) and math.isnan(sensitivity(pred, ref))
        assert specificity(pred, ref) == pytest.approx((9**3 - 125) / 9**3)
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(pred, ref, sp)


# ---------------------------------------------------------------- analytic distances


def test_concentric_boxes_anisotropic_closed_form():
    # Half-widths a = 8 mm (G) and b = 10 mm (S) on every axis; spacing (2, 1, 0.5) mm -> gaps of 1, 2, 4 voxels.
    spacing = (2.0, 1.0, 0.5)
    shape, center = (16, 30, 56), (8, 15, 28)
    ref = _box(shape, center, (4, 8, 16))
    pred = _box(shape, center, (5, 10, 20))
    gap = 2.0
    d_sg, d_gs = surface_distances(pred, ref, spacing)
    # Every G surface voxel is exactly one gap away from S's surface (straight out through its face).
    np.testing.assert_allclose(d_gs, gap)
    # S surface voxel -> nearest G voxel is the clamp onto G's box: sqrt(sum((excess_i * h_i)^2)).
    coords = np.argwhere(surface(pred))
    excess = np.maximum(np.abs(coords - np.array(center)) - np.array([4, 8, 16]), 0) * np.array(spacing)
    closed = np.sort(np.sqrt((excess**2).sum(1)))
    np.testing.assert_allclose(np.sort(d_sg), closed)
    assert d_sg.min() == pytest.approx(gap) and d_sg.max() == pytest.approx(gap * math.sqrt(3))
    assert hd95(pred, ref, spacing) == pytest.approx(max(np.percentile(closed, 95), gap))
    assert assd(pred, ref, spacing) == pytest.approx((closed.sum() + gap * d_gs.size) / (closed.size + d_gs.size))


def test_concentric_squares_2d_and_singleton_axis():
    spacing2 = (0.7, 1.4)
    ref = _box((40, 30), (20, 15), (8, 4))
    pred = _box((40, 30), (20, 15), (10, 5))  # gaps 2 voxels * 0.7 = 1.4 mm and 1 voxel * 1.4 mm
    d_sg, d_gs = surface_distances(pred, ref, spacing2)
    np.testing.assert_allclose(d_gs, 1.4)
    assert d_sg.max() == pytest.approx(1.4 * math.sqrt(2))
    # A one-slice 3-D array is the 2-D image (not a one-voxel-thick slab whose every voxel is surface).
    value2d = hd95(pred, ref, spacing2)
    assert hd95(pred[None], ref[None], (5.0, *spacing2)) == pytest.approx(value2d)
    assert assd(pred[None], ref[None], (5.0, *spacing2)) == pytest.approx(assd(pred, ref, spacing2))


def test_identical_masks_and_symmetry():
    rng = np.random.default_rng(1)
    a = _random_blobs(rng, (12, 20, 20))
    b = _random_blobs(rng, (12, 20, 20))
    sp = (2.5, 0.8, 0.8)
    assert hd95(a, a, sp) == 0.0 and assd(a, a, sp) == 0.0
    assert hd95(a, b, sp) == pytest.approx(hd95(b, a, sp))
    assert assd(a, b, sp) == pytest.approx(assd(b, a, sp))


def test_matches_brute_force_on_random_shapes():
    rng = np.random.default_rng(2)
    sp = (3.0, 0.7, 1.1)
    a = _random_blobs(rng, (8, 18, 16))
    b = _random_blobs(rng, (8, 18, 16))
    d_sg, d_gs = surface_distances(a, b, sp)
    bf_sg, bf_gs = _brute_force_directed(a, b, sp), _brute_force_directed(b, a, sp)
    np.testing.assert_allclose(np.sort(d_sg), np.sort(bf_sg))
    np.testing.assert_allclose(np.sort(d_gs), np.sort(bf_gs))
    assert hd95(a, b, sp) == pytest.approx(max(np.percentile(bf_sg, 95), np.percentile(bf_gs, 95)))
    assert assd(a, b, sp) == pytest.approx(np.concatenate([bf_sg, bf_gs]).mean())


def test_percentile_rule_is_numpy_linear_not_pymic_index():
    # 1-D segments ref = [10, 30] and pred = [12, 30]; a segment's surface is its two end voxels.
    ref = np.zeros(50, dtype=bool)
    ref[10:31] = True
    pred = np.zeros(50, dtype=bool)
    pred[12:31] = True
    # Directed sets: pred->ref = [2, 0], ref->pred = [2, 0]; numpy P95 of [0, 2] = 1.9, PyMIC sorted(d)[int(1.9)] = 0.
    assert hd95(pred, ref, [1.0]) == pytest.approx(1.9)


# ---------------------------------------------------------------- medpy cross-check


@pytest.mark.parametrize("touch_border", [False, True])
def test_directed_distances_match_medpy(touch_border):
    rng = np.random.default_rng(3)
    shape = (10, 24, 22)
    a = _random_blobs(rng, shape)
    b = _random_blobs(rng, shape)
    if touch_border:
        a[0, :, :5] = True
        b[:, -1, -3:] = True
    sp = (2.5, 0.8, 0.6)
    d_sg, d_gs = surface_distances(a, b, sp)
    np.testing.assert_allclose(np.sort(d_sg), np.sort(medpy_surface_distances(a, b, sp)))
    np.testing.assert_allclose(np.sort(d_gs), np.sort(medpy_surface_distances(b, a, sp)))


def test_hd95_matches_medpy_where_both_rules_agree():
    # Mirror-image pair (box and the same box shifted along z): both directed sets are identical, and the 95th
    # percentile falls on the plateau of the shifted face, so pooling does not change it.
    sp = (2.5, 0.8, 0.8)
    ref = _box((20, 40, 40), (9, 20, 20), (3, 12, 12))
    pred = _box((20, 40, 40), (11, 20, 20), (3, 12, 12))
    ours = hd95(pred, ref, sp)
    assert ours == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=sp))
    assert ours == pytest.approx(5.0)


def test_crop_is_exact():
    rng = np.random.default_rng(4)
    a = np.zeros((30, 40, 40), dtype=bool)
    b = np.zeros_like(a)
    a[2:12, 5:20, 0:9] = _random_blobs(rng, (10, 15, 9), n=8)
    b[4:14, 8:25, 2:12] = _random_blobs(rng, (10, 17, 10), n=8)
    ac, bc = crop_to_joint_bbox(a, b)
    assert ac.shape == (14, 22, 14)  # joint box + 1-voxel padding
    assert ac.sum() == a.sum() and bc.sum() == b.sum()
    sp = (1.5, 0.9, 0.9)
    full = medpy_surface_distances(a, b, sp)
    np.testing.assert_allclose(np.sort(surface_distances(a, b, sp)[0]), np.sort(full))


# ---------------------------------------------------------------- label maps and regions


def test_compute_case_metrics_labels_and_regions():
    ref = np.zeros((6, 10, 10), dtype=np.uint8)
    ref[1:5, 2:8, 2:8] = 1
    ref[2:4, 3:7, 3:7] = 2
    ref[2:4, 4:6, 4:6] = 3
    pred = ref.copy()
    pred[pred == 3] = 2  # label 3 missed entirely, absorbed into 2
    sp = (2.0, 1.0, 1.0)
    out = compute_case_metrics(pred, ref, sp, [1, 2, 3, (1, 2, 3), (2, 3), (3,)])
    assert list(out) == ["1", "2", "3", "(1, 2, 3)", "(2, 3)", "(3,)"]
    assert out["1"]["Dice"] == 1.0 and out["(1, 2, 3)"]["Dice"] == 1.0 and out["(2, 3)"]["Dice"] == 1.0
    assert out["3"]["Dice"] == 0.0 and math.isnan(out["3"]["HD95_mm"]) and out["(3,)"]["Sensitivity"] == 0.0
    assert out["2"]["RVE"] == pytest.approx((32 - 24) / 24)
    assert out["(2, 3)"]["volume_ref_mm3"] == pytest.approx(32 * 2.0)
    brats = compute_case_metrics(pred, ref, sp, [(3,)], brats_empty=True)
    assert brats["(3,)"]["HD95_mm"] == BRATS_EMPTY_DISTANCE_MM


def test_keys_and_bad_inputs():
    assert label_or_region_to_key(1) == "1"
    assert label_or_region_to_key(np.int64(2)) == "2"
    assert label_or_region_to_key([1, 2, 3]) == "(1, 2, 3)"
    assert label_or_region_to_key((3,)) == "(3,)"
    m = np.ones((3, 3), dtype=bool)
    with pytest.raises(TypeError, match="boolean"):
        dice(m.astype(np.uint8), m)
    with pytest.raises(ValueError, match="same shape"):
        dice(m, m[:2])
    with pytest.raises(ValueError, match="spacing"):
        hd95(m, m, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        hd95(m, m, (1.0, 0.0))
    with pytest.raises(TypeError, match="integer label maps"):
        compute_case_metrics(m, m, (1, 1), [1])
    with pytest.raises(ValueError, match="empty"):
        compute_case_metrics(m.astype(int), m.astype(int), (1, 1), [])


# ---------------------------------------------------------------- 2-D data: areas, in-plane distances


def _disc(shape, center, radius_px):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius_px**2


def test_2d_masks_get_areas_in_mm2_3d_masks_volumes():
    # A disc of radius 40 px at 0.5 mm: 20 mm, pi * 400 = 1256.6 mm^2. Pixelisation: the disc has 5025 pixels vs
    # pi * 40^2 = 5026.5 (-0.03 %); every pixel square lies within 1/sqrt(2) px of its centre, so the count is
    # bounded by pi (R -+ 1/sqrt(2))^2 (+-3.5 % at R = 40). The test allows 0.5 %.
    ref = _disc((100, 100), (50, 50), 40)
    pred = _disc((100, 100), (50, 50), 36)
    m = mask_metrics(pred, ref, (0.5, 0.5))
    assert list(m) == list(METRIC_KEYS_2D) == list(metric_keys(2))
    assert "volume_ref_mm3" not in m and "volume_pred_mm3" not in m
    assert m["area_ref_mm2"] == pytest.approx(math.pi * 20.0**2, rel=0.005)
    assert m["area_pred_mm2"] == pytest.approx(math.pi * 18.0**2, rel=0.005)
    assert m["area_ref_mm2"] == m["n_ref"] * 0.25  # pixels x pixel area, exactly
    assert m["RVE"] == rve(pred, ref) == pytest.approx(1 - 0.9**2, rel=0.02)  # a ratio of counts: no unit
    # 3-D masks keep volumes; a (1, H, W) slice passed as such is a slab of its slice thickness.
    m3 = mask_metrics(pred[None], ref[None], (2.5, 0.5, 0.5))
    assert list(m3) == list(METRIC_KEYS) == list(metric_keys(3))
    assert m3["volume_ref_mm3"] == pytest.approx(m["area_ref_mm2"] * 2.5)
    assert m3["RVE"] == m["RVE"] and m3["HD95_mm"] == pytest.approx(m["HD95_mm"])
    empty = np.zeros_like(ref)
    both_empty = both_empty_metrics(ref.size, 0.25, 2)
    assert list(both_empty) == list(METRIC_KEYS_2D)
    assert both_empty == pytest.approx(mask_metrics(empty, empty, (0.5, 0.5)), nan_ok=True)


def test_single_slice_with_nnunet_999_spacing_gives_in_plane_distances():
    # nnU-Net's 2-D layout: (1, H, W) with spacing (999, 0.5, 0.5). Concentric squares with a 2-pixel gap (1 mm):
    # every G surface pixel is exactly 1 mm from S's surface, S's corners sqrt(2) mm from G.
    ref = _box((1, 40, 40), (0, 20, 20), (0, 8, 8))
    pred = _box((1, 40, 40), (0, 20, 20), (0, 10, 10))
    sp = (999.0, 0.5, 0.5)
    d_sg, d_gs = surface_distances(pred, ref, sp)
    np.testing.assert_allclose(d_gs, 1.0)
    assert d_sg.min() == pytest.approx(1.0) and d_sg.max() == pytest.approx(math.sqrt(2.0))
    # Hand check against all-pairs in-plane distances of the 2-D surfaces.
    np.testing.assert_allclose(np.sort(d_sg), np.sort(_brute_force_directed(pred[0], ref[0], (0.5, 0.5))))
    closed = np.sort(d_sg)
    assert hd95(pred, ref, sp) == pytest.approx(max(np.percentile(closed, 95), 1.0))
    assert hd95(pred, ref, sp) == pytest.approx(hd95(pred[0], ref[0], (0.5, 0.5)))
    assert assd(pred, ref, sp) == pytest.approx((closed.sum() + d_gs.sum()) / (closed.size + d_gs.size))
    assert assd(pred, ref, sp) == pytest.approx(assd(pred[0], ref[0], (0.5, 0.5)))
    # What dropping the slice axis prevents: eroded in 3-D, the one-voxel slab is all surface (G inside S then
    # gives d(G->S) = 0 everywhere) - wrong although the 999 mm never enters a distance.
    slab_surface = ref & ~ndimage.binary_erosion(ref, ndimage.generate_binary_structure(3, 1), border_value=0)
    assert np.array_equal(slab_surface, ref)
