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
- 2-D or 3-D (``settings.spatial_dims``): the data are **2-D** when every evaluated reference is a single slice, i.e. a
  label map with two axes (2-D NIfTI, PNG) or with three whose first (out-of-plane, ITK z) axis has length 1 (a
  slice stored as 3-D NIfTI, as the JSRT example does with a z spacing of 999 mm). The rule looks at the shape, not
  at the 999: that value is only nnU-Net's convention (``NaturalImage2DIO`` reports (999, 1, 1), its SimpleITK
  reader 999 × the largest pixel size for 2-D files), converters write other values, and a file read as stored
  (2-D NIfTI, PNG) has no out-of-plane spacing at all. A single slice has no extent across the slice, so whatever
  that spacing says, a volume from it would measure the storage convention (the JSRT lungs came out at over 27,000 cc).
- 2-D data: the slices are evaluated as ``(H, W)`` arrays with the in-plane spacing (``spacing_mm`` per case is that
  spacing); sizes are areas in mm² (``area_ref_mm2``, ``area_pred_mm2``; ``metrics.csv`` has ``area_ref_mm2`` where
  3-D data have ``volume_ref_cc``), size groups use the reference area and ``size_edges_mm2``
  (:data:`~nnunet_ext.evaluation.lesions.DEFAULT_SIZE_EDGES_MM2`, 1600 and 4000 mm²); HD95/ASSD are in-plane (as they
  are for any single slice, see :mod:`nnunet_ext.evaluation.metrics`); RVE, a ratio of pixel counts, is unchanged.
- 3-D data: volumes in mm³ (``volume_ref_mm3``, ``volume_pred_mm3``), size groups by reference volume in cc
  (``size_edges_cc``). A single-slice case among 3-D volumes stays 3-D (its volume uses its slice thickness; a
  warning names it); 2-D files (two axes) mixed with 3-D volumes are refused.
- Size groups are per label/region, by that label's reference volume or area in the case
  (:mod:`nnunet_ext.evaluation.lesions`).
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
from typing import Any, Literal

import numpy as np

from nnunet_ext.evaluation.io import (
    check_file_ending,
    label_definition,
    list_cases,
    load_dataset_json,
    read_label_image,
    read_label_shape,
)
from nnunet_ext.evaluation.lesions import (
    DEFAULT_SIZE_EDGES_CC,
    DEFAULT_SIZE_EDGES_MM2,
    check_size_edges,
    group_intervals,
    size_group,
)
from nnunet_ext.evaluation.metrics import (
    LabelOrRegion,
    both_empty_metrics,
    compute_case_metrics,
    label_or_region_to_key,
    metric_keys,
)

logger = logging.getLogger(__name__)

DEFAULT_FILE_ENDING = ".nii.gz"
CSV_LEADING_COLUMNS: tuple[str, ...] = ("case", "label_or_region", "size_group", "volume_ref_cc")
"""Leading ``metrics.csv`` columns of 3-D data; 2-D data have ``area_ref_mm2`` instead of ``volume_ref_cc``."""
CSV_LEADING_COLUMNS_2D: tuple[str, ...] = ("case", "label_or_region", "size_group", "area_ref_mm2")

SpatialDims = Literal[2, 3]


def is_single_slice(shape: Sequence[int]) -> bool:
    """A 2-D image: two axes, or three whose first (out-of-plane) axis has length 1."""
    return len(shape) == 2 or (len(shape) == 3 and int(shape[0]) == 1)


def spatial_dims(shapes: Mapping[str, Sequence[int]]) -> SpatialDims:
    """2 when every reference (case id → numpy-order shape) is a single slice (:func:`is_single_slice`), else 3.

    Raises:
        ValueError: When label maps with two axes are mixed with multi-slice volumes (no slice thickness to make
            volumes of them, no single plane to make areas of the volumes).
    """
    single = sorted(c for c, shape in shapes.items() if is_single_slice(shape))
    if len(single) == len(shapes):
        return 2
    flat = sorted(c for c, shape in shapes.items() if len(shape) == 2)
    if flat:
        volumes = sorted(set(shapes) - set(single))
        raise ValueError(
            f"the references mix 2-D images ({len(flat)}, e.g. {flat[:5]}) with 3-D volumes ({len(volumes)}, e.g. "
            f"{volumes[:5]}); evaluate them separately."
        )
    if single:
        logger.warning(
            "%d of %d references are single slices (e.g. %s) among 3-D volumes: evaluated as 3-D, their volumes use "
            "the slice thickness stored in the file.",
            len(single),
            len(shapes),
            single[:5],
        )
    return 3


def _size_column(dims: SpatialDims) -> tuple[str, Literal["cc", "mm²"]]:
    """The per-case size that sets the size group, as a CSV column name, and its unit."""
    return ("area_ref_mm2", "mm²") if dims == 2 else ("volume_ref_cc", "cc")


def _reference_size(metrics: Mapping[str, float], dims: SpatialDims) -> float:
    return float(metrics["area_ref_mm2"]) if dims == 2 else float(metrics["volume_ref_mm3"]) / 1000.0


def default_num_processes() -> int:
    """nnU-Net's default (``nnUNet_def_n_proc``, else 8), read without importing ``nnunetv2.configuration``."""
    return int(os.environ.get("nnUNet_def_n_proc", 8))


def _evaluate_case(
    case: str,
    ref_file: str,
    pred_file: str,
    labels_or_regions: Sequence[LabelOrRegion] | None,
    brats_empty: bool,
    dims: SpatialDims = 3,
) -> dict[str, Any]:
    ref, ref_geom = read_label_image(ref_file)
    pred, pred_geom = read_label_image(pred_file)
    mismatch = ref_geom.mismatch(pred_geom)
    if mismatch is not None:
        raise ValueError(
            f"case {case!r}: prediction {pred_file} does not match reference {ref_file} in geometry "
            f"(reference vs prediction: {mismatch}); resample the prediction onto the reference grid."
        )
    spacing = ref_geom.spacing
    if dims == 2 and ref.ndim == 3:  # a (1, H, W) slice: its out-of-plane spacing (often 999) is not a thickness
        ref, pred, spacing = ref[0], pred[0], spacing[1:]
    if labels_or_regions is None:
        present = (set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0}
        labels_or_regions = sorted(int(v) for v in present)
    metrics = compute_case_metrics(pred, ref, spacing, labels_or_regions, brats_empty) if labels_or_regions else {}
    return {
        "case": case,
        "reference_file": ref_file,
        "prediction_file": pred_file,
        "spacing_mm": list(spacing),
        "n_voxels": int(ref.size),
        "ndim": int(ref.ndim),
        "voxel_size": float(np.prod(spacing)),  # mm³, or mm² for 2-D data
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
    size_edges_mm2: Sequence[float] = DEFAULT_SIZE_EDGES_MM2,
) -> dict[str, Any]:
    """Evaluate every prediction in ``pred_dir`` against its reference in ``ref_dir``.

    2-D data (every reference a single slice) get areas in mm² and area-based size groups, 3-D data volumes and
    volume-based groups (module docstring).

    Args:
        ref_dir: Folder of reference label maps ``{case}{file_ending}`` (the **clean** labels).
        pred_dir: Folder of predicted label maps.
        dataset_json: ``dataset.json`` (path or dict) giving labels/regions and the file ending.
        brats_empty: HD95/ASSD 373.12866 mm instead of NaN when exactly one mask is empty.
        size_edges_cc: Lesion-size group edges in cc (3-D data).
        num_processes: Worker processes (spawned, as nnU-Net); default ``nnUNet_def_n_proc`` or 8.
        output_dir: Where ``metrics.csv`` and ``summary.json`` go; default ``pred_dir``.
        file_ending: Overrides dataset.json's ``file_ending``; default ``.nii.gz`` without a dataset.json.
        chill: Allow references without a prediction (only predicted cases are evaluated).
        size_edges_mm2: Lesion-size group edges in mm² (2-D data).

    Returns:
        The summary (as written to ``summary.json``).

    Raises:
        ValueError: Missing cases, geometry mismatch (naming the case), no foreground label anywhere, bad edges,
            2-D images mixed with 3-D volumes.
        NotImplementedError: Unsupported file ending or an ignore label in dataset.json.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    out_dir = Path(output_dir) if output_dir is not None else pred_dir
    edges_cc, edges_mm2 = check_size_edges(size_edges_cc, "cc"), check_size_edges(size_edges_mm2, "mm²")
    ds = load_dataset_json(dataset_json) if dataset_json is not None else None
    if file_ending is None:
        file_ending = ds.get("file_ending", DEFAULT_FILE_ENDING) if ds is not None else DEFAULT_FILE_ENDING
    check_file_ending(file_ending)
    label_def = label_definition(ds) if ds is not None else None
    labels_or_regions = list(label_def.labels_or_regions) if label_def is not None else None

    ref_cases, pred_cases = list_cases(ref_dir, file_ending), list_cases(pred_dir, file_ending)
    cases = _match_cases(ref_cases, pred_cases, ref_dir, pred_dir, chill)
    dims = spatial_dims({c: read_label_shape(ref_cases[c]) for c in cases})
    edges = edges_mm2 if dims == 2 else edges_cc
    tasks = [(c, str(ref_cases[c]), str(pred_cases[c]), labels_or_regions, brats_empty, dims) for c in cases]
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
                label_or_region_to_key(k): both_empty_metrics(r["n_voxels"], r["voxel_size"], r["ndim"])
                for k in labels_or_regions
            }
            r["metrics"] = {k: r["metrics"].get(k, v) for k, v in missing.items()}
    keys = [label_or_region_to_key(lr) for lr in labels_or_regions]

    summary = _summarise(results, keys, edges, dims)
    summary["settings"] = {
        "reference_dir": str(ref_dir),
        "prediction_dir": str(pred_dir),
        "file_ending": file_ending,
        "labels_or_regions": keys,
        "has_regions": bool(label_def.has_regions) if label_def is not None else False,
        "brats_empty": bool(brats_empty),
        "spacing_source": "reference image",
        "spatial_dims": dims,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(results, keys, edges, dims, out_dir / "metrics.csv")
    with open(out_dir / "summary.json", "w") as f:
        json.dump(summary, f, sort_keys=True, indent=4)
    logger.info("evaluated %d cases (%d-D), wrote %s", len(results), dims, out_dir / "summary.json")
    return summary


def _summarise(
    results: list[dict[str, Any]], keys: list[str], edges: tuple[float, ...], dims: SpatialDims
) -> dict[str, Any]:
    metric_names = metric_keys(dims)
    per_case = []
    for r in results:
        groups = {k: size_group(_reference_size(r["metrics"][k], dims), edges) for k in keys}
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
    mean = {k: {m: _nanmean([r["metrics"][k][m] for r in results]) for m in metric_names} for k in keys}
    nan_count = {k: {m: int(sum(math.isnan(r["metrics"][k][m]) for r in results)) for m in metric_names} for k in keys}
    foreground_mean = {m: _nanmean([mean[k][m] for k in keys]) for m in metric_names}
    column, unit = _size_column(dims)
    intervals = group_intervals(edges, unit)
    by_group: dict[str, dict[str, Any]] = {}
    for k in keys:
        by_group[k] = {}
        for g in intervals:
            members = [c["metrics"][k] for c in per_case if c["size_group"][k] == g]
            by_group[k][g] = {
                "n_cases": len(members),
                "mean": {m: _nanmean([x[m] for x in members]) for m in metric_names},
            }
    edges_key = "edges_mm2" if dims == 2 else "edges_cc"
    return {
        "metric_per_case": per_case,
        "mean": mean,
        "foreground_mean": foreground_mean,
        "nan_count": nan_count,
        "size_groups": {
            "measure": column,
            edges_key: list(edges),
            "intervals": intervals,
            "per_label_or_region": by_group,
        },
    }


def _write_csv(
    results: list[dict[str, Any]], keys: list[str], edges: tuple[float, ...], dims: SpatialDims, path: Path
) -> None:
    leading = CSV_LEADING_COLUMNS_2D if dims == 2 else CSV_LEADING_COLUMNS
    metric_names = [m for m in metric_keys(dims) if m not in leading]  # 2-D: area_ref_mm2 once, up front
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*leading, *metric_names])
        for r in results:
            for k in keys:
                m = r["metrics"][k]
                size = _reference_size(m, dims)
                writer.writerow([r["case"], k, size_group(size, edges), size, *(m[x] for x in metric_names)])
