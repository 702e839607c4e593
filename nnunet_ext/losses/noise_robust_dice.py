"""Noise-robust Dice loss (NR-Dice) of the COPLE-Net paper: Eq. 3 and the linear form of the authors' code.

G. Wang et al., "A Noise-Robust Framework for Automatic Segmentation of COVID-19 Pneumonia Lesions from CT Images",
IEEE TMI 39(8), 2020, doi:10.1109/TMI.2020.3000314.

The default denominator is the linear Σp + Σg of the authors' released code (PyMIC), which every NR-Dice trainer
uses; ``denominator="squared"`` gives Eq. 3 exactly (see :func:`noise_robust_dice` for when Eq. 3 degenerates).
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
    probs_and_onehot,
    ratio_sums,
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
    denominator: Denominator = "linear",
    batch_dice: bool = True,
    reduction: Reduction = "mean",
    ddp: bool = False,
) -> Tensor:
    r"""Noise-robust Dice loss on probabilities and (already channel-selected) one-hot/binary targets.

    .. math::

        L_c = \frac{\sum_i |p_{ic} - g_{ic}|^\gamma}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}
        \quad\text{(linear)}, \qquad
        L_c = \frac{\sum_i |p_{ic} - g_{ic}|^\gamma}{\sum_i p_{ic}^2 + \sum_i g_{ic}^2 + \epsilon}
        \quad\text{(squared, Eq. 3)}, \qquad L = \operatorname{mean}_c L_c

    The linear denominator (default) is that of the authors' released code (PyMIC) and of every NR-Dice trainer; the
    squared one is the paper's Eq. 3 exactly. Sums run over the voxels of the whole mini-batch when ``batch_dice``
    (and, with ``ddp``, over all DDP ranks), else per image, and the per-image values are then averaged too. ε
    appears only in the denominator (paper Eq. 3; the April-2020 PyMIC code also added it to the numerator).

    Range: since 0 ≤ p, g ≤ 1, |p − g|^γ ≤ |p − g| ≤ p + g for γ ≥ 1 and |p − g|^γ ≤ (p − g)² ≤ p² + g² for
    γ ≥ 2, so L_c ∈ [0, 1] for the linear form with γ ≥ 1 and for the squared form with γ ≥ 2. The squared form
    with γ < 2 (the paper's default 1.5) is not bounded by 1 (it reaches order (n / ε)^(1 − γ/2), without bound
    for ε = 0) and is degenerate on classes with little or no foreground in the pooled sums. With no foreground, a
    uniform prediction c on n voxels gives n c^γ / (n c² + ε), which is c^(γ−2) for n c² ≫ ε: above 1 and
    falling as c rises, so gradient descent raises every probability, towards the all-foreground prediction (value
    n / (n + ε) ≈ 1); the correct prediction c → 0 lies behind a barrier of height of order (n / ε)^(1 − γ/2) at
    c ≈ (γ ε / ((2 − γ) n))^(1/2), and with ε = 0 the value grows without bound as c → 0 (0/0 at c = 0). With m
    foreground voxels predicted exactly and n background voxels at c the value is n c^γ / (2m + n c² + ε), which
    falls as c rises once n c² > γ (2m + ε) / (2 − γ) (3 (2m + ε) for γ = 1.5): once the squared false-positive
    mass exceeds a few times the foreground, more false positives lower the loss. nnU-Net training with the
    squared form and γ = 1.5 collapsed to "everything is foreground" on small lesions. The linear form has no such
    regime for γ ≥ 1: n c^γ / (2m + n c + ε) rises with c (c^(γ−1) on an empty class).

    Paper: G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314, Eq. 3. Defaults: γ = 1.5, ε = 1e-5, linear
    denominator, batch-pooled.

    Identities pinned by tests: squared denominator with γ = 2 equals the Milletari Dice loss; linear denominator with
    γ = 1 equals the Sørensen Dice loss; p = g gives 0; hand-computed values of both forms (METHODS.md §2.1 table,
    ε = 0, and a second example); the default equals the linear form; the squared form's c^(γ−2) on an empty class;
    with ``ddp``, the value on each of 2 gloo ranks equals the single-process value of the whole batch.

    Args:
        probs: Probabilities [B, C, ...] (softmax or sigmoid output, background already dropped if wanted).
        onehot: One-hot or binary targets of the same shape.
        gamma: Exponent γ > 0 of the absolute error; 1 ≤ γ ≤ 2 in the paper. For γ < 1 an exact match p = g gets a
            zero (not nan) gradient.
        eps: Denominator smoothing ε ≥ 0.
        denominator: ``"linear"`` (PyMIC, the trainers' choice) or ``"squared"`` (paper Eq. 3; see the range note).
        batch_dice: Pool the sums over the batch (nnU-Net's plans ``batch_dice``).
        reduction: ``"mean"``: a scalar; ``"none"``: one loss per image [B], always from per-image sums.
        ddp: Under DDP, sum the batch-pooled sums over all ranks before forming the ratio (nnU-Net's
            ``MemoryEfficientSoftDiceLoss(ddp=True)``); no effect on per-image sums or outside a process group.

    Returns:
        Scalar loss, or a [B] vector for ``reduction="none"``.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    _check_options(gamma, eps, denominator)
    check_bool("batch_dice", batch_dice)
    check_choice("reduction", reduction, REDUCTIONS)
    check_bool("ddp", ddp)
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
    numerator, denominator_sum = ratio_sums(powered, probs, onehot, denominator, pooled, ddp)
    return reduce_classwise(numerator / (denominator_sum + eps), reduction)


class NoiseRobustDiceLoss(SegmentationLoss):
    r"""Noise-robust Dice loss on logits and nnU-Net targets (linear denominator by default; Eq. 3 when squared).

    .. math::

        L_c = \frac{\sum_i |p_{ic} - g_{ic}|^\gamma}{\sum_i p_{ic} + \sum_i g_{ic} + \epsilon}
        \quad\text{(linear)}, \qquad
        L_c = \frac{\sum_i |p_{ic} - g_{ic}|^\gamma}{\sum_i p_{ic}^2 + \sum_i g_{ic}^2 + \epsilon}
        \quad\text{(squared, Eq. 3)}, \qquad L = \operatorname{mean}_c L_c

    Softmax: the label map [B, 1, ...] becomes a one-hot with ``logits.shape[1]`` classes; channel 0 (background) is
    dropped unless ``include_background``. Sigmoid: region targets [B, R, ...] are already binary and all R regions
    are used. Logits are cast to float32 before the non-linearity (AMP-safe). See :func:`noise_robust_dice`, also
    for why the squared form (Eq. 3) with γ < 2 degenerates on classes with little or no foreground.

    Paper: G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314. Defaults: γ = 1.5, ε = 1e-5, linear
    denominator (the authors' PyMIC code, used by every NR-Dice trainer), background excluded, batch-pooled, softmax.

    Identities pinned by tests: equals an independent loop over both forms for 2- and 3-class label maps (batch
    pooling on and off) and for sigmoid regions; the default equals ``denominator="linear"`` (and a hand-computed
    value); squared γ = 2 equals :class:`~nnunet_ext.losses.DiceLoss`; linear γ = 1 equals
    :class:`~nnunet_ext.losses.SorensenDiceLoss`; squared γ = 2, ε = 1 equals
    :class:`~nnunet_ext.losses.RegionDiceLoss`; with ``ddp`` on 2 gloo ranks, each rank's value equals the
    single-process value of the whole batch and its gradient is 2× the global one (as nnU-Net's Dice).

    Args:
        gamma: Exponent γ > 0.
        eps: Denominator smoothing ε ≥ 0.
        denominator: ``"linear"`` (PyMIC) or ``"squared"`` (paper Eq. 3).
        include_background: Keep softmax channel 0 (ignored for regions).
        batch_dice: Pool the sums over the batch.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (per-image [B], per-image sums).
        ddp: Sum the batch-pooled sums over all DDP ranks (pass the trainer's ``is_ddp``); a no-op for per-image
            sums and outside a process group.

    Raises:
        ValueError: Bad option value (at construction), bad target shape or labels (in ``forward``).
    """

    def __init__(
        self,
        gamma: float = 1.5,
        eps: float = 1e-5,
        denominator: Denominator = "linear",
        include_background: bool = False,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(apply_nonlin, batch_dice, reduction, ddp)
        _check_options(gamma, eps, denominator)
        check_bool("include_background", include_background)
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.denominator: Denominator = denominator
        self.include_background = include_background

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` [B, C, ...] against an nnU-Net target (label map or region masks)."""
        probs, onehot = probs_and_onehot(logits, target, self.apply_nonlin, self.include_background)
        return noise_robust_dice(
            probs, onehot, self.gamma, self.eps, self.denominator, self.batch_dice, self.reduction, self.ddp
        )

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, eps={self.eps}, denominator={self.denominator!r}, "
            f"include_background={self.include_background}, batch_dice={self.batch_dice}, "
            f"apply_nonlin={self.apply_nonlin!r}, reduction={self.reduction!r}, ddp={self.ddp}"
        )
