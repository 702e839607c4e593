"""Dice-family comparison losses of the COPLE-Net paper's Table I, and the BraTS region Dice loss.

All share the class selection and batch pooling of NR-Dice (:mod:`nnunet_ext.losses.noise_robust_dice`), so they
differ only in their formula; the soft-Dice coefficient itself lives once in :mod:`nnunet_ext.losses._common`.

Table I: G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314. Region Dice: T. Henry et al., "Brain tumor
segmentation with self-ensembled, deeply-supervised 3D U-net neural networks: a BraTS 2020 challenge solution",
arXiv:2011.01045 (code form of open_brats2020 ``src/loss/dice.py``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from torch import Tensor

from nnunet_ext.losses._common import (
    REDUCTIONS,
    Denominator,
    Nonlin,
    Reduction,
    SegmentationLoss,
    check_bool,
    check_choice,
    check_pair,
    check_positive,
    probs_and_onehot,
    reduce_classwise,
    soft_dice_coefficient,
)

__all__ = [
    "DiceLoss",
    "FocalDiceLoss",
    "RegionDiceLoss",
    "SorensenDiceLoss",
    "dice",
    "focal_dice",
    "region_dice",
    "sorensen_dice",
]


def _dice_family(
    probs: Tensor,
    onehot: Tensor,
    eps: float,
    denominator: Denominator,
    batch_dice: bool,
    reduction: Reduction,
    ddp: bool,
    exponent: float = 1.0,
) -> Tensor:
    """1 − mean_c D_c^exponent with D_c the soft-Dice coefficient; shared by every Dice-family functional form."""
    check_positive("eps", eps, allow_zero=True)
    check_bool("batch_dice", batch_dice)
    check_choice("reduction", reduction, REDUCTIONS)
    check_bool("ddp", ddp)
    check_pair(probs, onehot)
    pooled = batch_dice and reduction == "mean"
    coefficient = soft_dice_coefficient(probs, onehot, eps, denominator, pooled, ddp)
    if exponent != 1.0:
        coefficient = coefficient.pow(exponent)
    return reduce_classwise(1.0 - coefficient, reduction)


def dice(
    probs: Tensor,
    onehot: Tensor,
    eps: float = 1e-5,
    batch_dice: bool = True,
    reduction: Reduction = "mean",
    ddp: bool = False,
) -> Tensor:
    r"""Milletari (V-Net) soft Dice loss with a squared denominator, on probabilities and one-hot targets.

    .. math::

        L = 1 - \operatorname{mean}_c
            \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic}^2 + \sum_i g_{ic}^2 + \epsilon}

    Paper: F. Milletari et al., "V-Net", 3DV 2016, doi:10.1109/3DV.2016.79 (Table I row "Dice [18]" of
    doi:10.1109/TMI.2020.3000314). Defaults: ε = 1e-5, batch-pooled.

    Identities pinned by tests: equals NR-Dice with squared denominator and γ = 2; p = g gives 0.

    Args:
        probs: Probabilities [B, C, ...], already channel-selected.
        onehot: One-hot or binary targets of the same shape.
        eps: Smoothing ε ≥ 0 added to numerator and denominator.
        batch_dice: Pool the sums over the batch.
        reduction: ``"mean"`` (scalar) or ``"none"`` (per image [B], per-image sums).
        ddp: Under DDP, sum the batch-pooled sums over all ranks before forming the ratio (nnU-Net's
            ``MemoryEfficientSoftDiceLoss(ddp=True)``); no effect on per-image sums or outside a process group.

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    return _dice_family(probs, onehot, eps, "squared", batch_dice, reduction, ddp)


def sorensen_dice(
    probs: Tensor,
    onehot: Tensor,
    eps: float = 1e-5,
    batch_dice: bool = True,
    reduction: Reduction = "mean",
    ddp: bool = False,
) -> Tensor:
    r"""Sørensen soft Dice loss with a linear denominator (PyMIC ``DiceLoss``).

    .. math::

        L = 1 - \operatorname{mean}_c \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}

    Paper: Table I row "Sørensen-Dice" of G. Wang et al., doi:10.1109/TMI.2020.3000314. Defaults: ε = 1e-5,
    batch-pooled.

    Identities pinned by tests: equals NR-Dice with linear denominator and γ = 1; equals focal Dice with β = 1.

    Args:
        probs: Probabilities [B, C, ...], already channel-selected.
        onehot: One-hot or binary targets of the same shape.
        eps: Smoothing ε ≥ 0 added to numerator and denominator.
        batch_dice: Pool the sums over the batch.
        reduction: ``"mean"`` (scalar) or ``"none"`` (per image [B], per-image sums).
        ddp: Under DDP, sum the batch-pooled sums over all ranks before forming the ratio (nnU-Net's
            ``MemoryEfficientSoftDiceLoss(ddp=True)``); no effect on per-image sums or outside a process group.

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    return _dice_family(probs, onehot, eps, "linear", batch_dice, reduction, ddp)


def focal_dice(
    probs: Tensor,
    onehot: Tensor,
    beta: float = 0.5,
    eps: float = 1e-5,
    batch_dice: bool = True,
    reduction: Reduction = "mean",
    ddp: bool = False,
) -> Tensor:
    r"""Focal Dice loss: the Sørensen Dice coefficient raised to 1/β.

    .. math::

        L = 1 - \operatorname{mean}_c D_c^{1/\beta}, \qquad
        D_c = \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}

    Paper: P. Wang and A. C. S. Chung, "Focal Dice Loss and Image Dilation for Brain Tumor Segmentation", DLMIA 2018,
    doi:10.1007/978-3-030-00889-5_14 (Table I row "Focal Dice" of doi:10.1109/TMI.2020.3000314). Defaults: β = 0.5
    (so D²), ε = 1e-5, batch-pooled.

    Identities pinned by tests: β = 1 equals the Sørensen Dice loss.

    Args:
        probs: Probabilities [B, C, ...], already channel-selected.
        onehot: One-hot or binary targets of the same shape.
        beta: Focusing parameter β > 0.
        eps: Smoothing ε ≥ 0 added to numerator and denominator.
        batch_dice: Pool the sums over the batch.
        reduction: ``"mean"`` (scalar) or ``"none"`` (per image [B], per-image sums).
        ddp: Under DDP, sum the batch-pooled sums over all ranks before forming the ratio (nnU-Net's
            ``MemoryEfficientSoftDiceLoss(ddp=True)``); no effect on per-image sums or outside a process group.

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    check_positive("beta", beta)
    return _dice_family(probs, onehot, eps, "linear", batch_dice, reduction, ddp, exponent=1.0 / beta)


def region_dice(
    probs: Tensor, regions: Tensor, batch_dice: bool = True, reduction: Reduction = "mean", ddp: bool = False
) -> Tensor:
    r"""BraTS region Dice loss: Milletari Dice with ε = 1 on sigmoid region probabilities, batch-pooled.

    .. math::

        L_r = 1 - \frac{2\sum S R + 1}{\sum S^2 + \sum R^2 + 1}, \qquad L = \operatorname{mean}_r L_r

    with sums over the batch and the voxels (METHODS.md §5.4; the paper's Eq. 2 omits the 2 and the "1 −", the code
    form is authoritative).

    Paper: T. Henry et al., arXiv:2011.01045 (open_brats2020 ``src/loss/dice.py``). Defaults: batch-pooled.

    Identities pinned by tests: equals NR-Dice with squared denominator, γ = 2 and ε = 1 on regions.

    Args:
        probs: Sigmoid probabilities [B, R, ...].
        regions: Binary region masks of the same shape.
        batch_dice: Pool the sums over the batch (the BraTS code form does).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per image [B], per-image sums).
        ddp: Under DDP, sum the batch-pooled sums over all ranks before forming the ratio (nnU-Net's
            ``MemoryEfficientSoftDiceLoss(ddp=True)``); no effect on per-image sums or outside a process group.

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    return _dice_family(probs, regions, 1.0, "squared", batch_dice, reduction, ddp)


class _DiceFamilyLoss(SegmentationLoss):
    """Module wrapper shared by the Dice-family losses: class selection, then ``self._loss(probs, onehot)``."""

    def __init__(
        self,
        eps: float,
        include_background: bool,
        batch_dice: bool,
        apply_nonlin: Nonlin,
        reduction: Reduction,
        ddp: bool,
    ) -> None:
        super().__init__(apply_nonlin, batch_dice, reduction, ddp)
        check_positive("eps", eps, allow_zero=True)
        check_bool("include_background", include_background)
        self.eps = float(eps)
        self.include_background = include_background

    @abstractmethod
    def _loss(self, probs: Tensor, onehot: Tensor) -> Tensor:
        """The functional form applied to the channel-selected (probabilities, one-hot)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` [B, C, ...] against an nnU-Net target (label map or region masks)."""
        probs, onehot = probs_and_onehot(logits, target, self.apply_nonlin, self.include_background)
        return self._loss(probs, onehot)

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps}, include_background={self.include_background}, batch_dice={self.batch_dice}, "
            f"apply_nonlin={self.apply_nonlin!r}, reduction={self.reduction!r}, ddp={self.ddp}"
        )


class DiceLoss(_DiceFamilyLoss):
    r"""Milletari soft Dice loss (squared denominator) on logits and nnU-Net targets.

    .. math::

        L = 1 - \operatorname{mean}_c
            \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic}^2 + \sum_i g_{ic}^2 + \epsilon}

    Class selection, pooling and targets as in :class:`~nnunet_ext.losses.NoiseRobustDiceLoss`; see :func:`dice`.

    Paper: F. Milletari et al., 3DV 2016, doi:10.1109/3DV.2016.79 (Table I "Dice [18]", doi:10.1109/TMI.2020.3000314).
    Defaults: ε = 1e-5, background excluded, batch-pooled, softmax.

    Identities pinned by tests: equals ``NoiseRobustDiceLoss(gamma=2, denominator="squared")``; with ``ddp`` on 2
    gloo ranks, each rank's value equals the single-process value of the whole batch.

    Args:
        eps: Smoothing ε ≥ 0.
        include_background: Keep softmax channel 0 (ignored for regions).
        batch_dice: Pool the sums over the batch.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (per-image [B]).
        ddp: Sum the batch-pooled sums over all DDP ranks (pass the trainer's ``is_ddp``); a no-op for per-image
            sums and outside a process group.

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        eps: float = 1e-5,
        include_background: bool = False,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(eps, include_background, batch_dice, apply_nonlin, reduction, ddp)

    def _loss(self, probs: Tensor, onehot: Tensor) -> Tensor:
        return dice(probs, onehot, self.eps, self.batch_dice, self.reduction, self.ddp)


class SorensenDiceLoss(_DiceFamilyLoss):
    r"""Sørensen soft Dice loss (linear denominator, PyMIC ``DiceLoss``) on logits and nnU-Net targets.

    .. math::

        L = 1 - \operatorname{mean}_c \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}

    Class selection, pooling and targets as in :class:`~nnunet_ext.losses.NoiseRobustDiceLoss`; see
    :func:`sorensen_dice`.

    Paper: Table I "Sørensen-Dice", G. Wang et al., doi:10.1109/TMI.2020.3000314. Defaults: ε = 1e-5, background
    excluded, batch-pooled, softmax.

    Identities pinned by tests: equals ``NoiseRobustDiceLoss(gamma=1, denominator="linear")`` and
    ``FocalDiceLoss(beta=1)``; with ``ddp`` on 2 gloo ranks, ``SorensenDiceLoss(eps=1)`` has each rank's
    gradient equal to that of nnU-Net's ``MemoryEfficientSoftDiceLoss(batch_dice=True, do_bg=False, ddp=True)``.

    Args:
        eps: Smoothing ε ≥ 0.
        include_background: Keep softmax channel 0 (ignored for regions).
        batch_dice: Pool the sums over the batch.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (per-image [B]).
        ddp: Sum the batch-pooled sums over all DDP ranks (pass the trainer's ``is_ddp``); a no-op for per-image
            sums and outside a process group.

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        eps: float = 1e-5,
        include_background: bool = False,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(eps, include_background, batch_dice, apply_nonlin, reduction, ddp)

    def _loss(self, probs: Tensor, onehot: Tensor) -> Tensor:
        return sorensen_dice(probs, onehot, self.eps, self.batch_dice, self.reduction, self.ddp)


class FocalDiceLoss(_DiceFamilyLoss):
    r"""Focal Dice loss 1 − mean_c D_c^(1/β) on the Sørensen coefficient, on logits and nnU-Net targets.

    .. math::

        L = 1 - \operatorname{mean}_c D_c^{1/\beta}, \qquad
        D_c = \frac{2\sum_i p_{ic} g_{ic} + \epsilon}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}

    Class selection, pooling and targets as in :class:`~nnunet_ext.losses.NoiseRobustDiceLoss`; see
    :func:`focal_dice`.

    Paper: P. Wang and A. C. S. Chung, DLMIA 2018, doi:10.1007/978-3-030-00889-5_14 (Table I "Focal Dice",
    doi:10.1109/TMI.2020.3000314). Defaults: β = 0.5, ε = 1e-5, background excluded, batch-pooled, softmax.

    Identities pinned by tests: β = 1 equals :class:`~nnunet_ext.losses.SorensenDiceLoss`; with ``ddp`` on 2 gloo
    ranks, each rank's value equals the single-process value of the whole batch.

    Args:
        beta: Focusing parameter β > 0.
        eps: Smoothing ε ≥ 0.
        include_background: Keep softmax channel 0 (ignored for regions).
        batch_dice: Pool the sums over the batch.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (per-image [B]).
        ddp: Sum the batch-pooled sums over all DDP ranks (pass the trainer's ``is_ddp``); a no-op for per-image
            sums and outside a process group.

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        beta: float = 0.5,
        eps: float = 1e-5,
        include_background: bool = False,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(eps, include_background, batch_dice, apply_nonlin, reduction, ddp)
        check_positive("beta", beta)
        self.beta = float(beta)

    def _loss(self, probs: Tensor, onehot: Tensor) -> Tensor:
        return focal_dice(probs, onehot, self.beta, self.eps, self.batch_dice, self.reduction, self.ddp)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


class RegionDiceLoss(SegmentationLoss):
    r"""BraTS region Dice loss on region logits (sigmoid) and nnU-Net's binary region targets.

    .. math::

        L_r = 1 - \frac{2\sum S R + 1}{\sum S^2 + \sum R^2 + 1}, \qquad L = \operatorname{mean}_r L_r,
        \qquad S = \sigma(\text{logit}_r)

    Sums over batch and voxels by default (METHODS.md §5.4); see :func:`region_dice`. Only defined for region
    datasets (nnU-Net ``label_manager.has_regions``): a softmax request raises.

    Paper: T. Henry et al., arXiv:2011.01045 (open_brats2020 ``src/loss/dice.py``). Defaults: batch-pooled, sigmoid.

    Identities pinned by tests: equals ``NoiseRobustDiceLoss(gamma=2, eps=1, denominator="squared",
    apply_nonlin="sigmoid")``; with ``ddp`` on 2 gloo ranks, each rank's value equals the single-process value of
    the whole batch.

    Args:
        batch_dice: Pool the sums over the batch (keep True for the BraTS form; nnU-Net's 3d_fullres plans say
            False).
        apply_nonlin: Must be ``"sigmoid"``.
        reduction: ``"mean"`` or ``"none"`` (per-image [B]).
        ddp: Sum the batch-pooled sums over all DDP ranks (pass the trainer's ``is_ddp``); a no-op for per-image
            sums and outside a process group.

    Raises:
        ValueError: ``apply_nonlin="softmax"`` or another bad option (at construction), bad target (in ``forward``).
    """

    supports_label_maps: ClassVar[bool] = False

    def __init__(
        self,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "sigmoid",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        if apply_nonlin == "softmax":
            raise ValueError(
                "region_dice needs a region dataset (apply_nonlin='sigmoid', nnU-Net label_manager.has_regions, "
                "e.g. BraTS WT/TC/ET), got apply_nonlin='softmax'; use dice or noise_robust_dice for label maps."
            )
        super().__init__(apply_nonlin, batch_dice, reduction, ddp)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of region ``logits`` [B, R, ...] against binary region targets of the same shape."""
        probs, regions = probs_and_onehot(logits, target, "sigmoid", include_background=True)
        return region_dice(probs, regions, self.batch_dice, self.reduction, self.ddp)

    def extra_repr(self) -> str:
        return f"batch_dice={self.batch_dice}, reduction={self.reduction!r}, ddp={self.ddp}"
