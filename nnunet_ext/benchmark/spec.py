"""The benchmark run matrix: trainers x datasets x configurations x folds x seeds, plus budget and evaluation settings.

A :class:`BenchmarkSpec` comes from ``nnunet-ext benchmark`` flags or from a JSON file whose keys are the field names
below (unknown keys are rejected with a did-you-mean hint)::

    {"trainers": ["NRDiceTrainer", "NRDiceAdaptiveMTTrainer"], "datasets": [502], "configurations": ["2d"],
     "folds": [0], "num_epochs": 50, "num_iterations_per_epoch": 100, "references": {"502": "/data/clean/labelsTs"}}

The baseline trainer (default stock ``nnUNetTrainer``) is always part of the matrix: it is put first when missing.
Each cell of the matrix (:class:`RunKey`: dataset, configuration, trainer, fold, seed; and the spec's checkpoint) is
trained, predicted and evaluated on its own, resumably; :meth:`BenchmarkSpec.runs` fixes their order, which is also
the ``--cell`` index of cluster job arrays.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nnunet_ext.evaluation.lesions import DEFAULT_SIZE_EDGES_CC, check_size_edges
from nnunet_ext.evaluation.metrics import METRIC_KEYS

Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
Checkpoint = Literal["final", "best"]
CHECKPOINTS: tuple[str, ...] = ("final", "best")
DEFAULT_METRICS: tuple[str, ...] = ("Dice", "HD95_mm", "RVE")


def did_you_mean(value: str, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _str_tuple(name: str, values: Any, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(values, (str, int)):
        values = (values,)
    out = tuple(str(v) for v in values)
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    duplicates = sorted({v for v in out if out.count(v) > 1})
    if duplicates:
        raise ValueError(f"{name} lists {duplicates} more than once")
    return out


def parse_fold(value: Any) -> int | str:
    if value == "all":
        return "all"
    try:
        fold = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"folds must be integers >= 0 or 'all', got {value!r}") from None
    if fold < 0 or str(fold) != str(value).strip():
        raise ValueError(f"folds must be integers >= 0 or 'all', got {value!r}")
    return fold


def _seed(value: Any, name: str = "seed") -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise ValueError(f"{name} must be an integer >= 0, got {value!r}; give seeds as whole numbers, e.g. 0 1 2")


def _optional_positive_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1 (or null for nnU-Net's default), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TrainingBudget:
    """A short training budget set on the trainer instance after construction (None keeps the trainer's value).

    SWA trainers add their fine-tuning epochs on top of ``num_epochs`` (SWA extends the schedule in
    ``initialize()``, which runs after the budget is applied).

    Attributes:
        num_epochs: nnU-Net's ``num_epochs`` (1000 by default).
        num_iterations_per_epoch: nnU-Net's ``num_iterations_per_epoch`` (250).
        num_val_iterations_per_epoch: nnU-Net's ``num_val_iterations_per_epoch`` (50).
    """

    num_epochs: int | None = None
    num_iterations_per_epoch: int | None = None
    num_val_iterations_per_epoch: int | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _optional_positive_int(f.name, getattr(self, f.name)))

    def as_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    def apply(self, trainer: Any) -> None:
        """Set the non-None values on a constructed, not yet initialized trainer."""
        if getattr(trainer, "was_initialized", False):
            raise RuntimeError(
                "the training budget must be applied before trainer.initialize() (PolyLRScheduler and SWA read "
                "num_epochs there); build the trainer, apply the budget, then run_training()"
            )
        for key, value in self.as_dict().items():
            if value is not None:
                setattr(trainer, key, value)


@dataclass(frozen=True)
class BenchmarkSpec:
    """What to train, predict and evaluate.

    Attributes:
        trainers: Trainer class names (stock or plugin). The baseline is added first when missing.
        datasets: Dataset ids or names as for ``nnUNetv2_train -d`` (kept as strings).
        configurations: nnU-Net configurations, e.g. ``2d`` or ``2d_coplenet``.
        folds: Folds to train (integers or ``"all"``); per case, the metrics of the folds are averaged.
        baseline: Trainer every other trainer is tested against.
        plans: Plans identifier (``-p``).
        num_epochs: Budget override (None: the trainer's own value).
        num_iterations_per_epoch: Budget override.
        num_val_iterations_per_epoch: Budget override.
        skip_final_validation: Skip nnU-Net's ``perform_actual_validation`` (it scores the noisy training labels).
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``mps``.
        seed: Seed of ``random``, ``numpy`` and ``torch``, set before every run of a one-seed benchmark (the first
            of ``seeds`` otherwise).
        seeds: Seeds to train every (dataset, configuration, trainer, fold) with; empty: ``(seed,)``. With several,
            each seed's models live under ``<results>/seed_<s>/`` and its runs under ``runs/.../seed_<s>/``; one
            seed keeps the plain layout.
        checkpoint: ``final`` (``checkpoint_final.pth``) or ``best`` (``checkpoint_best.pth``: best EMA pseudo Dice
            on nnU-Net's validation split) predicts the test images; both come from one trained model.
        test_images: Dataset -> folder of test images (default ``$nnUNet_raw/<dataset>/imagesTs``).
        references: Dataset -> folder of the **clean** reference labels (default ``$nnUNet_raw/<dataset>/labelsTs``).
        metrics: Metrics in the report, tests and box plots (keys of ``nnunet_ext.evaluation.metrics.METRIC_KEYS``).
        size_edges_cc: Lesion-size group edges in cc.
        brats_empty: HD95 373.12866 mm instead of NaN when exactly one mask is empty.
        disable_tta: Predict without mirroring.
        tile_step_size: Sliding-window step as a fraction of the patch size.
        num_processes: Worker processes for prediction and evaluation; 0 runs both in this process.
        results_dir: Where models are trained (``nnUNet_results`` layout); None: ``<output>/nnUNet_results``.
        trainer_overrides: Trainer -> entries merged into the plans' ``"nnunet_ext"`` block of that trainer's
            configuration, in memory (plugin trainers only; e.g. ``{"NRDiceAdaptiveMTTrainer": {"mean_teacher":
            {"ema_late": 0.99}}}`` for a short budget). The model folder's ``plans.json`` records them.
    """

    trainers: tuple[str, ...]
    datasets: tuple[str, ...]
    configurations: tuple[str, ...] = ("2d",)
    folds: tuple[int | str, ...] = (0,)
    baseline: str = "nnUNetTrainer"
    plans: str = "nnUNetPlans"
    num_epochs: int | None = None
    num_iterations_per_epoch: int | None = None
    num_val_iterations_per_epoch: int | None = None
    skip_final_validation: bool = False
    device: Device = "auto"
    seed: int = 0
    seeds: tuple[int, ...] = ()
    checkpoint: Checkpoint = "final"
    test_images: Mapping[str, str] = field(default_factory=dict)
    references: Mapping[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    size_edges_cc: tuple[float, ...] = DEFAULT_SIZE_EDGES_CC
    brats_empty: bool = False
    disable_tta: bool = False
    tile_step_size: float = 0.5
    num_processes: int = 0
    results_dir: str | None = None
    trainer_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        setf = object.__setattr__
        trainers = _str_tuple("trainers", self.trainers)
        for name in (*trainers, str(self.baseline)):
            if not name.isidentifier() or "__" in name:
                raise ValueError(
                    f"trainer name {name!r} is not a class name (identifier without '__', as nnU-Net requires)"
                )
        if self.baseline not in trainers:
            trainers = (str(self.baseline), *trainers)
        setf(self, "trainers", trainers)
        setf(self, "datasets", _str_tuple("datasets", self.datasets))
        setf(self, "configurations", _str_tuple("configurations", self.configurations))
        folds = tuple(parse_fold(f) for f in ((self.folds,) if isinstance(self.folds, (int, str)) else self.folds))
        if not folds or len(set(folds)) != len(folds):
            raise ValueError(f"folds must be a non-empty list without repeats, got {list(folds)}")
        setf(self, "folds", folds)
        budget = self.budget  # validates the three budget fields
        for key, value in budget.as_dict().items():
            setf(self, key, value)
        if self.device not in DEVICES:
            raise ValueError(
                f"device must be one of {DEVICES}, got {self.device!r}{did_you_mean(self.device, DEVICES)}"
            )
        seed = _seed(self.seed)
        raw_seeds = (self.seeds,) if isinstance(self.seeds, (int, str)) else tuple(self.seeds or ())
        seeds = tuple(_seed(v, "seeds") for v in raw_seeds)
        repeated = sorted({v for v in seeds if seeds.count(v) > 1})
        if repeated:
            raise ValueError(f"seeds lists {repeated} more than once; give each seed once")
        if not seeds:
            seeds = (seed,)
        elif seed not in (0, seeds[0]):
            raise ValueError(f"seed {seed} and seeds {list(seeds)} disagree; give only one of them")
        setf(self, "seed", seeds[0])
        setf(self, "seeds", seeds)
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(
                f"checkpoint must be one of {CHECKPOINTS}, got {self.checkpoint!r}"
                + did_you_mean(self.checkpoint, CHECKPOINTS)
            )
        overrides = dict(self.trainer_overrides or {})
        for trainer, block in overrides.items():
            if trainer not in trainers:
                raise ValueError(
                    f"trainer_overrides names {trainer!r}, which is not in trainers {list(trainers)}"
                    + did_you_mean(trainer, trainers)
                )
            if not isinstance(block, Mapping):
                raise ValueError(f"trainer_overrides[{trainer!r}] must be a JSON object, got {block!r}")
        setf(self, "trainer_overrides", {str(k): json.loads(json.dumps(v)) for k, v in overrides.items()})
        for name in ("test_images", "references"):
            mapping = dict(getattr(self, name) or {})
            unknown = [k for k in mapping if str(k) not in self.datasets]
            if unknown:
                raise ValueError(
                    f"{name} names dataset(s) {unknown} that are not in datasets {list(self.datasets)}"
                    + did_you_mean(unknown[0], self.datasets)
                )
            setf(self, name, {str(k): str(v) for k, v in mapping.items()})
        metrics = _str_tuple("metrics", self.metrics)
        for m in metrics:
            if m not in METRIC_KEYS:
                raise ValueError(f"unknown metric {m!r}{did_you_mean(m, METRIC_KEYS)} Known: {list(METRIC_KEYS)}")
        setf(self, "metrics", metrics)
        setf(self, "size_edges_cc", check_size_edges(self.size_edges_cc))
        if not (isinstance(self.tile_step_size, (int, float)) and 0 < self.tile_step_size <= 1):
            raise ValueError(f"tile_step_size must be in (0, 1], got {self.tile_step_size!r}")
        if (
            isinstance(self.num_processes, bool)
            or int(self.num_processes) != self.num_processes
            or self.num_processes < 0
        ):
            raise ValueError(f"num_processes must be an integer >= 0, got {self.num_processes!r}")
        for name in ("skip_final_validation", "brats_empty", "disable_tta"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def budget(self) -> TrainingBudget:
        return TrainingBudget(self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch)

    @property
    def multi_seed(self) -> bool:
        """Several seeds: models and runs live in per-seed folders."""
        return len(self.seeds) > 1

    def runs(self) -> list[RunKey]:
        """Every cell, ordered dataset, configuration, fold, seed, then trainer (baseline first)."""
        return [
            RunKey(d, c, t, f, s, self.checkpoint)
            for d in self.datasets
            for c in self.configurations
            for f in self.folds
            for s in self.seeds
            for t in self.trainers
        ]

    # ---------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``from_dict(to_dict())`` gives an equal spec."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkSpec:
        """Build from a mapping with the field names as keys; unknown keys raise with a did-you-mean hint."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a benchmark spec must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ValueError(f"unknown benchmark spec key {key!r}{did_you_mean(key, names)} Allowed: {names}")
        missing = [k for k in ("trainers", "datasets") if k not in data]
        if missing:
            raise ValueError(f"benchmark spec lacks the required key(s) {missing}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BenchmarkSpec:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"benchmark spec {path} is not valid JSON: {err}") from err
        return cls.from_dict(data)


@dataclass(frozen=True)
class RunKey:
    """One cell of the run matrix; ``checkpoint`` names the checkpoint that predicts (one trained model serves both)."""

    dataset: str
    configuration: str
    trainer: str
    fold: int | str
    seed: int = 0
    checkpoint: Checkpoint = "final"
