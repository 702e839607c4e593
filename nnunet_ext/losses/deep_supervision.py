"""The one deep-supervision weighting of the project (STYLE rule 5), and the wrapper built on nnU-Net's own.

nnU-Net 2.8.1 repeats the weighting in 7 trainers, 6 of them without the DDP fix; every trainer of ``nnunet_ext``
calls :func:`deep_supervision_weights` instead. The outputs are nnU-Net's: one per scale of ``strides``, highest
resolution first, targets down-sampled by nnU-Net's data loader (NNUNET_INTEGRATION.md §2.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import nn

__all__ = ["deep_supervision_weights", "num_deep_supervision_outputs", "wrap_deep_supervision"]

#: Weight of the lowest-resolution output under DDP (nnU-Net's value): non-zero so that its head gets a gradient
#: and DDP without ``find_unused_parameters`` does not stall.
DDP_LAST_WEIGHT = 1e-6


def deep_supervision_weights(num_outputs: int, ddp: bool = False) -> np.ndarray:
    r"""Loss weights of the deep-supervision outputs, highest resolution first.

    .. math::

        w_i \propto 2^{-i},\ i = 0..n-1, \qquad w_{n-1} \leftarrow 0\ (10^{-6} \text{ if ddp}),
        \qquad \sum_i w_i = 1

    nnU-Net's rule (``nnUNetTrainer._build_loss``): the lowest-resolution output gets no weight, except under DDP
    without ``torch.compile``, where it gets 1e-6 so that every head receives a gradient. A single output gets
    weight 1 (nnU-Net's formula would give 0/0).

    Identities pinned by tests: 5 outputs give (8, 4, 2, 1, 0)/15; the DDP rule; 1 output gives [1.0].

    Args:
        num_outputs: Number of network outputs (``num_deep_supervision_outputs(strides)`` with DS on, else 1).
        ddp: True when training under DDP *without* compile (pass ``is_ddp and not compiled``).

    Returns:
        float64 array of shape [num_outputs] summing to 1.

    Raises:
        ValueError: ``num_outputs`` is not a positive integer.
    """
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, (int, np.integer)) or num_outputs < 1:
        raise ValueError(f"num_outputs must be a positive integer, got {num_outputs!r}.")
    if num_outputs == 1:
        return np.ones(1)
    weights = 1.0 / 2.0 ** np.arange(num_outputs)
    weights[-1] = DDP_LAST_WEIGHT if ddp else 0.0
    return weights / weights.sum()


def num_deep_supervision_outputs(strides: Sequence[Sequence[int] | int]) -> int:
    """Number of deep-supervision outputs nnU-Net expects for a network with these per-stage ``strides``.

    nnU-Net's rule (``_get_deep_supervision_scales``): scales = 1 / cumprod(strides), the last one dropped, so one
    output per stage except the bottleneck.

    Args:
        strides: The plans' ``strides`` (one entry per encoder stage, the first usually all ones).

    Returns:
        ``len(strides) - 1``.

    Raises:
        ValueError: fewer than 2 stages (no decoder output to supervise).
    """
    if len(strides) < 2:
        raise ValueError(f"deep supervision needs at least 2 stages in strides, got {list(strides)!r}.")
    return len(strides) - 1


def wrap_deep_supervision(loss: nn.Module, num_outputs: int, ddp: bool = False) -> nn.Module:
    """Wrap ``loss`` in nnU-Net's ``DeepSupervisionWrapper`` with :func:`deep_supervision_weights`.

    The wrapper's ``forward(outputs, targets)`` takes lists (highest resolution first) and returns
    Σ_i w_i · loss(outputs[i], targets[i]), skipping zero weights. It zips the lists, so a count mismatch is silently
    truncated: pass ``num_outputs`` equal to the network's output count.

    Args:
        loss: Per-output loss, e.g. from :func:`~nnunet_ext.losses.build_loss`.
        num_outputs: Number of network outputs.
        ddp: See :func:`deep_supervision_weights`.

    Returns:
        ``nnunetv2.training.loss.deep_supervision.DeepSupervisionWrapper``.

    Raises:
        ValueError: ``num_outputs`` is not a positive integer.
    """
    # Python floats, not numpy scalars, so that the weighted sum keeps the loss's torch dtype.
    weights = [float(w) for w in deep_supervision_weights(num_outputs, ddp)]
    return DeepSupervisionWrapper(loss, weights)
