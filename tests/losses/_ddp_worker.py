"""Worker of ``test_ddp.py``: one of 2 gloo ranks, each computing the losses on its half of a fixed batch.

A plain module (not a test file) because ``torch.multiprocessing`` spawns children that import ``run`` by name; the
single-process references of the test use the same helpers.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import torch
import torch.distributed as dist
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import Tensor, nn

from nnunet_ext.losses import build_loss

WORLD_SIZE = 2
LOCAL_BATCH = 2  # the global batch has WORLD_SIZE * LOCAL_BATCH images; rank r gets images [2r, 2r + 2)

#: case -> (registry key, options). The first group depends on batch-pooled sums, which ``ddp`` gathers.
POOLED_CASES: dict[str, tuple[str, dict[str, object]]] = {
    "nr_dice_linear": ("noise_robust_dice", {"denominator": "linear"}),
    "nr_dice_squared": ("noise_robust_dice", {"denominator": "squared"}),
    "nr_dice_regions": ("noise_robust_dice", {"apply_nonlin": "sigmoid", "gamma": 0.5}),
    "region_dice": ("region_dice", {}),
    "dice": ("dice", {}),
    "focal_dice": ("focal_dice", {}),
    "sorensen_dice_eps1": ("sorensen_dice", {"eps": 1.0}),  # nnU-Net's Dice with smooth = 1, up to the constant 1
}
#: a rank's value is not the global-batch loss: per-image sums (not gathered), and a compound loss (local CE mean +
#: gathered Dice)
OTHER_CASES: dict[str, tuple[str, dict[str, object]]] = {
    "nr_dice_per_image": ("noise_robust_dice", {"batch_dice": False}),
    "nr_dice_reduction_none": ("noise_robust_dice", {"reduction": "none"}),
    "ce_dice": ("ce_dice", {}),
}
CASES = {**POOLED_CASES, **OTHER_CASES}
NNUNET = "nnunet_memory_efficient_soft_dice"


def build(case: str, ddp: bool) -> nn.Module:
    """The plugin loss of ``case``, or nnU-Net's own batch Dice (background dropped, smooth 1) for ``NNUNET``."""
    if case == NNUNET:
        return MemoryEfficientSoftDiceLoss(
            apply_nonlin=softmax_helper_dim1, batch_dice=True, do_bg=False, smooth=1.0, ddp=ddp
        )
    name, options = CASES[case]
    return build_loss(name, ddp=ddp, **options)


def is_regions(case: str) -> bool:
    if case == NNUNET:
        return False
    name, options = CASES[case]
    return name == "region_dice" or options.get("apply_nonlin") == "sigmoid"


def global_batch(case: str) -> tuple[Tensor, Tensor, Tensor]:
    """Fixed (features [4, 2, 5, 6], logits [4, 3, 5, 6], target) in float64: a label map, or regions for sigmoid."""
    gen = torch.Generator().manual_seed(0)
    size = (WORLD_SIZE * LOCAL_BATCH, 3, 5, 6)
    features = torch.randn(size[0], 2, *size[2:], generator=gen, dtype=torch.float64)
    logits = torch.randn(size, generator=gen, dtype=torch.float64)
    if is_regions(case):
        target = (torch.rand(size, generator=gen) > 0.6).double()
    else:
        target = torch.randint(0, 3, (size[0], 1, *size[2:]), generator=gen)
    return features, logits, target


def local_slice(rank: int) -> slice:
    return slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)


def scalar(loss: Tensor) -> Tensor:
    """The quantity back-propagated: the loss, or the mean of a per-image [B] loss (what a trainer would reduce)."""
    return loss.mean() if loss.ndim else loss


def value_and_input_grad(loss_fn: nn.Module, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    x = logits.clone().requires_grad_(True)
    value = loss_fn(x, target)
    scalar(value).backward()
    return value.detach(), x.grad


def conv() -> nn.Conv2d:
    """The same 1x1 convolution (features → logits) on every rank and in the reference."""
    torch.manual_seed(1)
    return nn.Conv2d(2, 3, kernel_size=1).double()


def param_grads(loss_fn: nn.Module, features: Tensor, target: Tensor, distributed: bool) -> list[Tensor]:
    """Parameter gradients of ``conv()``; under ``distributed`` averaged over the ranks as DDP does.

    DDP's reducer all-reduces (sums) each gradient and divides it by the world size; done here explicitly, since
    constructing ``DistributedDataParallel`` imports ``torch._dynamo`` (seconds per process on a small CPU).
    """
    net = conv()
    scalar(loss_fn(net(features), target)).backward()
    grads = [p.grad for p in net.parameters()]
    if distributed:
        for grad in grads:
            dist.all_reduce(grad)
            grad /= dist.get_world_size()
    return grads


def run(rank: int, out_dir: str) -> None:
    """Rank ``rank`` of ``WORLD_SIZE``: every case on the local half, results saved as ``rank<r>.pt``."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{Path(out_dir) / 'store'}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = {}
        for case in [*CASES, NNUNET]:
            features, logits, target = (t[local_slice(rank)] for t in global_batch(case))
            value, grad = value_and_input_grad(build(case, ddp=True), logits, target)
            results[case] = {
                "value": value,
                "input_grad": grad,
                "param_grads": param_grads(build(case, ddp=True), features, target, distributed=True),
            }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
