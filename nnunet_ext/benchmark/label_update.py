"""Label-update baseline (COPLE paper Table IV, after its ref. [33]; METHODS.md §4.2).

An ensemble of models trained on the initial (noisy) annotations predicts new labels for the training images; a
network is then re-trained on them (one round). Decisions on the points the paper leaves open:

- the ensemble members are nnU-Net's cross-validation folds (default 5 folds of ``DiceTrainer``), not seeds;
- fusion is nnU-Net's: the folds' logits are averaged, then softmax/argmax (sigmoid > 0.5 for regions);
- the new labels form a new raw dataset ``Dataset<out_id>_<name>`` with the same images (hard links), the ensemble
  labels as ``labelsTr``, and ``imagesTs``/``labelsTs``/``labelsTr_clean`` carried over when present, so the
  retrained model is evaluated against the same clean references;
- re-training reuses the source's plans (``nnUNetv2_move_plans_between_datasets``: same network, patch size and
  normalisation, plugin configurations included) and trains ``retrain_folds`` (default fold 0, as the benchmark).

The models are trained with the benchmark runner (same budget, seeding and resumption rules).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnunet_ext.benchmark.datasets import dataset_id, dataset_name, transfer_plans_and_preprocess
from nnunet_ext.benchmark.predict import predict_folder
from nnunet_ext.benchmark.provenance import console_to, utc_now, versions, write_json_atomic
from nnunet_ext.benchmark.runner import run_benchmark
from nnunet_ext.benchmark.spec import BenchmarkSpec, TrainingBudget
from nnunet_ext.benchmark.train import train_model
from nnunet_ext.noise.simulate import link_tree

logger = logging.getLogger(__name__)

MANIFEST_NAME = "label_update_manifest.json"
CLEAN_LABELS_DIR = "labelsTr_clean"  # as written by nnunet_ext.noise.simulate
_CARRIED_OVER = ("imagesTr", "imagesTs", "labelsTs", CLEAN_LABELS_DIR)


def _raw_root() -> Path:
    from nnunetv2.paths import nnUNet_raw

    return Path(nnUNet_raw.require())


def target_folder(out_id: int, source_name: str, out_name: str | None = None) -> Path:
    """``$nnUNet_raw/Dataset<out_id>_<name>``; the default name is the source's name + ``LabelUpdate``."""
    if not 1 <= int(out_id) <= 999:
        raise ValueError(f"--out-id must be in 1..999, got {out_id}")
    name = out_name if out_name is not None else re.sub(r"^Dataset\d{3}_", "", source_name) + "LabelUpdate"
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"dataset name {name!r} may only contain letters, digits, '_' and '-'")
    return _raw_root() / f"Dataset{int(out_id):03d}_{name}"


def _check_id_free(target: Path) -> None:
    prefix = target.name[: len("Dataset000_")]
    clashes = [p.name for p in target.parent.glob(f"{prefix}*") if p.name != target.name and not p.name.startswith(".")]
    if clashes:
        raise FileExistsError(f"dataset id {prefix[7:10]} is taken by {clashes}; choose another --out-id")


def _dice_summary(summary: dict[str, Any]) -> dict[str, Any]:
    per_case = {c["case"]: {k: v["Dice"] for k, v in c["metrics"].items()} for c in summary["metric_per_case"]}
    return {"mean": {k: v["Dice"] for k, v in summary["mean"].items()}, "per_case": per_case}


def label_update(
    dataset: str | int,
    out_id: int,
    output_dir: str | os.PathLike,
    *,
    out_name: str | None = None,
    trainer: str = "DiceTrainer",
    configuration: str = "2d",
    plans: str = "nnUNetPlans",
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    budget: TrainingBudget | None = None,
    device: str = "auto",
    seed: int = 0,
    skip_final_validation: bool = False,
    disable_tta: bool = False,
    num_processes: int = 0,
    results_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    retrain_trainer: str | None = None,
    retrain_folds: Sequence[int | str] = (0,),
    overwrite: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Train the fold ensemble, relabel the training images, write the new raw dataset, optionally retrain.

    Args:
        dataset: Source dataset (id or name), planned and preprocessed for ``configuration``.
        out_id: Id of the new raw dataset.
        output_dir: Work folder: fold models (``nnUNet_results/`` unless ``results_dir``), the ensemble's raw
            predictions, label comparisons and the retraining benchmark (``retrain/``).
        out_name: Name of the new dataset (default: source name + ``LabelUpdate``).
        trainer: Trainer of the ensemble members.
        configuration: nnU-Net configuration of the ensemble (and of the retraining).
        plans: Plans identifier.
        folds: Folds forming the ensemble.
        budget: Short training budget (benchmark semantics).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        seed: Seed set before each training.
        skip_final_validation: Skip nnU-Net's final validation after each training.
        disable_tta: Predict without mirroring.
        num_processes: Worker processes for prediction and evaluation (0: in this process).
        results_dir: Where models are trained (default ``<output_dir>/nnUNet_results``).
        retrain: Preprocess the new dataset with the source's plans and train ``retrain_trainer`` on it; with
            ``imagesTs``/``labelsTs`` present this runs a one-trainer benchmark in ``<output_dir>/retrain``.
        retrain_trainer: Trainer of the retraining (default: ``trainer``).
        retrain_folds: Folds of the retraining.
        overwrite: Retrain the ensemble and rebuild the new dataset.
        verbose: Show nnU-Net's console output (else ``<output_dir>/nnunet_console.log``).

    Returns:
        The manifest (also written to ``<new dataset>/label_update_manifest.json``).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = Path(results_dir) if results_dir is not None else output_dir / "nnUNet_results"
    log_file = None if verbose else output_dir / "nnunet_console.log"
    source = dataset_name(dataset)
    source_raw = _raw_root() / source
    target = target_folder(out_id, source, out_name)
    if target.resolve() == source_raw.resolve():
        raise ValueError(f"--out-id {out_id} is the source dataset itself; choose a new id")
    _check_id_free(target)
    folds = tuple(int(f) for f in folds)
    if not folds or len(set(folds)) != len(folds):
        raise ValueError(f"folds must be a non-empty list without repeats, got {list(folds)}")
    budget = budget if budget is not None else TrainingBudget()
    manifest_file = target / MANIFEST_NAME

    if target.exists() and not overwrite:
        if not manifest_file.is_file():
            raise FileExistsError(f"{target} exists but has no {MANIFEST_NAME}; pass --overwrite to replace it")
        manifest = json.loads(manifest_file.read_text())
        logger.info("reusing the label-updated dataset %s", target)
    else:
        manifest = _build_dataset(
            source,
            source_raw,
            target,
            output_dir,
            results,
            log_file,
            trainer=trainer,
            configuration=configuration,
            plans=plans,
            folds=folds,
            budget=budget,
            device=device,
            seed=seed,
            skip_final_validation=skip_final_validation,
            disable_tta=disable_tta,
            num_processes=num_processes,
            overwrite=overwrite,
        )

    if retrain:
        manifest["retrain"] = _retrain(
            source,
            target,
            output_dir,
            results,
            log_file,
            trainer=retrain_trainer or trainer,
            configuration=configuration,
            plans=plans,
            folds=retrain_folds,
            budget=budget,
            device=device,
            seed=seed,
            skip_final_validation=skip_final_validation,
            disable_tta=disable_tta,
            num_processes=num_processes,
            overwrite=overwrite,
            verbose=verbose,
        )
        write_json_atomic(manifest, manifest_file)
    return manifest


def _build_dataset(
    source: str,
    source_raw: Path,
    target: Path,
    output_dir: Path,
    results: Path,
    log_file: Path | None,
    *,
    trainer: str,
    configuration: str,
    plans: str,
    folds: tuple[int, ...],
    budget: TrainingBudget,
    device: str,
    seed: int,
    skip_final_validation: bool,
    disable_tta: bool,
    num_processes: int,
    overwrite: bool,
) -> dict[str, Any]:
    from nnunet_ext.evaluation.evaluate import evaluate_folders

    wall: dict[str, float] = {}
    members = []
    start = time.perf_counter()
    for fold in folds:
        model = train_model(
            trainer,
            source,
            configuration,
            fold,
            plans=plans,
            device=device,
            budget=budget,
            seed=seed,
            skip_final_validation=skip_final_validation,
            results_dir=results,
            overwrite=overwrite,
            log_file=log_file,
        )
        members.append({"fold": fold, "fold_dir": str(model.fold_dir), "trained_now": model.trained})
    wall["train_s"] = time.perf_counter() - start
    model_dir = model.model_dir
    dataset_json = json.loads((source_raw / "dataset.json").read_text())
    file_ending = dataset_json["file_ending"]

    start = time.perf_counter()
    staged = output_dir / "ensemble_predictions"
    with console_to(log_file):
        predict_folder(
            model_dir,
            source_raw / "imagesTr",
            staged,
            folds,
            device=device,
            disable_tta=disable_tta,
            num_processes=num_processes,
            overwrite=overwrite or any(m["trained_now"] for m in members),
        )
    wall["predict_s"] = time.perf_counter() - start

    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in _CARRIED_OVER:
            if (source_raw / sub).is_dir():
                link_tree(source_raw / sub, tmp / sub)
        (tmp / "labelsTr").mkdir(parents=True)
        old_labels = sorted(p.name for p in (source_raw / "labelsTr").iterdir() if p.name.endswith(file_ending))
        for name in old_labels:
            if not (staged / name).is_file():
                raise FileNotFoundError(f"the ensemble produced no label for {name} in {staged}")
            shutil.copy2(staged / name, tmp / "labelsTr" / name)
        new_json = dict(dataset_json)
        new_json["name"] = target.name[len("Dataset000_") :]
        (tmp / "dataset.json").write_text(json.dumps(new_json, indent=4))

        start = time.perf_counter()
        n_proc = max(1, num_processes)
        vs_old = evaluate_folders(
            source_raw / "labelsTr",
            tmp / "labelsTr",
            dataset_json=dataset_json,
            num_processes=n_proc,
            output_dir=output_dir / "label_comparison" / "new_vs_old",
        )
        vs_clean = None
        if (source_raw / CLEAN_LABELS_DIR).is_dir():
            vs_clean = {
                name: _dice_summary(
                    evaluate_folders(
                        source_raw / CLEAN_LABELS_DIR,
                        labels,
                        dataset_json=dataset_json,
                        num_processes=n_proc,
                        output_dir=output_dir / "label_comparison" / f"{name}_vs_clean",
                    )
                )
                for name, labels in (("old", source_raw / "labelsTr"), ("new", tmp / "labelsTr"))
            }
        wall["compare_s"] = time.perf_counter() - start
        manifest = {
            "method": "label update (COPLE Table IV, ref. [33]): fold ensemble, mean logits, argmax",
            "source": str(source_raw),
            "target": str(target),
            "trainer": trainer,
            "configuration": configuration,
            "plans": plans,
            "folds": list(folds),
            "budget": budget.as_dict(),
            "seed": seed,
            "ensemble_members": members,
            "model_dir": str(model_dir),
            "n_cases": len(old_labels),
            "dice_new_vs_old": _dice_summary(vs_old),
            "dice_vs_clean": vs_clean,
            "versions": versions(),
            "wall_s": wall,
            "finished": utc_now(),
        }
        write_json_atomic(manifest, tmp / MANIFEST_NAME)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def _retrain(
    source: str,
    target: Path,
    output_dir: Path,
    results: Path,
    log_file: Path | None,
    *,
    trainer: str,
    configuration: str,
    plans: str,
    folds: Sequence[int | str],
    budget: TrainingBudget,
    device: str,
    seed: int,
    skip_final_validation: bool,
    disable_tta: bool,
    num_processes: int,
    overwrite: bool,
    verbose: bool,
) -> dict[str, Any]:
    from nnunetv2.paths import nnUNet_preprocessed

    target_name = target.name
    pre = Path(nnUNet_preprocessed.require()) / target_name
    if overwrite or not (pre / f"{plans}.json").is_file():
        with console_to(log_file):
            transfer_plans_and_preprocess(
                source, dataset_id(target_name), [configuration], plans, max(1, num_processes)
            )
    if (target / "imagesTs").is_dir() and (target / "labelsTs").is_dir():
        spec = BenchmarkSpec(
            trainers=(trainer,),
            datasets=(target_name,),
            configurations=(configuration,),
            folds=tuple(folds),
            baseline=trainer,
            plans=plans,
            skip_final_validation=skip_final_validation,
            device=device,
            seed=seed,
            disable_tta=disable_tta,
            num_processes=num_processes,
            results_dir=str(results),
            **budget.as_dict(),
        )
        outcome = run_benchmark(spec, output_dir / "retrain", overwrite=overwrite, verbose=verbose)
        return {"trainer": trainer, "folds": list(folds), "benchmark": str(outcome.output_dir)}
    trained = []
    for fold in folds:
        model = train_model(
            trainer,
            target_name,
            configuration,
            fold,
            plans=plans,
            device=device,
            budget=budget,
            seed=seed,
            skip_final_validation=skip_final_validation,
            results_dir=results,
            overwrite=overwrite,
            log_file=log_file,
        )
        trained.append(str(model.fold_dir))
    return {"trainer": trainer, "folds": list(folds), "models": trained, "benchmark": None}
