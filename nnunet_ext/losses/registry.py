"""Loss registry: ``LOSSES`` maps a ``lower_snake`` key to its class; :func:`build_loss` builds one by key.

Registry index (paper rows: COPLE-Net Table I, doi:10.1109/TMI.2020.3000314, unless noted; every class also takes
``apply_nonlin="softmax"|"sigmoid"``, ``batch_dice`` (default True; ignored by the voxel-wise losses),
``reduction="mean"|"none"`` and ``ddp`` (default False, see below); Dice-family classes take ``include_background``
(default False)):

=====================  ======================  ========================  ==========================================
key                    class                   paper row                 own defaults
=====================  ======================  ========================  ==========================================
``noise_robust_dice``  NoiseRobustDiceLoss     NR-Dice (Eq. 3)           gamma=1.5, eps=1e-5, denominator="linear"
``ce``                 CELoss                  CE (regions: BCE)         –
``focal_ce``           FocalCELoss             Focal CE, γ = 2           gamma=2.0
``focal_ce_gamma05``   FocalCEGamma05Loss      Focal CE, γ = 0.5         gamma=0.5
``mae``                MAELoss                 MAE                       –
``gce``                GCELoss                 GCE                       q=0.7
``dice``               DiceLoss                Dice [18] (Milletari)     eps=1e-5 (squared denominator)
``sorensen_dice``      SorensenDiceLoss        Sørensen-Dice             eps=1e-5 (linear denominator)
``focal_dice``         FocalDiceLoss           Focal Dice                beta=0.5, eps=1e-5
``ce_dice``            CEDiceLoss              CE + Dice                 weight_ce=1, weight_dice=1, eps=1e-5
``mae_dice``           MAEDiceLoss             MAE + Dice                weight_mae=1, weight_dice=1, eps=1e-5
``region_dice``        RegionDiceLoss          BraTS region Dice [#]_    sigmoid only, eps fixed at 1
=====================  ======================  ========================  ==========================================

.. [#] T. Henry et al., arXiv:2011.01045 (METHODS.md §5.4).

NR-Dice's default denominator is the linear one of the authors' code (PyMIC), as in every NR-Dice trainer;
``denominator="squared"`` gives Eq. 3 exactly.

``ddp``: every registered loss accepts it, so a trainer passes ``ddp=is_ddp`` whatever the loss. Where the value
depends on batch-pooled sums (``batch_dice=True`` and ``reduction="mean"``: ``noise_robust_dice``, ``dice``,
``sorensen_dice``, ``focal_dice``, ``region_dice`` and the Dice terms of ``ce_dice``/``mae_dice``) the per-class
sums are summed over all DDP ranks with nnU-Net's gradient-carrying ``AllGatherGrad`` before the ratio is formed,
as nnU-Net's own Dice does: each rank then computes the Dice of the global batch. It is ignored by the voxel-wise
losses, by per-image sums and outside an initialised process group.

``supports_regions`` (class attribute) is True where the sigmoid (region) form is defined — every loss here;
``supports_label_maps`` is False only for ``region_dice``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable

from torch import nn

from nnunet_ext.losses.compound import CEDiceLoss, MAEDiceLoss
from nnunet_ext.losses.cross_entropy import CELoss, FocalCEGamma05Loss, FocalCELoss, GCELoss, MAELoss
from nnunet_ext.losses.dice import DiceLoss, FocalDiceLoss, RegionDiceLoss, SorensenDiceLoss
from nnunet_ext.losses.noise_robust_dice import NoiseRobustDiceLoss

__all__ = ["LOSSES", "build_loss", "loss_parameters"]

LOSSES: dict[str, type[nn.Module]] = {
    "noise_robust_dice": NoiseRobustDiceLoss,
    "ce": CELoss,
    "focal_ce": FocalCELoss,
    "focal_ce_gamma05": FocalCEGamma05Loss,
    "mae": MAELoss,
    "gce": GCELoss,
    "dice": DiceLoss,
    "sorensen_dice": SorensenDiceLoss,
    "focal_dice": FocalDiceLoss,
    "ce_dice": CEDiceLoss,
    "mae_dice": MAEDiceLoss,
    "region_dice": RegionDiceLoss,
}


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=1)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def loss_parameters(name: str) -> tuple[str, ...]:
    """Constructor keyword names of the loss registered under ``name`` (raises like :func:`build_loss`)."""
    cls = _lookup(name)
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")


def _lookup(name: str) -> type[nn.Module]:
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}.{_did_you_mean(name, LOSSES)} Known losses: {sorted(LOSSES)}.")
    return LOSSES[name]


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """Build the loss registered under ``name`` with keyword options.

    Args:
        name: Registry key (see the module docstring).
        **kwargs: Constructor options of that loss; each is validated by the constructor.

    Returns:
        The loss module, ``forward(logits, target)``.

    Raises:
        KeyError: Unknown ``name`` (with a did-you-mean suggestion).
        ValueError: An option the loss does not take (with a did-you-mean suggestion), or a bad option value.
    """
    cls = _lookup(name)
    allowed = loss_parameters(name)
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"loss {name!r} has no option {key!r}.{_did_you_mean(key, allowed)} Valid options: {list(allowed)}."
            )
    return cls(**kwargs)
