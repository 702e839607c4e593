"""SWA fine-tuning phase (BraTS 2020 paper, Henry et al., arXiv:2011.01045; METHODS.md §5.6).

After the main schedule: one snapshot of the final weights, then ``cycles`` cycles of ``cycle_epochs`` epochs with a
fresh optimizer (the trainer's own, or Adam with ``optimizer="adam"`` as in the paper's pipeline A; learning rate
``initial_lr * lr_factor``, no weight decay) and a cosine learning rate restarted every cycle,

.. math:: \\eta_e = \\eta_0 \\cdot \\tfrac{1}{2}\\left(1 + \\cos\\frac{\\pi e}{T_{max}}\\right),\\quad
          T_{max} = \\text{cycle\\_epochs} + 10,

and a snapshot every ``snapshot_every`` epochs; the equal-weight average of all snapshots
(``torch.optim.swa_utils.AveragedModel``; 1 + 5 x 10 = 51 with the defaults) is exported as ``network_weights``.

BatchNorm: the averaged weights need running statistics of their own. They are recomputed on
``bn_update_batches`` training batches whenever the average is used after a new snapshot — for the per-epoch pseudo
Dice, for every checkpoint that exports it (``checkpoint_best``, ``checkpoint_latest``, ``checkpoint_final``) and
for the final validation — at most twice per snapshot. Networks without BatchNorm (nnU-Net's InstanceNorm U-Nets)
pay nothing.

The snapshots average the trained network (the student when a mean teacher runs beside it). All state (average,
snapshot count, cycle position, optimizer) is restored by ``--c``. With ``optimizer="adam"`` a checkpoint taken in the
SWA phase holds the Adam state; ``--c`` puts it into a fresh Adam (nnU-Net itself loads it into the trainer's main
optimizer, e.g. Ranger, which is not the one that continues).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nnunet_ext._nnunet import lr_scheduler_of, set_optimizer, train_loader, unwrap
from nnunet_ext.training.addon import TrainerAddon
from nnunet_ext.training.weight_average import make_swa


@dataclass(frozen=True)
class SWAConfig:
    """Attributes:
    cycles: number of restarted learning-rate cycles.
    cycle_epochs: epochs per cycle.
    lr_factor: cycle learning rate = ``initial_lr * lr_factor``.
    t_max_extra: cosine ``T_max = cycle_epochs + t_max_extra`` (so the rate never reaches 0).
    snapshot_every: a snapshot after every ``snapshot_every``-th epoch of a cycle.
    weight_decay: weight decay of the cycle optimizers.
    bn_update_batches: training batches used to recompute BatchNorm statistics of the average.
    optimizer: optimizer of the cycles: ``"trainer"``, a fresh instance of the trainer's own
        (``configure_optimizers``); ``"adam"``, ``torch.optim.Adam`` with torch's defaults (betas (0.9, 0.999),
        eps 1e-8), as open_brats2020's SWA phase (paper: "the Adam optimizer was used without weight decay").
    """

    cycles: int = 5
    cycle_epochs: int = 30
    lr_factor: float = 0.5
    t_max_extra: int = 10
    snapshot_every: int = 3
    weight_decay: float = 0.0
    bn_update_batches: int = 50
    optimizer: Literal["trainer", "adam"] = "trainer"

    def __post_init__(self) -> None:
        for name in ("cycles", "cycle_epochs", "snapshot_every", "bn_update_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_factor <= 0 or self.t_max_extra < 0 or self.weight_decay < 0:
            raise ValueError(f"lr_factor > 0, t_max_extra >= 0, weight_decay >= 0 required, got {self}")
        if self.optimizer not in ("trainer", "adam"):
            raise ValueError(f"swa optimizer must be 'trainer' or 'adam', got {self.optimizer!r}")


def cycle_lr(base_lr: float, epoch_in_cycle: int, t_max: int) -> float:
    """Cosine annealing without restart inside one cycle: ``base * (1 + cos(pi e / T_max)) / 2``."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch_in_cycle / t_max))


class CycleCosineLR:
    """Scheduler with nnU-Net's interface (``step(current_epoch)``) for one SWA cycle starting at ``start_epoch``."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, start_epoch: int, t_max: int) -> None:
        self.optimizer, self.base_lr, self.start_epoch, self.t_max = optimizer, base_lr, start_epoch, t_max

    def step(self, current_epoch: int | None = None) -> None:
        lr = cycle_lr(self.base_lr, (current_epoch or self.start_epoch) - self.start_epoch, self.t_max)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


@torch.no_grad()
def update_bn_from_loader(model: nn.Module, batches, device: torch.device, num_batches: int) -> None:
    """Recompute BatchNorm running statistics as a cumulative average over ``num_batches`` batches (like
    ``torch.optim.swa_utils.update_bn``, for nnU-Net's dict batches)."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return
    momenta = {}
    for m in norms:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None
    was_training = model.training
    model.train()
    for _ in range(num_batches):
        model(next(batches)["data"].to(device, non_blocking=True))
    for m in norms:
        m.momentum = momenta[m]
    model.train(was_training)


class SWAPhase(TrainerAddon):
    """Extends the schedule by ``cycles * cycle_epochs`` SWA epochs and exports the average."""

    config_key: ClassVar[str] = "swa"
    log_keys: ClassVar[tuple[str, ...]] = ("ext_swa_snapshots",)

    def __init__(self, config: SWAConfig) -> None:
        super().__init__(config)
        self.extra_epochs = config.cycles * config.cycle_epochs
        self.main_epochs: int | None = None
        self.average = None
        self.bn_updated = False
        self._loaded_optimizer_state: dict | None = None

    def setup(self, trainer) -> None:
        # configure_optimizers() already captured the main schedule length in PolyLRScheduler.
        self.main_epochs = trainer.num_epochs
        trainer.num_epochs = self.main_epochs + self.extra_epochs
        self.average = make_swa(unwrap(trainer.network)).to(trainer.device)
        self._watch_optimizer_loads(trainer.optimizer)

    def _watch_optimizer_loads(self, optimizer: torch.optim.Optimizer) -> None:
        # nnU-Net's load_checkpoint loads the saved optimizer state into whichever optimizer the trainer holds (the
        # main one, e.g. Ranger, on a fresh trainer); keep the raw dict so that load_state_dict can hand an SWA-phase
        # state to a cycle optimizer of the configured kind instead
        if self.config.optimizer != "trainer":
            optimizer.register_load_state_dict_pre_hook(self._keep_loaded_optimizer_state)

    def _keep_loaded_optimizer_state(self, optimizer, state_dict: dict) -> None:
        self._loaded_optimizer_state = state_dict

    def cycle_optimizer(self, trainer) -> torch.optim.Optimizer:
        """A fresh optimizer for one cycle: lr ``initial_lr * lr_factor``, the configured weight decay."""
        cfg = self.config
        base_lr = trainer.initial_lr * cfg.lr_factor
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(trainer.network.parameters(), lr=base_lr, weight_decay=cfg.weight_decay)
        else:
            optimizer, _ = trainer.configure_optimizers()
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = base_lr
            group["weight_decay"] = cfg.weight_decay
        self._watch_optimizer_loads(optimizer)
        return optimizer

    def _phase_position(self, epoch: int) -> tuple[int, int] | None:
        if epoch < self.main_epochs:
            return None
        k = epoch - self.main_epochs
        return k // self.config.cycle_epochs, k % self.config.cycle_epochs

    @property
    def num_snapshots(self) -> int:
        return int(self.average.n_averaged) if self.average is not None else 0

    def on_train_epoch_start(self, trainer) -> None:
        pos = self._phase_position(trainer.current_epoch)
        if pos is None:
            return
        cycle, epoch_in_cycle = pos
        net = unwrap(trainer.network)
        if self.num_snapshots == 0:
            self.average.update_parameters(net)  # the final weights of the main schedule
        cfg = self.config
        base_lr = trainer.initial_lr * cfg.lr_factor
        if epoch_in_cycle == 0:
            optimizer = self.cycle_optimizer(trainer)
            set_optimizer(trainer, optimizer)
            trainer.print_to_log_file(
                f"SWA cycle {cycle + 1}/{cfg.cycles}: fresh {type(optimizer).__name__} optimizer, lr {base_lr:g}, "
                f"weight decay {cfg.weight_decay:g}"
            )
        scheduler = lr_scheduler_of(trainer)
        if not isinstance(scheduler, CycleCosineLR) or scheduler.optimizer is not trainer.optimizer:
            start = self.main_epochs + cycle * cfg.cycle_epochs
            scheduler = CycleCosineLR(trainer.optimizer, base_lr, start, cfg.cycle_epochs + cfg.t_max_extra)
            set_optimizer(trainer, trainer.optimizer, scheduler)

    def on_epoch_end(self, trainer) -> None:
        pos = self._phase_position(trainer.current_epoch)
        if pos is not None and (pos[1] + 1) % self.config.snapshot_every == 0:
            self.average.update_parameters(unwrap(trainer.network))
            self.bn_updated = False
        trainer.ext_log("ext_swa_snapshots", self.num_snapshots)

    def before_export(self, trainer) -> None:
        """Recompute the average's BatchNorm statistics if a snapshot was added since they were last computed."""
        if not self.num_snapshots or self.bn_updated:
            return
        if not any(isinstance(m, _BatchNorm) for m in self.average.module.modules()):
            self.bn_updated = True
            return
        loader = train_loader(trainer)
        if loader is None:  # e.g. --val on a checkpoint: the statistics stored with the average are used
            return
        update_bn_from_loader(self.average.module, loader, trainer.device, self.config.bn_update_batches)
        self.bn_updated = True

    def on_train_end(self, trainer) -> None:
        self.before_export(trainer)
        trainer.print_to_log_file(f"SWA: exporting the average of {self.num_snapshots} snapshots")

    def exported_module(self) -> nn.Module | None:
        return self.average.module if self.num_snapshots > 0 else None

    def state_dict(self) -> dict:
        return {
            "n_averaged": self.num_snapshots,
            "main_epochs": self.main_epochs,
            "bn_updated": self.bn_updated,
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state, trainer, exported_weights) -> None:
        if self.config.optimizer != "trainer" and trainer.current_epoch > self.main_epochs:
            # the checkpoint was written after an SWA epoch, so its optimizer state is the cycle optimizer's
            assert self._loaded_optimizer_state is not None, "nnU-Net's load_checkpoint loaded no optimizer state"
            optimizer = self.cycle_optimizer(trainer)
            optimizer.load_state_dict(self._loaded_optimizer_state)
            set_optimizer(trainer, optimizer)
        self._loaded_optimizer_state = None
        if state is None or state["n_averaged"] == 0:
            return
        if state["main_epochs"] != self.main_epochs:
            raise ValueError(
                f"checkpoint was trained with {state['main_epochs']} main epochs before SWA, this run has "
                f"{self.main_epochs}; resume with the same num_epochs"
            )
        self.average.module.load_state_dict(exported_weights)
        self.average.n_averaged.fill_(int(state["n_averaged"]))
        self.bn_updated = bool(state["bn_updated"])
