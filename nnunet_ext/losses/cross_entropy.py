"""Cross-entropy-family comparison losses of the COPLE-Net paper's Table I: CE, focal CE, MAE and GCE.

They average over voxels and batch (``batch_dice`` and ``ddp`` are accepted and ignored: under DDP the local
mean's gradient, averaged over ranks by DDP, is already that of the global mean). Softmax uses all C classes, background
included, since they form one distribution per voxel; regions use the binary per-region (sigmoid) form averaged over
regions and voxels (CE becomes BCE). Every form is written in terms of the log-probability of the target,
log p_y, taken from ``log_softmax``/``logsigmoid`` of float32 logits so that saturated outputs stay finite.

Table I: G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from nnunet_ext.losses._common import (
    NONLINS,
    REDUCTIONS,
    Nonlin,
    Reduction,
    SegmentationLoss,
    as_float,
    check_choice,
    check_pair,
    check_positive,
    probabilities,
    reduce_voxelwise,
    target_to_onehot,
)

__all__ = ["CELoss", "FocalCEGamma05Loss", "FocalCELoss", "GCELoss", "MAELoss", "ce", "focal_ce", "gce", "mae"]


def _check_inputs(logits: Tensor, onehot: Tensor, apply_nonlin: str, reduction: str) -> None:
    check_choice("apply_nonlin", apply_nonlin, NONLINS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_pair(logits, onehot)
    if apply_nonlin == "softmax" and logits.shape[1] < 2:
        raise ValueError(f"softmax needs at least 2 channels, logits have shape {tuple(logits.shape)}.")


def target_log_prob(logits: Tensor, onehot: Tensor, apply_nonlin: Nonlin) -> Tensor:
    """log p_y per voxel: [B, 1, ...] for softmax (Σ_c g_c log p_c), [B, R, ...] per region for sigmoid.

    Sigmoid: log p_y = g log σ(x) + (1 − g) log σ(−x), the binary form of each region.
    """
    x = as_float(logits)
    onehot = onehot.to(x.dtype)
    if apply_nonlin == "softmax":
        return (F.log_softmax(x, dim=1) * onehot).sum(dim=1, keepdim=True)
    return onehot * F.logsigmoid(x) + (1.0 - onehot) * F.logsigmoid(-x)


def ce(logits: Tensor, onehot: Tensor, apply_nonlin: Nonlin = "softmax", reduction: Reduction = "mean") -> Tensor:
    r"""Cross-entropy (softmax) or binary cross-entropy per region (sigmoid), from logits.

    .. math::

        L = -\operatorname{mean}_i \sum_c g_{ic} \log p_{ic}
        \quad\text{(regions: } -\operatorname{mean}_{i,r}\,[g \log p + (1-g)\log(1-p)]\text{)}

    Paper: Table I row "CE", G. Wang et al., doi:10.1109/TMI.2020.3000314.

    Identities pinned by tests: equals :func:`torch.nn.functional.cross_entropy` / ``binary_cross_entropy_with_logits``;
    focal CE with γ = 0 equals CE; GCE with q → 0 tends to CE.

    Args:
        logits: Network output [B, C, ...].
        onehot: One-hot targets over all C classes (softmax) or binary region masks (sigmoid), same shape.
        apply_nonlin: ``"softmax"`` or ``"sigmoid"``.
        reduction: ``"mean"`` (scalar) or ``"none"`` (mean per image, [B]).

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    _check_inputs(logits, onehot, apply_nonlin, reduction)
    return reduce_voxelwise(-target_log_prob(logits, onehot, apply_nonlin), reduction)


def focal_ce(
    logits: Tensor,
    onehot: Tensor,
    gamma: float = 2.0,
    apply_nonlin: Nonlin = "softmax",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Focal cross-entropy without class weights α.

    .. math::

        L = -\operatorname{mean}_i (1 - p_{i,y})^\gamma \log p_{i,y}

    (regions: the binary form per region, averaged over regions). 1 − p_y is computed as −expm1(log p_y) and clamped
    at the smallest normal float so that γ < 1 keeps a finite gradient where p_y rounds to 1.

    Paper: T.-Y. Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, doi:10.1109/ICCV.2017.324 (Table I
    rows γ = 2 and γ = 0.5, doi:10.1109/TMI.2020.3000314). Defaults: γ = 2.

    Identities pinned by tests: γ = 0 equals CE.

    Args:
        logits: Network output [B, C, ...].
        onehot: One-hot targets over all C classes (softmax) or binary region masks (sigmoid), same shape.
        gamma: Focusing parameter γ ≥ 0.
        apply_nonlin: ``"softmax"`` or ``"sigmoid"``.
        reduction: ``"mean"`` (scalar) or ``"none"`` (mean per image, [B]).

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    check_positive("gamma", gamma, allow_zero=True)
    _check_inputs(logits, onehot, apply_nonlin, reduction)
    log_py = target_log_prob(logits, onehot, apply_nonlin)
    one_minus_py = (-torch.expm1(log_py)).clamp_min(torch.finfo(log_py.dtype).tiny)
    return reduce_voxelwise(-one_minus_py.pow(gamma) * log_py, reduction)


def mae(logits: Tensor, onehot: Tensor, apply_nonlin: Nonlin = "softmax", reduction: Reduction = "mean") -> Tensor:
    r"""Mean absolute error between probabilities and one-hot targets, over voxels and all classes/regions.

    .. math::

        L = \operatorname{mean}_{i,c} |p_{ic} - g_{ic}|

    For 2 softmax classes this is mean_i |p_fg − g| (paper Eq. 2).

    Paper: A. Ghosh et al., "Robust Loss Functions under Label Noise for Deep Neural Networks", AAAI 2017,
    doi:10.1609/aaai.v31i1.10894 (Table I row "MAE", doi:10.1109/TMI.2020.3000314).

    Identities pinned by tests: equals GCE with q = 1 for 2 classes.

    Args:
        logits: Network output [B, C, ...].
        onehot: One-hot targets over all C classes (softmax) or binary region masks (sigmoid), same shape.
        apply_nonlin: ``"softmax"`` or ``"sigmoid"``.
        reduction: ``"mean"`` (scalar) or ``"none"`` (mean per image, [B]).

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    _check_inputs(logits, onehot, apply_nonlin, reduction)
    probs = probabilities(logits, apply_nonlin)
    return reduce_voxelwise((probs - onehot.to(probs.dtype)).abs(), reduction)


def gce(
    logits: Tensor, onehot: Tensor, q: float = 0.7, apply_nonlin: Nonlin = "softmax", reduction: Reduction = "mean"
) -> Tensor:
    r"""Generalised cross-entropy (truncation-free L_q loss).

    .. math::

        L = \operatorname{mean}_i \frac{1 - p_{i,y}^q}{q}

    computed as −expm1(q log p_y)/q (regions: binary form per region, averaged over regions).

    Paper: Z. Zhang and M. R. Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
    Labels", NeurIPS 2018, arXiv:1805.07836 (Table I row "GCE", doi:10.1109/TMI.2020.3000314). Defaults: q = 0.7
    (the COPLE-Net 2020 code; PyMIC today uses 0.5).

    Identities pinned by tests: q → 0 tends to CE (q = 1e-4); q = 1 equals MAE for 2 classes.

    Args:
        logits: Network output [B, C, ...].
        onehot: One-hot targets over all C classes (softmax) or binary region masks (sigmoid), same shape.
        q: Exponent, 0 < q ≤ 1.
        apply_nonlin: ``"softmax"`` or ``"sigmoid"``.
        reduction: ``"mean"`` (scalar) or ``"none"`` (mean per image, [B]).

    Returns:
        Scalar loss, or a [B] vector.

    Raises:
        ValueError: Bad option value or mismatched shapes.
    """
    _check_q(q)
    _check_inputs(logits, onehot, apply_nonlin, reduction)
    log_py = target_log_prob(logits, onehot, apply_nonlin)
    return reduce_voxelwise(-torch.expm1(q * log_py) / q, reduction)


def _check_q(q: float) -> None:
    check_positive("q", q)
    if q > 1:
        raise ValueError(f"q must satisfy 0 < q <= 1 (q -> 0: CE, q = 1: MAE), got {q!r}.")


class _VoxelwiseLoss(SegmentationLoss):
    """Module wrapper shared by the CE family: one-hot over all channels, then ``self._loss(logits, onehot)``."""

    def __init__(self, batch_dice: bool, apply_nonlin: Nonlin, reduction: Reduction, ddp: bool) -> None:
        # batch_dice and ddp are accepted so that every loss takes the same options; voxel-wise losses have no pooling.
        super().__init__(apply_nonlin, batch_dice, reduction, ddp)

    @abstractmethod
    def _loss(self, logits: Tensor, onehot: Tensor) -> Tensor:
        """The functional form applied to (logits, one-hot over all channels)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` [B, C, ...] against an nnU-Net target (label map or region masks)."""
        return self._loss(logits, target_to_onehot(logits, target, self.apply_nonlin))

    def extra_repr(self) -> str:
        return f"apply_nonlin={self.apply_nonlin!r}, reduction={self.reduction!r}"


class CELoss(_VoxelwiseLoss):
    r"""Cross-entropy (softmax) or per-region BCE (sigmoid) on logits and nnU-Net targets.

    .. math::

        L = -\operatorname{mean}_i \sum_c g_{ic} \log p_{ic}

    See :func:`ce`. Paper: Table I "CE", doi:10.1109/TMI.2020.3000314. Defaults: softmax, mean.

    Identities pinned by tests: equals ``torch.nn.functional.cross_entropy`` on the label map.

    Args:
        batch_dice: Accepted and ignored (no pooling in voxel-wise losses).
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions, BCE).
        reduction: ``"mean"`` or ``"none"`` (mean per image, [B]).
        ddp: Accepted and ignored (no pooled sums).

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(batch_dice, apply_nonlin, reduction, ddp)

    def _loss(self, logits: Tensor, onehot: Tensor) -> Tensor:
        return ce(logits, onehot, self.apply_nonlin, self.reduction)


class FocalCELoss(_VoxelwiseLoss):
    r"""Focal cross-entropy without α on logits and nnU-Net targets.

    .. math::

        L = -\operatorname{mean}_i (1 - p_{i,y})^\gamma \log p_{i,y}

    See :func:`focal_ce`. Paper: T.-Y. Lin et al., ICCV 2017, doi:10.1109/ICCV.2017.324 (Table I,
    doi:10.1109/TMI.2020.3000314). Defaults: γ = 2, softmax, mean.

    Identities pinned by tests: γ = 0 equals :class:`CELoss`.

    Args:
        gamma: Focusing parameter γ ≥ 0.
        batch_dice: Accepted and ignored.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (mean per image, [B]).
        ddp: Accepted and ignored (no pooled sums).

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(batch_dice, apply_nonlin, reduction, ddp)
        check_positive("gamma", gamma, allow_zero=True)
        self.gamma = float(gamma)

    def _loss(self, logits: Tensor, onehot: Tensor) -> Tensor:
        return focal_ce(logits, onehot, self.gamma, self.apply_nonlin, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()


class FocalCEGamma05Loss(FocalCELoss):
    """Focal CE with γ = 0.5 by default: the second focal row of Table I, registered as ``focal_ce_gamma05``.

    Same formula, paper and options as :class:`FocalCELoss`; only the default of ``gamma`` differs.

    Identities pinned by tests: equals ``FocalCELoss(gamma=0.5)``.
    """

    def __init__(
        self,
        gamma: float = 0.5,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(gamma, batch_dice, apply_nonlin, reduction, ddp)


class MAELoss(_VoxelwiseLoss):
    r"""Mean absolute error between probabilities and one-hot targets, on logits and nnU-Net targets.

    .. math::

        L = \operatorname{mean}_{i,c} |p_{ic} - g_{ic}|

    See :func:`mae`. Paper: A. Ghosh et al., AAAI 2017, doi:10.1609/aaai.v31i1.10894 (Table I,
    doi:10.1109/TMI.2020.3000314). Defaults: softmax, mean.

    Identities pinned by tests: equals ``GCELoss(q=1)`` for 2 classes.

    Args:
        batch_dice: Accepted and ignored.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (mean per image, [B]).
        ddp: Accepted and ignored (no pooled sums).

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(batch_dice, apply_nonlin, reduction, ddp)

    def _loss(self, logits: Tensor, onehot: Tensor) -> Tensor:
        return mae(logits, onehot, self.apply_nonlin, self.reduction)


class GCELoss(_VoxelwiseLoss):
    r"""Generalised cross-entropy on logits and nnU-Net targets.

    .. math::

        L = \operatorname{mean}_i \frac{1 - p_{i,y}^q}{q}

    See :func:`gce`. Paper: Z. Zhang and M. R. Sabuncu, NeurIPS 2018, arXiv:1805.07836 (Table I,
    doi:10.1109/TMI.2020.3000314). Defaults: q = 0.7, softmax, mean.

    Identities pinned by tests: q = 1e-4 ≈ :class:`CELoss`; q = 1 equals :class:`MAELoss` for 2 classes.

    Args:
        q: Exponent, 0 < q ≤ 1.
        batch_dice: Accepted and ignored.
        apply_nonlin: ``"softmax"`` (label maps) or ``"sigmoid"`` (regions).
        reduction: ``"mean"`` or ``"none"`` (mean per image, [B]).
        ddp: Accepted and ignored (no pooled sums).

    Raises:
        ValueError: Bad option value (at construction), bad target (in ``forward``).
    """

    def __init__(
        self,
        q: float = 0.7,
        batch_dice: bool = True,
        apply_nonlin: Nonlin = "softmax",
        reduction: Reduction = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(batch_dice, apply_nonlin, reduction, ddp)
        _check_q(q)
        self.q = float(q)

    def _loss(self, logits: Tensor, onehot: Tensor) -> Tensor:
        return gce(logits, onehot, self.q, self.apply_nonlin, self.reduction)

    def extra_repr(self) -> str:
        return f"q={self.q}, " + super().extra_repr()
