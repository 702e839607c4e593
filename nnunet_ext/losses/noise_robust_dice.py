"""Noise-robust Dice loss (NR-Dice), paper Eq. 3 of the COPLE-Net paper.

G. Wang et al., "A Noise-Robust Framework for Automatic Segmentation of COVID-19 Pneumonia Lesions from CT Images",
IEEE TMI 39(8), 2020, doi:10.1109/TMI.2020.3000314.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nnunet_ext.losses._common import (
    DENOMINATORS,
    REDUCTIONS,
    Denominator,
    Nonlin,
    Reduction,
    SegmentationLoss,
    check_bool,
    check_choice,
    check_pair,
    check_positive,
    denominator_sums,
    pooled_sum,
    probs_and_onehot,
    reduce_classwise,
)

__all__ = ["NoiseRobustDiceLoss", "noise_robust_dice"]


def _check_options(gamma: float, eps: float, denominator: str) -> None:
    check_positive("gamma", gamma)
    check_positive("eps", eps, allow_zero=True)
    check_choice("denominator", denominator, DENOMINATORS)


def noise_robust_dice(
    probs: Tensor,
    onehot: Tensor,
    gamma: float = 1.5,
    eps: float = 1e-5,
    denominator: Denominator = "squared",
    batch_dice: bool = True,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Noise-robust Dice loss on probabilities and (already channel-selected) one-hot/binary targets.

    .. math::

        L_c = \frac{\sum_i |p_{ic} - g_{ic}|^\gamma}{\sum_i p_{ic}^2 + \sum_i g_{ic}^2 + \epsilon},
        \qquad L = \operatorname{mean}_c L_c

    (``denominator="linear"``: :math:`\sum_i p_{ic} + \sum_i g_{ic} + \epsilon`, the authors' PyMIC code). Sums run
    over the voxels of the whole mini-batch when ``batch_dice``, else per image, and the per-image values are then
    averaged too. ε appears only in the denominator (paper Eq. 3; the April-2020 PyMIC code also added it to the
    numerator).

    Paper: G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314, Eq. 3. Defaults: γ = 1.5, ε = 1e-5, squared
    denominator, batch-pooled.

    Identities pinned by tests: squared denominator with γ = 2 equals the Milletari Dice loss; linear denominator with
    γ = 1 equals the Sørensen Dice loss; p = g gives 0; METHODS.md §2.1 hand-computed table (ε = 0).

    Args:
        probs: Probabilities [B, C, ...] (softmax or sigmoid output, background already dropped if wanted).
        onehot: One-hot or binary targets of the same shape.
        gamma: Exponent γ > 0 of the absolute error; 1 ≤ γ ≤ 2 in the paper. For γ < 1 an exact match p = g gets a
            zero (not nan) gradient.
        eps: Denominator smoothing ε ≥ 0.
        denominator: ``"squared"`` (paper) or ``"linear"`` (PyMIC).
        batch_dice: Pool the sums over the batch (nnU-Net's plans ``batch_dice``).
        reduction: ``"mean"``: a scalar; ``"none"``: one loss per image [B], always from per-image sums.

    Returns:
        Scalar loss, or a [B] vector for ``reduction="none"``.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    _check_options(gamma, eps, denominator)
    check_bool("batch_dice", batch_dice)
    check_choice("reduction", reduction, REDUCTIONS)
    check_pair(probs, onehot)
    pooled = batch_dice and reduction == "mean"
    error = (probs - onehot).abs()
    if gamma < 1:
        # d|x|^γ/dx is infinite at x = 0 for γ < 1 and autograd turns inf · 0 into nan: take the power of a safe
        # stand-in (1) where the error is exactly 0 and select 0 there, so value and gradient stay exact and finite.
        nonzero = error > 0
        powered = torch.where(nonzero, torch.where(nonzero, error, torch.ones_like(error)).pow(gamma), 0.0)
    else:
        powered = error.pow(gamma)
    numerator = pooled_sum(powered, pooled)
    per_class = numerator / (denominator_sums(probs, onehot, denominator, pooled) + eps)
    return reduce_classwise(per_class, reduction)


class NoiseRobustDiceLoss(SegmentationLoss):
    r"""Noise-robust Dice loss on logits and nnU-Net targets (paper Eq. 3).

    .. math::

        L_c = \frac{\sum_i |p_{ic} - g_{ic}|^\gamma}{\sum_i p_{ic}^2 + \sum_i g_{ic}^2 + \epsilon},
        \qquad L = \operatorname{mean}_c L_c

    Softmax: the label map [B, 1, ...] becomes a one-hot with ``logits.shape[1]`` classes; channel 0 (background) is
    dropped unless ``include_background``. Sigmoid: region targets [B, R, ...] are already binary and all R regions
    are used. Logits are cast to float32 before the non-linearity (AMP-safe). See :func:`noise_robust_dice`.

    Paper: G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314. Defaults: γ = 1.5, ε = 1e-5, squared
    denominator, background excluded, batch-pooled, softmax.

    Identities pinned by tests: equals an independent loop over Eq. 3 for 2- and 3-class label maps (batch pooling on
    and off) and for sigmoid regions; squared γ = 2 equals :class:`~nnunet_ext.losses.DiceLoss`; linear γ = 1
    equals :class:`~nnunet_ext.losses.SorensenDiceLoss`; squared γ = 2, ε = 1 equals
    :class:`~nnunet_ext.losses.RegionDiceLoss`.

    Args:
        gamma: Exponent γ > 0.
        eps: Denominator smoothing ε ≥ 0.
        denominator: ``"squared"`` or ``"linear"``.
        include_background: Keep softmax channel 0 (ignored for regions).
        batch_dice: Pool the sums over the batch.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (per-image [B], per-image sums).

    Raises:
        ValueError: Bad option value (at construction), bad target shape or labels (in ``forward``).
    """

    def __init__(
        self,
        gamma: float = 1.5,
        eps: float = 1e-5,
        denominator: Denominator = "squared",
        include_background: bool = False,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(apply_nonlin, batch_dice, reduction)
        _check_options(gamma, eps, denominator)
        check_bool("include_background", include_background)
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.denominator: Denominator = denominator
        self.include_background = include_background

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` [B, C, ...] against an nnU-Net target (label map or region masks)."""
        probs, onehot = probs_and_onehot(logits, target, self.apply_nonlin, self.include_background)
        return noise_robust_dice(probs, onehot, self.gamma, self.eps, self.denominator, self.batch_dice, self.reduction)

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, eps={self.eps}, denominator={self.denominator!r}, "
            f"include_background={self.include_background}, batch_dice={self.batch_dice}, "
            f"apply_nonlin={self.apply_nonlin!r}, reduction={self.reduction!r}"
        )
