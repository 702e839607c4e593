"""Loss zoo of ``nnunet_ext``: noise-robust Dice, the Table I comparison losses, region Dice, deep supervision.

Classes take ``(logits, target)`` with nnU-Net's targets (a label map [B, 1, ...] for softmax, binary region masks
[B, R, ...] for sigmoid); functional forms named after the registry keys take (probabilities, one-hot) for the Dice
family and (logits, one-hot) for the voxel-wise and compound losses. The registry index is in
:mod:`nnunet_ext.losses.registry`.
"""

from __future__ import annotations

from nnunet_ext.losses.compound import CEDiceLoss, MAEDiceLoss, ce_dice, mae_dice
from nnunet_ext.losses.cross_entropy import (
    CELoss,
    FocalCEGamma05Loss,
    FocalCELoss,
    GCELoss,
    MAELoss,
    ce,
    focal_ce,
    gce,
    mae,
)
from nnunet_ext.losses.deep_supervision import (
    deep_supervision_weights,
    num_deep_supervision_outputs,
    wrap_deep_supervision,
)
from nnunet_ext.losses.dice import (
    DiceLoss,
    FocalDiceLoss,
    RegionDiceLoss,
    SorensenDiceLoss,
    dice,
    focal_dice,
    region_dice,
    sorensen_dice,
)
from nnunet_ext.losses.noise_robust_dice import NoiseRobustDiceLoss, noise_robust_dice
from nnunet_ext.losses.registry import LOSSES, build_loss, loss_parameters

__all__ = [
    "LOSSES",
    "CEDiceLoss",
    "CELoss",
    "DiceLoss",
    "FocalCEGamma05Loss",
    "FocalCELoss",
    "FocalDiceLoss",
    "GCELoss",
    "MAEDiceLoss",
    "MAELoss",
    "NoiseRobustDiceLoss",
    "RegionDiceLoss",
    "SorensenDiceLoss",
    "build_loss",
    "ce",
    "ce_dice",
    "deep_supervision_weights",
    "dice",
    "focal_ce",
    "focal_dice",
    "gce",
    "loss_parameters",
    "mae",
    "mae_dice",
    "noise_robust_dice",
    "num_deep_supervision_outputs",
    "region_dice",
    "sorensen_dice",
    "wrap_deep_supervision",
]
