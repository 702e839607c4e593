"""Benchmark runner: train, predict and evaluate through nnU-Net's Python API, in this process, resumably.

Per run (dataset, configuration, trainer, fold) of a :class:`~nnunet_ext.benchmark.spec.BenchmarkSpec`:

1. seed ``random``, ``numpy`` and ``torch``; build the trainer by name (nnU-Net's lookup, the plugin folder appended
   to ``nnUNet_extTrainer``), set the optional short budget on the instance, ``run_training()``, then nnU-Net's
   final validation unless ``skip_final_validation``;
2. predict the test images with ``nnUNetPredictor.initialize_from_trained_model_folder`` (in this process with
   ``num_processes=0``, else with nnU-Net's worker pools: scripts then need a ``__main__`` guard);
3. evaluate against the **clean** references with :func:`nnunet_ext.evaluation.evaluate.evaluate_folders`.

Layout of the output folder::

    manifest.json                 seed, spec, versions, hardware, status and wall times per run
    results.csv  report.md  boxplots/
    nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>/fold_<k>/   models (unless spec.results_dir)
    runs/<Dataset>/<configuration>/<trainer>/fold_<k>/{predictions/, metrics.csv, summary.json, run.json}

Resumption: a run whose ``checkpoint_final.pth``, predictions, ``summary.json`` and ``run.json`` exist is skipped; a
trained model without predictions is only predicted and evaluated. Models trained by the benchmark carry
``nnunet_ext_training.json`` (budget, seed); reusing one trained with other settings raises. A model trained outside
the benchmark (a ``results_dir`` shared with ``nnUNetv2_train``) is reused as it is, and ``run.json`` says so.
Reproducibility: the seeds make CPU runs with ``nnUNet_n_proc_DA=0`` repeatable; augmentation workers are not seeded
by nnU-Net.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nnunet_ext
from nnunet_ext._io import write_json_atomic as _write_json_atomic
from nnunet_ext.benchmark.datasets import dataset_name
from nnunet_ext.benchmark.report import ReportFiles, Row, rows_from_summary, write_report
from nnunet_ext.benchmark.spec import BenchmarkSpec, RunKey, TrainingBudget, did_you_mean

logger = logging.getLogger(__name__)

TRAINING_RECORD = "nnunet_ext_training.json"
RUN_RECORD = "run.json"
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint_final.pth"


# ---------------------------------------------------------------------------------------------------------------
# environment
def register_trainer_folder() -> None:
    """Append the plugin's trainer folder to ``nnUNet_extTrainer`` (kept for this process and its children)."""
    folder = nnunet_ext.trainer_folder()
    entries = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in entries:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*entries, folder])


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
                f"trainer {name!r} not found in nnU-Net or nnunet_ext{did_you_mean(name, known)} "
                f"Plugin trainers: {known[1:]}"
            ) from None


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use -device cpu (or auto)")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def temporary_env(name: str, value: str) -> Iterator[None]:
    """Set the environment variable ``name`` for the duration, then restore (or remove) it."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextlib.contextmanager
def nnunet_results(path: str | os.PathLike | None) -> Iterator[None]:
    """Point ``nnUNet_results`` at ``path`` for the duration (nnU-Net reads it lazily); None leaves it alone."""
    if path is None:
        yield
        return
    with temporary_env("nnUNet_results", str(path)):
        yield


@contextlib.contextmanager
def console_to(log_file: str | os.PathLike | None) -> Iterator[None]:
    """Send ``print`` output (nnU-Net is chatty) to ``log_file``; None keeps the console."""
    if log_file is None:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f, contextlib.redirect_stdout(f):
        yield


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "nnunet_ext": nnunet_ext.__version__}
    for package in ("nnunetv2", "torch", "numpy", "scipy", "SimpleITK"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info


def write_json_atomic(obj: Any, path: Path) -> None:
    """Manifests and run records (paths and other objects written as strings)."""
    _write_json_atomic(obj, path, default=str)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------------------
# training
def model_folder(results_dir: str | os.PathLike, dataset: str, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's model folder ``<results>/<Dataset>/<trainer>__<plans>__<configuration>``."""
    return Path(results_dir) / dataset_name(dataset) / f"{trainer}__{plans}__{configuration}"


def _load_plans(dataset: str, plans: str, configuration: str) -> tuple[dict, dict]:
    from nnunetv2.paths import nnUNet_preprocessed

    folder = Path(nnUNet_preprocessed.require()) / dataset_name(dataset)
    plans_file = folder / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(
            f"plans {plans_file} not found; run nnUNetv2_plan_and_preprocess -d {dataset} first (or fix -p {plans})"
        )
    plans_dict = json.loads(plans_file.read_text())
    configurations = plans_dict["configurations"]
    if configuration not in configurations:
        raise ValueError(
            f"configuration {configuration!r} not in {plans_file}{did_you_mean(configuration, configurations)} "
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
    plans_dict, dataset_json = _load_plans(dataset, plans, configuration)
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


# ---------------------------------------------------------------------------------------------------------------
# prediction
def list_test_cases(images_dir: str | os.PathLike, file_ending: str) -> list[str]:
    """Case ids of a folder of images ``{case}_{channel:04d}{file_ending}``."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"test image folder {images_dir} does not exist")
    suffix_len = len(file_ending) + 5
    cases = sorted({p.name[:-suffix_len] for p in images_dir.iterdir() if p.name.endswith(file_ending)})
    if not cases:
        raise ValueError(f"no images ending in {file_ending!r} in {images_dir}")
    return cases


def predict_folder(
    model_dir: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    folds: Sequence[int | str],
    *,
    device: str | torch.device = "auto",
    disable_tta: bool = False,
    tile_step_size: float = 0.5,
    num_processes: int = 0,
    checkpoint_name: str = CHECKPOINT,
    overwrite: bool = True,
    save_probabilities: bool = False,
) -> Path:
    """Predict a folder of raw images with nnU-Net's predictor; several folds are averaged (logits, nnU-Net).

    ``num_processes=0`` runs preprocessing and export in this process (``predict_from_files_sequential``); otherwise
    nnU-Net's spawned pools are used (the calling script needs a ``__main__`` guard).
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    register_trainer_folder()  # the predictor looks the trainer up by the name stored in the checkpoint
    dev = resolve_device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictor = nnUNetPredictor(
        tile_step_size=tile_step_size,
        use_gaussian=True,
        use_mirroring=not disable_tta,
        perform_everything_on_device=dev.type == "cuda",
        device=dev,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(
        str(model_dir), use_folds=tuple(folds), checkpoint_name=checkpoint_name
    )
    if num_processes == 0:
        predictor.predict_from_files_sequential(
            str(input_dir), str(output_dir), save_probabilities=save_probabilities, overwrite=overwrite
        )
    else:
        predictor.predict_from_files(
            str(input_dir),
            str(output_dir),
            save_probabilities=save_probabilities,
            overwrite=overwrite,
            num_processes_preprocessing=num_processes,
            num_processes_segmentation_export=num_processes,
        )
    return output_dir


# ---------------------------------------------------------------------------------------------------------------
# the benchmark
@dataclass(frozen=True)
class RunPaths:
    key: RunKey
    dataset_name: str
    run_dir: Path
    model_dir: Path
    test_images: Path
    references: Path
    prediction: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fold_dir(self) -> Path:
        return self.model_dir / f"fold_{self.key.fold}"

    @property
    def label(self) -> str:
        return f"{self.dataset_name}/{self.key.configuration}/{self.key.trainer}/fold_{self.key.fold}"

    @property
    def predictions(self) -> Path:
        return self.run_dir / "predictions"


def _raw_folder(name: str) -> Path | None:
    from nnunetv2.paths import nnUNet_raw

    return Path(nnUNet_raw.get()) / name if nnUNet_raw.is_set() else None


def _dataset_folder(spec_map: dict[str, str], dataset: str, name: str, default_sub: str, what: str) -> Path:
    if dataset in spec_map:
        return Path(spec_map[dataset])
    raw = _raw_folder(name)
    if raw is None:
        raise ValueError(f"nnUNet_raw is not set: give the {what} folder of dataset {dataset} explicitly")
    return raw / default_sub


def run_paths(spec: BenchmarkSpec, output_dir: str | os.PathLike) -> list[RunPaths]:
    """Where every run of the matrix lives (resolves dataset names; checks nothing else)."""
    output_dir = Path(output_dir)
    results = Path(spec.results_dir) if spec.results_dir is not None else output_dir / "nnUNet_results"
    out = []
    for key in spec.runs():
        name = dataset_name(key.dataset)
        out.append(
            RunPaths(
                key=key,
                dataset_name=name,
                run_dir=output_dir / "runs" / name / key.configuration / key.trainer / f"fold_{key.fold}",
                model_dir=model_folder(results, name, key.trainer, spec.plans, key.configuration),
                test_images=_dataset_folder(spec.test_images, key.dataset, name, "imagesTs", "test image"),
                references=_dataset_folder(spec.references, key.dataset, name, "labelsTs", "reference"),
                prediction={"disable_tta": spec.disable_tta, "tile_step_size": spec.tile_step_size},
            )
        )
    return out


def _inputs_changed(paths: RunPaths, record: Mapping[str, Any]) -> bool:
    """Test images, references or prediction settings differ from those recorded in ``run.json``."""
    return (
        record.get("test_images") != str(paths.test_images)
        or record.get("references") != str(paths.references)
        or record.get("prediction") != dict(paths.prediction)
    )


def run_is_finished(paths: RunPaths) -> bool:
    """Checkpoint, every recorded prediction, ``summary.json`` and ``run.json`` present, for the same inputs."""
    record_file = paths.run_dir / RUN_RECORD
    if not ((paths.fold_dir / CHECKPOINT).is_file() and (paths.run_dir / "summary.json").is_file()):
        return False
    if not record_file.is_file():
        return False
    record = json.loads(record_file.read_text())
    files = record.get("prediction_files")
    if _inputs_changed(paths, record):
        return False
    return bool(files) and all((paths.predictions / f).is_file() for f in files)


def check_spec(spec: BenchmarkSpec, output_dir: str | os.PathLike) -> list[RunPaths]:
    """Fail early: every trainer found, plans and configurations present, test images and references exist."""
    all_paths = run_paths(spec, output_dir)
    for trainer in spec.trainers:
        cls = find_trainer_class(trainer)
        if trainer in spec.trainer_overrides and not is_plugin_trainer(cls):
            raise ValueError(
                f'trainer_overrides: {trainer} is not an nnunet_ext trainer and ignores the plans\' "nnunet_ext" block'
            )
    checked: set[tuple[str, str]] = set()
    for p in all_paths:
        if (p.dataset_name, p.key.configuration) in checked:
            continue
        checked.add((p.dataset_name, p.key.configuration))
        _load_plans(p.dataset_name, spec.plans, p.key.configuration)
        for folder, what, flag, key in (
            (p.test_images, "test images", "--test-images", "test_images"),
            (p.references, "references", "--ref", "references"),
        ):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{what} folder {folder} of dataset {p.dataset_name} does not exist; set it with {flag} or "
                    f"the spec's {key!r}"
                )
    return all_paths


@dataclass
class BenchmarkOutcome:
    """What :func:`run_benchmark` did and wrote."""

    output_dir: Path
    rows: list[Row]
    report: ReportFiles | None
    statuses: dict[str, str] = field(default_factory=dict)
    manifest: Path | None = None


def _run_one(spec: BenchmarkSpec, paths: RunPaths, overwrite: bool, log_file: Path | None) -> dict[str, Any]:
    key = paths.key
    if overwrite and paths.run_dir.exists():
        shutil.rmtree(paths.run_dir)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    old_record_file = paths.run_dir / RUN_RECORD
    old_record = json.loads(old_record_file.read_text()) if old_record_file.is_file() else None
    wall: dict[str, float] = {}
    model = train_model(
        key.trainer,
        paths.dataset_name,
        key.configuration,
        key.fold,
        plans=spec.plans,
        device=spec.device,
        budget=spec.budget,
        seed=spec.seed,
        skip_final_validation=spec.skip_final_validation,
        results_dir=paths.model_dir.parent.parent,
        overwrite=overwrite,
        log_file=log_file,
        ext_overrides=spec.trainer_overrides.get(key.trainer),
    )
    wall["train_s"] = model.wall_s
    dataset_json = json.loads((paths.model_dir / "dataset.json").read_text())
    file_ending = dataset_json["file_ending"]
    cases = list_test_cases(paths.test_images, file_ending)
    start = time.perf_counter()
    with console_to(log_file):
        predict_folder(
            paths.model_dir,
            paths.test_images,
            paths.predictions,
            (key.fold,),
            device=spec.device,
            disable_tta=spec.disable_tta,
            tile_step_size=spec.tile_step_size,
            num_processes=spec.num_processes,
            # a fresh model or other inputs invalidate old predictions; else only the missing ones are made
            overwrite=model.trained or old_record is None or _inputs_changed(paths, old_record),
        )
    wall["predict_s"] = time.perf_counter() - start
    from nnunet_ext.evaluation.evaluate import evaluate_folders

    start = time.perf_counter()
    evaluate_folders(
        paths.references,
        paths.predictions,
        dataset_json=dataset_json,
        brats_empty=spec.brats_empty,
        size_edges_cc=spec.size_edges_cc,
        num_processes=max(1, spec.num_processes),
        output_dir=paths.run_dir,
    )
    wall["evaluate_s"] = time.perf_counter() - start
    record = {
        "run": {
            "dataset": paths.dataset_name,
            "configuration": key.configuration,
            "trainer": key.trainer,
            "fold": key.fold,
        },
        "model_fold_dir": str(paths.fold_dir),
        "model_trained_now": model.trained,
        "model_trained_outside_benchmark": (not model.trained) and model.record is None,
        "training": model.record,
        "test_images": str(paths.test_images),
        "references": str(paths.references),
        "prediction_files": [c + file_ending for c in cases],
        "prediction": dict(paths.prediction),
        "wall_s": wall,
        "finished": utc_now(),
    }
    write_json_atomic(record, paths.run_dir / RUN_RECORD)
    return record


def collect_rows(all_paths: Sequence[RunPaths]) -> list[Row]:
    """Result rows of every finished run."""
    rows: list[Row] = []
    for p in all_paths:
        if run_is_finished(p):
            summary = json.loads((p.run_dir / "summary.json").read_text())
            rows += rows_from_summary(summary, p.dataset_name, p.key.configuration, p.key.trainer, p.key.fold)
    return rows


def run_benchmark(
    spec: BenchmarkSpec,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    verbose: bool = False,
    progress: bool = True,
) -> BenchmarkOutcome:
    """Run (or resume) the whole matrix, then write ``results.csv``, ``report.md``, box plots and the manifest.

    Args:
        spec: The run matrix and settings.
        output_dir: Output folder (created).
        overwrite: Retrain, predict and evaluate every run again.
        verbose: Show nnU-Net's console output (else it goes to ``runs/.../nnunet_console.log``).
        progress: Show a tqdm progress bar over the runs.

    Returns:
        A :class:`BenchmarkOutcome`.
    """
    from tqdm import tqdm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    all_paths = check_spec(spec, output_dir)
    device = resolve_device(spec.device)
    manifest_path = output_dir / MANIFEST
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest: dict[str, Any] = {
        "seed": spec.seed,
        "spec": spec.to_dict(),
        "versions": versions(),
        "hardware": hardware(device),
        "environment": {k: v for k, v in os.environ.items() if k.startswith("nnUNet_")},
        "started": utc_now(),
        "runs": dict(previous.get("runs", {})),
    }
    statuses: dict[str, str] = {}
    bar = tqdm(all_paths, desc="benchmark", unit="run", disable=not progress, file=sys.stderr)
    for paths in bar:
        label = paths.label
        bar.set_postfix_str(label)
        if not overwrite and run_is_finished(paths):
            statuses[label] = "skipped (finished)"
            record = json.loads((paths.run_dir / RUN_RECORD).read_text())
        else:
            log_file = None if verbose else paths.run_dir / "nnunet_console.log"
            record = _run_one(spec, paths, overwrite, log_file)
            statuses[label] = "done" if record["model_trained_now"] else "done (model reused)"
        manifest["runs"][label] = {
            "status": statuses[label],
            "wall_s": record["wall_s"],
            "finished": record["finished"],
        }
        write_json_atomic(manifest, manifest_path)
    rows = collect_rows(all_paths)
    header = [
        f"- Trainers: {', '.join(spec.trainers)}; datasets: {', '.join(spec.datasets)}; configurations: "
        f"{', '.join(spec.configurations)}; folds: {', '.join(map(str, spec.folds))}.",
        f"- Budget: {spec.budget.as_dict()} (None: the trainer's own); seed {spec.seed}; device {device}.",
        *(f'- `{t}` plans "nnunet_ext" overrides: `{json.dumps(o)}`.' for t, o in spec.trainer_overrides.items()),
        "- References: " + ", ".join(sorted({str(p.references) for p in all_paths})) + ".",
    ]
    report = write_report(rows, output_dir, spec.baseline, spec.metrics, spec.size_edges_cc, header)
    manifest["finished"] = utc_now()
    manifest["outputs"] = {
        "results_csv": str(report.results_csv),
        "report_md": str(report.report_md),
        "box_plots": [str(p) for p in report.box_plots],
    }
    write_json_atomic(manifest, manifest_path)
    return BenchmarkOutcome(output_dir, rows, report, statuses, manifest_path)
