"""Benchmark runner: train, predict and evaluate every cell of a spec through nnU-Net's Python API, resumably.

Per cell (dataset, configuration, trainer, fold, seed; the spec's checkpoint) of a
:class:`~nnunet_ext.benchmark.spec.BenchmarkSpec`:

1. train (:func:`~nnunet_ext.benchmark.train.train_model`: seeded, trainer found by name, optional short budget on
   the instance, ``run_training()``, then nnU-Net's final validation unless ``skip_final_validation``), or reuse the
   trained model;
2. predict the test images from ``checkpoint_final.pth`` or ``checkpoint_best.pth``
   (:func:`~nnunet_ext.benchmark.predict.predict_folder`, in this process with ``num_processes=0``, else with
   nnU-Net's worker pools: scripts then need a ``__main__`` guard);
3. evaluate against the **clean** references with :func:`nnunet_ext.evaluation.evaluate.evaluate_folders`.

:func:`run_benchmark` runs every cell in this process, then writes the report; :func:`run_cell` runs one cell by its
index (``nnunet-ext benchmark --cell INDEX``: a cluster job-array task, see :mod:`nnunet_ext.benchmark.slurm`), and
:func:`report_only` writes the report from the finished cells, naming the missing ones. All three use
:func:`run_one_cell` and :func:`write_benchmark_report`, so a job array and an in-process run give the same files.

Layout of the output folder (one seed, ``checkpoint final``: the layout of benchmarks without seeds)::

    manifest.json                 seed(s), spec, versions, hardware, status and wall times per cell
    results.csv  report.md  boxplots/
    nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>/fold_<k>/   models (unless spec.results_dir)
    runs/<Dataset>/<configuration>/<trainer>/fold_<k>/{predictions/, metrics.csv, summary.json, run.json}

With several seeds the models of seed ``s`` live under ``nnUNet_results/seed_<s>/`` (an ``nnUNet_results`` tree of
its own) and the cells under ``runs/<Dataset>/<configuration>/<trainer>/seed_<s>/fold_<k>/``; cells predicted from
``checkpoint_best.pth`` live under ``runs/<Dataset>/<configuration>/<trainer>/checkpoint_best/[seed_<s>/]fold_<k>/``
and share the model of the ``final`` cell (no retraining).

Resumption: a cell whose ``checkpoint_final.pth``, predicting checkpoint, predictions, ``summary.json`` and
``run.json`` exist, for the same inputs and the same trained model, is skipped; a trained model without predictions
is only predicted and evaluated. Models trained by the benchmark carry ``nnunet_ext_training.json`` (budget, seed);
reusing one trained with other settings raises. A model trained outside the benchmark (a ``results_dir`` shared with
``nnUNetv2_train``) is reused as it is, and ``run.json`` says so. Reproducibility: the seeds make CPU runs with
``nnUNet_n_proc_DA=0`` repeatable; augmentation workers are not seeded by nnU-Net.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnunet_ext._registration import register_trainer_folder
from nnunet_ext.benchmark.datasets import dataset_name
from nnunet_ext.benchmark.predict import list_test_cases, predict_folder
from nnunet_ext.benchmark.provenance import (
    console_to,
    hardware,
    nnunet_environment,
    nnunet_results,
    resolve_device,
    seed_everything,
    temporary_env,
    utc_now,
    versions,
    write_json_atomic,
)
from nnunet_ext.benchmark.report import ReportFiles, Row, rows_from_summary, write_report
from nnunet_ext.benchmark.spec import BenchmarkSpec, RunKey
from nnunet_ext.benchmark.train import (
    CHECKPOINT,
    CHECKPOINT_FILES,
    TRAINING_RECORD,
    TrainedModel,
    _check_reusable,
    _training_record,
    build_trainer,
    find_trainer_class,
    is_plugin_trainer,
    load_plans,
    merge_ext_block,
    model_folder,
    remove_model_fold,
    train_model,
)

# Re-exported: the runner was one module before the split; its importers keep working.
__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FILES",
    "MANIFEST",
    "RUN_RECORD",
    "TRAINING_RECORD",
    "BenchmarkOutcome",
    "CellOutcome",
    "RunPaths",
    "TrainedModel",
    "_check_reusable",
    "_training_record",
    "build_trainer",
    "cell_index",
    "check_spec",
    "collect_rows",
    "console_to",
    "find_trainer_class",
    "hardware",
    "is_plugin_trainer",
    "list_test_cases",
    "load_plans",
    "merge_ext_block",
    "model_folder",
    "nnunet_results",
    "predict_folder",
    "register_trainer_folder",
    "remove_model_fold",
    "report_only",
    "resolve_device",
    "run_benchmark",
    "run_cell",
    "run_is_finished",
    "run_one_cell",
    "run_paths",
    "seed_everything",
    "temporary_env",
    "train_model",
    "utc_now",
    "versions",
    "write_benchmark_report",
    "write_json_atomic",
]

RUN_RECORD = "run.json"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class RunPaths:
    """Where one cell lives: its run folder (predictions, evaluation, ``run.json``) and its model folder."""

    key: RunKey
    dataset_name: str
    run_dir: Path
    model_dir: Path
    test_images: Path
    references: Path
    prediction: Mapping[str, Any] = field(default_factory=dict)
    multi_seed: bool = False

    @property
    def fold_dir(self) -> Path:
        return self.model_dir / f"fold_{self.key.fold}"

    @property
    def checkpoint_file(self) -> Path:
        """The checkpoint that predicts this cell."""
        return self.fold_dir / CHECKPOINT_FILES[self.key.checkpoint]

    @property
    def label(self) -> str:
        label = f"{self.dataset_name}/{self.key.configuration}/{self.key.trainer}/fold_{self.key.fold}"
        if self.multi_seed:
            label += f"/seed_{self.key.seed}"
        if self.key.checkpoint != "final":
            label += f"/checkpoint_{self.key.checkpoint}"
        return label

    @property
    def predictions(self) -> Path:
        return self.run_dir / "predictions"


def _raw_folder(name: str) -> Path | None:
    from nnunetv2.paths import nnUNet_raw

    return Path(nnUNet_raw.get()) / name if nnUNet_raw.is_set() else None


def _dataset_folder(
    spec_map: Mapping[str, str], dataset: str, name: str, default_sub: str, what: str, flag: str
) -> Path:
    if dataset in spec_map:
        return Path(spec_map[dataset])
    raw = _raw_folder(name)
    if raw is None:
        raise ValueError(
            f"nnUNet_raw is not set, so the {what} folder of dataset {dataset} is unknown; give it with {flag} or "
            "export nnUNet_raw"
        )
    return raw / default_sub


def run_paths(spec: BenchmarkSpec, output_dir: str | os.PathLike) -> list[RunPaths]:
    """Where every cell of the matrix lives, in :meth:`BenchmarkSpec.runs` order (resolves dataset names only)."""
    output_dir = Path(output_dir)
    results = Path(spec.results_dir) if spec.results_dir is not None else output_dir / "nnUNet_results"
    names = {d: dataset_name(d) for d in spec.datasets}
    out = []
    for key in spec.runs():
        name = names[key.dataset]
        run_dir = output_dir / "runs" / name / key.configuration / key.trainer
        if key.checkpoint != "final":
            run_dir = run_dir / f"checkpoint_{key.checkpoint}"
        seed_results = results
        if spec.multi_seed:
            run_dir = run_dir / f"seed_{key.seed}"
            seed_results = results / f"seed_{key.seed}"
        out.append(
            RunPaths(
                key=key,
                dataset_name=name,
                run_dir=run_dir / f"fold_{key.fold}",
                model_dir=model_folder(seed_results, name, key.trainer, spec.plans, key.configuration),
                test_images=_dataset_folder(
                    spec.test_images, key.dataset, name, "imagesTs", "test image", "--test-images"
                ),
                references=_dataset_folder(spec.references, key.dataset, name, "labelsTs", "reference", "--ref"),
                prediction={"disable_tta": spec.disable_tta, "tile_step_size": spec.tile_step_size},
                multi_seed=spec.multi_seed,
            )
        )
    return out


def _model_finished(paths: RunPaths) -> str | None:
    """The ``finished`` stamp of the model's training record (None: no record, trained outside the benchmark)."""
    record_file = paths.fold_dir / TRAINING_RECORD
    return json.loads(record_file.read_text()).get("finished") if record_file.is_file() else None


def _inputs_changed(paths: RunPaths, record: Mapping[str, Any]) -> bool:
    """Test images, references, prediction settings, checkpoint or the trained model differ from ``run.json``'s."""
    return (
        record.get("test_images") != str(paths.test_images)
        or record.get("references") != str(paths.references)
        or record.get("prediction") != dict(paths.prediction)
        or record.get("checkpoint", "final") != paths.key.checkpoint
        or (record.get("training") or {}).get("finished") != _model_finished(paths)
    )


def run_is_finished(paths: RunPaths) -> bool:
    """Checkpoints, every recorded prediction, ``summary.json`` and ``run.json`` present, for the same inputs."""
    record_file = paths.run_dir / RUN_RECORD
    if not ((paths.fold_dir / CHECKPOINT).is_file() and paths.checkpoint_file.is_file()):
        return False
    if not ((paths.run_dir / "summary.json").is_file() and record_file.is_file()):
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
                f'trainer_overrides: {trainer} is not an nnunet_ext trainer and ignores the plans\' "nnunet_ext" '
                "block; remove its --trainer-override"
            )
    checked: set[tuple[str, str]] = set()
    for p in all_paths:
        if (p.dataset_name, p.key.configuration) in checked:
            continue
        checked.add((p.dataset_name, p.key.configuration))
        load_plans(p.dataset_name, spec.plans, p.key.configuration)
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


def cell_index(index: int, all_paths: Sequence[RunPaths]) -> RunPaths:
    """The cell ``index`` (0-based, :meth:`BenchmarkSpec.runs` order); raises a user error when out of range."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(all_paths):
        raise ValueError(
            f"--cell {index!r} is out of range: the spec has {len(all_paths)} cell(s), 0-{len(all_paths) - 1}; "
            "list them with --dry-run"
        )
    return all_paths[index]


# ---------------------------------------------------------------------------------------------------------------
# one cell
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
        seed=key.seed,
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
            checkpoint_name=CHECKPOINT_FILES[key.checkpoint],
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
    device = resolve_device(spec.device)
    record = {
        "run": {
            "dataset": paths.dataset_name,
            "configuration": key.configuration,
            "trainer": key.trainer,
            "fold": key.fold,
            "seed": key.seed,
            "checkpoint": key.checkpoint,
        },
        "model_fold_dir": str(paths.fold_dir),
        "model_trained_now": model.trained,
        "model_trained_outside_benchmark": (not model.trained) and model.record is None,
        "training": model.record,
        "test_images": str(paths.test_images),
        "references": str(paths.references),
        "prediction_files": [c + file_ending for c in cases],
        "prediction": dict(paths.prediction),
        "checkpoint": key.checkpoint,
        "device": str(device),
        "host": platform.node(),
        "hardware": hardware(device),
        "wall_s": wall,
        "finished": utc_now(),
    }
    write_json_atomic(record, paths.run_dir / RUN_RECORD)
    return record


@dataclass(frozen=True)
class CellOutcome:
    """What :func:`run_one_cell` did for one cell, and the cell's ``run.json``."""

    paths: RunPaths
    status: str
    record: dict[str, Any]


def run_one_cell(
    spec: BenchmarkSpec, paths: RunPaths, *, overwrite: bool = False, verbose: bool = False
) -> CellOutcome:
    """Skip a finished cell, else train (or reuse), predict and evaluate it. The one code path of every mode."""
    if not overwrite and run_is_finished(paths):
        return CellOutcome(paths, "skipped (finished)", json.loads((paths.run_dir / RUN_RECORD).read_text()))
    log_file = None if verbose else paths.run_dir / "nnunet_console.log"
    record = _run_one(spec, paths, overwrite, log_file)
    return CellOutcome(paths, "done" if record["model_trained_now"] else "done (model reused)", record)


def _manifest_entry(status: str, record: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": status, "wall_s": record["wall_s"], "finished": record["finished"]}


# ---------------------------------------------------------------------------------------------------------------
# report
def collect_rows(all_paths: Sequence[RunPaths]) -> list[Row]:
    """Result rows of every finished cell (with a ``seed`` for benchmarks with several seeds)."""
    rows: list[Row] = []
    for p in all_paths:
        if run_is_finished(p):
            summary = json.loads((p.run_dir / "summary.json").read_text())
            seed = p.key.seed if p.multi_seed else None
            rows += rows_from_summary(summary, p.dataset_name, p.key.configuration, p.key.trainer, p.key.fold, seed)
    return rows


def _header_lines(
    spec: BenchmarkSpec, all_paths: Sequence[RunPaths], device: str, missing: Sequence[RunPaths]
) -> list[str]:
    seeds = f"seeds {', '.join(map(str, spec.seeds))}" if spec.multi_seed else f"seed {spec.seed}"
    lines = [
        f"- Trainers: {', '.join(spec.trainers)}; datasets: {', '.join(spec.datasets)}; configurations: "
        f"{', '.join(spec.configurations)}; folds: {', '.join(map(str, spec.folds))}.",
        f"- Budget: {spec.budget.as_dict()} (None: the trainer's own); {seeds}; device {device}.",
    ]
    if spec.checkpoint != "final":
        lines.append(
            f"- Predicted from `{CHECKPOINT_FILES[spec.checkpoint]}` (nnU-Net's best EMA pseudo Dice on its "
            "validation split, scored on the training labels)."
        )
    lines += [f'- `{t}` plans "nnunet_ext" overrides: `{json.dumps(o)}`.' for t, o in spec.trainer_overrides.items()]
    lines.append("- References: " + ", ".join(sorted({str(p.references) for p in all_paths})) + ".")
    if missing:
        lines.append(
            f"- **Incomplete**: {len(missing)} of {len(all_paths)} cells not finished and left out: "
            + ", ".join(f"`{p.label}`" for p in missing)
            + "."
        )
    return lines


def write_benchmark_report(
    spec: BenchmarkSpec,
    output_dir: Path,
    all_paths: Sequence[RunPaths],
    manifest: dict[str, Any],
    default_device: str,
) -> tuple[list[Row], ReportFiles, list[RunPaths]]:
    """``results.csv``, ``report.md``, box plots and the finished manifest, from the finished cells.

    The report's device is the one the cells recorded in ``run.json`` (``default_device`` for cells that did not).

    Returns:
        The rows, the report files and the cells that are not finished.
    """
    rows = collect_rows(all_paths)
    missing = [p for p in all_paths if not run_is_finished(p)]
    records = [json.loads((p.run_dir / RUN_RECORD).read_text()) for p in all_paths if p not in missing]
    device = ", ".join(sorted({r.get("device") or default_device for r in records})) or default_device
    header = _header_lines(spec, all_paths, device, missing)
    report = write_report(rows, output_dir, spec.baseline, spec.metrics, spec.size_edges_cc, header)
    manifest["finished"] = utc_now()
    manifest["outputs"] = {
        "results_csv": str(report.results_csv),
        "report_md": str(report.report_md),
        "box_plots": [str(p) for p in report.box_plots],
    }
    if missing:
        manifest["missing"] = [p.label for p in missing]
    write_json_atomic(manifest, output_dir / MANIFEST)
    return rows, report, missing


def _new_manifest(spec: BenchmarkSpec, output_dir: Path, device: torch.device) -> dict[str, Any]:
    manifest_path = output_dir / MANIFEST
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return {
        "seed": spec.seed,
        **({"seeds": list(spec.seeds)} if spec.multi_seed else {}),
        "spec": spec.to_dict(),
        "versions": versions(),
        "hardware": hardware(device),
        "environment": nnunet_environment(),
        "started": utc_now(),
        "runs": dict(previous.get("runs", {})),
    }


@dataclass
class BenchmarkOutcome:
    """What :func:`run_benchmark` / :func:`report_only` did and wrote (``missing``: cells left out of the report)."""

    output_dir: Path
    rows: list[Row]
    report: ReportFiles | None
    statuses: dict[str, str] = field(default_factory=dict)
    manifest: Path | None = None
    missing: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# the three modes
def run_benchmark(
    spec: BenchmarkSpec,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    verbose: bool = False,
    progress: bool = True,
) -> BenchmarkOutcome:
    """Run (or resume) every cell in this process, then write ``results.csv``, ``report.md``, box plots, manifest.

    Args:
        spec: The run matrix and settings.
        output_dir: Output folder (created).
        overwrite: Retrain, predict and evaluate every cell again.
        verbose: Show nnU-Net's console output (else it goes to ``runs/.../nnunet_console.log``).
        progress: Show a tqdm progress bar over the cells.

    Returns:
        A :class:`BenchmarkOutcome`.
    """
    from tqdm import tqdm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    all_paths = check_spec(spec, output_dir)
    device = resolve_device(spec.device)
    manifest = _new_manifest(spec, output_dir, device)
    statuses: dict[str, str] = {}
    bar = tqdm(all_paths, desc="benchmark", unit="run", disable=not progress, file=sys.stderr)
    for paths in bar:
        bar.set_postfix_str(paths.label)
        cell = run_one_cell(spec, paths, overwrite=overwrite, verbose=verbose)
        statuses[paths.label] = cell.status
        manifest["runs"][paths.label] = _manifest_entry(cell.status, cell.record)
        write_json_atomic(manifest, output_dir / MANIFEST)
    rows, report, _ = write_benchmark_report(spec, output_dir, all_paths, manifest, str(device))
    return BenchmarkOutcome(output_dir, rows, report, statuses, output_dir / MANIFEST)


def run_cell(
    spec: BenchmarkSpec,
    output_dir: str | os.PathLike,
    index: int,
    *,
    overwrite: bool = False,
    verbose: bool = False,
) -> CellOutcome:
    """Train, predict and evaluate exactly the cell ``index`` (resumably), as :func:`run_benchmark` does for it.

    Writes only the cell's own files (``run.json`` and the rest of its run folder, its model fold), so cells may run
    at the same time (job-array tasks); :func:`report_only` collects them.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = cell_index(index, check_spec(spec, output_dir))
    return run_one_cell(spec, paths, overwrite=overwrite, verbose=verbose)


def report_only(spec: BenchmarkSpec, output_dir: str | os.PathLike) -> BenchmarkOutcome:
    """The report of the finished cells (run nothing); cells not finished are named in the report and the outcome.

    Raises:
        FileNotFoundError: No cell has finished.
    """
    output_dir = Path(output_dir)
    all_paths = run_paths(spec, output_dir)
    finished = [p for p in all_paths if run_is_finished(p)]
    if not finished:
        raise FileNotFoundError(
            f"no finished cell of this spec in {output_dir} (0 of {len(all_paths)}); run the cells first "
            "(nnunet-ext benchmark with the same spec, with or without --cell INDEX)"
        )
    manifest = _new_manifest(spec, output_dir, torch.device("cpu"))
    statuses: dict[str, str] = {}
    for p in all_paths:
        if p in finished:
            record = json.loads((p.run_dir / RUN_RECORD).read_text())
            statuses[p.label] = "finished"
            status = "done" if record.get("model_trained_now") else "done (model reused)"
            manifest["runs"][p.label] = _manifest_entry(status, record)
        else:
            statuses[p.label] = "missing"
            manifest["runs"].pop(p.label, None)
    rows, report, missing = write_benchmark_report(spec, output_dir, all_paths, manifest, spec.device)
    return BenchmarkOutcome(output_dir, rows, report, statuses, output_dir / MANIFEST, [p.label for p in missing])
