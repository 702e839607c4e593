"""float64 ``torch.autograd.gradcheck`` for every registered loss, label maps and regions, both reductions.

Every case runs gradcheck's fast mode (random directional derivatives, analytic vs numerical); NR-Dice, the flagship
loss, also gets the full Jacobian check. Full mode for all 46 cases would cost ~25 s on 2 shared cores.
"""

from __future__ import annotations

import pytest
import torch

from nnunet_ext.losses import LOSSES, build_loss

CASES = [
    (name, nonlin, reduction)
    for name in sorted(LOSSES)
    for nonlin in ("softmax", "sigmoid")
    for reduction in ("mean", "none")
    if nonlin == "sigmoid" or LOSSES[name].supports_label_maps
]


def _inputs(nonlin: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    if nonlin == "softmax":
        return logits, torch.randint(0, 3, (2, 1, 4, 4), generator=gen)
    return logits, (torch.rand(2, 3, 4, 4, generator=gen) > 0.5).double()


@pytest.mark.parametrize(("name", "nonlin", "reduction"), CASES)
def test_gradcheck(name, nonlin, reduction):
    logits, target = _inputs(nonlin)
    loss = build_loss(name, apply_nonlin=nonlin, reduction=reduction)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("nonlin", ["softmax", "sigmoid"])
@pytest.mark.parametrize("gamma", [0.5, 1.5])
def test_gradcheck_full_noise_robust_dice(nonlin, gamma):
    logits, target = _inputs(nonlin)
    loss = build_loss("noise_robust_dice", gamma=gamma, apply_nonlin=nonlin, batch_dice=nonlin == "sigmoid")
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,), eps=1e-6, atol=1e-6)
