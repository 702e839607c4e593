"""Evaluate a folder of predicted label maps against (clean) reference label maps, in mm.

Writes ``metrics.csv`` (one row per case and label/region) and ``summary.json`` in nnU-Net's layout
(``metric_per_case``, ``mean``, ``foreground_mean``; keys ``"1"`` / ``"(1, 2, 3)"``) extended with the metrics of
:mod:`nnunet_ext.evaluation.metrics`, NaN counts and lesion-size groups. ``nnunetv2.evaluation.evaluate_predictions.
load_summary_json`` reads the result.

Conventions:

- Spacing comes from the reference image (ITK order reversed to numpy order). Prediction and reference must agree in
  shape, spacing, origin and direction (tolerances in :mod:`nnunet_ext.evaluation.io`), else a ``ValueError`` names
  the case.
- Every prediction needs a reference; every reference needs a prediction unless ``chill`` (nnU-Net's flag name).
- Labels/regions: from ``dataset.json`` through nnU-Net's ``LabelManager`` (regions when the dataset has them), else
  the union of the non-zero labels found in all references and predictions; a label absent from both maps of a case
  gets the both-empty values (Dice 1, HD95 0, ...).
- ``mean`` is the NaN-ignoring mean over cases (as nnU-Net); ``nan_count`` says how many cases each mean ignored;
  ``foreground_mean`` is the NaN-ignoring mean of the label/region means (nnU-Net uses a plain mean there).
- Size groups are per label/region, by that label's reference volume in the case (:mod:`nnunet_ext.evaluation.lesions`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ext.evaluation.io import (
    check_file_ending,
    label_definition,
    list_cases,
    load_dataset_json,
    read_label_image,
)
from nnunet_ext.evaluation.lesions import DEFAULT_SIZE_EDGES_CC, check_size_edges, group_intervals, size_group
from nnunet_ext.evaluation.metrics import (
    METRIC_KEYS,
    LabelOrRegion,
    both_empty_metrics,
    compute_case_metrics,
    label_or_region_to_key,
)

logger = logging.getLogger(__name__)

DEFAULT_FILE_ENDING = ".nii.gz"
CSV_LEADING_COLUMNS: tuple[str, ...] = ("case", "label_or_region", "size_group", "volume_ref_cc")


def default_num_processes() -> int:
    """nnU-Net's default (``nnUNet_def_n_proc``, else 8), read without importing ``nnunetv2.configuration``."""
    return int(os.environ.get("nnUNet_def_n_proc", 8))


def _evaluate_case(
    case: str,
    ref_file: str,
    pred_file: str,
    labels_or_regions: Sequence[LabelOrRegion] | None,
    brats_empty: bool,
) -> dict[str, Any]:
    ref, ref_geom = read_label_image(ref_file)
    pred, pred_geom = read_label_image(pred_file)
    mismatch = ref_geom.mismatch(pred_geom)
    if mismatch is not None:
        raise ValueError(
            f"case {case!r}: prediction {pred_file} does not match reference {ref_file} in geometry "
            f"(reference vs prediction: {mismatch}); resample the prediction onto the reference grid."
        )
    if labels_or_regions is None:
        present = (set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0}
        labels_or_regions = sorted(int(v) for v in present)
    metrics = (
        compute_case_metrics(pred, ref, ref_geom.spacing, labels_or_regions, brats_empty) if labels_or_regions else {}
    )
    return {
        "case": case,
        "reference_file": ref_file,
        "prediction_file": pred_file,
        "spacing_mm": list(ref_geom.spacing),
        "n_voxels": int(ref.size),
        "voxel_volume_mm3": float(np.prod(ref_geom.spacing)),
        "metrics": metrics,
    }


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    finite_or_inf = arr[~np.isnan(arr)]
    return float(finite_or_inf.mean()) if finite_or_inf.size else math.nan


def _match_cases(
    ref_cases: Mapping[str, Path], pred_cases: Mapping[str, Path], ref_dir: Path, pred_dir: Path, chill: bool
) -> list[str]:
    no_ref = sorted(set(pred_cases) - set(ref_cases))
    if no_ref:
        raise ValueError(f"{len(no_ref)} prediction(s) in {pred_dir} have no reference in {ref_dir}: {no_ref[:10]}.")
    no_pred = sorted(set(ref_cases) - set(pred_cases))
    if no_pred and not chill:
        raise ValueError(
            f"{len(no_pred)} reference case(s) in {ref_dir} have no prediction in {pred_dir}: {no_pred[:10]}; "
            "pass chill=True (--chill) to evaluate only the predicted cases."
        )
    if not pred_cases:
        raise ValueError(f"no predictions found in {pred_dir}.")
    return sorted(pred_cases)


def evaluate_folders(
    ref_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    dataset_json: str | os.PathLike | Mapping[str, Any] | None = None,
    brats_empty: bool = False,
    size_edges_cc: Sequence[float] = DEFAULT_SIZE_EDGES_CC,
    num_processes: int | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    file_ending: str | None = None,
    chill: bool = False,
) -> dict[str, Any]:
    """Evaluate every prediction in ``pred_dir`` against its reference in ``ref_dir``.

    Args:
        ref_dir: Folder of reference label maps ``{case}{file_ending}`` (the **clean** labels).
        pred_dir: Folder of predicted label maps.
        dataset_json: ``dataset.json`` (path or dict) giving labels/regions and the file ending.
        brats_empty: HD95/ASSD 373.12866 mm instead of NaN when exactly one mask is empty.
        size_edges_cc: Lesion-size group edges in cc.
        num_processes: Worker processes (spawned, as nnU-Net); default ``nnUNet_def_n_proc`` or 8.
        output_dir: Where ``metrics.csv`` and ``summary.json`` go; default ``pred_dir``.
        file_ending: Overrides dataset.json's ``file_ending``; default ``.nii.gz`` without a dataset.json.
        chill: Allow references without a prediction (only predicted cases are evaluated).

    Returns:
        The summary (as written to ``summary.json``).

    Raises:
        ValueError: Missing cases, geometry mismatch (naming the case), no foreground label anywhere, bad edges.
        NotImplementedError: Unsupported file ending or an ignore label in dataset.json.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    out_dir = Path(output_dir) if output_dir is not None else pred_dir
    edges = check_size_edges(size_edges_cc)
    ds = load_dataset_json(dataset_json) if dataset_json is not None else None
    if file_ending is None:
        file_ending = ds.get("file_ending", DEFAULT_FILE_ENDING) if ds is not None else DEFAULT_FILE_ENDING
    check_file_ending(file_ending)
    label_def = label_definition(ds) if ds is not None else None
    labels_or_regions = list(label_def.labels_or_regions) if label_def is not None else None

    ref_cases, pred_cases = list_cases(ref_dir, file_ending), list_cases(pred_dir, file_ending)
    cases = _match_cases(ref_cases, pred_cases, ref_dir, pred_dir, chill)
    tasks = [(c, str(ref_cases[c]), str(pred_cases[c]), labels_or_regions, brats_empty) for c in cases]
    n_proc = min(default_num_processes() if num_processes is None else int(num_processes), len(tasks))
    if n_proc <= 1:
        results = [_evaluate_case(*t) for t in tasks]
    else:
        with multiprocessing.get_context("spawn").Pool(n_proc) as pool:
            results = pool.starmap(_evaluate_case, tasks)

    if labels_or_regions is None:
        labels_or_regions = sorted({int(k) for r in results for k in r["metrics"]})
        if not labels_or_regions:
            raise ValueError(
                f"no foreground label in any reference ({ref_dir}) or prediction ({pred_dir}); pass the dataset.json "
                "to evaluate its labels anyway."
            )
        for r in results:  # a label absent from both maps of a case: both-empty values
            missing = {
                label_or_region_to_key(k): both_empty_metrics(r["n_voxels"], r["voxel_volume_mm3"])
                for k in labels_or_regions
            }
            r["metrics"] = {k: r["metrics"].get(k, v) for k, v in missing.items()}
    keys = [label_or_region_to_key(lr) for lr in labels_or_regions]

    summary = _summarise(results, keys, edges)
    summary["settings"] = {
        "reference_dir": str(ref_dir),
        "prediction_dir": str(pred_dir),
        "file_ending": file_ending,
        "labels_or_regions": keys,
        "has_regions": bool(label_def.has_regions) if label_def is not None else False,
        "brats_empty": bool(brats_empty),
        "spacing_source": "reference image",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(results, keys, edges, out_dir / "metrics.csv")
    with open(out_dir / "summary.json", "w") as f:
        json.dump(summary, f, sort_keys=True, indent=4)
    logger.info("evaluated %d cases, wrote %s", len(results), out_dir / "summary.json")
    return summary


def _summarise(results: list[dict[str, Any]], keys: list[str], edges: tuple[float, ...]) -> dict[str, Any]:
    per_case = []
    for r in results:
        groups = {k: size_group(r["metrics"][k]["volume_ref_mm3"] / 1000.0, edges) for k in keys}
        per_case.append(
            {
                "case": r["case"],
                "reference_file": r["reference_file"],
                "prediction_file": r["prediction_file"],
                "spacing_mm": r["spacing_mm"],
                "metrics": r["metrics"],
                "size_group": groups,
            }
        )
    mean = {k: {m: _nanmean([r["metrics"][k][m] for r in results]) for m in METRIC_KEYS} for k in keys}
    nan_count = {k: {m: int(sum(math.isnan(r["metrics"][k][m]) for r in results)) for m in METRIC_KEYS} for k in keys}
    foreground_mean = {m: _nanmean([mean[k][m] for k in keys]) for m in METRIC_KEYS}
    intervals = group_intervals(edges)
    by_group: dict[str, dict[str, Any]] = {}
    for k in keys:
        by_group[k] = {}
        for g in intervals:
            members = [c["metrics"][k] for c in per_case if c["size_group"][k] == g]
            by_group[k][g] = {
                "n_cases": len(members),
                "mean": {m: _nanmean([x[m] for x in members]) for m in METRIC_KEYS},
            }
    return {
        "metric_per_case": per_case,
        "mean": mean,
        "foreground_mean": foreground_mean,
        "nan_count": nan_count,
        "size_groups": {"edges_cc": list(edges), "intervals": intervals, "per_label_or_region": by_group},
    }


def _write_csv(results: list[dict[str, Any]], keys: list[str], edges: tuple[float, ...], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*CSV_LEADING_COLUMNS, *METRIC_KEYS])
        for r in results:
            for k in keys:
                m = r["metrics"][k]
                vol_cc = m["volume_ref_mm3"] / 1000.0
                writer.writerow([r["case"], k, size_group(vol_cc, edges), vol_cc, *(m[x] for x in METRIC_KEYS)])
