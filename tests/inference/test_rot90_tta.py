"""Rotational TTA: transforms and inverses, duplicates, the open_brats inverse bug, the predictor hook."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from torch import nn

from nnunet_ext.inference import Rot90Predictor, TTATransform, apply_transform, invert_transform, tta_transforms

CPU = torch.device("cpu")


def _open_brats_inverse(y, t: TTATransform):
    """open_brats' inverse: flip first, then undo the rotation (wrong for in-plane reflections with odd k)."""
    if t.flip is not None:
        y = torch.flip(y, (t.flip,))
    return torch.rot90(y, -t.k, dims=(-2, -1))


def test_transform_sets():
    t3, t2 = tta_transforms(3), tta_transforms(2)
    assert len(t3) == 16 and len(set(t3)) == 16
    assert len(t2) == 12 and all(t.flip != -3 for t in t2)
    assert t3[0] == TTATransform(None, 0) == t2[0]  # identity first
    assert [t.name for t in t3[:5]] == [
        "flipnone_rot0",
        "flipnone_rot90",
        "flipnone_rot180",
        "flipnone_rot270",
        "flipZ_rot0",
    ]
    assert len(tta_transforms(3, square=False)) == 8 and all(t.k in (0, 2) for t in tta_transforms(3, square=False))
    assert len(tta_transforms(2, square=False)) == 6
    with pytest.raises(ValueError, match="got 4"):
        tta_transforms(4)
    with pytest.raises(ValueError, match="k must be"):
        TTATransform(None, 4)
    with pytest.raises(ValueError, match="flip must be"):
        TTATransform(0, 1)


@pytest.mark.parametrize("ndim", [2, 3])
def test_inverse_undoes_every_transform(ndim):
    torch.manual_seed(0)
    x = torch.randn(1, 2, *([3] * (ndim - 2)), 5, 5)  # random: no symmetry at all
    for t in tta_transforms(ndim):
        y = apply_transform(x, t)
        assert y.shape == x.shape
        torch.testing.assert_close(invert_transform(y, t), x, rtol=0, atol=0, msg=t.name)
    x_rect = torch.randn(1, 2, *([3] * (ndim - 2)), 4, 6)
    for t in tta_transforms(ndim, square=False):
        assert torch.equal(invert_transform(apply_transform(x_rect, t), t), x_rect), t.name


def test_numpy_and_torch_agree():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4))
    for t in tta_transforms(3):
        np.testing.assert_array_equal(apply_transform(x, t), apply_transform(torch.from_numpy(x), t).numpy())
        np.testing.assert_array_equal(invert_transform(apply_transform(x, t), t), x)


def test_forward_order_is_flip_then_rotate():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    t = TTATransform(-1, 1)  # flip X -> [[1, 0], [3, 2]], then rot90 (counter-clockwise) -> [[0, 2], [1, 3]]
    assert apply_transform(x, t).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]


def test_open_brats_inverse_fails_exactly_for_in_plane_reflections_with_odd_k():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 3, 5, 5)
    failing = set()
    for t in tta_transforms(3):
        back = _open_brats_inverse(apply_transform(x, t), t)
        if not torch.equal(back, x):
            failing.add((t.flip, t.k))
            assert torch.equal(back, torch.rot90(x, 2, dims=(-2, -1)))  # rotated by 180 degrees
    assert failing == {(-2, 1), (-2, 3), (-1, 1), (-1, 3)}


@pytest.mark.parametrize(("ndim", "distinct"), [(3, 12), (2, 8)])
def test_in_plane_reflections_are_counted_twice(ndim, distinct):
    torch.manual_seed(0)
    x = torch.randn(1, 1, *([3] * (ndim - 2)), 5, 5)
    images = {apply_transform(x, t).numpy().tobytes() for t in tta_transforms(ndim)}
    assert len(images) == distinct


# --- predictor hook ---------------------------------------------------------------------------------------------


class CountingNet(nn.Module):
    """A random conv (no symmetry) that counts its calls."""

    def __init__(self, ndim: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = (nn.Conv3d if ndim == 3 else nn.Conv2d)(2, 3, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def make_predictor(net: nn.Module, tta: str, cls=Rot90Predictor, **cm) -> nnUNetPredictor:
    kwargs = {"use_mirroring": tta == "mirror"} if cls is nnUNetPredictor else {"tta": tta}
    predictor = cls(device=CPU, perform_everything_on_device=False, allow_tqdm=False, **kwargs)
    predictor.network = net.eval()
    predictor.allowed_mirroring_axes = (0, 1) if isinstance(getattr(net, "conv", None), nn.Conv2d) else (0, 1, 2)
    predictor.configuration_manager = SimpleNamespace(**cm) if cm else None
    return predictor


def test_identity_network_returns_its_input():
    x = torch.randn(1, 2, 3, 6, 6)
    predictor = make_predictor(nn.Identity(), "rot90")
    torch.testing.assert_close(predictor._internal_maybe_mirror_and_predict(x), x)


@pytest.mark.parametrize(("ndim", "shape", "calls"), [(3, (3, 6, 6), 16), (2, (6, 6), 12), (3, (3, 4, 6), 8)])
def test_number_of_forward_passes(ndim, shape, calls, caplog):
    net = CountingNet(ndim)
    predictor = make_predictor(net, "rot90")
    with caplog.at_level(logging.WARNING, logger="nnunet_ext.inference"):
        out = predictor._internal_maybe_mirror_and_predict(torch.randn(1, 2, *shape))
        predictor._internal_maybe_mirror_and_predict(torch.randn(1, 2, *shape))
    assert out.shape == (1, 3, *shape) and out.dtype == torch.float32
    assert net.calls == 2 * calls
    warnings = [r for r in caplog.records if "not square" in r.message]
    assert len(warnings) == (1 if shape[-1] != shape[-2] else 0)  # logged once


def test_rot90_average_is_equivariant_to_in_plane_rotations():
    """A non-equivariant network becomes rotation-equivariant: right-multiplying the TTA set by a quarter turn maps it
    onto itself (not so for flips, because of the double-counted in-plane reflections)."""
    net = CountingNet(3)
    x = torch.randn(1, 2, 3, 6, 6)
    rot = lambda v: torch.rot90(v, 1, dims=(-2, -1))  # noqa: E731
    plain = make_predictor(net, "none")
    assert not torch.allclose(
        plain._internal_maybe_mirror_and_predict(rot(x)), rot(plain._internal_maybe_mirror_and_predict(x)), atol=1e-4
    )
    predictor = make_predictor(net, "rot90")
    pred = predictor._internal_maybe_mirror_and_predict
    torch.testing.assert_close(pred(rot(x)), rot(pred(x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred(rot(rot(x))), rot(rot(pred(x))), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tta", ["mirror", "none"])
def test_mirror_and_none_reproduce_nnunet(tta):
    net = CountingNet(3)
    x = torch.randn(1, 2, 3, 6, 6)
    ours = make_predictor(net, tta)._internal_maybe_mirror_and_predict(x)
    theirs = make_predictor(net, tta, cls=nnUNetPredictor)._internal_maybe_mirror_and_predict(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert make_predictor(net, tta).use_mirroring is (tta == "mirror")


def test_anisotropic_in_plane_spacing_warns(caplog):
    predictor = make_predictor(CountingNet(3), "rot90", spacing=[2.5, 0.8, 1.2])
    with caplog.at_level(logging.WARNING, logger="nnunet_ext.inference"):
        predictor._internal_maybe_mirror_and_predict(torch.randn(1, 2, 3, 6, 6))
    assert any("anisotropic" in r.message for r in caplog.records)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tta must be one of"):
        Rot90Predictor(tta="rotate", device=CPU)
    with pytest.raises(ValueError, match="use_mirroring"):
        Rot90Predictor(tta="rot90", use_mirroring=True, device=CPU)
