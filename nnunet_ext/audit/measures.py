"""Per-case disagreement between a training label and the model's out-of-fold prediction, in mm.

Pure numpy/scipy. Label maps are integer arrays of one shape; ``spacing`` is the voxel size in mm per array axis
(numpy order, the reversed SimpleITK spacing). Axes of length 1 are ignored by the distances (a ``(1, H, W)`` slice
gives in-plane values, as :mod:`nnunet_ext.evaluation.metrics`).

Per class (label ``seg == l``) or region (``seg ∈ r``), with L the given label's mask and P the prediction's:

================  ===============================================  ==========  ===================================
Key               Definition                                       Both empty  Exactly one empty
================  ===============================================  ==========  ===================================
``Dice``          2|L∩P| / (|L| + |P|)                             1           0
``HD95_mm``       :func:`~nnunet_ext.evaluation.metrics.hd95`      0           the image diagonal (see below)
``ASSD_mm``       :func:`~nnunet_ext.evaluation.metrics.assd`      0           the image diagonal
``offset_mm``     signed boundary offset (:func:`signed_offset`):  NaN         +1 voxel (P empty), −1 voxel (L
                  > 0 when the label is larger than the prediction             empty)
``volume_ratio``  |L| / |P| (the voxel size cancels)               1           inf (P empty), 0 (L empty)
================  ===============================================  ==========  ===================================

- The offset is the mean over the label's surface voxels v of d_P(v) − d_L(v), with the signed distances d of
  :func:`~nnunet_ext.correction.boundary.signed_distance` (negative inside, rings at ±½ voxel): how far the label's
  boundary lies outside the prediction's. It is the value ``nnunet-ext calibrate`` measures with the sign flipped
  (calibrate: > 0 when the *prediction* is larger than the trusted label), so on trusted cases the mean offset is
  minus the model's calibrated bias. A flat boundary moved by k voxels gives exactly ±k·h; identical masks give 0.
- One empty mask: the evaluation's NaN would drop the worst cases from any ranking, so HD95 and ASSD get the largest
  distance the image allows instead, the diagonal √Σ((n_a − 1)·h_a)² between the centres of opposite corner voxels
  (axes of length 1 excluded). 1 voxel (offsets) is the smallest spacing of those axes.

Case aggregate (:func:`case_measures`) over the classes **present** in the label or the prediction (a class absent
from both says nothing about this case): the mean of Dice, HD95, ASSD and of the signed offset; ``abs_offset_mm`` the
mean of the per-class |offset|; ``volume_ratio`` = Σ|L_c| / Σ|P_c|. Without any foreground in either map the case
gets the both-empty values (Dice 1, distances 0, offsets 0, ratio 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

from nnunet_ext.correction.boundary import boundary_offset
from nnunet_ext.evaluation.metrics import (
    LabelOrRegion,
    _check_spacing,
    label_or_region_to_key,
    mask_metrics,
    region_mask,
)

CLASS_KEYS: Final[tuple[str, ...]] = ("Dice", "HD95_mm", "ASSD_mm", "offset_mm", "volume_ratio")
"""Per-class measures of :func:`class_measures`, in CSV column order."""

CASE_KEYS: Final[tuple[str, ...]] = ("Dice", "HD95_mm", "ASSD_mm", "offset_mm", "abs_offset_mm", "volume_ratio")
"""Case aggregates of :func:`case_measures`, in CSV column order."""


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Distance in mm between the centres of opposite corner voxels, √Σ((n_a − 1)·h_a)², axes of length 1 excluded.

    The largest surface distance two masks of this image can have (0 for a single voxel).
    """
    sp = _check_spacing(spacing, len(shape))
    extent = (np.asarray(shape, dtype=np.float64) - 1.0) * sp
    return float(np.sqrt(np.sum(extent**2)))


def volume_ratio(label_mask: np.ndarray, prediction_mask: np.ndarray) -> float:
    """|L| / |P|: 1 when both are empty, inf when only the prediction is, 0 when only the label is.

    Identities pinned by tests: hand-counted ratio; independent of the overlap.
    """
    n_label, n_pred = int(np.count_nonzero(label_mask)), int(np.count_nonzero(prediction_mask))
    if n_pred == 0:
        return 1.0 if n_label == 0 else math.inf
    return n_label / n_pred


def signed_offset(label_mask: np.ndarray, prediction_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Signed boundary offset of the label against the prediction in mm: > 0 when the label is larger.

    .. math::

        o(L, P) = \\frac{1}{|\\partial^- L|} \\sum_{v \\in \\partial^- L} \\bigl( d_P(v) - d_L(v) \\bigr)
        = -b(P, L)

    with :func:`~nnunet_ext.correction.boundary.boundary_offset` b (prediction P in the role of the prediction, the
    label L in that of the reference; Yao et al., ICLR 2023, arXiv:2308.02498, with distances in mm).

    Returns:
        The offset in mm; NaN where it is undefined (both masks empty, or the label fills the image).

    Identities pinned by tests: 0 for identical masks; +k·h for a label whose flat boundary lies k voxels outside the
    prediction's along an axis of spacing h (anisotropic grids, 2-D and 3-D); ±1 voxel for one empty mask.
    """
    b = boundary_offset(np.asarray(prediction_mask, dtype=bool), np.asarray(label_mask, dtype=bool), spacing)
    return math.nan if b is None else -b


def class_measures(
    label_mask: np.ndarray, prediction_mask: np.ndarray, spacing: Sequence[float]
) -> dict[str, float | int]:
    """:data:`CLASS_KEYS` of one class, plus the voxel counts ``n_label`` and ``n_pred`` (module table)."""
    label_mask, prediction_mask = np.asarray(label_mask, dtype=bool), np.asarray(prediction_mask, dtype=bool)
    m = mask_metrics(prediction_mask, label_mask, spacing)
    one_empty = (m["n_pred"] == 0) != (m["n_ref"] == 0)
    diagonal = image_diagonal_mm(label_mask.shape, spacing) if one_empty else 0.0
    return {
        "Dice": float(m["Dice"]),
        "HD95_mm": diagonal if one_empty else float(m["HD95_mm"]),
        "ASSD_mm": diagonal if one_empty else float(m["ASSD_mm"]),
        "offset_mm": signed_offset(label_mask, prediction_mask, spacing),
        "volume_ratio": volume_ratio(label_mask, prediction_mask),
        "n_label": int(m["n_ref"]),
        "n_pred": int(m["n_pred"]),
    }


@dataclass(frozen=True)
class CaseMeasures:
    """Measures of one case: per class/region (keys ``"1"``, ``"(1, 2, 3)"``) and the case aggregate."""

    per_class: dict[str, dict[str, float | int]]
    aggregate: dict[str, float]


def aggregate_classes(per_class: Mapping[str, Mapping[str, float | int]]) -> dict[str, float]:
    """The case aggregate of :data:`CASE_KEYS` over the classes present in label or prediction (module docstring)."""
    present = [m for m in per_class.values() if m["n_label"] + m["n_pred"] > 0]
    if not present:
        return {
            "Dice": 1.0,
            "HD95_mm": 0.0,
            "ASSD_mm": 0.0,
            "offset_mm": 0.0,
            "abs_offset_mm": 0.0,
            "volume_ratio": 1.0,
        }
    offsets = [float(m["offset_mm"]) for m in present if not math.isnan(m["offset_mm"])]
    n_label, n_pred = sum(int(m["n_label"]) for m in present), sum(int(m["n_pred"]) for m in present)
    return {
        "Dice": float(np.mean([m["Dice"] for m in present])),
        "HD95_mm": float(np.mean([m["HD95_mm"] for m in present])),
        "ASSD_mm": float(np.mean([m["ASSD_mm"] for m in present])),
        "offset_mm": float(np.mean(offsets)) if offsets else math.nan,
        "abs_offset_mm": float(np.mean(np.abs(offsets))) if offsets else math.nan,
        "volume_ratio": n_label / n_pred if n_pred else math.inf,
    }


def case_measures(
    label: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    classes: Sequence[LabelOrRegion | Sequence[int]],
) -> CaseMeasures:
    """Per-class measures (:func:`class_measures`) and their case aggregate for two label maps.

    Args:
        label: The given (training) label map, integer array.
        prediction: The out-of-fold predicted label map, same shape.
        spacing: Voxel size in mm per array axis.
        classes: Foreground labels (ints) or regions (tuples), as nnU-Net's ``LabelManager`` gives them.

    Raises:
        ValueError: On a shape mismatch, a bad spacing or no classes.
    """
    label, prediction = np.asarray(label), np.asarray(prediction)
    if label.shape != prediction.shape:
        raise ValueError(f"label and prediction must have the same shape, got {label.shape} and {prediction.shape}.")
    if not classes:
        raise ValueError("classes is empty; give the foreground labels or regions to audit.")
    _check_spacing(spacing, label.ndim)
    per_class = {
        label_or_region_to_key(c): class_measures(region_mask(label, c), region_mask(prediction, c), spacing)
        for c in classes
    }
    return CaseMeasures(per_class, aggregate_classes(per_class))


def disagreement_slice(label: np.ndarray, prediction: np.ndarray) -> int:
    """Index along axis 0 of the middle slice of the largest connected disagreement (``label != prediction``).

    Components use full connectivity; the middle is that of the component's extent along axis 0. Without any
    disagreement: the middle of the label's foreground, else of the array.
    """
    label, prediction = np.asarray(label), np.asarray(prediction)
    differ = label != prediction
    if differ.any():
        components, n = ndimage.label(differ, structure=np.ones((3,) * differ.ndim, dtype=bool))
        sizes = np.bincount(components.ravel())[1:]
        target = components == (int(np.argmax(sizes)) + 1) if n > 1 else differ
    elif (label > 0).any():
        target = label > 0
    else:
        return label.shape[0] // 2
    present = np.flatnonzero(target.reshape(target.shape[0], -1).any(axis=1))
    return int((present[0] + present[-1]) // 2)
