"""Weight averaging for the mean teacher (EMA) and SWA, both on ``torch.optim.swa_utils.AveragedModel``.

One primitive serves both: the EMA is an ``AveragedModel`` whose averaging function reads a decay that the caller
sets before each update (the decay follows a schedule and a gate, which ``AveragedModel``'s step count cannot
express); SWA uses ``AveragedModel``'s own equal-weight running mean.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class ScheduledEMA:
    """Averaging function for ``AveragedModel``: ``avg <- decay * avg + (1 - decay) * model``.

    Floating-point tensors are interpolated (``lerp``); integer buffers (BatchNorm ``num_batches_tracked``) are copied.
    ``AveragedModel`` copies the result into its tensors in place.
    """

    def __init__(self) -> None:
        self.decay = 0.0

    def __call__(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        if not averaged.dtype.is_floating_point:
            return current
        return averaged.lerp(current.to(averaged.dtype), 1.0 - self.decay)


def make_ema(model: nn.Module) -> AveragedModel:
    """EMA copy of the unwrapped ``model`` with parameters and buffers averaged, in eval mode, without gradients."""
    ema = AveragedModel(model, avg_fn=ScheduledEMA(), use_buffers=True)
    ema.requires_grad_(False)
    ema.eval()
    return ema


@torch.no_grad()
def ema_update_(ema: AveragedModel, model: nn.Module, decay: float) -> None:
    """In-place EMA step ``theta_T <- decay * theta_T + (1 - decay) * theta_S`` (the first call copies)."""
    if not isinstance(ema.avg_fn, ScheduledEMA):
        raise TypeError("ema_update_ needs an AveragedModel built by make_ema()")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    ema.avg_fn.decay = float(decay)
    ema.update_parameters(model)


def make_swa(model: nn.Module, use_buffers: bool = False) -> AveragedModel:
    """Equal-weight running mean of ``model`` snapshots; buffers follow the model (BatchNorm: call ``update_bn``)."""
    swa = AveragedModel(model, use_buffers=use_buffers)
    swa.requires_grad_(False)
    return swa
