from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.evaluation.metrics import dice
from nnunet_ext.noise.corruptions import (
    add_spurious_blobs,
    ball_structure,
    dilate,
    drop_lesions,
    ellipsoid,
    erode,
    in_plane_axes,
    markov_boundary_noise,
)
from nnunet_ext.noise.levels import calibrate_morphology

SPACING = (2.5, 0.8, 0.8)


@pytest.fixture
def blob():
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.standard_normal((12, 32, 32)), (1.0, 3.0, 3.0))
    mask = field > np.quantile(field, 0.85)
    mask[:, :, 0] |= mask[:, :, 1]  # touches the array border
    return mask


def test_ball_structure_is_an_ellipsoid_in_voxels():
    b = ball_structure(2.0, SPACING)
    assert b.shape == (1, 5, 5)  # 2 mm reaches 0 voxels along z (2.5 mm), 2 voxels in-plane
    assert b[0, 2, 0] and not b[0, 0, 0]  # (0, 1.6 mm) inside; (1.6, 1.6) mm corner is 2.26 mm away
    assert ball_structure(3.0, SPACING).shape == (3, 7, 7)
    assert ball_structure(0.1, SPACING).sum() == 1


@pytest.mark.parametrize("radius", [0.8, 1.7, 2.5, 3.3])
def test_dilate_erode_equal_scipy_with_ball(blob, radius):
    se = ball_structure(radius, SPACING)
    np.testing.assert_array_equal(dilate(blob, radius, SPACING), ndimage.binary_dilation(blob, se))
    np.testing.assert_array_equal(erode(blob, radius, SPACING), ndimage.binary_erosion(blob, se, border_value=0))


def test_morphology_no_ops(blob):
    np.testing.assert_array_equal(dilate(blob, 0.0, SPACING), blob)
    np.testing.assert_array_equal(erode(blob, 0.0, SPACING), blob)
    empty = np.zeros_like(blob)
    assert not dilate(empty, 3.0, SPACING).any() and not erode(empty, 3.0, SPACING).any()
    with pytest.raises(ValueError, match="radius"):
        dilate(blob, -1.0, SPACING)
    with pytest.raises(TypeError, match="boolean"):
        dilate(blob.astype(np.uint8), 1.0, SPACING)


def test_markov_boundary_noise_seeded_local_and_in_plane(blob):
    kw = {"steps": 3, "flip_prob": 0.3, "correlation_mm": 1.2, "move_axes": in_plane_axes(SPACING)}
    assert in_plane_axes(SPACING) == (1, 2)
    a = markov_boundary_noise(blob, np.random.default_rng(1), SPACING, **kw)
    b = markov_boundary_noise(blob, np.random.default_rng(1), SPACING, **kw)
    c = markov_boundary_noise(blob, np.random.default_rng(2), SPACING, **kw)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and (a != blob).any()
    # At most one in-plane face step per step: inside the in-plane dilation, outside the in-plane erosion.
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = ndimage.generate_binary_structure(2, 1)
    assert not (a & ~ndimage.binary_dilation(blob, plane, iterations=3)).any()
    assert not (ndimage.binary_erosion(blob, plane, iterations=3, border_value=0) & ~a).any()
    allowed = ndimage.binary_dilation(blob, iterations=1)
    d = markov_boundary_noise(blob, np.random.default_rng(1), SPACING, allowed=allowed, **kw)
    assert not (d & ~allowed).any()
    np.testing.assert_array_equal(
        markov_boundary_noise(blob, np.random.default_rng(1), SPACING, steps=0, flip_prob=0.3, correlation_mm=1.0), blob
    )
    with pytest.raises(ValueError, match="flip_prob"):
        markov_boundary_noise(blob, np.random.default_rng(1), SPACING, steps=1, flip_prob=0.7, correlation_mm=1.0)


def test_drop_lesions():
    mask = np.zeros((5, 30, 30), dtype=bool)
    mask[1:4, 2:12, 2:12] = True  # 300 voxels (largest)
    mask[1:3, 20:25, 20:25] = True  # 50
    mask[2, 15:17, 2:4] = True  # 4
    out, removed = drop_lesions(mask, np.random.default_rng(0), n=5, max_volume_fraction=0.5)
    assert sorted(removed) == [4, 50] and out.sum() == 300
    out, removed = drop_lesions(mask, np.random.default_rng(0), n=5, max_volume_fraction=0.02)
    assert removed == [4] and out.sum() == 350
    single = np.zeros_like(mask)
    single[1:3, 1:3, 1:3] = True
    out, removed = drop_lesions(single, np.random.default_rng(0))
    assert removed == [] and (out == single).all()  # the only (largest) component is kept


@pytest.mark.parametrize("placement", ["near", "far"])
def test_spurious_blobs(placement):
    mask = np.zeros((16, 64, 64), dtype=bool)
    mask[ellipsoid(mask.shape, (8, 32, 32), (6.0, 5.0, 5.0), SPACING)] = True
    out, blobs = add_spurious_blobs(
        mask, np.random.default_rng(3), SPACING, n=2, radius_mm=(2.0, 3.0), placement=placement, far_min_mm=10.0
    )
    assert len(blobs) == 2 and (out & mask).sum() == mask.sum()
    added = out & ~mask
    assert 0 < added.sum() <= sum(b["voxels"] for b in blobs)  # two blobs may overlap each other
    gap = ndimage.distance_transform_edt(~mask, sampling=SPACING)[added]
    assert gap.min() > 0
    if placement == "far":
        assert gap.min() >= 10.0
    else:
        assert gap.min() <= 10.0 + 2 * 2.5  # near gap at most 10 mm (+ voxel rounding)
    again, _ = add_spurious_blobs(
        mask, np.random.default_rng(3), SPACING, n=2, radius_mm=(2.0, 3.0), placement=placement, far_min_mm=10.0
    )
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("mode", ["dilate", "erode"])
def test_calibrate_morphology_picks_closest_radius_exactly(blob, mode):
    ref = blob
    target = 0.75
    out, radius, achieved = calibrate_morphology(ref, ref, SPACING, target, mode)
    op = dilate if mode == "dilate" else erode
    np.testing.assert_array_equal(out, op(ref, radius, SPACING))
    assert achieved == pytest.approx(dice(out, ref))
    # Brute force over candidate radii: no radius gets closer to the target.
    for r in np.linspace(0.1, 6.0, 40):
        assert abs(dice(op(ref, float(r), SPACING), ref) - target) >= abs(achieved - target) - 1e-12
