"""The add-on protocol: composable pieces of training behaviour dispatched by ``ExtTrainerBase``.

An add-on owns one concern (mean teacher, data re-weighting, SWA phase) and its state. The base trainer calls the
hooks below in the order of its ``ADDONS`` registry; every hook is optional. Add-ons never subclass a trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from nnunet_ext.training.base import ExtTrainerBase


class TrainerAddon:
    """Base class of add-ons. Subclasses set ``config_key`` and ``log_keys`` and override the hooks they need."""

    config_key: ClassVar[str] = ""
    log_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        self.config = config

    # life cycle -----------------------------------------------------------------------------------------------
    def check(self, trainer: ExtTrainerBase) -> None:
        """Refuse unsupported set-ups at start-up (called first thing in ``initialize``)."""

    def setup(self, trainer: ExtTrainerBase) -> None:
        """Called at the end of ``initialize`` once the network, optimizer and loss exist."""

    def on_train_start(self, trainer: ExtTrainerBase) -> None:
        """Called after nnU-Net's ``on_train_start`` (data loaders exist, checkpoint possibly loaded)."""

    def on_train_epoch_start(self, trainer: ExtTrainerBase) -> None:
        """Called before nnU-Net's ``on_train_epoch_start`` (which steps ``trainer.lr_scheduler``)."""

    def on_train_epoch_end(self, trainer: ExtTrainerBase) -> None:
        """Called after nnU-Net's ``on_train_epoch_end``; log exactly one value per ``log_keys`` entry here."""

    def on_epoch_end(self, trainer: ExtTrainerBase) -> None:
        """Called before nnU-Net's ``on_epoch_end`` (checkpoints, progress plot, epoch counter)."""

    def on_train_end(self, trainer: ExtTrainerBase) -> None:
        """Called before nnU-Net's ``on_train_end`` writes ``checkpoint_final``."""

    # training step --------------------------------------------------------------------------------------------
    def student_input(self, trainer: ExtTrainerBase, data: torch.Tensor) -> torch.Tensor:
        """Input fed to the trained network (e.g. with noise)."""
        return data

    def segmentation_loss(self, trainer: ExtTrainerBase, output: Any, target: Any) -> torch.Tensor | None:
        """Replace the segmentation loss (at most one add-on may return a tensor)."""
        return None

    def extra_loss(
        self, trainer: ExtTrainerBase, data: torch.Tensor, output: Any, target: Any, seg_loss: torch.Tensor
    ) -> torch.Tensor | None:
        """A term added to the segmentation loss before ``backward``."""
        return None

    def after_optimizer_step(self, trainer: ExtTrainerBase, seg_loss: torch.Tensor) -> None:
        """Called after ``optimizer.step()``, on the post-step weights (only for steps whose optimizer step ran)."""

    def on_skipped_step(self, trainer: ExtTrainerBase) -> None:
        """Called instead of ``after_optimizer_step`` for a step that was skipped (non-finite loss or gradient, or
        skipped by the AMP grad scaler): drop whatever the step prepared; update no state."""

    def reset(self, trainer: ExtTrainerBase) -> None:
        """Called when a label-correction round re-initialises the network: start this add-on's state afresh."""

    # export and state -----------------------------------------------------------------------------------------
    def before_export(self, trainer: ExtTrainerBase) -> None:
        """Called before the exported module is validated with or written to a checkpoint (e.g. to refresh
        BatchNorm statistics of an average)."""

    def exported_module(self) -> nn.Module | None:
        """The module to export as ``network_weights`` and to validate with (teacher, SWA average), if any."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict | None, trainer: ExtTrainerBase, exported_weights: dict) -> None:
        """Restore from a checkpoint. ``state`` is None for checkpoints written without this add-on."""
