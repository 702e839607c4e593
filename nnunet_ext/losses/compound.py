"""Compound comparison losses of the COPLE-Net paper's Table I: CE + Dice and MAE + Dice (weights 1 : 1).

The Dice term is the Sørensen (linear-denominator) soft Dice loss, as in the authors' PyMIC code (METHODS.md §2.2,
an open point fixed here); it uses the class selection and batch pooling of NR-Dice, while the voxel-wise term uses
all classes. Both terms reuse the functional forms of :mod:`nnunet_ext.losses.cross_entropy` and
:mod:`nnunet_ext.losses.dice`.

Table I: G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from nnunet_ext.losses._common import (
    NONLINS,
    Nonlin,
    Reduction,
    SegmentationLoss,
    check_bool,
    check_choice,
    check_positive,
    probabilities,
    select_channels,
    target_to_onehot,
)
from nnunet_ext.losses.cross_entropy import ce, mae
from nnunet_ext.losses.dice import sorensen_dice

__all__ = ["CEDiceLoss", "MAEDiceLoss", "ce_dice", "mae_dice"]


def _check_weights(weight_voxelwise_name: str, weight_voxelwise: float, weight_dice: float) -> None:
    check_positive(weight_voxelwise_name, weight_voxelwise, allow_zero=True)
    check_positive("weight_dice", weight_dice, allow_zero=True)


def _compound(
    voxelwise: Callable[..., Tensor],
    logits: Tensor,
    onehot: Tensor,
    weight_voxelwise: float,
    weight_dice: float,
    eps: float,
    include_background: bool,
    batch_dice: bool,
    apply_nonlin: Nonlin,
    reduction: Reduction,
    ddp: bool,
) -> Tensor:
    """weight_voxelwise · voxelwise(logits, onehot) + weight_dice · Sørensen Dice on the channel-selected pair.

    Only the Dice term is gathered under ``ddp``: the voxel-wise term is a local mean, which DDP's gradient averaging
    already turns into the global one (equal local batch sizes, as nnU-Net's DDP sampler gives).
    """
    check_choice("apply_nonlin", apply_nonlin, NONLINS)
    check_bool("include_background", include_background)
    term = voxelwise(logits, onehot, apply_nonlin, reduction)
    probs = probabilities(logits, apply_nonlin)
    dice_term = sorensen_dice(
        select_channels(probs, apply_nonlin, include_background),
        select_channels(onehot.to(probs.dtype), apply_nonlin, include_background),
        eps,
        batch_dice,
        reduction,
        ddp,
    )
    return weight_voxelwise * term + weight_dice * dice_term


def ce_dice(
    logits: Tensor,
    onehot: Tensor,
    weight_ce: float = 1.0,
    weight_dice: float = 1.0,
    eps: float = 1e-5,
    include_background: bool = False,
    batch_dice: bool = True,
    apply_nonlin: Nonlin = "softmax",
    reduction: Reduction = "mean",
    ddp: bool = False,
) -> Tensor:
    r"""CE + Sørensen Dice loss from logits and one-hot targets over all channels.

    .. math::

        L = w_\text{ce}\,\mathrm{CE} + w_\text{dice} \Big(1 - \operatorname{mean}_c
            \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}\Big)

    Paper: Table I row "CE + Dice", G. Wang et al., doi:10.1109/TMI.2020.3000314. Defaults: weights 1 : 1, ε = 1e-5,
    background excluded from the Dice term, batch-pooled Dice.

    Identities pinned by tests: equals :func:`~nnunet_ext.losses.ce` + :func:`~nnunet_ext.losses.sorensen_dice`.

    Args:
        logits: Network output [B, C, ...].
        onehot: One-hot targets over all C classes (softmax) or binary region masks (sigmoid), same shape.
        weight_ce: Weight of the CE term (≥ 0).
        weight_dice: Weight of the Dice term (≥ 0).
        eps: Dice smoothing ε ≥ 0.
        include_background: Keep softmax channel 0 in the Dice term.
        batch_dice: Pool the Dice sums over the batch.
        apply_nonlin: ``"softmax"`` or ``"sigmoid"`` (BCE + region Dice).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per image [B]; per-image Dice sums).
        ddp: Under DDP, sum the Dice term's batch-pooled sums over all ranks (the voxel-wise term stays a local
            mean); no effect on per-image sums or outside a process group.

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    _check_weights("weight_ce", weight_ce, weight_dice)
    return _compound(
        ce, logits, onehot, weight_ce, weight_dice, eps, include_background, batch_dice, apply_nonlin, reduction, ddp
    )


def mae_dice(
    logits: Tensor,
    onehot: Tensor,
    weight_mae: float = 1.0,
    weight_dice: float = 1.0,
    eps: float = 1e-5,
    include_background: bool = False,
    batch_dice: bool = True,
    apply_nonlin: Nonlin = "softmax",
    reduction: Reduction = "mean",
    ddp: bool = False,
) -> Tensor:
    r"""MAE + Sørensen Dice loss from logits and one-hot targets over all channels.

    .. math::

        L = w_\text{mae} \operatorname{mean}_{i,c} |p_{ic} - g_{ic}| + w_\text{dice} \Big(1 - \operatorname{mean}_c
            \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}\Big)

    Paper: Table I row "MAE + Dice", G. Wang et al., doi:10.1109/TMI.2020.3000314 (no weights given; 1 : 1 here).
    Defaults: weights 1 : 1, ε = 1e-5, background excluded from the Dice term, batch-pooled Dice.

    Identities pinned by tests: equals :func:`~nnunet_ext.losses.mae` + :func:`~nnunet_ext.losses.sorensen_dice`.

    Args:
        logits: Network output [B, C, ...].
        onehot: One-hot targets over all C classes (softmax) or binary region masks (sigmoid), same shape.
        weight_mae: Weight of the MAE term (≥ 0).
        weight_dice: Weight of the Dice term (≥ 0).
        eps: Dice smoothing ε ≥ 0.
        include_background: Keep softmax channel 0 in the Dice term.
        batch_dice: Pool the Dice sums over the batch.
        apply_nonlin: ``"softmax"`` or ``"sigmoid"``.
        reduction: ``"mean"`` (scalar) or ``"none"`` (per image [B]; per-image Dice sums).
        ddp: Under DDP, sum the Dice term's batch-pooled sums over all ranks (the voxel-wise term stays a local
            mean); no effect on per-image sums or outside a process group.

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    _check_weights("weight_mae", weight_mae, weight_dice)
    return _compound(
        mae, logits, onehot, weight_mae, weight_dice, eps, include_background, batch_dice, apply_nonlin, reduction, ddp
    )


class _CompoundLoss(SegmentationLoss):
    """Module wrapper shared by the compound losses: options validated once, one-hot over all channels."""

    def __init__(
        self,
        weight_name: str,
        weight_voxelwise: float,
        weight_dice: float,
        eps: float,
        include_background: bool,
        batch_dice: bool,
        apply_nonlin: Nonlin,
        reduction: Reduction,
        ddp: bool,
    ) -> None:
        super().__init__(apply_nonlin, batch_dice, reduction, ddp)
        _check_weights(weight_name, weight_voxelwise, weight_dice)
        check_positive("eps", eps, allow_zero=True)
        check_bool("include_background", include_background)
        if weight_voxelwise == 0 and weight_dice == 0:
            raise ValueError(f"{weight_name} and weight_dice are both 0: the loss would be identically zero.")
        self.weight_dice = float(weight_dice)
        self.eps = float(eps)
        self.include_background = include_background

    def _options(self) -> dict[str, object]:
        return {
            "weight_dice": self.weight_dice,
            "eps": self.eps,
            "include_background": self.include_background,
            "batch_dice": self.batch_dice,
            "apply_nonlin": self.apply_nonlin,
            "reduction": self.reduction,
            "ddp": self.ddp,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._options().items())


class CEDiceLoss(_CompoundLoss):
    r"""CE + Sørensen Dice (1 : 1) on logits and nnU-Net targets; regions: BCE + region Sørensen Dice.

    .. math::

        L = w_\text{ce}\,\mathrm{CE} + w_\text{dice}\,L_\text{Sørensen}

    See :func:`ce_dice`. Paper: Table I "CE + Dice", doi:10.1109/TMI.2020.3000314. Defaults: weights 1 : 1,
    ε = 1e-5, background excluded from the Dice term, batch-pooled, softmax.

    Identities pinned by tests: equals ``CELoss()(x, y) + SorensenDiceLoss()(x, y)``; with ``ddp`` on 2 gloo ranks,
    each rank's value is its local CE plus the Dice of the whole batch, and DDP-averaged parameter gradients equal
    the single-process gradient of the whole batch.

    Args:
        weight_ce: Weight of the CE term (≥ 0).
        weight_dice: Weight of the Dice term (≥ 0).
        eps: Dice smoothing ε ≥ 0.
        include_background: Keep softmax channel 0 in the Dice term.
        batch_dice: Pool the Dice sums over the batch.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (per image [B]).
        ddp: Sum the Dice term's batch-pooled sums over all DDP ranks (pass the trainer's ``is_ddp``); a no-op for
            per-image sums and outside a process group.

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        weight_ce: float = 1.0,
        weight_dice: float = 1.0,
        eps: float = 1e-5,
        include_background: bool = False,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(
            "weight_ce", weight_ce, weight_dice, eps, include_background, batch_dice, apply_nonlin, reduction, ddp
        )
        self.weight_ce = float(weight_ce)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` [B, C, ...] against an nnU-Net target (label map or region masks)."""
        onehot = target_to_onehot(logits, target, self.apply_nonlin)
        return ce_dice(logits, onehot, self.weight_ce, **self._options())

    def extra_repr(self) -> str:
        return f"weight_ce={self.weight_ce}, " + super().extra_repr()


class MAEDiceLoss(_CompoundLoss):
    r"""MAE + Sørensen Dice (1 : 1) on logits and nnU-Net targets.

    .. math::

        L = w_\text{mae}\,\mathrm{MAE} + w_\text{dice}\,L_\text{Sørensen}

    See :func:`mae_dice`. Paper: Table I "MAE + Dice", doi:10.1109/TMI.2020.3000314 (weights not given). Defaults:
    weights 1 : 1, ε = 1e-5, background excluded from the Dice term, batch-pooled, softmax.

    Identities pinned by tests: equals ``MAELoss()(x, y) + SorensenDiceLoss()(x, y)``.

    Args:
        weight_mae: Weight of the MAE term (≥ 0).
        weight_dice: Weight of the Dice term (≥ 0).
        eps: Dice smoothing ε ≥ 0.
        include_background: Keep softmax channel 0 in the Dice term.
        batch_dice: Pool the Dice sums over the batch.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (per image [B]).
        ddp: Sum the Dice term's batch-pooled sums over all DDP ranks (pass the trainer's ``is_ddp``); a no-op for
            per-image sums and outside a process group.

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        weight_mae: float = 1.0,
        weight_dice: float = 1.0,
        eps: float = 1e-5,
        include_background: bool = False,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(
            "weight_mae", weight_mae, weight_dice, eps, include_background, batch_dice, apply_nonlin, reduction, ddp
        )
        self.weight_mae = float(weight_mae)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` [B, C, ...] against an nnU-Net target (label map or region masks)."""
        onehot = target_to_onehot(logits, target, self.apply_nonlin)
        return mae_dice(logits, onehot, self.weight_mae, **self._options())

    def extra_repr(self) -> str:
        return f"weight_mae={self.weight_mae}, " + super().extra_repr()
