"""Shared plumbing of the loss zoo: option validation, (logits, target) → (probs, one-hot), soft-Dice sums, reduction.

Every loss of :mod:`nnunet_ext.losses` goes through these few functions so that the rows of the paper's Table I differ
only in their formula: the same float32 cast, class selection, batch pooling, DDP all-gather of the pooled sums and
per-image reduction apply to all.

Nothing here reads tensor values on the host (no ``.item()``/``.tolist()``) except the label check of CPU targets,
where it costs no device synchronisation.

Internal module: the public API is re-exported by :mod:`nnunet_ext.losses`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar, Literal

import torch
import torch.distributed as dist
from nnunetv2.utilities.ddp_allgather import AllGatherGrad
from torch import Tensor, nn

Nonlin = Literal["softmax", "sigmoid"]
Reduction = Literal["mean", "none"]
Denominator = Literal["squared", "linear"]

NONLINS: tuple[str, ...] = ("softmax", "sigmoid")
REDUCTIONS: tuple[str, ...] = ("mean", "none")
DENOMINATORS: tuple[str, ...] = ("squared", "linear")


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the bad value and the valid ones when ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number > 0 (or >= 0 with ``allow_zero``)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = is_number and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")


def check_bool(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a ``bool`` (catches e.g. the string ``"False"`` from a config)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")


def as_float(x: Tensor) -> Tensor:
    """Half-precision logits (AMP) become float32; float32 and float64 are kept (float64 for gradcheck)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def target_to_onehot(logits: Tensor, target: Tensor, apply_nonlin: Nonlin) -> Tensor:
    """Convert nnU-Net's target for ``logits`` [B, C, ...] into a float one-hot/binary tensor of the logits' shape.

    Label values are checked on CPU tensors only, where reading their range costs no device synchronisation. On
    other devices the check would stall the device queue once per call (the trainer calls the loss per
    deep-supervision output, for student and teacher), so it is skipped: nnU-Net's preprocessing writes labels in
    0..C-1, the plugin's trainers refuse datasets with an ignore label at start-up, and an index outside 0..C-1 still
    fails inside ``scatter_`` (on CUDA a device-side "index out of bounds" assertion, reported asynchronously and
    without the message below).

    Args:
        logits: Network output [B, C, ...].
        target: softmax: a label map [B, 1, ...] (any dtype, values in 0..C-1) or an already one-hot [B, C, ...];
            sigmoid: binary region masks [B, R, ...] with R = C.
        apply_nonlin: ``"softmax"`` (mutually exclusive classes) or ``"sigmoid"`` (overlapping regions).

    Returns:
        Tensor of ``logits.shape`` in the float dtype of :func:`as_float` (logits), all channels kept.

    Raises:
        ValueError: shape mismatch (both shapes named), a softmax with fewer than 2 channels, or (CPU targets) label
            values outside 0..C-1 (e.g. nnU-Net's ignore label, which these losses do not support).
    """
    dtype = as_float(logits).dtype
    if logits.ndim < 3:
        raise ValueError(
            f"logits must be [B, C, spatial...] with at least one spatial axis, got {tuple(logits.shape)}."
        )
    same_batch_and_space = (
        target.ndim == logits.ndim and target.shape[0] == logits.shape[0] and target.shape[2:] == logits.shape[2:]
    )
    num_channels = logits.shape[1]
    if apply_nonlin == "sigmoid":
        if not same_batch_and_space or target.shape[1] != num_channels:
            raise ValueError(
                f"sigmoid (region) losses need binary region targets of the logits' shape {tuple(logits.shape)}, "
                f"got target shape {tuple(target.shape)}."
            )
        return target.to(dtype)
    if num_channels < 2:
        raise ValueError(
            f"softmax needs at least 2 channels (background + foreground), logits have shape {tuple(logits.shape)}; "
            "use apply_nonlin='sigmoid' for a single binary channel."
        )
    if not same_batch_and_space or target.shape[1] not in (1, num_channels):
        raise ValueError(
            f"softmax losses need a label map [B, 1, ...] or a one-hot [B, C, ...] matching the logits' shape "
            f"{tuple(logits.shape)}, got target shape {tuple(target.shape)}."
        )
    if target.shape[1] == num_channels:
        return target.to(dtype)
    labels = target.long()
    if labels.device.type == "cpu":  # host memory: reading the range is no device sync
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
        if lo < 0 or hi >= num_channels:
            raise ValueError(
                f"label values must lie in 0..{num_channels - 1} for {num_channels} output channels, found range "
                f"[{lo}, {hi}]; nnU-Net's ignore label is not supported by these losses."
            )
    onehot = torch.zeros(logits.shape, dtype=dtype, device=logits.device)
    return onehot.scatter_(1, labels, 1.0)


def probabilities(logits: Tensor, apply_nonlin: Nonlin) -> Tensor:
    """Softmax over channels or element-wise sigmoid, computed in float32 (float64 kept)."""
    x = as_float(logits)
    return torch.softmax(x, dim=1) if apply_nonlin == "softmax" else torch.sigmoid(x)


def select_channels(x: Tensor, apply_nonlin: Nonlin, include_background: bool) -> Tensor:
    """Drop channel 0 (background) of a softmax output unless ``include_background``; regions keep all channels."""
    return x[:, 1:] if apply_nonlin == "softmax" and not include_background else x


def probs_and_onehot(
    logits: Tensor, target: Tensor, apply_nonlin: Nonlin, include_background: bool
) -> tuple[Tensor, Tensor]:
    """(probabilities, one-hot) of the same shape [B, K, ...], channel-selected as the Dice family expects."""
    onehot = target_to_onehot(logits, target, apply_nonlin)
    probs = probabilities(logits, apply_nonlin)
    return (
        select_channels(probs, apply_nonlin, include_background),
        select_channels(onehot, apply_nonlin, include_background),
    )


def check_pair(probs: Tensor, onehot: Tensor) -> None:
    """Functional Dice-family forms take probabilities and targets of one shape [B, C, ...]."""
    if probs.shape != onehot.shape or probs.ndim < 3:
        raise ValueError(
            f"probs and onehot must share one shape [B, C, spatial...], got {tuple(probs.shape)} and "
            f"{tuple(onehot.shape)}."
        )


def pooled_sum(x: Tensor, pooled: bool) -> Tensor:
    """Sum over the spatial axes, and over the batch when ``pooled``: [C] if pooled else [B, C]."""
    axes = tuple(range(2, x.ndim))
    s = x.sum(dim=axes)
    return s.sum(dim=0) if pooled else s


def denominator_sums(probs: Tensor, onehot: Tensor, denominator: Denominator, pooled: bool) -> Tensor:
    """The one soft-Dice denominator: Σp² + Σg² (``"squared"``, Milletari) or Σp + Σg (``"linear"``, Sørensen)."""
    if denominator == "squared":
        return pooled_sum(probs * probs, pooled) + pooled_sum(onehot * onehot, pooled)
    return pooled_sum(probs, pooled) + pooled_sum(onehot, pooled)


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised (DDP training)."""
    return dist.is_available() and dist.is_initialized()


def sum_over_ranks(*sums: Tensor) -> tuple[Tensor, ...]:
    """Sum same-shaped tensors over all DDP ranks with one gradient-carrying all-gather.

    nnU-Net's ``AllGatherGrad`` (``nnunetv2.utilities.ddp_allgather``, as in its ``MemoryEfficientSoftDiceLoss``
    with ``ddp=True``) gathers the stacked sums [W, k, ...]; its backward all-reduces (sums) the incoming gradient
    and returns this rank's slice. Every rank computes the same loss from the gathered sums, so a rank's gradient with
    respect to its local sums is W times that of the global-batch loss; DDP then averages parameter gradients over
    the W ranks, which gives exactly the gradient of the global-batch loss. Needs an initialised process group.
    """
    gathered = AllGatherGrad.apply(torch.stack(sums))  # [W, len(sums), ...]
    return tuple(gathered.sum(dim=0).unbind(0))


def ratio_sums(
    numerator_terms: Tensor, probs: Tensor, onehot: Tensor, denominator: Denominator, pooled: bool, ddp: bool
) -> tuple[Tensor, Tensor]:
    """(Σ numerator_terms, soft-Dice denominator sums): the two sums every Dice-type ratio is formed from.

    [C] each if ``pooled`` (batch-pooled), else [B, C]. With ``ddp`` and pooled sums inside an initialised process
    group, both are summed over all ranks (:func:`sum_over_ranks`, one all-gather), so that the ratio formed from
    them is that of the concatenated global batch on every rank. Per-image sums are never gathered; outside a
    process group ``ddp`` changes nothing.
    """
    numerator = pooled_sum(numerator_terms, pooled)
    denominator_sum = denominator_sums(probs, onehot, denominator, pooled)
    if ddp and pooled and is_distributed():
        numerator, denominator_sum = sum_over_ranks(numerator, denominator_sum)
    return numerator, denominator_sum


def soft_dice_coefficient(
    probs: Tensor, onehot: Tensor, eps: float, denominator: Denominator, pooled: bool, ddp: bool = False
) -> Tensor:
    """The one soft-Dice coefficient (2Σpg + ε) / (denominator + ε), per class: [C] if pooled else [B, C].

    ``ddp``: pooled sums are summed over the DDP ranks first (see :func:`ratio_sums`).
    """
    intersection, denominator_sum = ratio_sums(probs * onehot, probs, onehot, denominator, pooled, ddp)
    return (2.0 * intersection + eps) / (denominator_sum + eps)


def reduce_classwise(per_class: Tensor, reduction: Reduction) -> Tensor:
    """Mean over classes; then a scalar (``"mean"``) or, for per-image values [B, C], a vector [B] (``"none"``)."""
    if reduction == "none":
        assert per_class.ndim == 2, "reduction='none' needs per-image (not batch-pooled) values"
        return per_class.mean(dim=1)
    return per_class.mean()


def reduce_voxelwise(per_voxel: Tensor, reduction: Reduction) -> Tensor:
    """Mean over all voxels (and regions): a scalar (``"mean"``) or one value per image [B] (``"none"``)."""
    if reduction == "none":
        return per_voxel.reshape(per_voxel.shape[0], -1).mean(dim=1)
    return per_voxel.mean()


class SegmentationLoss(nn.Module):
    """Base of every loss: validates the shared options eagerly and stores them.

    Every loss takes ``ddp`` so that a trainer can pass ``ddp=is_ddp`` whatever the loss; it acts only where the
    value depends on batch-pooled sums (:func:`ratio_sums`). Subclasses set ``supports_regions``/
    ``supports_label_maps`` and implement ``forward(logits, target)``.
    """

    supports_regions: ClassVar[bool] = True
    supports_label_maps: ClassVar[bool] = True

    def __init__(self, apply_nonlin: Nonlin, batch_dice: bool, reduction: Reduction, ddp: bool = False) -> None:
        super().__init__()
        check_choice("apply_nonlin", apply_nonlin, NONLINS)
        check_bool("batch_dice", batch_dice)
        check_choice("reduction", reduction, REDUCTIONS)
        check_bool("ddp", ddp)
        self.apply_nonlin: Nonlin = apply_nonlin
        self.batch_dice = batch_dice
        self.reduction: Reduction = reduction
        self.ddp = ddp
