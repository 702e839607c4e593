"""NR-Dice: METHODS.md §2.1 hand-computed table, an independent loop over Eq. 3, identities, targets, bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from nnunet_ext.losses import DiceLoss, NoiseRobustDiceLoss, SorensenDiceLoss, noise_robust_dice

# METHODS.md §2.1: one image, one channel, p = (0.8, 0.6, 0.1, 0), g = (1, 1, 0, 0), eps = 0.
HAND_TABLE = [
    (1.0, "squared", 0.7 / 3.01),  # 0.232558...
    (1.0, "linear", 0.2),
    (1.5, "squared", 0.124268),
    (1.5, "linear", 0.106871),
    (2.0, "squared", 0.21 / 3.01),  # 0.069767... = 1 - 2.8/3.01
    (2.0, "linear", 0.06),
]


@pytest.mark.parametrize(("gamma", "denominator", "expected"), HAND_TABLE)
def test_hand_computed_table(gamma, denominator, expected):
    p = torch.tensor([0.8, 0.6, 0.1, 0.0], dtype=torch.float64).view(1, 1, 4)
    g = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 4)
    got = noise_robust_dice(p, g, gamma=gamma, eps=0.0, denominator=denominator)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_hand_table_gamma_1_5_numerator():
    # 0.2^1.5 + 0.4^1.5 + 0.1^1.5 = 0.374048 (the table's numerator), times the squared denominator 3.01.
    p = torch.tensor([0.8, 0.6, 0.1, 0.0], dtype=torch.float64).view(1, 1, 4)
    g = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 4)
    got = noise_robust_dice(p, g, gamma=1.5, eps=0.0, denominator="squared") * 3.01
    assert got.item() == pytest.approx(0.374048, abs=1e-6)


# One image, one channel: p = (0.75, 0.36, 0.25, 0.04), g = (1, 1, 0, 0), gamma = 1.5.
# |p - g| = (0.25, 0.64, 0.25, 0.04); |p - g|^1.5 = (0.125, 0.512, 0.125, 0.008), numerator = 0.77.
# linear: sum p + sum g = 1.4 + 2 = 3.4; squared: sum p^2 + sum g^2 = (0.5625 + 0.1296 + 0.0625 + 0.0016) + 2 = 2.7562.
HAND_P = (0.75, 0.36, 0.25, 0.04)
HAND_G = (1.0, 1.0, 0.0, 0.0)
HAND_NUMERATOR = 0.77
HAND_DENOMINATORS = {"linear": 3.4, "squared": 2.7562}


def _hand_pair() -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(HAND_P, dtype=torch.float64).view(1, 1, 4),
        torch.tensor(HAND_G, dtype=torch.float64).view(1, 1, 4),
    )


@pytest.mark.parametrize("denominator", ["linear", "squared"])
@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_both_denominators_match_hand_computed_values(denominator, eps):
    p, g = _hand_pair()
    expected = HAND_NUMERATOR / (HAND_DENOMINATORS[denominator] + eps)  # linear eps=0: 0.226471, squared: 0.279370
    got = noise_robust_dice(p, g, gamma=1.5, eps=eps, denominator=denominator)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_default_denominator_is_linear_for_function_and_class():
    p, g = _hand_pair()
    linear = HAND_NUMERATOR / (3.4 + 1e-5)  # defaults gamma = 1.5, eps = 1e-5: 0.226470...
    assert noise_robust_dice(p, g).item() == pytest.approx(linear, rel=1e-12)
    assert NoiseRobustDiceLoss(apply_nonlin="sigmoid")(torch.logit(p), g).item() == pytest.approx(linear, rel=1e-12)
    # softmax over (0, logit p) gives foreground probability p; background (channel 0) is dropped by default
    logits = torch.cat([torch.zeros_like(p), torch.logit(p)], dim=1)
    assert NoiseRobustDiceLoss()(logits, g.long()).item() == pytest.approx(linear, rel=1e-12)
    assert NoiseRobustDiceLoss().denominator == "linear"


def test_default_class_equals_the_linear_form():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(3, 3, 5, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (3, 1, 5, 5), generator=gen)
    torch.testing.assert_close(
        NoiseRobustDiceLoss()(logits, labels), NoiseRobustDiceLoss(denominator="linear")(logits, labels)
    )
    assert NoiseRobustDiceLoss()(logits, labels) != NoiseRobustDiceLoss(denominator="squared")(logits, labels)


@pytest.mark.parametrize(("c", "squared", "linear"), [(0.25, 2.0, 0.5), (0.04, 5.0, 0.2)])
def test_no_foreground_squared_form_is_c_to_gamma_minus_2(c, squared, linear):
    # g = 0 on n = 4 voxels, uniform p = c, gamma = 1.5, eps = 0:
    # squared: 4 c^1.5 / (4 c^2) = c^-0.5 (0.25 -> 2, 0.04 -> 5): above 1, and it falls as c rises (collapse);
    # linear: 4 c^1.5 / (4 c) = c^0.5 (0.25 -> 0.5, 0.04 -> 0.2): at most 1, and it falls as c falls.
    p, g = torch.full((1, 1, 4), c, dtype=torch.float64), torch.zeros(1, 1, 4, dtype=torch.float64)
    assert noise_robust_dice(p, g, eps=0.0, denominator="squared").item() == pytest.approx(squared, rel=1e-12)
    assert noise_robust_dice(p, g, eps=0.0, denominator="linear").item() == pytest.approx(linear, rel=1e-12)


def test_little_foreground_squared_form_rewards_raising_background():
    # m = 1 foreground voxel predicted exactly, n = 300 background voxels at c, gamma = 1.5, eps = 0:
    # L(c) = 300 c^1.5 / (2 m + 300 c^2) (sum p^2 = 1 + 300 c^2, sum g^2 = 1) falls as c rises once
    # 300 c^2 > gamma 2m / (2 - gamma) = 6, i.e. c > 0.1414: L(0.2) = 26.8328 / 14 = 1.91663,
    # L(0.5) = 106.066 / 77 = 1.37748.
    values = {}
    for c in (0.2, 0.5):
        p = torch.cat([torch.ones(1, dtype=torch.float64), torch.full((300,), c, dtype=torch.float64)]).view(1, 1, 301)
        g = torch.cat([torch.ones(1, dtype=torch.float64), torch.zeros(300, dtype=torch.float64)]).view(1, 1, 301)
        values[c] = noise_robust_dice(p, g, eps=0.0, denominator="squared").item()
    assert values[0.2] == pytest.approx(1.9166297, rel=1e-6)
    assert values[0.5] == pytest.approx(1.3774807, rel=1e-6)


def _reference(probs: np.ndarray, onehot: np.ndarray, gamma: float, eps: float, batch_dice: bool, squared: bool):
    """Eq. 3 written as plain loops over images and classes (independent of the library's sums)."""
    num_images, num_classes = probs.shape[:2]

    def class_loss(p: np.ndarray, g: np.ndarray) -> float:
        numerator = sum(abs(a - b) ** gamma for a, b in zip(p.ravel(), g.ravel()))
        if squared:
            denominator = sum(a * a for a in p.ravel()) + sum(b * b for b in g.ravel())
        else:
            denominator = sum(p.ravel()) + sum(g.ravel())
        return numerator / (denominator + eps)

    if batch_dice:
        return float(np.mean([class_loss(probs[:, c], onehot[:, c]) for c in range(num_classes)]))
    per_image = [
        np.mean([class_loss(probs[b, c], onehot[b, c]) for c in range(num_classes)]) for b in range(num_images)
    ]
    return float(np.mean(per_image))


def _softmax_onehot(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = logits.detach().double().numpy()
    e = np.exp(x - x.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    onehot = np.stack([(labels[:, 0].numpy() == c).astype(np.float64) for c in range(x.shape[1])], axis=1)
    return probs, onehot


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("denominator", ["squared", "linear"])
def test_softmax_label_map_matches_independent_loop(num_classes, batch_dice, include_background, denominator):
    gen = torch.Generator().manual_seed(num_classes * 10 + batch_dice)
    logits = torch.randn(3, num_classes, 5, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (3, 1, 5, 6), generator=gen)
    loss = NoiseRobustDiceLoss(
        gamma=1.5, eps=1e-5, denominator=denominator, include_background=include_background, batch_dice=batch_dice
    )
    probs, onehot = _softmax_onehot(logits, labels)
    first = 0 if include_background else 1
    expected = _reference(
        probs[:, first:], onehot[:, first:], 1.5, 1e-5, batch_dice=batch_dice, squared=denominator == "squared"
    )
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("denominator", ["squared", "linear"])
def test_sigmoid_regions_match_independent_loop(batch_dice, denominator):
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 4, 5, 3, generator=gen, dtype=torch.float64)
    regions = (torch.rand(2, 3, 4, 5, 3, generator=gen) > 0.6).double()
    loss = NoiseRobustDiceLoss(
        denominator=denominator, apply_nonlin="sigmoid", batch_dice=batch_dice, include_background=False
    )
    probs = 1.0 / (1.0 + np.exp(-logits.numpy()))
    expected = _reference(probs, regions.numpy(), 1.5, 1e-5, batch_dice=batch_dice, squared=denominator == "squared")
    # include_background is irrelevant for regions: all 3 channels enter the mean.
    assert loss(logits, regions).item() == pytest.approx(expected, rel=1e-10)


def test_squared_gamma_2_equals_milletari_dice():
    torch.manual_seed(0)
    p = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    g = (torch.rand(2, 1, 8, 8) > 0.5).double()
    eps = 1e-5
    milletari = 1 - (2 * (p * g).sum() + eps) / ((p**2).sum() + (g**2).sum() + eps)
    got = noise_robust_dice(p, g, gamma=2.0, eps=eps, denominator="squared", batch_dice=True)
    torch.testing.assert_close(got, milletari)


def test_linear_gamma_1_equals_sorensen_dice():
    torch.manual_seed(1)
    p = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    g = (torch.rand(2, 2, 8, 8) > 0.5).double()
    eps = 1e-5
    per_class = 1 - (2 * (p * g).sum((0, 2, 3)) + eps) / (p.sum((0, 2, 3)) + g.sum((0, 2, 3)) + eps)
    got = noise_robust_dice(p, g, gamma=1.0, eps=eps, denominator="linear")
    torch.testing.assert_close(got, per_class.mean())


@pytest.mark.parametrize("batch_dice", [True, False])
def test_class_identities_with_dice_losses(batch_dice):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 6, 6), generator=gen)
    squared = NoiseRobustDiceLoss(gamma=2.0, denominator="squared", batch_dice=batch_dice)
    linear = NoiseRobustDiceLoss(gamma=1.0, denominator="linear", batch_dice=batch_dice)
    torch.testing.assert_close(squared(logits, labels), DiceLoss(batch_dice=batch_dice)(logits, labels))
    torch.testing.assert_close(linear(logits, labels), SorensenDiceLoss(batch_dice=batch_dice)(logits, labels))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.5, 2.0])
def test_perfect_prediction_gives_zero(gamma):
    g = (torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    got = noise_robust_dice(g.clone(), g, gamma=gamma, batch_dice=False)
    assert got.item() == 0.0


def test_label_map_dtype_and_one_hot_target_agree():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 1, 4, 4), generator=gen)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2)
    loss = NoiseRobustDiceLoss()
    reference = loss(logits, labels)
    for target in (labels.to(torch.int16), labels.float(), onehot.float(), onehot.bool()):
        torch.testing.assert_close(loss(logits, target), reference)


def test_background_dropped_by_default():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 4, 4), generator=gen)
    probs, onehot = _softmax_onehot(logits, labels)
    probs, onehot = torch.from_numpy(probs), torch.from_numpy(onehot)
    torch.testing.assert_close(NoiseRobustDiceLoss()(logits, labels), noise_robust_dice(probs[:, 1:], onehot[:, 1:]))
    torch.testing.assert_close(
        NoiseRobustDiceLoss(include_background=True)(logits, labels), noise_robust_dice(probs, onehot)
    )


def test_reduction_none_is_per_image_and_its_mean_matches_unpooled():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (4, 1, 5, 5), generator=gen)
    per_image = NoiseRobustDiceLoss(batch_dice=True, reduction="none")(logits, labels)
    assert per_image.shape == (4,)
    for b in range(4):
        single = NoiseRobustDiceLoss(batch_dice=True)(logits[b : b + 1], labels[b : b + 1])
        torch.testing.assert_close(per_image[b], single)
    torch.testing.assert_close(per_image.mean(), NoiseRobustDiceLoss(batch_dice=False)(logits, labels))


def test_half_precision_logits_reduce_in_float32():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 3, 8, 8, generator=gen)
    labels = torch.randint(0, 3, (2, 1, 8, 8), generator=gen)
    got = NoiseRobustDiceLoss()(logits.bfloat16(), labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, NoiseRobustDiceLoss()(logits.bfloat16().float(), labels))


def test_gamma_below_one_keeps_finite_gradient_at_exact_match():
    # sigmoid(±200) is exactly 1 / 0 in float32, so |p - g| = 0 where d|x|^0.5/dx is infinite.
    logits = torch.tensor([[[200.0, -200.0, 0.3, -0.2]]], requires_grad=True)
    target = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    NoiseRobustDiceLoss(gamma=0.5, apply_nonlin="sigmoid")(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0, 2] < 0 < logits.grad[0, 0, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"denominator": "cubic"}, "denominator must be one of ('squared', 'linear'), got 'cubic'"),
        ({"gamma": 0}, "gamma must be a finite number > 0, got 0"),
        ({"gamma": -1.5}, "gamma must be a finite number > 0, got -1.5"),
        ({"gamma": float("nan")}, "gamma must be a finite number > 0"),
        ({"eps": -1e-5}, "eps must be a finite number >= 0, got -1e-05"),
        ({"apply_nonlin": "relu"}, "apply_nonlin must be one of ('softmax', 'sigmoid'), got 'relu'"),
        ({"reduction": "sum"}, "reduction must be one of ('mean', 'none'), got 'sum'"),
        ({"batch_dice": "False"}, "batch_dice must be True or False, got 'False'"),
        ({"include_background": 1}, "include_background must be True or False, got 1"),
        ({"ddp": 1}, "ddp must be True or False, got 1"),
    ],
)
def test_bad_options_raise_eagerly(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        NoiseRobustDiceLoss(**kwargs)


def test_functional_rejects_bad_options_and_shapes():
    p = torch.rand(2, 2, 4, 4)
    with pytest.raises(ValueError, match=re.escape("denominator must be one of ('squared', 'linear'), got 'sq'")):
        noise_robust_dice(p, p, denominator="sq")
    with pytest.raises(ValueError, match=re.escape("got (2, 2, 4, 4) and (2, 1, 4, 4)")):
        noise_robust_dice(p, p[:, :1])


def test_spatial_shape_mismatch_names_both_shapes():
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=re.escape("(2, 3, 4, 4), got target shape (2, 1, 4, 5)")):
        NoiseRobustDiceLoss()(logits, torch.zeros(2, 1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=re.escape("(2, 3, 4, 4), got target shape (2, 2, 4, 4)")):
        NoiseRobustDiceLoss(apply_nonlin="sigmoid")(logits, torch.zeros(2, 2, 4, 4))


def test_out_of_range_labels_and_single_channel_softmax_raise():
    with pytest.raises(ValueError, match=re.escape("label values must lie in 0..2 for 3 output channels")):
        NoiseRobustDiceLoss()(torch.randn(1, 3, 2, 2), torch.full((1, 1, 2, 2), 3))
    with pytest.raises(ValueError, match="softmax needs at least 2 channels"):
        NoiseRobustDiceLoss()(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
