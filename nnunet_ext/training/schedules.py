"""Pure schedule pieces of adaptive self-ensembling (COPLE paper, doi:10.1109/TMI.2020.3000314, Sec. II-C) and the
BraTS 2020 learning-rate schedules (arXiv:2011.01045).

Nothing here touches a network: each function maps counters and losses to a number or a decision, so every rule is
pinned by closed-form tests without nnU-Net.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch


def ema_decay(
    step: int, epoch: int, num_epochs: int, early: float = 0.99, late: float = 0.999, switch_fraction: float = 0.1
) -> float:
    """EMA decay with warm-up: ``min(1 - 1/(t+1), alpha')``.

    .. math:: \\alpha_t = \\min\\left(1 - \\frac{1}{t+1}, \\alpha'\\right),\\quad
              \\alpha' = 0.99 \\text{ if } e < 0.1\\,E \\text{ else } 0.999

    Args:
        step: optimizer-step counter t, 0-based, across epochs (t = 0 gives 0: the teacher becomes a copy).
        epoch: current epoch e of the main schedule.
        num_epochs: number of epochs E of the main schedule.
        early: alpha' during the first ``switch_fraction`` of the epochs.
        late: alpha' afterwards.
        switch_fraction: fraction of the epochs after which ``late`` applies.

    Identities pinned by tests: t = 0 → 0; t = 1 → 0.5; large t → alpha'; switch exactly at e = 0.1 E.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    target = early if epoch < switch_fraction * num_epochs else late
    return min(1.0 - 1.0 / (step + 1), target)


def sigmoid_rampup(step: int, length: int) -> float:
    """Mean-teacher consistency ramp ``exp(-5 (1 - t/L)^2)`` (Tarvainen & Valpola 2017); 1 once ``t >= L``."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(step, 0), length) / length
    return float(math.exp(-5.0 * phase * phase))


class PercentileGate:
    """Outlier gate: a loss at or above the ``q``-th percentile of the previous ``window`` values is an outlier.

    Used by AdaT (no teacher update for outlier student losses) and by the data re-weighting baseline. The current
    value joins the history only after the decision; before ``window`` values are collected nothing is gated.
    The percentile is numpy's default (linear interpolation).

    Identities pinned by tests: no gating before ``window`` values; the current value is excluded from its own
    threshold; the history keeps exactly the last ``window`` values.
    """

    def __init__(self, window: int = 100, q: float = 90.0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 < q <= 100.0:
            raise ValueError(f"q must be in (0, 100], got {q}")
        self.window = window
        self.q = q
        self.history: deque[float] = deque(maxlen=window)

    @property
    def warmed_up(self) -> bool:
        return len(self.history) == self.window

    def threshold(self) -> float:
        """Current threshold beta; ``inf`` while the history is not full."""
        return float(np.percentile(np.asarray(self.history), self.q)) if self.warmed_up else math.inf

    def allows(self, value: float) -> bool:
        """True when ``value`` is below the threshold of the previous values (no state change)."""
        return value < self.threshold()

    def allows_update(self, value: float) -> bool:
        """Decide for ``value``, then append it to the history.

        Raises:
            ValueError: ``value`` is not finite (a NaN in the history would make every later threshold NaN; the
                trainer skips non-finite steps before they reach the gate).
        """
        if not math.isfinite(value):
            raise ValueError(f"the gate history takes finite losses only, got {value}")
        allowed = self.allows(value)
        self.history.append(float(value))
        return allowed

    def extend(self, values: Iterable[float]) -> None:
        values = [float(v) for v in values]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("the gate history takes finite losses only")
        self.history.extend(values)

    def state_dict(self) -> dict:
        return {"history": list(self.history), "window": self.window, "q": self.q}

    def load_state_dict(self, state: dict) -> None:
        if state["window"] != self.window:
            raise ValueError(f"gate window in checkpoint ({state['window']}) differs from this run ({self.window})")
        self.q = float(state["q"])
        self.history = deque((float(v) for v in state["history"]), maxlen=self.window)


def adaptive_consistency_weight(
    student_loss: float | torch.Tensor,
    teacher_loss: float | torch.Tensor,
    high: float = 0.1,
    low: float = 0.01,
    rule: Literal["prose", "eq7"] = "prose",
) -> float | torch.Tensor:
    """AdaS consistency weight lambda.

    ``rule="prose"`` (default, [D]): ``high`` when the teacher is better on the batch (L_T < L_S), else ``low``.
    ``rule="eq7"``: the comparison as printed in the paper's Eq. 7 (``high`` when L_T > L_S), for ablations.

    Identities pinned by tests: ties give ``low`` under both rules. Scalar tensors give a tensor on their device, in
    the losses' dtype.
    """
    if rule == "prose":
        better = teacher_loss < student_loss
    elif rule == "eq7":
        better = teacher_loss > student_loss
    else:
        raise ValueError(f"rule must be 'prose' or 'eq7', got {rule!r}")
    if isinstance(better, torch.Tensor):  # decided on the device: no host synchronisation inside the step
        dtype = student_loss.dtype if isinstance(student_loss, torch.Tensor) else teacher_loss.dtype
        return torch.where(better, torch.tensor(high, dtype=dtype, device=better.device), low)
    return high if better else low


def constant_then_cosine(base_lr: float, epoch: int, num_epochs: int, constant_fraction: float = 0.5) -> float:
    """Constant ``base_lr`` for the first half of the epochs, then cosine annealing towards 0 (open_brats2020)."""
    start = int(constant_fraction * num_epochs)
    if epoch < start:
        return base_lr
    span = max(num_epochs - start, 1)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch - start, span) / span))


def open_brats_ranger_lr(base_lr: float, epoch: int, num_epochs: int) -> float:
    """Learning rate of epoch ``epoch`` under open_brats2020's Ranger schedule (BraTS 2020 paper, pipeline A).

    open_brats keeps ``base_lr`` and steps ``CosineAnnealingLR(T_max = round(E / 2))`` at the end of every epoch
    ``j`` with ``j / E > 0.5`` (METHODS.md §6). Epoch ``e`` therefore trains after
    ``n_e = max(0, e - floor(E / 2) - 1)`` cosine steps:

    .. math:: \\eta_e = \\eta_0 \\cdot \\tfrac{1}{2}\\left(1 + \\cos\\frac{\\pi\\, n_e}{T}\\right),\\quad
              T = \\max(\\mathrm{round}(E / 2), 1)

    (``round`` is Python's, half to even). With E = 200: ``base_lr`` for epochs 0-101, then the cosine from epoch 102
    to epoch 199 (``n = 98``, 9.87e-8 for ``base_lr`` 1e-4); it never reaches 0. :func:`constant_then_cosine` is the
    paper's wording ("cosine decay after half of the epochs") without open_brats' one-epoch offset.

    Args:
        base_lr: learning rate of the constant part.
        epoch: 0-based epoch of the main schedule.
        num_epochs: number of epochs E of the main schedule (SWA epochs excluded).

    Identities pinned by tests: equals torch's ``CosineAnnealingLR`` stepped the open_brats way for several E;
    constant through epoch ``floor(E / 2) + 1``; E = 1 gives ``base_lr``.
    """
    if num_epochs < 1 or epoch < 0:
        raise ValueError(f"need num_epochs >= 1 and epoch >= 0, got num_epochs={num_epochs}, epoch={epoch}")
    t_max = max(round(num_epochs * 0.5), 1)
    steps = min(max(0, epoch - num_epochs // 2 - 1), t_max)  # held at 0 past T (open_brats never gets there)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * steps / t_max))


# schedule name (``OptimizerSpec.schedule``) -> f(base_lr, epoch, num_epochs)
EPOCH_SCHEDULES = {"constant_then_cosine": constant_then_cosine, "open_brats_ranger": open_brats_ranger_lr}


class EpochLR:
    """Scheduler with nnU-Net's interface (``step(current_epoch)``) for a pure ``f(base_lr, epoch, num_epochs)``."""

    def __init__(self, optimizer, base_lr: float, num_epochs: int, fn=constant_then_cosine) -> None:
        self.optimizer, self.base_lr, self.num_epochs, self.fn = optimizer, base_lr, num_epochs, fn

    def step(self, current_epoch: int) -> None:
        lr = self.fn(self.base_lr, current_epoch, self.num_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
