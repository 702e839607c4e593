"""Table I comparison losses and region Dice: reference values, identities, reduction, bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_ext.losses import (
    LOSSES,
    CEDiceLoss,
    CELoss,
    DiceLoss,
    FocalCEGamma05Loss,
    FocalCELoss,
    FocalDiceLoss,
    GCELoss,
    MAEDiceLoss,
    MAELoss,
    NoiseRobustDiceLoss,
    RegionDiceLoss,
    SorensenDiceLoss,
    build_loss,
    ce,
    ce_dice,
    dice,
    focal_ce,
    focal_dice,
    gce,
    mae,
    mae_dice,
    region_dice,
    sorensen_dice,
)


def _label_problem(num_classes: int = 3, seed: int = 0, batch: int = 2, shape: tuple[int, ...] = (5, 6)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, *shape, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (batch, 1, *shape), generator=gen)
    return logits, labels


def _region_problem(num_regions: int = 3, seed: int = 0, batch: int = 2, shape: tuple[int, ...] = (4, 5, 3)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_regions, *shape, generator=gen, dtype=torch.float64)
    regions = (torch.rand(batch, num_regions, *shape, generator=gen) > 0.6).double()
    return logits, regions


def _onehot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels[:, 0], num_classes).movedim(-1, 1).double()


# ---------------------------------------------------------------- CE family: references and identities


def test_ce_matches_torch_cross_entropy_and_bce():
    logits, labels = _label_problem()
    torch.testing.assert_close(CELoss()(logits, labels), F.cross_entropy(logits, labels[:, 0]))
    logits, regions = _region_problem()
    torch.testing.assert_close(
        CELoss(apply_nonlin="sigmoid")(logits, regions), F.binary_cross_entropy_with_logits(logits, regions)
    )


def test_focal_ce_and_gce_match_per_voxel_numpy_formulas():
    logits, labels = _label_problem(seed=1)
    x = logits.numpy()
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    p_y = np.take_along_axis(probs, labels.numpy(), axis=1)
    focal = np.mean(-((1 - p_y) ** 2.0) * np.log(p_y))
    assert FocalCELoss(gamma=2.0)(logits, labels).item() == pytest.approx(focal, rel=1e-10)
    assert GCELoss(q=0.7)(logits, labels).item() == pytest.approx(np.mean((1 - p_y**0.7) / 0.7), rel=1e-10)
    assert MAELoss()(logits, labels).item() == pytest.approx(
        np.mean(np.abs(probs - _onehot(labels, 3).numpy())), rel=1e-10
    )


def test_focal_ce_gamma_0_equals_ce():
    for logits, target, nonlin in (_label_problem() + ("softmax",), _region_problem() + ("sigmoid",)):
        torch.testing.assert_close(
            FocalCELoss(gamma=0.0, apply_nonlin=nonlin)(logits, target), CELoss(apply_nonlin=nonlin)(logits, target)
        )


def test_focal_ce_gamma05_variant():
    logits, labels = _label_problem(seed=2)
    assert FocalCEGamma05Loss().gamma == 0.5
    torch.testing.assert_close(FocalCEGamma05Loss()(logits, labels), FocalCELoss(gamma=0.5)(logits, labels))
    assert FocalCELoss()(logits, labels) < FocalCEGamma05Loss()(logits, labels) < CELoss()(logits, labels)


def test_gce_small_q_tends_to_ce():
    for logits, target, nonlin in (_label_problem() + ("softmax",), _region_problem() + ("sigmoid",)):
        got = GCELoss(q=1e-4, apply_nonlin=nonlin)(logits, target)
        torch.testing.assert_close(got, CELoss(apply_nonlin=nonlin)(logits, target), rtol=1e-3, atol=0)


def test_gce_q_1_equals_mae_for_two_classes_and_paper_eq2():
    logits, labels = _label_problem(num_classes=2, seed=3)
    mae_value = MAELoss()(logits, labels)
    torch.testing.assert_close(GCELoss(q=1.0)(logits, labels), mae_value)
    p_fg = torch.softmax(logits, dim=1)[:, 1:]
    torch.testing.assert_close(mae_value, (p_fg - labels).abs().mean())  # paper Eq. 2
    logits, regions = _region_problem(seed=3)
    torch.testing.assert_close(
        GCELoss(q=1.0, apply_nonlin="sigmoid")(logits, regions), MAELoss(apply_nonlin="sigmoid")(logits, regions)
    )


def test_focal_ce_gamma_below_one_finite_gradient_when_saturated():
    logits = torch.tensor([[[200.0, -3.0], [-200.0, 1.0]]], requires_grad=True)  # [1, 2, 2]
    labels = torch.tensor([[[0, 1]]])
    FocalCELoss(gamma=0.5)(logits, labels).backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- Dice family identities


def test_dice_and_sorensen_match_closed_forms():
    gen = torch.Generator().manual_seed(4)
    p = torch.rand(2, 2, 6, 6, generator=gen, dtype=torch.float64)
    g = (torch.rand(2, 2, 6, 6, generator=gen) > 0.5).double()
    axes, eps = (0, 2, 3), 1e-5
    inter = (p * g).sum(axes)
    milletari = 1 - ((2 * inter + eps) / ((p**2).sum(axes) + (g**2).sum(axes) + eps)).mean()
    sorensen = 1 - ((2 * inter + eps) / (p.sum(axes) + g.sum(axes) + eps)).mean()
    torch.testing.assert_close(dice(p, g), milletari)
    torch.testing.assert_close(sorensen_dice(p, g), sorensen)
    coefficient = (2 * inter + eps) / (p.sum(axes) + g.sum(axes) + eps)
    torch.testing.assert_close(focal_dice(p, g, beta=0.5), 1 - (coefficient**2).mean())


def test_focal_dice_beta_1_equals_sorensen():
    for logits, target, nonlin in (_label_problem() + ("softmax",), _region_problem() + ("sigmoid",)):
        torch.testing.assert_close(
            FocalDiceLoss(beta=1.0, apply_nonlin=nonlin)(logits, target),
            SorensenDiceLoss(apply_nonlin=nonlin)(logits, target),
        )


@pytest.mark.parametrize("batch_dice", [True, False])
def test_region_dice_equals_nr_dice_squared_gamma_2_eps_1(batch_dice):
    logits, regions = _region_problem(seed=5)
    nr = NoiseRobustDiceLoss(gamma=2.0, eps=1.0, denominator="squared", apply_nonlin="sigmoid", batch_dice=batch_dice)
    torch.testing.assert_close(RegionDiceLoss(batch_dice=batch_dice)(logits, regions), nr(logits, regions))


def test_region_dice_matches_open_brats_form():
    logits, regions = _region_problem(seed=6)
    s = torch.sigmoid(logits)
    per_region = [
        1 - (2 * (s[:, r] * regions[:, r]).sum() + 1) / ((s[:, r] ** 2).sum() + (regions[:, r] ** 2).sum() + 1)
        for r in range(3)
    ]
    torch.testing.assert_close(RegionDiceLoss()(logits, regions), torch.stack(per_region).mean())
    torch.testing.assert_close(region_dice(s, regions), torch.stack(per_region).mean())


def test_perfect_prediction_gives_zero_for_dice_family():
    g = (torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    for fn in (dice, sorensen_dice, focal_dice):
        assert fn(g.clone(), g, eps=0.0).item() == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------- compound losses


@pytest.mark.parametrize("batch_dice", [True, False])
def test_compound_losses_are_sums_of_their_terms(batch_dice):
    for logits, target, nonlin in (_label_problem() + ("softmax",), _region_problem() + ("sigmoid",)):
        kwargs = {"apply_nonlin": nonlin, "batch_dice": batch_dice}
        sorensen = SorensenDiceLoss(**kwargs)(logits, target)
        torch.testing.assert_close(CEDiceLoss(**kwargs)(logits, target), CELoss(**kwargs)(logits, target) + sorensen)
        torch.testing.assert_close(MAEDiceLoss(**kwargs)(logits, target), MAELoss(**kwargs)(logits, target) + sorensen)
    weighted = CEDiceLoss(weight_ce=0.25, weight_dice=2.0)(*_label_problem())
    expected = 0.25 * CELoss()(*_label_problem()) + 2.0 * SorensenDiceLoss()(*_label_problem())
    torch.testing.assert_close(weighted, expected)


def test_functional_forms_agree_with_classes():
    logits, labels = _label_problem(seed=7)
    onehot = _onehot(labels, 3)
    probs = torch.softmax(logits, dim=1)
    pairs = [
        (ce(logits, onehot), CELoss()),
        (focal_ce(logits, onehot, gamma=2.0), FocalCELoss()),
        (mae(logits, onehot), MAELoss()),
        (gce(logits, onehot, q=0.7), GCELoss()),
        (dice(probs[:, 1:], onehot[:, 1:]), DiceLoss()),
        (sorensen_dice(probs[:, 1:], onehot[:, 1:]), SorensenDiceLoss()),
        (focal_dice(probs[:, 1:], onehot[:, 1:]), FocalDiceLoss()),
        (ce_dice(logits, onehot), CEDiceLoss()),
        (mae_dice(logits, onehot), MAEDiceLoss()),
    ]
    for value, module in pairs:
        torch.testing.assert_close(value, module(logits, labels), msg=type(module).__name__)


# ---------------------------------------------------------------- reduction="none"

VOXELWISE = ("ce", "focal_ce", "focal_ce_gamma05", "mae", "gce")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_reduction_none_gives_per_image_values(name):
    cls = LOSSES[name]
    logits, target = _region_problem(batch=3) if not cls.supports_label_maps else _label_problem(batch=3)
    nonlin = "softmax" if cls.supports_label_maps else "sigmoid"
    per_image = build_loss(name, apply_nonlin=nonlin, batch_dice=True, reduction="none")(logits, target)
    assert per_image.shape == (3,)
    for b in range(3):
        single = build_loss(name, apply_nonlin=nonlin, batch_dice=True)(logits[b : b + 1], target[b : b + 1])
        torch.testing.assert_close(per_image[b], single)
    # The mean of the per-image vector is the scalar loss wherever nothing is pooled over the batch.
    unpooled = build_loss(name, apply_nonlin=nonlin, batch_dice=False)(logits, target)
    torch.testing.assert_close(per_image.mean(), unpooled)
    if name in VOXELWISE:
        pooled = build_loss(name, apply_nonlin=nonlin, batch_dice=True)(logits, target)
        torch.testing.assert_close(per_image.mean(), pooled)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("focal_ce", {"gamma": -1.0}, "gamma must be a finite number >= 0, got -1.0"),
        ("gce", {"q": 0.0}, "q must be a finite number > 0, got 0.0"),
        ("gce", {"q": 1.5}, "q must satisfy 0 < q <= 1 (q -> 0: CE, q = 1: MAE), got 1.5"),
        ("focal_dice", {"beta": 0}, "beta must be a finite number > 0, got 0"),
        ("dice", {"eps": -1.0}, "eps must be a finite number >= 0, got -1.0"),
        ("ce", {"reduction": "sum"}, "reduction must be one of ('mean', 'none'), got 'sum'"),
        ("mae", {"apply_nonlin": "softplus"}, "apply_nonlin must be one of ('softmax', 'sigmoid'), got 'softplus'"),
        ("ce_dice", {"weight_ce": -1.0}, "weight_ce must be a finite number >= 0, got -1.0"),
        ("mae_dice", {"weight_mae": 0.0, "weight_dice": 0.0}, "weight_mae and weight_dice are both 0"),
        ("sorensen_dice", {"include_background": "yes"}, "include_background must be True or False, got 'yes'"),
    ],
)
def test_bad_options_raise_eagerly(name, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_loss(name, **kwargs)


def test_region_dice_refuses_softmax():
    message = "region_dice needs a region dataset (apply_nonlin='sigmoid'"
    with pytest.raises(ValueError, match=re.escape(message)):
        RegionDiceLoss(apply_nonlin="softmax")
    with pytest.raises(ValueError, match=re.escape(message)):
        build_loss("region_dice", apply_nonlin="softmax")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shape_mismatch_names_both_shapes(name):
    nonlin = "softmax" if LOSSES[name].supports_label_maps else "sigmoid"
    loss = build_loss(name, apply_nonlin=nonlin)
    logits = torch.randn(2, 3, 4, 4)
    bad_target = torch.zeros(2, 1 if nonlin == "softmax" else 3, 4, 5)
    with pytest.raises(ValueError, match=re.escape(f"{(2, 3, 4, 4)}, got target shape {tuple(bad_target.shape)}")):
        loss(logits, bad_target)


def test_functional_voxelwise_forms_check_shapes():
    with pytest.raises(ValueError, match=re.escape("got (2, 3, 4, 4) and (2, 2, 4, 4)")):
        ce(torch.randn(2, 3, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="softmax needs at least 2 channels"):
        gce(torch.randn(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
