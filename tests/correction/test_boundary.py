from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.correction.boundary import (
    boundary_offset,
    class_margins,
    correct_label,
    correct_label_map,
    estimate_offsets,
    shift_class_logits,
    shift_logits,
    signed_distance,
    voxel_size_mm,
)

# u = exp(-u^2 / 2): the boundary of a linear logit ramp moves by u·|b| (derivation in test_ramp_boundary_moves_...)
U_STAR = 0.7531


def _distance_from(shape, spacing, centre):
    idx = np.indices(shape, dtype=np.float64)
    return np.sqrt(sum(((idx[a] - centre[a]) * spacing[a]) ** 2 for a in range(len(shape))))


def _dilate(mask, r_mm, spacing):
    """Voxels within r mm of the mask (distance threshold on voxel centres, the noise module's definition)."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= r_mm + 1e-9


def _erode(mask, r_mm, spacing):
    """Mask voxels more than r mm from every background voxel."""
    return ndimage.distance_transform_edt(mask, sampling=spacing) > r_mm + 1e-9


def _effective_radius(mask, spacing):
    return math.sqrt(mask.sum() * float(np.prod(spacing)) / math.pi)


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------- signed_distance


def test_signed_distance_half_space_is_exact_at_half_voxel_convention():
    # rows 0..3 foreground over the full width: the only boundary is the face between rows 3 and 4 (the array
    # border is not a boundary), so d(row i) = (i - 3.5) * 0.7 exactly; columns have spacing 0.5 and do not matter
    mask = np.zeros((8, 5), dtype=bool)
    mask[:4] = True
    d = signed_distance(mask, (0.7, 0.5))
    expected = (np.arange(8) - 3.5)[:, None] * 0.7 * np.ones((1, 5))
    np.testing.assert_allclose(d, expected, atol=1e-12)
    assert d[3, 0] == pytest.approx(-0.35) and d[4, 0] == pytest.approx(0.35)  # the rings at ±½ voxel


def test_signed_distance_anisotropic_half_spaces_3d():
    spacing = (2.5, 0.8, 0.8)
    slab = np.zeros((6, 4, 7), dtype=bool)
    slab[:2] = True  # boundary across axis 0: ±1.25 mm at the rings
    np.testing.assert_allclose(signed_distance(slab, spacing)[:, 1, 3], (np.arange(6) - 1.5) * 2.5, atol=1e-12)
    side = np.zeros((6, 4, 7), dtype=bool)
    side[:, :, :3] = True  # boundary across axis 2: ±0.4 mm at the rings
    np.testing.assert_allclose(signed_distance(side, spacing)[2, 1], (np.arange(7) - 2.5) * 0.8, atol=1e-12)


def test_signed_distance_of_a_disc_is_distance_minus_radius_within_half_a_voxel():
    spacing, radius = (0.7, 0.7), 20.0
    dist = _distance_from((96, 96), spacing, (47.3, 47.6))
    d = signed_distance(dist <= radius, spacing)
    err = d - (dist - radius)  # negative inside: d = -(R - |x - c|)
    assert np.abs(err).max() <= 0.5 * 0.7
    assert abs(err[np.abs(dist - radius) < 2.1].mean()) < 0.05 * 0.7  # unbiased at the boundary
    assert d[47, 48] == pytest.approx(-radius, abs=0.35 + dist[47, 48])  # the centre voxel


def test_signed_distance_of_spheres_within_half_a_voxel():
    spacing, radius = (2.5, 0.8, 0.8), 18.0
    dist = _distance_from((24, 64, 64), spacing, (11.6, 31.2, 32.4))
    err = signed_distance(dist <= radius, spacing) - (dist - radius)
    assert np.abs(err).max() <= 0.5 * 2.5  # half the largest voxel side
    assert abs(err[np.abs(dist - radius) < 7.5].mean()) < 0.05 * 2.5
    # isotropic: within half a voxel on the axes through the centre; voxels touching the sphere only at an edge or a
    # corner ("pockets" of the staircase) read up to ~0.6 voxel too far
    dist = _distance_from((40, 40, 40), (1.0, 1.0, 1.0), (19.5, 20.2, 19.7))
    err = signed_distance(dist <= 12.0, (1.0, 1.0, 1.0)) - (dist - 12.0)
    for axis_line in (err[:, 20, 20], err[20, :, 20], err[20, 20, :]):
        assert np.abs(axis_line).max() <= 0.5
    assert np.abs(err).max() <= 0.7


def test_signed_distance_ignores_singleton_axes():
    dist = _distance_from((40, 40), (0.7, 0.7), (19.2, 20.4))
    mask = dist <= 9.0
    expected = signed_distance(mask, (0.7, 0.7))
    np.testing.assert_array_equal(signed_distance(mask[None], (999.0, 0.7, 0.7)), expected[None])
    np.testing.assert_array_equal(signed_distance(mask[:, None], (0.7, 5.0, 0.7)), expected[:, None])


def test_signed_distance_empty_full_and_max_distance():
    assert np.all(signed_distance(np.zeros((4, 5), dtype=bool), (1.0, 1.0)) == np.inf)
    assert np.all(signed_distance(np.ones((4, 5), dtype=bool), (1.0, 1.0)) == -np.inf)
    dist = _distance_from((60, 70), (0.7, 0.9), (20.0, 25.0))
    mask = dist <= 6.0
    full = signed_distance(mask, (0.7, 0.9))
    limited = signed_distance(mask, (0.7, 0.9), max_distance_mm=5.0)
    within = full <= 5.0
    np.testing.assert_array_equal(limited[within], full[within])  # exact where it matters
    assert np.all((limited[~within] == full[~within]) | (limited[~within] == np.inf))
    assert np.isinf(limited).any()  # the far corner was skipped


def test_signed_distance_bad_inputs():
    with pytest.raises(TypeError, match="boolean"):
        signed_distance(np.zeros((3, 3), dtype=np.uint8), (1.0, 1.0))
    with pytest.raises(ValueError, match="2 entries but the array has 3 axes"):
        signed_distance(np.zeros((3, 3, 3), dtype=bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        signed_distance(np.zeros((3, 3), dtype=bool), (1.0, 0.0))
    with pytest.raises(ValueError, match="max_distance_mm"):
        signed_distance(np.zeros((3, 3), dtype=bool), (1.0, 1.0), max_distance_mm=-1.0)


# ---------------------------------------------------------------- boundary_offset


def test_boundary_offset_identical_masks_is_zero():
    dist = _distance_from((50, 50), (0.7, 0.7), (24.3, 25.1))
    mask = dist <= 10.0
    assert boundary_offset(mask, mask, (0.7, 0.7)) == 0.0


@pytest.mark.parametrize("k", [1, 2, 5])
def test_boundary_offset_half_space_dilation_and_erosion_exact(k):
    # reference: rows < 10; surface voxels at row 9 with d_ref = -0.35; the prediction rows < 10 + k has its face at
    # row 9.5 + k, so d_pred(row 9) = -(k + 0.5) * 0.7 and the offset is d_ref - d_pred = k * 0.7 (erosion: -k * 0.7)
    ref = np.zeros((30, 12), dtype=bool)
    ref[:10] = True
    grown, shrunk = np.zeros_like(ref), np.zeros_like(ref)
    grown[: 10 + k] = True
    shrunk[: 10 - k] = True
    assert boundary_offset(grown, ref, (0.7, 0.7)) == pytest.approx(k * 0.7, abs=1e-12)
    assert boundary_offset(shrunk, ref, (0.7, 0.7)) == pytest.approx(-k * 0.7, abs=1e-12)


def test_boundary_offset_anisotropic_half_spaces_use_the_spacing_of_each_axis():
    spacing = (2.5, 0.8, 0.8)
    ref = np.zeros((12, 6, 20), dtype=bool)
    ref[:6] = True
    pred = _dilate(ref, 5.0, spacing)  # 2 slices of 2.5 mm (in-plane there is no boundary)
    assert pred[:8].all() and not pred[8:].any()
    assert boundary_offset(pred, ref, spacing) == pytest.approx(5.0, abs=1e-12)
    assert boundary_offset(_erode(ref, 2.5, spacing), ref, spacing) == pytest.approx(-2.5, abs=1e-12)
    ref = np.zeros((12, 6, 20), dtype=bool)
    ref[:, :, :10] = True
    assert boundary_offset(_dilate(ref, 4.0, spacing), ref, spacing) == pytest.approx(4.0, abs=1e-12)  # 5 × 0.8
    assert boundary_offset(_erode(ref, 2.4, spacing), ref, spacing) == pytest.approx(-2.4, abs=1e-12)


def test_boundary_offset_official_outer_ring_with_official_distances_overshoots_dilations():
    # the official estimate mean(SDF_off(pred) - 1) over the reference's outer ring, SDF_off = EDT(~M) - EDT(M) in
    # pixels, reads a k-pixel dilation of a flat boundary as -(k + 1) (its sign: negative = prediction larger) and an
    # erosion as exactly +k; ours gives ±k for both
    ref = np.zeros((30, 12), dtype=bool)
    ref[:10] = True
    outer_ring = ~ref & ndimage.binary_dilation(ref)

    def official(pred):
        sdf = ndimage.distance_transform_edt(~pred) - ndimage.distance_transform_edt(pred)
        return float(np.mean(sdf[outer_ring] - 1))

    grown, shrunk = np.zeros_like(ref), np.zeros_like(ref)
    grown[:13] = True
    shrunk[:7] = True
    assert official(grown) == -4.0 and official(shrunk) == 3.0
    assert boundary_offset(grown, ref, (1.0, 1.0)) == 3.0 and boundary_offset(shrunk, ref, (1.0, 1.0)) == -3.0


@pytest.mark.parametrize("r", [1.4, 2.1, 3.5])
def test_boundary_offset_of_a_dilated_or_eroded_disc_is_r_within_half_a_voxel(r):
    spacing = (0.7, 0.7)
    ref = _distance_from((96, 96), spacing, (47.3, 47.6)) <= 20.0
    assert boundary_offset(_dilate(ref, r, spacing), ref, spacing) == pytest.approx(r, abs=0.35)
    assert boundary_offset(_erode(ref, r, spacing), ref, spacing) == pytest.approx(-r, abs=0.35)


@pytest.mark.parametrize("r", [2.1, 4.9, 7.0])
def test_boundary_offset_of_a_disc_matches_the_area_displacement(r):
    # a threshold dilation moves a disc's surface by less than r (4.70 mm for r = 4.9 at 0.7 mm pixels); against the
    # displacement of the area-equivalent radius the estimate is within 0.25 mm (voxel distances read a bit short)
    spacing = (0.7, 0.7)
    ref = _distance_from((96, 96), spacing, (47.3, 47.6)) <= 20.0
    for moved in (_dilate(ref, r, spacing), _erode(ref, r, spacing)):
        true = _effective_radius(moved, spacing) - _effective_radius(ref, spacing)
        assert boundary_offset(moved, ref, spacing) == pytest.approx(true, abs=0.25)


@pytest.mark.parametrize("r", [0.8, 1.6, 2.4, 4.0])
def test_boundary_offset_of_an_anisotropic_cylinder_within_half_an_in_plane_voxel(r):
    # a cylinder through the whole z range (the array border is not a boundary): in-plane boundaries only
    spacing = (2.5, 0.8, 0.8)
    disc = _distance_from((96, 96), spacing[1:], (47.3, 47.6)) <= 25.0
    ref = np.broadcast_to(disc, (12, 96, 96)).copy()
    assert boundary_offset(_dilate(ref, r, spacing), ref, spacing) == pytest.approx(r, abs=0.4)
    assert boundary_offset(_erode(ref, r, spacing), ref, spacing) == pytest.approx(-r, abs=0.4)


@pytest.mark.parametrize("r", [2.5, 5.0])
def test_boundary_offset_of_an_anisotropic_sphere_within_half_the_slice_spacing(r):
    # spheres on (2.5, 0.8, 0.8) mm read 0.5-0.9 mm short: their 2.5 mm terraces and the threshold dilation itself
    # (which moves the surface by 4.7 mm for r = 5) -- within half the largest voxel side
    spacing = (2.5, 0.8, 0.8)
    ref = _distance_from((40, 96, 96), spacing, (19.8, 47.3, 47.6)) <= 25.0
    grown = boundary_offset(_dilate(ref, r, spacing), ref, spacing)
    shrunk = boundary_offset(_erode(ref, r, spacing), ref, spacing)
    assert grown == pytest.approx(r, abs=1.25) and shrunk == pytest.approx(-r, abs=1.25)
    assert grown < r and shrunk > -r


def test_boundary_offset_singleton_axis_gives_the_in_plane_answer():
    spacing = (0.7, 0.7)
    ref = _distance_from((64, 64), spacing, (31.3, 32.6)) <= 12.0
    pred = _dilate(ref, 2.1, spacing)
    expected = boundary_offset(pred, ref, spacing)
    assert boundary_offset(pred[None], ref[None], (999.0, 0.7, 0.7)) == expected
    assert boundary_offset(pred[None], ref[None], (0.1, 0.7, 0.7)) == expected


def test_boundary_offset_empty_and_full_masks():
    spacing = (0.5, 0.7, 0.9)  # one voxel = 0.7 mm: the singleton axis's 0.5 does not count
    empty, some, full = np.zeros((1, 8, 8), dtype=bool), np.zeros((1, 8, 8), dtype=bool), np.ones((1, 8, 8), bool)
    some[0, 2:5, 2:5] = True
    assert voxel_size_mm(spacing, empty.shape) == 0.7
    assert boundary_offset(empty, empty, spacing) is None
    assert boundary_offset(some, empty, spacing) == 0.7  # reference empty: the prediction is larger
    assert boundary_offset(empty, some, spacing) == -0.7  # prediction empty: it is smaller
    assert boundary_offset(full, some, spacing) == 0.7
    assert boundary_offset(some, full, spacing) is None  # no reference boundary to measure on
    assert boundary_offset(full, full, spacing) is None
    assert boundary_offset(empty, full, spacing) == -0.7


def test_boundary_offset_border_is_not_a_boundary():
    # a mask cut by the field of view: only its inner face counts, so a dilation reads exactly its width
    ref = np.zeros((10, 10), dtype=bool)
    ref[:, :4] = True  # touches three array borders
    pred = np.zeros_like(ref)
    pred[:, :6] = True
    assert boundary_offset(pred, ref, (1.0, 1.0)) == 2.0


def test_boundary_offset_bad_inputs():
    with pytest.raises(TypeError, match="boolean"):
        boundary_offset(np.zeros((3, 3), dtype=int), np.zeros((3, 3), dtype=bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="same shape"):
        boundary_offset(np.zeros((3, 3), dtype=bool), np.zeros((3, 4), dtype=bool), (1.0, 1.0))


# ---------------------------------------------------------------- estimate_offsets


def _two_class_map(rows_1, rows_2, shape=(30, 12)):
    seg = np.zeros(shape, dtype=np.uint8)
    seg[:rows_1] = 1  # class 1 at the top, class 2 at the bottom, both cut by the array border
    seg[shape[0] - rows_2 :] = 2
    return seg


def test_estimate_offsets_normalises_per_class_and_averages_cases():
    reference = _two_class_map(10, 10)
    ref_no_2 = reference.copy()
    ref_no_2[ref_no_2 == 2] = 0
    pairs = [
        (_two_class_map(12, 0), ref_no_2),  # class 1 +2 px; class 2 absent from both: not counted
        (_two_class_map(9, 13), reference),  # class 1 -1 px; class 2 +3 px
    ]
    spacings = [(0.7, 0.7), (1.0, 1.0)]
    got = estimate_offsets(pairs, spacings, [1, 2, 3, (1, 2)])
    assert got[1] == pytest.approx((2 * 0.7 - 1 * 1.0) / 2)  # mean of per-case means
    assert got[2] == pytest.approx(3.0)  # the official count over all classes would give 3 / 3 = 1 px
    assert got[3] is None  # absent everywhere
    # region (1, 2): case 1 has only class 1's face (+1.4); case 2 has both faces with 12 voxels each: (-1 + 3) / 2
    assert got[(1, 2)] == pytest.approx((1.4 + 1.0) / 2)
    per_case = [boundary_offset(p == 1, r == 1, s) for (p, r), s in zip(pairs, spacings)]
    assert got[1] == pytest.approx(np.mean(per_case))


def test_estimate_offsets_empty_cases_count_one_voxel_and_inputs_are_checked():
    reference = _two_class_map(10, 0)
    pairs = iter([(np.zeros_like(reference), reference), (_two_class_map(14, 0), reference)])  # a generator works
    got = estimate_offsets(pairs, [(0.5, 0.5), (0.5, 0.5)], [1])
    assert got[1] == pytest.approx((-0.5 + 4 * 0.5) / 2)
    with pytest.raises(ValueError, match="classes is empty"):
        estimate_offsets([(reference, reference)], [(1.0, 1.0)], [])
    with pytest.raises(ValueError):
        estimate_offsets([(reference, reference)], [(1.0, 1.0), (1.0, 1.0)], [1])


# ---------------------------------------------------------------- shift_logits


def test_shift_logits_hand_computed_1d():
    # z = 4.5 - x: foreground x <= 4, face at 4.5, so d = x - 4.5 = -z exactly (the array border is not a boundary).
    # b = +2: band -2 <= d < 0 is x in {3, 4} with |z| = 1.5, 0.5, so A = 1.5 and z' = z - 1.5 exp(-d^2 / 8)
    z = 4.5 - np.arange(10.0)
    d = np.arange(10.0) - 4.5
    np.testing.assert_allclose(signed_distance(z > 0, (1.0,)), d, atol=1e-12)
    shrunk = shift_logits(z, 2.0, (1.0,))
    np.testing.assert_allclose(shrunk, z - 1.5 * np.exp(-(d**2) / 8), atol=1e-12)
    assert shrunk[4] == pytest.approx(0.5 - 1.5 * math.exp(-0.25 / 8))  # -0.954: removed
    assert shrunk[3] == pytest.approx(1.5 - 1.5 * math.exp(-2.25 / 8))  # +0.368: kept
    # b = -2: band 0 < d <= 2 is x in {5, 6}, |z| = 0.5, 1.5: A = 1.5 and the mirror image
    grown = shift_logits(z, -2.0, (1.0,))
    np.testing.assert_allclose(grown, z + 1.5 * np.exp(-(d**2) / 8), atol=1e-12)
    assert np.flatnonzero(shrunk > 0).max() == 3 and np.flatnonzero(grown > 0).max() == 5


@pytest.mark.parametrize("b", [2.0, 4.0, 6.0, -2.0, -4.0, -6.0])
def test_ramp_boundary_moves_by_the_predicted_amount(b):
    # Logits linear in the distance from the centre, z = s (R - |x - c|) = -s·d with the true signed distance d.
    # Shrink (b > 0): the band -|b| <= d < 0 reaches depth |b|, so A = max |z| = s|b|, and
    #   z' = -s d - s|b| exp(-d^2 / 2b^2) = 0  at d = -u|b|  <=>  s u|b| = s|b| exp(-u^2 / 2)  <=>  u = exp(-u^2 / 2),
    # u = 0.7531 (fixed point), independent of s and b: the new radius is R - 0.7531|b|. Expand (b < 0) mirrors it:
    # the band 0 < d <= |b| gives A = s|b| and the new radius R + 0.7531|b|.
    assert U_STAR == pytest.approx(math.exp(-(U_STAR**2) / 2), abs=1e-4)
    spacing, radius = (0.5, 0.5), 20.0
    z = 2.0 * (radius - _distance_from((128, 128), spacing, (63.8, 63.8)))
    new = shift_logits(z, b, spacing) > 0
    expected = radius - math.copysign(U_STAR * abs(b), b)
    assert _effective_radius(new, spacing) == pytest.approx(expected, abs=0.25)  # half a voxel
    if b > 0:
        assert not (new & ~(z > 0)).any()  # shrinking never adds foreground
    else:
        assert not (~new & (z > 0)).any()  # expanding never removes any


def test_shift_logits_trivial_cases_and_dtype():
    z = 2.0 * (8.0 - _distance_from((32, 32), (1.0, 1.0), (15.5, 16.0))).astype(np.float32)
    out = shift_logits(z, 0.0, (1.0, 1.0))
    np.testing.assert_array_equal(out, z)
    assert out is not z
    assert shift_logits(z, 3.0, (1.0, 1.0)).dtype == np.float32
    negative = -np.ones((8, 8))
    np.testing.assert_array_equal(shift_logits(negative, 2.0, (1.0, 1.0)), negative)  # no boundary: kept
    np.testing.assert_array_equal(shift_logits(negative, -2.0, (1.0, 1.0)), negative)
    # the singleton axis is ignored
    z2 = z.astype(np.float64)
    np.testing.assert_array_equal(shift_logits(z2[None], 3.0, (999.0, 1.0, 1.0)), shift_logits(z2, 3.0, (1, 1))[None])
    with pytest.raises(TypeError, match="floating"):
        shift_logits(np.ones((4, 4), dtype=int), 1.0, (1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        shift_logits(z, float("nan"), (1.0, 1.0))


def test_shift_logits_empty_band_changes_nothing():
    # |b| = 0.3 mm is below the half-voxel 0.5 of every ring voxel: no voxel in the band, A = 0
    z = 2.0 * (8.0 - _distance_from((32, 32), (1.0, 1.0), (15.5, 16.0)))
    np.testing.assert_array_equal(shift_logits(z, 0.3, (1.0, 1.0)), z)


# ---------------------------------------------------------------- correct_label and the Dice it buys


def test_correct_label_threshold_rule():
    spacing = (0.7, 0.7)
    z = 2.0 * (10.0 - _distance_from((48, 48), spacing, (23.5, 24.2)))
    np.testing.assert_array_equal(correct_label(z, None, spacing), z > 0)
    np.testing.assert_array_equal(correct_label(z, 0.69, spacing), z > 0)  # below one voxel: the prediction
    np.testing.assert_array_equal(correct_label(z, 0.7, spacing), shift_logits(z, 0.7, spacing) > 0)
    assert (shift_logits(z, 0.69, spacing) > 0).sum() < (z > 0).sum()  # (the shift itself would change it)
    # (1, H, W): one voxel is the in-plane 0.7, not the singleton axis's 0.1
    np.testing.assert_array_equal(correct_label(z[None], 0.69, (0.1, 0.7, 0.7)), (z > 0)[None])


@pytest.mark.parametrize("bias_mm", [4.0, -4.0])
def test_correction_from_trusted_cases_brings_a_biased_prediction_closer_to_the_clean_mask(bias_mm):
    # the model reproduces a consistent boundary bias: its logits cross zero bias_mm outside the clean boundary
    spacing = (0.7, 0.7)

    def case(centre, radius):
        dist = _distance_from((80, 80), spacing, centre)
        return 1.5 * (radius + bias_mm - dist), dist <= radius  # (model logits, clean mask)

    trusted = [case((39.5, 40.2), 14.0), case((41.0, 38.3), 18.0)]
    pairs = [((z > 0).astype(np.uint8), clean.astype(np.uint8)) for z, clean in trusted]
    b = estimate_offsets(pairs, [spacing, spacing], [1])[1]
    assert b == pytest.approx(bias_mm, abs=0.5)  # prediction larger -> positive
    z, clean = case((40.3, 39.6), 16.0)  # a training case
    corrected = correct_label(z, b, spacing)
    assert _dice(corrected, clean) > _dice(z > 0, clean) + 0.05
    expected_radius = 16.0 + bias_mm - math.copysign(U_STAR * abs(b), b)  # the shift moves by 0.75|b| only
    assert _effective_radius(corrected, spacing) == pytest.approx(expected_radius, abs=0.35)


# ---------------------------------------------------------------- softmax label maps


def test_class_margins_hand_computed():
    z = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 0.5], [2.0, 1.0, -1.0]])  # (C = 3, 3 voxels)
    m = class_margins(z)
    np.testing.assert_array_equal(m[:, 0], [1 - 3, 3 - 2, 2 - 3])
    np.testing.assert_array_equal(m[:, 1], [0.0, 0.0, -1.0])  # a tie for the maximum: margin 0 for both
    np.testing.assert_array_equal(m[:, 2], [-0.5, 0.5, -1.5])
    two = np.random.default_rng(0).normal(size=(2, 5, 5))
    np.testing.assert_allclose(class_margins(two)[1], two[1] - two[0])
    with pytest.raises(ValueError, match="C >= 2"):
        class_margins(np.zeros((1, 4, 4)))


def test_two_class_softmax_equals_the_binary_shift():
    spacing = (0.7, 0.7)
    ramp = 2.0 * (12.0 - _distance_from((64, 64), spacing, (31.5, 32.2)))
    z = np.stack([0.3 * np.ones_like(ramp), ramp + 0.3])  # margin z1 - z0 = ramp
    for b in (3.0, -3.0):
        shifted = shift_class_logits(z, {1: b}, spacing)
        np.testing.assert_allclose(shifted[1] - shifted[0], shift_logits(ramp, b, spacing), atol=1e-12)
        np.testing.assert_array_equal(correct_label_map(z, {1: b}, spacing), correct_label(ramp, b, spacing))
    assert correct_label_map(z, {1: 0.5}, spacing).dtype == np.uint8


def test_label_map_classes_move_by_their_own_offsets():
    spacing = (0.5, 0.5)
    d1 = _distance_from((96, 160), spacing, (47.6, 40.3))
    d2 = _distance_from((96, 160), spacing, (48.2, 119.5))
    z = np.stack([np.zeros_like(d1), 2.0 * (15.0 - d1), 2.0 * (12.0 - d2)])  # two discs far apart, background 0
    offsets = {1: 4.0, 2: -3.0}
    labels = correct_label_map(z, offsets, spacing)
    assert _effective_radius(labels == 1, spacing) == pytest.approx(15.0 - U_STAR * 4.0, abs=0.25)
    assert _effective_radius(labels == 2, spacing) == pytest.approx(12.0 + U_STAR * 3.0, abs=0.25)
    reordered = shift_class_logits(z, {2: -3.0, 1: 4.0}, spacing)
    np.testing.assert_array_equal(reordered, shift_class_logits(z, offsets, spacing))  # order-independent
    kept = correct_label_map(z, {1: 4.0, 2: None}, spacing)
    np.testing.assert_array_equal(kept == 2, np.argmax(z, axis=0) == 2)  # None: the prediction


def test_voxels_leaving_a_class_go_to_the_runner_up():
    spacing = (0.5, 0.5)
    dist = _distance_from((80, 80), spacing, (39.5, 39.5))
    right = np.zeros((80, 80), dtype=bool)
    right[:, 40:] = True
    z1 = 2.0 * (15.0 - dist)
    z2 = np.where(right, 0.5, -1.0)  # class 2 beats the background on the right half only
    z = np.stack([np.zeros_like(z1), z1, z2])
    before = np.argmax(z, axis=0)
    after = correct_label_map(z, {1: 3.0}, spacing)
    left_class_1 = (before == 1) & (after != 1)
    assert (left_class_1 & right).any() and (left_class_1 & ~right).any()
    assert np.all(after[left_class_1 & right] == 2)
    assert np.all(after[left_class_1 & ~right] == 0)
    np.testing.assert_array_equal(after[before != 1], before[before != 1])  # nothing else changes


def test_label_map_bad_offsets():
    z = np.zeros((3, 4, 4))
    for bad in ({0: 2.0}, {3: 2.0}, {True: 2.0}):
        with pytest.raises(ValueError, match="foreground class indices 1..2"):
            correct_label_map(z, bad, (1.0, 1.0))
    with pytest.raises(ValueError, match="2 entries but the array has 3 axes"):
        shift_class_logits(np.zeros((3, 4, 4, 4)), {1: 2.0}, (1.0, 1.0))
