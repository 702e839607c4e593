"""Audit the training labels of a dataset with the out-of-fold predictions of its nnU-Net cross-validation.

Every training case that a fold validated on gets (:mod:`nnunet_ext.audit.measures`) Dice, HD95 and ASSD in mm, the
signed boundary offset in mm (label vs prediction, > 0 = label larger) and the volume ratio label/prediction, per
class/region and aggregated, plus the trainer's own loss on the case (:mod:`nnunet_ext.audit.loss`); a disagreement
score ranks the untrusted cases (:mod:`nnunet_ext.audit.scores`). Trusted cases (``nnunet-ext trust``, or given
explicitly) are measured but not ranked: their labels are the expert's, and the mean of their offsets estimates the
dataset's systematic boundary offset.

A case validated by several folds (trusted cases held out by every fold with ``nnunet-ext trust --as-validation``)
gets the mean of its per-fold values; the montage shows the prediction of its first fold.

Outputs, in ``output_dir`` (default ``<model folder>/audit``): ``audit.csv`` (one row per case, ranked cases first),
``audit.md`` (columns, score, top cases, systematic offset), ``audit.json`` (settings, systematic offset) and
``worst_cases.png`` (image, given label, prediction of the top cases; for 3-D data the middle slice of the largest
connected disagreement).

2-D or 3-D data follow :func:`nnunet_ext.evaluation.evaluate.spatial_dims` (single slices are evaluated in-plane).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ext._io import write_json_atomic
from nnunet_ext.audit.folds import (
    DEFAULT_FOLDS,
    DEFAULT_PLANS,
    CrossValidation,
    dataset_classes,
    locate_cross_validation,
    training_files,
)
from nnunet_ext.audit.loss import TrainerLoss, build_trainer_loss, case_loss
from nnunet_ext.audit.measures import CASE_KEYS, CLASS_KEYS, case_measures, disagreement_slice
from nnunet_ext.audit.report import MontageEntry, write_csv, write_markdown, write_montage
from nnunet_ext.audit.scores import DEFAULT_SCORE, SCORE_DEFINITIONS, check_score, disagreement_scores, ranks
from nnunet_ext.evaluation.evaluate import spatial_dims
from nnunet_ext.evaluation.io import read_label_image, read_label_shape
from nnunet_ext.trusted import did_you_mean

logger = logging.getLogger(__name__)

CSV_NAME = "audit.csv"
MARKDOWN_NAME = "audit.md"
JSON_NAME = "audit.json"
MONTAGE_NAME = "worst_cases.png"
DEFAULT_TOP = 10
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class AuditResult:
    """Rows (ranked cases by rank, then trusted cases), the systematic offset and the files written."""

    rows: list[dict[str, Any]]
    systematic: dict[str, Any] | None
    settings: dict[str, Any]
    files: dict[str, Path]


def _read_pair(case: str, label_file: Path, prediction_file: Path, dims: int):
    label, geometry = read_label_image(label_file)
    prediction, pred_geometry = read_label_image(prediction_file)
    mismatch = geometry.mismatch(pred_geometry)
    if mismatch is not None:
        raise ValueError(
            f"case {case!r}: prediction {prediction_file} does not match its label {label_file} (label vs "
            f"prediction: {mismatch}); re-run nnU-Net's validation (nnUNetv2_train ... --val) on this dataset"
        )
    spacing = geometry.spacing
    if dims == 2 and label.ndim == 3:  # a (1, H, W) slice: evaluated in-plane
        label, prediction, spacing = label[0], prediction[0], spacing[1:]
    return label, prediction, tuple(spacing)


def _audit_one(
    case: str,
    label_file: Path,
    prediction_file: Path,
    probabilities_file: Path | None,
    classes: Sequence[Any],
    dims: int,
    loss: TrainerLoss | None,
) -> dict[str, Any]:
    label, prediction, spacing = _read_pair(case, label_file, prediction_file, dims)
    measured = case_measures(label, prediction, spacing, classes)
    value, source = math.nan, None
    if loss is not None:
        probabilities = None
        if probabilities_file is not None:
            with np.load(probabilities_file) as npz:
                probabilities = npz["probabilities"]
        value, source = case_loss(loss, label, prediction, probabilities)
    return {"aggregate": measured.aggregate, "per_class": measured.per_class, "loss": value, "loss_on": source}


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(arr))


def _merge_folds(per_fold: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first = per_fold[0]
    aggregate = {k: _nanmean(r["aggregate"][k] for r in per_fold) for k in CASE_KEYS}
    per_class = {
        key: {m: _nanmean(r["per_class"][key][m] for r in per_fold) for m in (*CLASS_KEYS, "n_label", "n_pred")}
        for key in first["per_class"]
    }
    sources = sorted({r["loss_on"] for r in per_fold if r["loss_on"] is not None})
    return {
        **aggregate,
        "per_class": per_class,
        "loss": _nanmean(r["loss"] for r in per_fold),
        "loss_on": "+".join(sources) if sources else None,
    }


def _trusted_cases(cv: CrossValidation, cases: Sequence[str], given: Sequence[str]) -> tuple[list[str], list[str]]:
    """(trusted among the audited cases, recorded trusted cases that were not audited)."""
    from nnunet_ext.trusted import load_trusted

    recorded = load_trusted(cv.dataset) if os.environ.get("nnUNet_preprocessed") else []
    audited = set(cases)
    unknown = [c for c in given if c not in audited]
    if unknown:
        hints = did_you_mean(unknown[:5], cases)
        raise ValueError(
            f"--trusted: {', '.join(hints)} not among the {len(cases)} audited cases (the validation cases of folds "
            f"{[f.fold for f in cv.folds]}); give case ids of the dataset's training cases"
        )
    trusted = sorted((set(recorded) | set(given)) & audited)
    return trusted, sorted(set(recorded) - audited)


def _systematic_offset(rows: Sequence[Mapping[str, Any]], class_keys: Sequence[str]) -> dict[str, Any] | None:
    trusted = [r for r in rows if r["trusted"]]
    if not trusted:
        return None
    per_class = {}
    for key in class_keys:
        values = [r["per_class"][key]["offset_mm"] for r in trusted if not math.isnan(r["per_class"][key]["offset_mm"])]
        per_class[key] = {"offset_mm": float(np.mean(values)) if values else math.nan, "n": len(values)}
    aggregate = [r["offset_mm"] for r in trusted if not math.isnan(r["offset_mm"])]
    return {
        "cases": [r["case"] for r in trusted],
        "n_cases": len(trusted),
        "per_class": per_class,
        "aggregate_mm": float(np.mean(aggregate)) if aggregate else math.nan,
    }


def _value_names(dataset_json: Mapping[str, Any], class_names: Mapping[str, str], has_regions: bool) -> dict[int, str]:
    """Label-map value → name for the montage legend (regions: the value written for each region)."""
    if has_regions:
        order = dataset_json.get("regions_class_order") or []
        return {int(v): n for v, n in zip(order, class_names.values())}
    out = {}
    for name, value in dataset_json["labels"].items():
        if name != "background" and not isinstance(value, (list, tuple)):
            out[int(value)] = str(name)
    return out


def _read_image_slice(path: Path | None, shape: tuple[int, ...], dims: int, index: int | None) -> np.ndarray | None:
    if path is None:
        return None
    import SimpleITK as sitk

    image = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    if dims == 2 and image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.shape != shape:  # e.g. a multi-component image: no grey background, the labels are still shown
        return None
    return image if index is None else image[index]


def _montage_entries(
    cv: CrossValidation,
    rows: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Path],
    images: Mapping[str, Path | None],
    dims: int,
) -> list[MontageEntry]:
    entries = []
    for r in rows:
        case, fold = r["case"], r["folds"][0]
        prediction_file = next(f for f in cv.folds if f.fold == fold).segmentations[case]
        label, prediction, spacing = _read_pair(case, labels[case], prediction_file, dims)
        if label.ndim == 3:
            index = disagreement_slice(label, prediction)
            where = f"slice {index} of {label.shape[0]} (axis 0)"
            label_2d, prediction_2d, aspect = label[index], prediction[index], spacing[1] / spacing[2]
        else:
            index, where = None, "2-D"
            label_2d, prediction_2d, aspect = label, prediction, spacing[0] / spacing[1]
        image = _read_image_slice(images.get(case), label.shape, dims, index)
        entries.append(
            MontageEntry(case, r["rank"], r["Dice"], r["score"], image, label_2d, prediction_2d, aspect, where)
        )
    return entries


def run_audit(
    dataset: str | int,
    configuration: str,
    trainer: str = "nnUNetTrainer",
    folds: Sequence[int] = DEFAULT_FOLDS,
    plans: str = DEFAULT_PLANS,
    *,
    output_dir: str | os.PathLike | None = None,
    trusted: Sequence[str] = (),
    top: int = DEFAULT_TOP,
    score: str = DEFAULT_SCORE,
    compute_loss: bool = True,
    results_dir: str | os.PathLike | None = None,
) -> AuditResult:
    """Audit a dataset's training labels against the out-of-fold predictions of a trained cross-validation.

    Args:
        dataset: Dataset id or name.
        configuration: The trained configuration.
        trainer: The trainer class name of the model folder.
        folds: Folds whose validation predictions are read.
        plans: Plans identifier.
        output_dir: Where the files go (default ``<model folder>/audit``).
        trusted: Trusted case ids added to the recorded list (``nnunet-ext trust``).
        top: Cases shown in ``audit.md`` and in the montage.
        score: Disagreement score (:mod:`nnunet_ext.audit.scores`).
        compute_loss: Evaluate the trainer's loss per case (builds the trainer on the CPU).
        results_dir: ``nnUNet_results`` (default: the environment's).

    Returns:
        An :class:`AuditResult`.

    Raises:
        FileNotFoundError: Missing model folder, folds, validation predictions or labels (the message names the
            command that produces them).
        ValueError: Bad score or ``top``, unknown trusted ids, geometry mismatches, ``score="loss"`` without a loss.
    """
    check_score(score)
    if int(top) < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    if score == "loss" and not compute_loss:
        raise ValueError("score 'loss' needs the loss; drop --no-loss or choose another --score")
    cv = locate_cross_validation(dataset, configuration, trainer, folds, plans, results_dir)
    classes, has_regions, class_names = dataset_classes(cv.dataset_json)
    case_folds = cv.case_folds()
    cases = list(case_folds)
    labels, images = training_files(cv, cases)
    dims = spatial_dims({c: read_label_shape(labels[c]) for c in cases})
    trusted_cases, trusted_not_audited = _trusted_cases(cv, cases, list(trusted))

    loss: TrainerLoss | None = None
    if compute_loss:
        try:
            loss = build_trainer_loss(trainer, cv.plans_json, cv.dataset_json, configuration)
        except FileNotFoundError as err:
            if score == "loss":
                raise
            loss_note = f"not computed: {err}"
            logger.warning("loss column left empty: %s", err)
    if loss is not None:
        loss_note = (
            f"{loss.description}; each case as one sample at the image's resolution, on its saved probabilities "
            "where the validation wrote them (--npz; loss_on = probabilities) and on the one-hot segmentation "
            "otherwise (loss_on = one_hot; cross-entropy then ≈ 13.8 × the fraction of contradicted voxels, not "
            "comparable with probability-based values)."
        )
    elif not compute_loss:
        loss_note = "not computed (--no-loss)."

    fold_of = {f.fold: f for f in cv.folds}
    rows = []
    for case in cases:
        per_fold = [
            _audit_one(
                case,
                labels[case],
                fold_of[k].segmentations[case],
                fold_of[k].probabilities.get(case),
                classes,
                dims,
                loss,
            )
            for k in case_folds[case]
        ]
        rows.append(
            {"case": case, "folds": case_folds[case], "trusted": case in trusted_cases, **_merge_folds(per_fold)}
        )

    ranked = [r for r in rows if not r["trusted"]]
    values = disagreement_scores(ranked, score)
    for r, v in zip(ranked, values):
        r["score"] = float(v)
    for r, k in zip(ranked, ranks(list(values), [r["case"] for r in ranked])):
        r["rank"] = k
    for r in rows:
        if r["trusted"]:
            r["score"], r["rank"] = None, None
    rows = sorted(ranked, key=lambda r: r["rank"]) + sorted((r for r in rows if r["trusted"]), key=lambda r: r["case"])
    systematic = _systematic_offset(rows, list(class_names))

    out = Path(output_dir) if output_dir is not None else cv.model_dir / "audit"
    out.mkdir(parents=True, exist_ok=True)
    n_training = len(cv.dataset_json.get("dataset", {})) or int(cv.dataset_json.get("numTraining", len(cases)))
    settings = {
        "dataset": cv.dataset,
        "dataset_id": cv.dataset_id,
        "trainer": trainer,
        "plans": plans,
        "configuration": configuration,
        "folds": [f.fold for f in cv.folds],
        "model_dir": str(cv.model_dir),
        "n_cases": len(cases),
        "n_training_cases": n_training,
        "n_ranked": len(ranked),
        "n_trusted": len(trusted_cases),
        "trusted_not_audited": trusted_not_audited,
        "spatial_dims": dims,
        "has_regions": has_regions,
        "classes": class_names,
        "score": score,
        "score_definition": SCORE_DEFINITIONS[score],
        "loss": loss.description if loss is not None else None,
        "loss_note": loss_note,
        "top": int(top),
    }
    files = {"csv": out / CSV_NAME, "markdown": out / MARKDOWN_NAME, "json": out / JSON_NAME}
    write_csv(rows, class_names, files["csv"])
    top_rows = [r for r in rows if r["rank"] is not None][: int(top)]
    montage = None
    if top_rows:
        files["montage"] = out / MONTAGE_NAME
        entries = _montage_entries(cv, top_rows, labels, images, dims)
        title = (
            f"{cv.dataset}: the {len(top_rows)} training labels that disagree most with the out-of-fold predictions "
            f"({trainer}, {configuration})"
        )
        write_montage(entries, _value_names(cv.dataset_json, class_names, has_regions), files["montage"], title)
        montage = MONTAGE_NAME
    write_markdown(
        files["markdown"],
        settings,
        rows,
        class_names,
        SCORE_DEFINITIONS[score],
        loss_note,
        systematic,
        int(top),
        montage,
    )
    write_json_atomic(
        {"schema_version": SCHEMA_VERSION, "settings": settings, "systematic_offset": systematic},
        files["json"],
        default=str,
    )
    return AuditResult(rows, systematic, settings, files)
