"""Data re-weighting baseline (COPLE paper Table IV, after Ren et al. / trimmed loss; METHODS.md §4.1).

Per-sample segmentation losses above the 90th percentile of the per-sample losses of the previous 100 training steps
get weight 0; the others weight 1:

.. math:: L = \\frac{\\sum_b w_b \\ell_b}{\\max(1, \\sum_b w_b)},\\quad
          w_b = [\\ell_b \\le \\mathrm{P}_{90}(\\{\\ell\\}_{\\text{previous 100 steps}})]

Decisions on the open points: the granularity is one image (2D slice or 3D patch) of the batch, its loss computed
per image (no batch pooling); the history holds per-sample losses of the previous ``window`` steps; no sample is
dropped before ``window`` steps have been seen. The current step's losses join the history after the decision.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from nnunet_ext.training.addon import TrainerAddon


@dataclass(frozen=True)
class ReweightConfig:
    """Attributes:
    window: number of previous training steps whose per-sample losses define the threshold.
    percentile: samples with a loss above this percentile of the history get weight 0.
    """

    window: int = 100
    percentile: float = 90.0

    def __post_init__(self) -> None:
        if self.window < 1 or not 0 < self.percentile <= 100:
            raise ValueError(f"window >= 1 and percentile in (0, 100] required, got {self.window}, {self.percentile}")


def trimmed_weights(losses: np.ndarray, history: deque, window: int, percentile: float) -> np.ndarray:
    """0/1 weights: 0 for losses above the percentile of the concatenated history, all 1 before it is full."""
    if len(history) < window:
        return np.ones_like(losses)
    threshold = np.percentile(np.concatenate(list(history)), percentile)
    return (losses <= threshold).astype(losses.dtype)


class Reweight(TrainerAddon):
    """Replaces the segmentation loss by the trimmed per-sample mean."""

    config_key: ClassVar[str] = "reweight"
    log_keys: ClassVar[tuple[str, ...]] = ("ext_reweight_kept_fraction",)

    def __init__(self, config: ReweightConfig) -> None:
        super().__init__(config)
        self.history: deque[np.ndarray] = deque(maxlen=config.window)
        self.per_sample_loss = None
        self._kept: list[float] = []
        self._pending: np.ndarray | None = None  # per-sample losses of the step in flight

    def check(self, trainer) -> None:
        if trainer.ext_loss_spec is None:
            raise ValueError(f"{trainer.__class__.__name__}: data re-weighting needs a plugin loss_spec")

    def setup(self, trainer) -> None:
        self.per_sample_loss = trainer.build_plugin_loss(reduction="none")

    def segmentation_loss(self, trainer, output, target) -> torch.Tensor:
        losses = self.per_sample_loss(output, target)
        values = losses.detach().float().cpu().numpy()
        weights = trimmed_weights(values, self.history, self.config.window, self.config.percentile)
        self._pending = values  # joins the history only if the step is taken (a NaN would poison the percentile)
        self._kept.append(float(weights.mean()))
        w = torch.as_tensor(weights, device=losses.device, dtype=losses.dtype)
        return (w * losses).sum() / w.sum().clamp_min(1.0)

    def after_optimizer_step(self, trainer, seg_loss) -> None:
        if self._pending is not None:
            self.history.append(self._pending)
            self._pending = None

    def reset(self, trainer) -> None:
        self.history.clear()
        self._pending = None

    def on_skipped_step(self, trainer) -> None:
        self._pending = None
        if self._kept:
            self._kept.pop()

    def on_train_epoch_end(self, trainer) -> None:
        kept = float(np.mean(self._kept)) if self._kept else float("nan")
        trainer.ext_log("ext_reweight_kept_fraction", kept)
        trainer.print_to_log_file(f"re-weighting: kept fraction of samples {kept:.3f}")
        self._kept = []

    def state_dict(self) -> dict:
        return {"history": [h.tolist() for h in self.history], "config": dataclasses.asdict(self.config)}

    def load_state_dict(self, state, trainer, exported_weights) -> None:
        if state is not None:
            self.history = deque((np.asarray(h) for h in state["history"]), maxlen=self.config.window)
