"""Helpers shared by trainer tests: a plugin trainer on a preprocessed test dataset, and a random batch for it.

Importable as ``trainer_helpers`` because the suite runs from ``tests/`` (``cd tests && python -m pytest``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nnunet_ext.trainers import nnunet_ext_trainers as declared
from nnunet_ext.training.base import ExtTrainerBase


def named_trainers() -> dict[str, type]:
    return {
        n: c
        for n, c in vars(declared).items()
        if isinstance(c, type) and issubclass(c, ExtTrainerBase) and c is not ExtTrainerBase
    }


def make_trainer(dataset, name: str, device: str = "cpu", *, configuration="2d", plans_hook=None, **block):
    """``name`` built as nnUNetv2_train builds it (in-memory plans, ``block`` as its "nnunet_ext" block), initialised.

    ``plans_hook(plans) -> plans`` may edit the plans first (e.g. add a COPLE-Net configuration).
    """
    from nnunetv2.paths import nnUNet_preprocessed

    pre = Path(nnUNet_preprocessed) / dataset.name
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    if plans_hook is not None:
        plans = plans_hook(plans)
    if block:
        plans["configurations"][configuration]["nnunet_ext"] = block
    plans["continue_training"] = False
    dataset_json = json.loads((pre / "dataset.json").read_text())
    cls = named_trainers()[name]
    trainer = cls(
        plans=plans, configuration=configuration, fold=0, dataset_json=dataset_json, device=torch.device(device)
    )
    trainer.initialize()
    return trainer


def random_batch(trainer, seed=0):
    g = torch.Generator().manual_seed(seed)
    patch = trainer.configuration_manager.patch_size
    data = torch.randn(2, 1, *patch, generator=g)
    seg = (torch.rand(2, 1, *patch, generator=g) > 0.7).float()
    if not trainer.enable_deep_supervision:
        return {"data": data, "target": seg}
    targets = []
    for scale in trainer._get_deep_supervision_scales():
        size = [round(p * s) for p, s in zip(patch, scale)]
        targets.append(torch.nn.functional.interpolate(seg, size=size, mode="nearest-exact"))
    return {"data": data, "target": targets}
