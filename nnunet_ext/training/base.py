"""``ExtTrainerBase``: the one base trainer of the plugin.

Named trainers (``nnunet_ext/trainers/nnunet_ext_*.py``) only set class attributes:

- ``loss_spec``: a :class:`LossSpec` naming a loss in ``nnunet_ext.losses`` (None keeps nnU-Net's Dice + CE);
- one config per add-on in ``ADDONS`` (``mean_teacher``, ``reweight``, ``swa``): None means off.

Every hyper-parameter can be overridden per configuration through a ``"nnunet_ext"`` block in the plans file, e.g.
``{"num_epochs": 300, "loss": {"gamma": 2.0}, "mean_teacher": {"consistency_high": 0.2}}``; unknown keys are
rejected with a did-you-mean hint. The trainer keeps nnU-Net's ``__init__`` signature (nnU-Net introspects it).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import pydoc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn

from nnunet_ext._nnunet import (
    check_nnunet,
    compiles,
    deep_supervision_scales,
    log_store,
    serve_loaded_checkpoint,
    unwrap,
)
from nnunet_ext.losses import build_loss, wrap_deep_supervision
from nnunet_ext.losses.registry import LOSSES, loss_parameters
from nnunet_ext.training.addon import TrainerAddon
from nnunet_ext.training.block_types import check_types, type_hints
from nnunet_ext.training.consistency import MeanTeacher, MeanTeacherConfig
from nnunet_ext.training.correction import SpatialCorrection, SpatialCorrectionConfig
from nnunet_ext.training.early_learning import EarlyLearning, EarlyLearningConfig
from nnunet_ext.training.ranger import RANGER_DEFAULTS, build_ranger
from nnunet_ext.training.reweight import Reweight, ReweightConfig
from nnunet_ext.training.schedules import EPOCH_SCHEDULES, EpochLR
from nnunet_ext.training.swa import SWAConfig, SWAPhase

# Trainer attributes a plans "nnunet_ext" block may set (nnU-Net's own hyper-parameters).
TRAINER_OVERRIDABLE = (
    "num_epochs",
    "num_iterations_per_epoch",
    "num_val_iterations_per_epoch",
    "initial_lr",
    "weight_decay",
    "oversample_foreground_percent",
    "save_every",
)

# config attribute name -> add-on class; also the dispatch order of hooks.
ADDONS: dict[str, type[TrainerAddon]] = {
    "reweight": Reweight,
    "mean_teacher": MeanTeacher,
    "early_learning": EarlyLearning,  # before spatial_correction: a round after ADELE's corrections starts from them
    "spatial_correction": SpatialCorrection,
    "swa": SWAPhase,
}

STUDENT_KEY = "nnunet_ext_student_weights"
STATE_KEY = "nnunet_ext_state"
LOSS_STATE_KEY = "loss"  # entry of STATE_KEY with the loss spec the checkpoint was trained with

# Training stops after this many consecutive steps with a non-finite loss or gradient.
MAX_NONFINITE_STEPS = 10


class NonFiniteLossError(RuntimeError):
    """Raised after ``MAX_NONFINITE_STEPS`` consecutive skipped (non-finite) training steps."""


@dataclass(frozen=True)
class LossSpec:
    """A loss of ``nnunet_ext.losses`` by registry name, with keyword arguments."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            hint = difflib.get_close_matches(self.name, LOSSES, n=1)
            raise ValueError(
                f"unknown loss {self.name!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Known: {sorted(LOSSES)}"
            )


# optimizer name -> constructor options an ``OptimizerSpec`` may set besides lr and weight decay
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {"adam": ("betas", "eps"), "ranger": tuple(RANGER_DEFAULTS)}


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer replacing nnU-Net's SGD + poly schedule (sets ``initial_lr`` and ``weight_decay``, which the
    plans' "nnunet_ext" block may override).

    Attributes:
        name: ``"adam"`` (``torch.optim.Adam``) or ``"ranger"`` (RAdam + Lookahead + gradient centralisation,
            :func:`nnunet_ext.training.ranger.build_ranger`).
        lr: initial learning rate.
        weight_decay: weight decay (Adam: L2 added to the gradient; Ranger: decoupled).
        schedule: a per-epoch schedule of ``nnunet_ext.training.schedules.EPOCH_SCHEDULES`` over the main epochs:
            ``"constant_then_cosine"`` (constant for the first half, then cosine to 0) or ``"open_brats_ranger"``
            (open_brats2020's Ranger schedule, one epoch later, never 0).
        options: further constructor arguments (Adam: betas, eps; Ranger: see ``RANGER_DEFAULTS``).
    """

    name: Literal["adam", "ranger"]
    lr: float
    weight_decay: float = 0.0
    schedule: Literal["constant_then_cosine", "open_brats_ranger"] = "constant_then_cosine"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_OPTIONS:
            raise ValueError(f"unknown optimizer {self.name!r}; use one of {sorted(OPTIMIZER_OPTIONS)}")
        if self.schedule not in EPOCH_SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use one of {sorted(EPOCH_SCHEDULES)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        allowed = OPTIMIZER_OPTIONS[self.name]
        for key in self.options:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                raise ValueError(
                    f"unknown {self.name} option {key!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" Allowed: {sorted(allowed)}"
                )

    def build(self, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """The optimizer over ``params``; lr and weight decay are the trainer's (the plans may override them)."""
        if self.name == "ranger":
            return build_ranger(params, lr=lr, weight_decay=weight_decay, **self.options)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **self.options)


def _reject_unknown(kind: str, keys, allowed) -> None:
    if not isinstance(keys, Mapping):
        raise ValueError(
            f'the plans\' "nnunet_ext" {kind} must be a JSON object {{"key": value}}, got {keys!r}; write it as one '
            f"with keys from {sorted(allowed)}"
        )
    for key in keys:
        if key not in allowed:
            hint = difflib.get_close_matches(key, list(allowed), n=1)
            raise ValueError(
                f'unknown key {key!r} in the plans\' "nnunet_ext" {kind}; '
                + (f"did you mean {hint[0]!r}? " if hint else "remove it. ")
                + f"Allowed: {sorted(allowed)}"
            )


class ExtTrainerBase(nnUNetTrainer):
    """nnU-Net trainer with a plugin loss and composable add-ons (mean teacher, re-weighting, SWA)."""

    loss_spec: ClassVar[LossSpec | None] = None
    optimizer_spec: ClassVar[OptimizerSpec | None] = None
    mean_teacher: ClassVar[MeanTeacherConfig | None] = None
    reweight: ClassVar[ReweightConfig | None] = None
    early_learning: ClassVar[EarlyLearningConfig | None] = None
    spatial_correction: ClassVar[SpatialCorrectionConfig | None] = None
    swa: ClassVar[SWAConfig | None] = None

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature, kept verbatim)
    ):
        check_nnunet()
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.optimizer_spec is not None:
            self.initial_lr, self.weight_decay = self.optimizer_spec.lr, self.optimizer_spec.weight_decay
        self.ext_loss_spec, configs = self._ext_resolve_hyperparameters()
        self.ext_addons: list[TrainerAddon] = [ADDONS[key](cfg) for key, cfg in configs.items() if cfg is not None]
        self._ext_validation_swap: nn.Module | None = None
        self._ext_nonfinite_streak = 0
        self._ext_skipped_steps = 0
        self._ext_register_log_keys()

    # ---------------------------------------------------------------------------------------------------------
    # configuration
    def _ext_resolve_hyperparameters(self) -> tuple[LossSpec | None, dict[str, Any]]:
        block = self.configuration_manager.configuration.get("nnunet_ext", {}) or {}
        _reject_unknown("block", block, (*TRAINER_OVERRIDABLE, "loss", *ADDONS))
        block = dict(block)
        attribute_types = {k: type(getattr(self, k)) for k in TRAINER_OVERRIDABLE}
        check_types("block", block, {k: t for k, t in attribute_types.items() if t in (int, float, bool, str)})
        for key in TRAINER_OVERRIDABLE:
            if key in block:
                setattr(self, key, type(getattr(self, key))(block[key]))
        spec = self.loss_spec
        if "loss" in block:
            if spec is None:
                raise ValueError(
                    f"the plans' \"nnunet_ext\" block sets 'loss' but {self.__class__.__name__} uses nnU-Net's own loss"
                )
            _reject_unknown("'loss' entry", block["loss"], loss_parameters(spec.name))
            check_types("'loss' entry", block["loss"], type_hints(LOSSES[spec.name].__init__))
            spec = LossSpec(spec.name, {**spec.kwargs, **block["loss"]})
        configs: dict[str, Any] = {}
        for key in ADDONS:
            cfg = getattr(self, key)
            if key in block:
                if cfg is None:
                    raise ValueError(
                        f'the plans\' "nnunet_ext" block configures {key!r}, which {self.__class__.__name__} does not '
                        "use; remove the entry or pick a trainer with it"
                    )
                _reject_unknown(f"{key!r} entry", block[key], [f.name for f in dataclasses.fields(cfg)])
                check_types(f"{key!r} entry", block[key], type_hints(type(cfg)))
                cfg = dataclasses.replace(cfg, **block[key])
            configs[key] = cfg
        return spec, configs

    def _ext_register_log_keys(self) -> None:
        # MetaLogger asserts keys are registered; a checkpoint without them gets NaN for the epochs already run so
        # that nnU-Net's progress plot (truncated to the shortest list) keeps every epoch.
        logging = log_store(self)
        for addon in self.ext_addons:
            for key in addon.log_keys:
                values = logging.setdefault(key, [])
                values.extend([float("nan")] * (self.current_epoch - len(values)))

    def ext_addon(self, kind: type[TrainerAddon]) -> TrainerAddon | None:
        return next((a for a in self.ext_addons if isinstance(a, kind)), None)

    @property
    def ext_main_epochs(self) -> int:
        """Epochs of the main schedule (SWA fine-tuning epochs excluded)."""
        swa = self.ext_addon(SWAPhase)
        return self.num_epochs - (swa.extra_epochs if swa is not None else 0)

    # ---------------------------------------------------------------------------------------------------------
    # network, loss
    def initialize(self) -> None:
        if not self.was_initialized:
            self._ext_check_supported()
            arch = pydoc.locate(self.configuration_manager.network_arch_class_name)
            supports_ds = getattr(arch, "supports_deep_supervision", None)
            if supports_ds is not None and not supports_ds(self.configuration_manager.network_arch_init_kwargs):
                self.enable_deep_supervision = False
        super().initialize()
        for addon in self.ext_addons:
            addon.setup(self)

    def _ext_check_supported(self) -> None:
        name = self.__class__.__name__
        if self.label_manager.has_ignore_label and (self.ext_loss_spec is not None or self.ext_addons):
            raise NotImplementedError(
                f"{name} does not support datasets with an ignore label (dataset.json 'ignore'); "
                "train with nnUNetTrainer or remove the ignore label"
            )
        if self.is_cascaded:
            raise NotImplementedError(f"{name} does not support cascaded configurations; use 3d_fullres or 2d")
        spec = self.ext_loss_spec
        if spec is not None and self.label_manager.has_regions and not LOSSES[spec.name].supports_regions:
            raise NotImplementedError(
                f"{name}: loss {spec.name!r} is not defined for region datasets (dataset.json labels with lists); "
                "use a softmax label dataset or a loss that supports regions"
            )
        if (
            spec is not None
            and not getattr(LOSSES[spec.name], "supports_label_maps", True)
            and not self.label_manager.has_regions
        ):
            raise ValueError(
                f"{name}: loss {spec.name!r} needs a region dataset, but dataset {self.plans_manager.dataset_name} "
                f"has plain labels {self.dataset_json['labels']}. Declare regions in dataset.json, e.g. "
                '"labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}, '
                '"regions_class_order": [1, 2, 3] (then re-run nnUNetv2_plan_and_preprocess)'
            )
        for addon in self.ext_addons:
            addon.check(self)

    def build_plugin_loss(self, deep_supervision: bool | None = None, **overrides: Any) -> nn.Module:
        """The configured plugin loss, sigmoid for region datasets, wrapped for deep supervision when on."""
        spec = self.ext_loss_spec
        assert spec is not None, "build_plugin_loss needs a loss_spec"
        kwargs = {
            "apply_nonlin": "sigmoid" if self.label_manager.has_regions else "softmax",
            "batch_dice": self.configuration_manager.batch_dice,
            **spec.kwargs,
            **overrides,
            "ddp": self.is_ddp,  # batch-pooled Dice sums are all-gathered across ranks, as in nnU-Net's own Dice
        }
        loss = build_loss(spec.name, **kwargs)
        if self.enable_deep_supervision if deep_supervision is None else deep_supervision:
            loss = wrap_deep_supervision(
                loss, len(deep_supervision_scales(self)), ddp=self.is_ddp and not compiles(self)
            )
        return loss

    def _build_loss(self):
        if self.ext_loss_spec is None:
            return super()._build_loss()
        return self.build_plugin_loss()

    def configure_optimizers(self):
        spec = self.optimizer_spec
        if spec is None:
            return super().configure_optimizers()
        optimizer = spec.build(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        for group in optimizer.param_groups:
            group["initial_lr"] = self.initial_lr
        # the schedule spans the main epochs: initialize() calls this before an SWA add-on extends num_epochs (SWA
        # cycles that reuse the trainer's optimizer keep only the optimizer)
        return optimizer, EpochLR(optimizer, self.initial_lr, self.num_epochs, fn=EPOCH_SCHEDULES[spec.schedule])

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """Set ``decoder.deep_supervision`` on the trained network and, while it is swapped in for validation, on
        the exported module.

        Replaces nnU-Net's method instead of calling it: under DDP nnU-Net reads ``self.network.module``, which the
        bare teacher / SWA average swapped into ``self.network`` does not have. nnU-Net re-enables deep supervision
        unconditionally after validation; networks built without heads stay off.
        """
        flag = enabled and self.enable_deep_supervision
        for module in (self.network, self._ext_validation_swap):
            if module is not None:
                unwrap(module).decoder.deep_supervision = flag

    # ---------------------------------------------------------------------------------------------------------
    # life cycle
    def on_train_start(self) -> None:
        super().on_train_start()
        for addon in self.ext_addons:
            addon.on_train_start(self)

    def on_train_epoch_start(self) -> None:
        for addon in self.ext_addons:
            addon.on_train_epoch_start(self)
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        # skipped (non-finite) steps do not enter the epoch's training loss
        finite = [o for o in train_outputs if np.isfinite(o["loss"]).all()]
        if self._ext_skipped_steps:
            self.print_to_log_file(
                f"{self._ext_skipped_steps} of {len(train_outputs)} training steps skipped (non-finite loss or "
                "gradient): no optimizer step, no teacher / average / history update"
            )
            self._ext_skipped_steps = 0
        super().on_train_epoch_end(finite or train_outputs)
        for addon in self.ext_addons:
            addon.on_train_epoch_end(self)

    def on_epoch_end(self) -> None:
        for addon in self.ext_addons:
            addon.on_epoch_end(self)
        if self.local_rank == 0:
            self._ext_plot_progress()
        super().on_epoch_end()

    def _ext_plot_progress(self) -> None:
        """Companion to nnU-Net's progress.png: one panel per add-on log key (``progress_nnunet_ext.png``)."""
        keys = [k for a in self.ext_addons for k in a.log_keys]
        if not keys:
            return
        from nnunet_ext.training.plots import plot_addon_progress

        path = os.path.join(self.output_folder, "progress_nnunet_ext.png")
        plot_addon_progress(log_store(self), keys, path, title=f"{self.__class__.__name__}: add-on logs")

    def on_train_end(self) -> None:
        for addon in self.ext_addons:
            addon.on_train_end(self)
        super().on_train_end()

    def _ext_exported_module(self) -> nn.Module | None:
        modules = [m for m in (a.exported_module() for a in self.ext_addons) if m is not None]
        # SWA comes last in ADDONS: with a teacher and an SWA average, the SWA average is the export.
        return modules[-1] if modules else None

    def _ext_prepare_export(self) -> None:
        for addon in self.ext_addons:
            addon.before_export(self)

    # Validation (per-epoch pseudo Dice and the final validation) runs on the exported model [D].
    def _ext_swap_in_export(self) -> None:
        if self._ext_validation_swap is not None:
            return
        self._ext_prepare_export()
        exported = self._ext_exported_module()
        if exported is not None:
            self._ext_validation_swap, self.network = self.network, exported

    def _ext_swap_back(self) -> None:
        if self._ext_validation_swap is not None:
            self.network, self._ext_validation_swap = self._ext_validation_swap, None

    def on_validation_epoch_start(self) -> None:
        self._ext_swap_in_export()
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        try:
            super().on_validation_epoch_end(val_outputs)
        finally:
            self._ext_swap_back()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self._ext_swap_in_export()
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self._ext_swap_back()

    # ---------------------------------------------------------------------------------------------------------
    # training step: the one unavoidable copy of nnU-Net's train_step (no after-step hook upstream); guarded by the
    # drift canary in nnunet_ext._nnunet.
    def train_step(self, batch: dict) -> dict:
        data = batch["data"]
        target = batch["target"]
        data = data.to(self.device, non_blocking=True)
        if isinstance(target, list):
            target = [i.to(self.device, non_blocking=True) for i in target]
        else:
            target = target.to(self.device, non_blocking=True)

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            student_in = data
            for addon in self.ext_addons:
                student_in = addon.student_input(self, student_in)
            output = self.network(student_in)
            seg_losses = [
                s for s in (a.segmentation_loss(self, output, target) for a in self.ext_addons) if s is not None
            ]
            assert len(seg_losses) <= 1, "at most one add-on may replace the segmentation loss"
            seg_loss = seg_losses[0] if seg_losses else self.loss(output, target)
            total = seg_loss
            for addon in self.ext_addons:
                extra = addon.extra_loss(self, data, output, target, seg_loss)
                if extra is not None:
                    total = total + extra

        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            # the grad scaler skips the optimizer step on non-finite gradients; the post hook tells whether it ran
            stepped = [False]
            handle = self.optimizer.register_step_post_hook(lambda *_: stepped.__setitem__(0, True))
            try:
                self.grad_scaler.step(self.optimizer)
            finally:
                handle.remove()
            self.grad_scaler.update()
            stepped = stepped[0]
        else:
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            stepped = self._ext_all_ranks_finite(total, grad_norm)
            if stepped:
                self.optimizer.step()
        loss = total.detach().cpu().numpy()
        self._ext_after_step(stepped, loss, seg_loss.detach())
        return {"loss": loss}

    def _ext_all_ranks_finite(self, total: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Without a grad scaler (CPU, MPS): step only if the loss and the gradient norm are finite on every rank.

        The gradients are all-reduced under DDP, so a non-finite loss on one rank shows in every rank's gradient
        norm; the loss flag is reduced as well so that all ranks take the same decision.
        """
        finite = torch.isfinite(total.detach()) & torch.isfinite(grad_norm)
        if self.is_ddp:
            import torch.distributed as dist

            flag = finite.to(torch.int32).reshape(1)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag[0] > 0
        return bool(finite)

    def _ext_after_step(self, stepped: bool, loss: np.ndarray, seg_loss: torch.Tensor) -> None:
        """Add-ons see only steps whose optimizer step ran; a run of non-finite steps stops training."""
        finite = bool(np.isfinite(loss).all())
        if stepped:
            for addon in self.ext_addons:
                addon.after_optimizer_step(self, seg_loss)
        else:
            self._ext_skipped_steps += 1
            for addon in self.ext_addons:
                addon.on_skipped_step(self)
        # a step the AMP grad scaler skipped with a finite loss (fp16 overflow while the scale calibrates) is normal
        nonfinite = not finite or (not stepped and self.grad_scaler is None)
        self._ext_nonfinite_streak = self._ext_nonfinite_streak + 1 if nonfinite else 0
        if self._ext_nonfinite_streak >= MAX_NONFINITE_STEPS:
            raise NonFiniteLossError(
                f"{self._ext_nonfinite_streak} consecutive training steps had a non-finite loss or gradient (last "
                f"loss {loss.tolist()}, epoch {self.current_epoch}); each was skipped, so the network, teacher and "
                "averages are those of the last finite step (checkpoint_latest.pth). Check: the learning rate "
                f'(initial_lr {self.initial_lr:g}; lower it in the plans\' "nnunet_ext" block), the input data '
                "(NaN/inf in images or labels: nnUNetv2_plan_and_preprocess --verify_dataset_integrity), and "
                "torch.compile (set nnUNet_compile=f)."
            )

    # ---------------------------------------------------------------------------------------------------------
    # checkpoints [D]: exported weights under network_weights, student and add-on state under extra keys.
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus the plugin's keys, written atomically.

        super() writes to ``<filename>.part``; the plugin adds its keys to that file, then ``os.replace`` moves it
        over ``filename``, so a kill at any point leaves the previous checkpoint intact.
        """
        self._ext_prepare_export()  # on every rank: a BatchNorm refresh of an average may synchronise ranks
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # nothing written (nnU-Net prints why)
            return
        partial = f"{filename}.part"
        super().save_checkpoint(partial)
        if self.ext_addons or self.ext_loss_spec is not None:
            checkpoint = torch.load(partial, map_location="cpu", weights_only=False)
            exported = self._ext_exported_module()
            if exported is not None:
                checkpoint[STUDENT_KEY] = checkpoint["network_weights"]
                checkpoint["network_weights"] = unwrap(exported).state_dict()
            states: dict[str, Any] = {LOSS_STATE_KEY: self._ext_loss_state()}
            for addon in self.ext_addons:
                states[addon.config_key] = state = addon.state_dict()
                averaged = addon.exported_module()
                if averaged is not None and averaged is not exported:  # e.g. the teacher while SWA is the export
                    state["averaged_weights"] = unwrap(averaged).state_dict()
            checkpoint[STATE_KEY] = states
            torch.save(checkpoint, partial)
        os.replace(partial, filename)

    def _ext_loss_state(self) -> dict | None:
        spec = self.ext_loss_spec
        return None if spec is None else {"name": spec.name, "kwargs": dict(spec.kwargs)}

    def _ext_check_resumed_configuration(self, states: Mapping[str, Any], filename: str) -> None:
        """Refuse to continue a checkpoint whose add-on or loss configuration differs from the current plans."""
        differences = []
        stored_loss = states.get(LOSS_STATE_KEY, self._ext_loss_state())
        if stored_loss != self._ext_loss_state():
            differences.append(f"loss: checkpoint {stored_loss}, now {self._ext_loss_state()}")
        for addon in self.ext_addons:
            stored = (states.get(addon.config_key) or {}).get("config")
            if stored is None:
                continue
            current = dataclasses.asdict(addon.config)
            # a key added to the config after the checkpoint was written counts as its default then
            defaults = {
                f.name: f.default for f in dataclasses.fields(addon.config) if f.default is not dataclasses.MISSING
            }
            for key in sorted(set(stored) | set(current)):
                before = stored.get(key, defaults.get(key))
                if before != current.get(key):
                    differences.append(f"{addon.config_key}.{key}: checkpoint {before!r}, now {current.get(key)!r}")
        if differences:
            raise ValueError(
                f"{filename} was trained with another nnunet_ext configuration than the current plans give "
                f'({"; ".join(differences)}). Set these values back in the plans\' "nnunet_ext" block to continue '
                "this training, or start a new training (without --c) for the new values."
            )

    def load_checkpoint(self, filename_or_checkpoint: str) -> None:
        if not isinstance(filename_or_checkpoint, str):
            # nnU-Net 2.8.1 raises UnboundLocalError for dicts; fail with a message instead.
            raise TypeError(f"load_checkpoint takes a checkpoint path, got {type(filename_or_checkpoint).__name__}")
        if not self.was_initialized:
            self.initialize()
        # read once; nnU-Net's load_checkpoint (which accepts only a path) is served the same dict
        checkpoint = torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        self._ext_check_resumed_configuration(checkpoint.get(STATE_KEY, {}), filename_or_checkpoint)
        with serve_loaded_checkpoint(filename_or_checkpoint, checkpoint):
            super().load_checkpoint(filename_or_checkpoint)
        exported_weights = checkpoint["network_weights"]
        if STUDENT_KEY in checkpoint:
            unwrap(self.network).load_state_dict(checkpoint[STUDENT_KEY])
        states = checkpoint.get(STATE_KEY, {})
        for addon in self.ext_addons:
            state = states.get(addon.config_key)
            weights = state.get("averaged_weights", exported_weights) if state else exported_weights
            addon.load_state_dict(state, self, weights)
        self._ext_register_log_keys()  # the logger's dict was replaced by the checkpoint's

    # ---------------------------------------------------------------------------------------------------------
    def ext_log(self, key: str, value: float) -> None:
        """Log one value for the current epoch under a registered add-on key."""
        self.logger.log(key, float(value) if value is not None else float(np.nan), self.current_epoch)
