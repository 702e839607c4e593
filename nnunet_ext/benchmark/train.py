"""Training one benchmark model through nnU-Net's Python API, resumably.

A trainer is found by name with nnU-Net's own lookup (its tree first, then ``nnUNet_extTrainer``, to which the
plugin's folder is appended), built as ``nnUNetv2_train`` builds it, given the optional short budget on the instance,
seeded, and trained with ``run_training()`` (then nnU-Net's final validation unless skipped). Models trained here
carry ``nnunet_ext_training.json`` (budget, seed, overrides); reusing one trained with other settings raises, and a
model trained outside the benchmark (no record) is reused as it is.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from nnunet_ext._registration import register_trainer_folder
from nnunet_ext.benchmark.datasets import dataset_name
from nnunet_ext.benchmark.provenance import (
    console_to,
    nnunet_results,
    resolve_device,
    seed_everything,
    utc_now,
    versions,
    write_json_atomic,
)
from nnunet_ext.benchmark.spec import TrainingBudget, did_you_mean

logger = logging.getLogger(__name__)

TRAINING_RECORD = "nnunet_ext_training.json"
CHECKPOINT = "checkpoint_final.pth"
CHECKPOINT_FILES: dict[str, str] = {"final": CHECKPOINT, "best": "checkpoint_best.pth"}
"""``--checkpoint`` choice -> nnU-Net's checkpoint file in the fold folder (``best``: best EMA pseudo Dice on
nnU-Net's validation split, i.e. on the possibly noisy training labels)."""
Checkpoint = Literal["final", "best"]


@functools.cache
def find_trainer_class(name: str) -> type:
    """A trainer class by name through nnU-Net's own lookup (nnU-Net's tree first, then ``nnUNet_extTrainer``)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    register_trainer_folder()
    with contextlib.redirect_stdout(io.StringIO()):  # the lookup prints every module it inspects
        try:
            return recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            from nnunet_ext.trainers import nnunet_ext_trainers

            known = ["nnUNetTrainer", *(n for n in vars(nnunet_ext_trainers) if n.endswith("Trainer"))]
            raise ValueError(
                f"trainer {name!r} not found in nnU-Net or nnunet_ext; use a stock nnU-Net trainer or one of the "
                f"plugin trainers {known[1:]}{did_you_mean(name, known)}"
            ) from None


def model_folder(results_dir: str | os.PathLike, dataset: str, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's model folder ``<results>/<Dataset>/<trainer>__<plans>__<configuration>``."""
    return Path(results_dir) / dataset_name(dataset) / f"{trainer}__{plans}__{configuration}"


def load_plans(dataset: str, plans: str, configuration: str) -> tuple[dict, dict]:
    """The plans and ``dataset.json`` of a preprocessed dataset; raises for missing files or configurations."""
    from nnunetv2.paths import nnUNet_preprocessed

    if not nnUNet_preprocessed.is_set():
        raise FileNotFoundError(
            "nnUNet_preprocessed is not set; export nnUNet_preprocessed=<folder> (nnU-Net's preprocessed data)"
        )
    folder = Path(nnUNet_preprocessed.get()) / dataset_name(dataset)
    plans_file = folder / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(
            f"plans {plans_file} not found; run nnUNetv2_plan_and_preprocess -d {dataset} first (or fix -p {plans})"
        )
    plans_dict = json.loads(plans_file.read_text())
    configurations = plans_dict["configurations"]
    if configuration not in configurations:
        raise ValueError(
            f"configuration {configuration!r} not in {plans_file}; pass -c with a planned configuration (or add one "
            f"with nnunet-ext add-config){did_you_mean(configuration, configurations)} "
            f"Available: {sorted(configurations)}"
        )
    return plans_dict, json.loads((folder / "dataset.json").read_text())


def is_plugin_trainer(cls: type) -> bool:
    """True for subclasses of ``ExtTrainerBase`` (compared by name: the lookup loads its own module copy)."""
    return any(c.__name__ == "ExtTrainerBase" for c in cls.__mro__)


def merge_ext_block(block: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` merged into a plans ``"nnunet_ext"`` block (add-on entries merged key by key)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (block or {}).items()}
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def build_trainer(
    trainer: str,
    dataset: str,
    configuration: str,
    fold: int | str,
    *,
    plans: str = "nnUNetPlans",
    device: str | torch.device = "auto",
    budget: TrainingBudget | None = None,
    ext_overrides: Mapping[str, Any] | None = None,
):
    """Construct a trainer as ``nnUNetv2_train`` does (Python API), then apply ``budget`` on the instance.

    Works for stock nnU-Net trainers and plugin trainers alike; the budget must be set before ``initialize()``
    (PolyLRScheduler captures ``num_epochs``, SWA extends it), which ``run_training()`` calls. ``ext_overrides``
    are merged into the configuration's ``"nnunet_ext"`` block of the in-memory plans (plugin trainers only).
    """
    plans_dict, dataset_json = load_plans(dataset, plans, configuration)
    plans_dict["continue_training"] = False
    cls = find_trainer_class(trainer)
    if ext_overrides:
        if not is_plugin_trainer(cls):
            raise ValueError(
                f'{trainer} is not an nnunet_ext trainer and ignores the plans\' "nnunet_ext" block; remove its '
                "trainer_overrides"
            )
        cfg = plans_dict["configurations"][configuration]
        cfg["nnunet_ext"] = merge_ext_block(cfg.get("nnunet_ext"), ext_overrides)
    instance = cls(
        plans=plans_dict,
        configuration=configuration,
        fold=fold,
        dataset_json=dataset_json,
        device=resolve_device(device),
    )
    if budget is not None:
        budget.apply(instance)
    return instance


@dataclass(frozen=True)
class TrainedModel:
    """A model folder with one trained fold; ``trained`` is False when an existing checkpoint was reused."""

    model_dir: Path
    fold: int | str
    trained: bool
    wall_s: float
    record: dict[str, Any] | None

    @property
    def fold_dir(self) -> Path:
        return self.model_dir / f"fold_{self.fold}"


def _training_record(
    trainer, dataset, configuration, fold, plans, budget: TrainingBudget, seed: int, ext_overrides=None
) -> dict:
    return {
        "trainer": trainer,
        "dataset": dataset_name(dataset),
        "configuration": configuration,
        "fold": fold,
        "plans": plans,
        "budget": budget.as_dict(),
        "seed": seed,
        "ext_overrides": dict(ext_overrides or {}),
    }


def _check_reusable(fold_dir: Path, expected: dict) -> dict | None:
    record_file = fold_dir / TRAINING_RECORD
    if not record_file.is_file():
        logger.warning("reusing %s, trained outside the benchmark (no %s)", fold_dir / CHECKPOINT, TRAINING_RECORD)
        return None
    record = json.loads(record_file.read_text())
    compared = ("budget", "seed", "ext_overrides")
    differs = {k: (record.get(k, {}), v) for k, v in expected.items() if k in compared and record.get(k, {}) != v}
    if differs:
        raise ValueError(
            f"{fold_dir} holds a model trained with other settings (recorded vs requested: {differs}); pass "
            "--overwrite to retrain it or use another output folder / results_dir"
        )
    return record


def remove_model_fold(fold_dir: Path) -> None:
    """Delete a fold folder trained by the benchmark; refuse for models trained outside it."""
    if not fold_dir.exists():
        return
    if (fold_dir / CHECKPOINT).is_file() and not (fold_dir / TRAINING_RECORD).is_file():
        raise ValueError(
            f"--overwrite would delete {fold_dir}, which was not trained by the benchmark; remove it yourself if "
            "that is intended"
        )
    shutil.rmtree(fold_dir)


def train_model(
    trainer: str,
    dataset: str,
    configuration: str,
    fold: int | str,
    *,
    plans: str = "nnUNetPlans",
    device: str | torch.device = "auto",
    budget: TrainingBudget | None = None,
    seed: int = 0,
    skip_final_validation: bool = False,
    results_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    log_file: str | os.PathLike | None = None,
    ext_overrides: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Train one fold unless its ``checkpoint_final.pth`` exists (then check and reuse it).

    Args:
        trainer: Trainer class name.
        dataset: Dataset id or name.
        configuration: nnU-Net configuration.
        fold: Fold (int or ``"all"``).
        plans: Plans identifier.
        device: ``auto``, ``cpu``, ``cuda``, ``mps`` or a ``torch.device``.
        budget: Short budget set on the trainer instance.
        seed: Seed set right before the trainer is built.
        skip_final_validation: Skip nnU-Net's ``perform_actual_validation``.
        results_dir: ``nnUNet_results`` for this training (None: the environment's).
        overwrite: Retrain (deletes the fold folder if the benchmark trained it).
        log_file: Where nnU-Net's console output goes (None: the console).
        ext_overrides: Entries merged into the plans' ``"nnunet_ext"`` block (see :func:`build_trainer`).

    Returns:
        A :class:`TrainedModel`.
    """
    from nnunetv2.paths import nnUNet_results as results_env

    budget = budget if budget is not None else TrainingBudget()
    with nnunet_results(results_dir):
        root = Path(results_env.require())
    name = dataset_name(dataset)
    folder = model_folder(root, name, trainer, plans, configuration)
    fold_dir = folder / f"fold_{fold}"
    expected = _training_record(trainer, name, configuration, fold, plans, budget, seed, ext_overrides)
    if overwrite:
        remove_model_fold(fold_dir)
    elif (fold_dir / CHECKPOINT).is_file():
        record = _check_reusable(fold_dir, expected)
        return TrainedModel(folder, fold, False, 0.0, record)

    start = time.perf_counter()
    with nnunet_results(root), console_to(log_file):
        seed_everything(seed)
        instance = build_trainer(
            trainer, name, configuration, fold, plans=plans, device=device, budget=budget, ext_overrides=ext_overrides
        )
        if torch.cuda.is_available() and instance.device.type == "cuda":
            torch.backends.cudnn.deterministic = False
            torch.backends.cudnn.benchmark = True
        instance.run_training()
        if not skip_final_validation:
            instance.perform_actual_validation(False)
        trained_dir = Path(instance.output_folder)
    assert trained_dir == fold_dir, f"nnU-Net trained into {trained_dir}, expected {fold_dir}"
    wall = time.perf_counter() - start
    record = {
        **expected,
        "effective": {
            "num_epochs": int(instance.num_epochs),
            "num_iterations_per_epoch": int(instance.num_iterations_per_epoch),
            "num_val_iterations_per_epoch": int(instance.num_val_iterations_per_epoch),
        },
        "device": str(instance.device),
        "final_validation": not skip_final_validation,
        "wall_s": wall,
        "finished": utc_now(),
        "versions": versions(),
    }
    write_json_atomic(record, fold_dir / TRAINING_RECORD)
    del instance
    return TrainedModel(folder, fold, True, wall, record)
