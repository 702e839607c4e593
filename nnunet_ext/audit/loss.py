"""The trainer's own loss evaluated on a saved out-of-fold prediction against the case's training label.

Which loss: the one the trainer optimised, without deep supervision, built by the trainer itself from the model
folder's ``plans.json`` and ``dataset.json``:

- plugin trainers with a ``loss_spec`` (NR-Dice, GCE, region Dice, ...): ``build_plugin_loss(deep_supervision=False)``
  (softmax for label maps, sigmoid for region datasets, the plans' ``"nnunet_ext"`` loss overrides applied);
- every other trainer (stock ``nnUNetTrainer``: Dice + CE, region datasets Dice + BCE; plugin trainers without a
  ``loss_spec``, which keep nnU-Net's loss): the trainer's ``loss`` after nnU-Net's ``initialize()`` with deep
  supervision off. ``initialize()`` also builds the network (on the CPU) and looks at the preprocessed data folder,
  so ``nnUNet_preprocessed`` must hold the dataset's preprocessed configuration; without it the loss is not computed
  and the audit says why.

What it is computed on (recorded per case in the ``loss_on`` column):

- ``probabilities``: nnU-Net's ``.npz`` of the validation (``nnUNetv2_train ... --val --npz``, or
  ``perform_actual_validation(True)``): softmax probabilities p (label maps) or sigmoid probabilities (regions) in the
  image's geometry. They are passed to the loss as logits z = log max(p, ε) (softmax(z) = p) or
  z = log(p′ / (1 − p′)), p′ = clip(p, ε, 1 − ε) (sigmoid(z) = p′), ε = :data:`PROBABILITY_EPS`;
- ``one_hot``: without probabilities, the saved segmentation as 0/1 probabilities through the same transform: the
  cross-entropy term is then −log ε ≈ 13.8 times the fraction of voxels whose label the prediction contradicts, the
  Dice term 1 − the hard Dice (up to the smoothing). Values on ``one_hot`` cases are comparable with each other, not
  with ``probabilities`` cases.

The whole case is one sample (batch of one, all its voxels at the image's resolution): for a 2-D configuration of
3-D volumes the Dice terms pool all slices, as ``batch_dice`` pools a batch of slices in training.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from nnunet_ext.evaluation.metrics import LabelOrRegion, region_mask

PROBABILITY_EPS: Final[float] = 1e-6
"""Probabilities are clipped to [ε, 1 − ε] before they become logits (a one-hot prediction would give ±inf)."""

LossInput = Literal["probabilities", "one_hot"]


@dataclass
class TrainerLoss:
    """A trainer's loss module, ready for :func:`case_loss`.

    Attributes:
        module: ``forward(logits [1, C, ...], target)`` as in training.
        nonlin: ``softmax`` (label maps; target the label map ``[1, 1, ...]``) or ``sigmoid`` (regions; target the
            region masks ``[1, R, ...]``).
        num_channels: C (classes including background, or regions).
        classes: The foreground labels or regions, dataset.json order (regions: the channel order).
        description: What the loss is, for the report.
    """

    module: Any
    nonlin: Literal["softmax", "sigmoid"]
    num_channels: int
    classes: tuple[LabelOrRegion, ...]
    description: str


def build_trainer_loss(
    trainer: str, plans: Mapping[str, Any], dataset_json: Mapping[str, Any], configuration: str
) -> TrainerLoss:
    """Build the loss trainer ``trainer`` trains with (module docstring), on the CPU.

    Args:
        trainer: Trainer class name (nnU-Net's lookup, the plugin's trainers included).
        plans: The model folder's ``plans.json``.
        dataset_json: The model folder's ``dataset.json``.
        configuration: The configuration the model was trained with.

    Raises:
        ValueError: Unknown trainer, or a configuration the plans lack.
        FileNotFoundError: A trainer whose loss needs ``initialize()`` when the preprocessed data folder is missing.
    """
    import torch
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunet_ext.benchmark.provenance import nnunet_results, temporary_env
    from nnunet_ext.benchmark.train import find_trainer_class, is_plugin_trainer
    from nnunet_ext.evaluation.io import label_definition

    cls = find_trainer_class(trainer)
    available = sorted(plans.get("configurations") or {})
    if configuration not in available:
        raise ValueError(
            f"configuration {configuration!r} is not in the model folder's plans.json (it has {available}), so "
            f"{trainer}'s loss cannot be built; restore the plans.json nnUNetv2_train wrote, or pass --no-loss"
        )
    label_manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    label_def = label_definition(dataset_json)
    nonlin: Literal["softmax", "sigmoid"] = "sigmoid" if label_manager.has_regions else "softmax"

    def construct(trainer_class: type):
        return trainer_class(
            plans={**dict(plans), "continue_training": False},
            configuration=configuration,
            fold=0,
            dataset_json=dict(dataset_json),
            device=torch.device("cpu"),
        )

    # the constructor creates its output folder and logs: keep both out of the real results folder
    with (
        tempfile.TemporaryDirectory(prefix="nnunet_ext_audit_") as scratch,
        nnunet_results(scratch),
        temporary_env("nnUNet_compile", "f"),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        instance = construct(cls)
        spec = getattr(instance, "ext_loss_spec", None) if is_plugin_trainer(cls) else None
        if spec is not None:
            module = instance.build_plugin_loss(deep_supervision=False)
            description = f"{trainer}'s plugin loss {spec.name!r} {dict(spec.kwargs)} ({nonlin}, no deep supervision)"
        else:
            if is_plugin_trainer(cls):  # no loss_spec: the base keeps nnU-Net's loss, built without the add-ons
                from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

                instance = construct(nnUNetTrainer)
            folder = instance.preprocessed_dataset_folder
            if folder is None or not nnUNet_preprocessed.is_set() or not _has_files(folder):
                raise FileNotFoundError(
                    f"{trainer}'s loss is built by nnU-Net's initialize(), which needs the preprocessed data "
                    f"({folder or 'nnUNet_preprocessed is not set'}); set nnUNet_preprocessed to the folder holding "
                    f"the preprocessed {instance.plans_manager.dataset_name} (or pass --no-loss)"
                )
            instance.enable_deep_supervision = False
            instance.initialize()
            module = instance.loss
            description = f"{trainer}'s loss {type(module).__name__} (nnU-Net's, {nonlin}, no deep supervision)"
    module.eval()
    return TrainerLoss(
        module, nonlin, int(label_manager.num_segmentation_heads), tuple(label_def.labels_or_regions), description
    )


def _has_files(folder: str) -> bool:
    return os.path.isdir(folder) and any(os.scandir(folder))


def loss_inputs(
    loss: TrainerLoss,
    label: np.ndarray,
    prediction: np.ndarray,
    probabilities: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, LossInput]:
    """(logits ``[1, C, ...]``, target, source) for :func:`case_loss` (float32 arrays).

    Args:
        loss: The trainer's loss.
        label: The given label map (spatial shape S).
        prediction: The saved predicted label map (shape S), used when ``probabilities`` is None.
        probabilities: nnU-Net's saved probabilities ``(C, ...)`` with as many voxels as S, or None.

    Raises:
        ValueError: If the probabilities do not fit the label (channels or voxels).
    """
    shape = label.shape
    if probabilities is not None:
        p = np.asarray(probabilities, dtype=np.float32)
        if p.shape[0] != loss.num_channels or p[0].size != label.size:
            raise ValueError(
                f"saved probabilities of shape {p.shape} do not fit {loss.num_channels} channels and the label's "
                f"shape {shape}; re-run the validation with --npz"
            )
        p = p.reshape((loss.num_channels, *shape))
        source: LossInput = "probabilities"
    else:
        if loss.nonlin == "sigmoid":
            p = np.stack([region_mask(prediction, r) for r in loss.classes]).astype(np.float32)
        else:
            p = np.stack([prediction == c for c in range(loss.num_channels)]).astype(np.float32)
        source = "one_hot"
    if loss.nonlin == "sigmoid":
        q = np.clip(p, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
        logits = np.log(q) - np.log1p(-q)
        target = np.stack([region_mask(label, r) for r in loss.classes]).astype(np.float32)
    else:
        logits = np.log(np.maximum(p, PROBABILITY_EPS))
        target = np.asarray(label, dtype=np.float32)[None]
    return logits[None].astype(np.float32), target[None], source


def case_loss(
    loss: TrainerLoss, label: np.ndarray, prediction: np.ndarray, probabilities: np.ndarray | None
) -> tuple[float, LossInput]:
    """The loss of one case (module docstring) and what it was computed on.

    Identities pinned by tests: for nnU-Net's Dice + CE on probabilities, CE equals the hand-computed
    −mean log p_label and the Dice term nnU-Net's soft Dice of p.
    """
    import torch

    logits, target, source = loss_inputs(loss, label, prediction, probabilities)
    with torch.no_grad():
        value = loss.module(torch.from_numpy(logits), torch.from_numpy(target))
    value = float(value.mean()) if value.ndim else float(value)
    return (value if math.isfinite(value) else math.nan), source
