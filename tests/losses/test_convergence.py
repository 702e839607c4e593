"""One-layer convergence: a 1x1 convolution trained with Adam drives every loss down on a tiny separable problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_ext.losses import LOSSES, build_loss


def _problem(nonlin: str):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 8, 8, generator=gen)
    if nonlin == "softmax":  # label 1 where channel 0 exceeds channel 1: linearly separable per voxel
        return x, (x[:, :1] > x[:, 1:]).long()
    return x, torch.cat([(x[:, :1] > 0.3), (x[:, 1:] < -0.2)], dim=1).float()  # two independent regions


def _train(name: str, nonlin: str, steps: int = 50) -> tuple[float, float]:
    torch.manual_seed(0)
    x, target = _problem(nonlin)
    net = nn.Conv2d(2, 2, kernel_size=1)
    loss_fn = build_loss(name, apply_nonlin=nonlin)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.1)
    with torch.no_grad():
        first = loss_fn(net(x), target).item()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = loss_fn(net(x), target)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return first, loss_fn(net(x), target).item()


@pytest.mark.parametrize("nonlin", ["softmax", "sigmoid"])
def test_noise_robust_dice_converges(nonlin):
    first, last = _train("noise_robust_dice", nonlin)
    assert last < 0.3 * first
    assert last < 0.15


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"noise_robust_dice"}))
def test_every_other_loss_decreases(name):
    nonlin = "softmax" if LOSSES[name].supports_label_maps else "sigmoid"
    first, last = _train(name, nonlin)
    assert last < 0.6 * first
