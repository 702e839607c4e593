"""No device→host synchronisation in the loss forward; label values are still validated on CPU tensors.

The trainer calls the loss once per deep-supervision output, for student and teacher: a ``.tolist()``/``.item()`` in
the forward would stall the device queue each time. A forward on ``meta`` tensors (shapes without data) fails on any
such read, so it proves the absence of host reads on CPU-only machines; the ``gpu`` test checks the same on CUDA with
PyTorch's sync debug mode.
"""

from __future__ import annotations

import re

import pytest
import torch

from nnunet_ext.losses import LOSSES, build_loss

LABEL_MAP_LOSSES = sorted(name for name, cls in LOSSES.items() if cls.supports_label_maps)
CASES = [(name, "softmax") for name in LABEL_MAP_LOSSES] + [(name, "sigmoid") for name in sorted(LOSSES)]


def _inputs(nonlin: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    if nonlin == "softmax":
        return logits, torch.randint(0, 3, (2, 1, 4, 4), device=device)
    return logits, torch.randint(0, 2, (2, 3, 4, 4), device=device).float()


@pytest.mark.parametrize("name", LABEL_MAP_LOSSES)
@pytest.mark.parametrize("bad_label", [3, -1])
def test_cpu_forward_raises_clear_error_for_label_out_of_range(name, bad_label):
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[[0, 1], [2, bad_label]]]])
    message = f"label values must lie in 0..2 for 3 output channels, found range [{min(0, bad_label)}, "
    with pytest.raises(ValueError, match=re.escape(message)):
        build_loss(name)(logits, labels)


@pytest.mark.parametrize(("name", "nonlin"), CASES)
@pytest.mark.parametrize("batch_dice", [True, False])
def test_forward_and_backward_read_no_tensor_values(name, nonlin, batch_dice):
    # meta tensors have no data: .tolist(), .item(), bool(t), float(t) and .cpu() all raise on them.
    logits, target = _inputs(nonlin, "meta")
    loss = build_loss(name, apply_nonlin=nonlin, batch_dice=batch_dice)(logits, target)
    assert loss.device.type == "meta" and loss.shape == ()
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "nonlin"), CASES)
def test_cuda_forward_and_backward_do_not_synchronise(name, nonlin):
    logits, target = _inputs(nonlin, "cuda")
    loss_fn = build_loss(name, apply_nonlin=nonlin)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call now raises
    try:
        loss = loss_fn(logits, target)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item() and torch.isfinite(logits.grad).all().item()
