"""Per-case segmentation metrics in millimetres (METHODS.md §7): Dice, HD95, ASSD, RVE, sensitivity, specificity.

Pure numpy/scipy. Masks are boolean arrays of equal shape; ``spacing`` is the voxel size in mm **in the arrays' axis
order** (SimpleITK images give x, y, z; their numpy arrays are z, y, x, so pass the reversed ITK spacing).

Conventions (S = prediction, G = reference, pinned by tests):

=============  ======================================  ==========  ==============================================
Metric         Definition                              Both empty  Exactly one empty
=============  ======================================  ==========  ==============================================
Dice           2|S∩G| / (|S| + |G|)                    1           0
HD95_mm        max(P95 d(S→G), P95 d(G→S))             0           NaN, or 373.12866 mm with ``brats_empty=True``
ASSD_mm        (Σ d(S→G) + Σ d(G→S)) / (|∂S| + |∂G|)   0           as HD95
RVE            |V_S − V_G| / V_G                       NaN         1 if S is empty; NaN if G is empty
Sensitivity    TP / (TP + FN)                          NaN         0 if S is empty; NaN if G is empty
Specificity    TN / (TN + FP), whole volume            1           TN / (TN + FP)
=============  ======================================  ==========  ==============================================

- Surface ∂M = M minus its binary erosion with face connectivity (``generate_binary_structure(ndim, 1)``); voxels
  outside the array count as background (scipy's ``border_value=0``), so a mask touching the array border has a
  surface there. This is medpy's and current PyMIC's definition.
- d(S→G) = for every voxel of ∂S, the exact Euclidean distance in mm (voxel centres) to the nearest voxel of ∂G,
  from ``scipy.ndimage.distance_transform_edt(~∂G, sampling=spacing)``. No subsampling, no closing, no cap.
- P95 is ``numpy.percentile(d, 95, method="linear")`` (interpolating), not PyMIC's ``sorted(d)[int(0.95 n)]``.
- HD95 takes the larger of the two directed percentiles; medpy's ``hd95`` pools both directions instead, and medpy's
  ``assd`` averages the two directed means instead of pooling all distances (equal only when |∂S| = |∂G|).
- 373.12866 mm = √(240² + 240² + 155²), the BraTS online-evaluation value for a one-sided empty region.
- Axes of length 1 are dropped before surface extraction: a single slice is a 2-D image, not a one-voxel-thick slab
  (whose 3-D "surface" would be the whole mask). So HD95/ASSD of a ``(1, H, W)`` slice are in-plane distances
  whatever its out-of-plane spacing (nnU-Net's 999 for 2-D images included): the slice axis has one position, so it
  adds nothing to any distance, and it gets no surface of its own.
- Sizes follow the masks' axes: masks with two axes get areas (``area_ref_mm2``, ``area_pred_mm2``: pixels × pixel
  area), all others volumes (``volume_ref_mm3``, ``volume_pred_mm3``: voxels × voxel volume). A ``(1, H, W)`` slice
  passed as such is a slab with its slice thickness; :mod:`nnunet_ext.evaluation.evaluate` passes the slices of 2-D
  datasets as ``(H, W)`` with the in-plane spacing.
- Speed: both masks are cropped to their joint bounding box plus a one-voxel margin before the erosions and the two
  distance transforms, so the cost follows the lesions' extent, not the image size (about 0.1 µs per cropped voxel
  and direction).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
from scipy import ndimage

BRATS_EMPTY_DISTANCE_MM: Final[float] = 373.12866
"""HD95/ASSD of the BraTS online evaluation when exactly one mask is empty (√(240² + 240² + 155²) mm)."""

METRIC_KEYS: Final[tuple[str, ...]] = (
    "Dice",
    "HD95_mm",
    "ASSD_mm",
    "RVE",
    "Sensitivity",
    "Specificity",
    "volume_ref_mm3",
    "volume_pred_mm3",
    "IoU",
    "TP",
    "FP",
    "FN",
    "TN",
    "n_pred",
    "n_ref",
)
"""Keys of one label/region entry of :func:`compute_case_metrics` for 3-D masks, in CSV column order (nnU-Net's keys
last)."""

VOLUME_KEYS: Final[tuple[str, str]] = ("volume_ref_mm3", "volume_pred_mm3")
AREA_KEYS: Final[tuple[str, str]] = ("area_ref_mm2", "area_pred_mm2")

METRIC_KEYS_2D: Final[tuple[str, ...]] = tuple(
    AREA_KEYS[VOLUME_KEYS.index(k)] if k in VOLUME_KEYS else k for k in METRIC_KEYS
)
"""Keys for 2-D masks: :data:`METRIC_KEYS` with the reference and predicted areas in mm² instead of volumes."""


def metric_keys(ndim: int) -> tuple[str, ...]:
    """:data:`METRIC_KEYS_2D` for masks with two axes, else :data:`METRIC_KEYS`."""
    return METRIC_KEYS_2D if ndim == 2 else METRIC_KEYS


def size_keys(ndim: int) -> tuple[str, str]:
    """The (reference, prediction) size keys: :data:`AREA_KEYS` for two axes, else :data:`VOLUME_KEYS`."""
    return AREA_KEYS if ndim == 2 else VOLUME_KEYS


LabelOrRegion = int | tuple[int, ...]


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    for name, arr in (("pred", pred), ("ref", ref)):
        if arr.dtype != np.bool_:
            raise TypeError(f"{name} must be a boolean mask, got dtype {arr.dtype}; pass e.g. `seg == label`.")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, got {pred.shape} and {ref.shape}.")
    return pred, ref


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.size != ndim:
        raise ValueError(
            f"spacing {tuple(np.asarray(spacing).ravel())} has {sp.size} entries but the array has {ndim} axes; give "
            "one voxel size in mm per array axis (numpy order, i.e. the reversed SimpleITK spacing)."
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be positive and finite, got {tuple(sp)}.")
    return sp


def _drop_singleton_axes(
    pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = [i for i, n in enumerate(pred.shape) if n > 1]
    if len(keep) == pred.ndim:
        return pred, ref, spacing
    if not keep:  # a single voxel: keep one axis so that erosion and distance transforms stay defined
        keep = [0]
    new_shape = tuple(pred.shape[i] for i in keep)
    return pred.reshape(new_shape), ref.reshape(new_shape), spacing[keep]


def crop_to_joint_bbox(*masks: np.ndarray, margin: int = 1) -> tuple[np.ndarray, ...]:
    """Crop boolean masks to the bounding box of their union and pad it with ``margin`` background voxels per side.

    Padding (rather than widening the crop) keeps the result identical to working on the full arrays with
    background outside them, also when the union touches the array border.

    Args:
        *masks: Boolean arrays of one shape.
        margin: Background voxels added on every side.

    Returns:
        The cropped masks, in input order; arrays of shape ``(2 * margin,) * ndim`` when all masks are empty.
    """
    union = functools.reduce(np.logical_or, masks)  # (np.logical_or.reduce would stack the masks first)
    ndim = union.ndim
    slices = []
    rest = union
    for _ in range(ndim):  # leading axis from a contiguous reshape, then project it away (2 full passes in all)
        present = np.flatnonzero(rest.reshape(rest.shape[0], -1).any(axis=1))
        if present.size == 0:
            return tuple(np.zeros((2 * margin,) * ndim, dtype=bool) for _ in masks)
        slices.append(slice(int(present[0]), int(present[-1]) + 1))
        rest = rest.any(axis=0) if rest.ndim > 1 else rest
    box = tuple(slices)
    return tuple(np.pad(m[box], margin, mode="constant", constant_values=False) for m in masks)


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: ``mask`` minus its erosion with face connectivity (outside the array = background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm, prediction → reference and reference → prediction.

    .. math::

        d(S \\to G) = \\{\\min_{g \\in \\partial G} \\lVert (s - g) \\odot h \\rVert_2 : s \\in \\partial S\\}

    with voxel size ``h``; exact (Euclidean distance transform with ``sampling = spacing``), no subsampling.

    Args:
        pred: Boolean prediction mask S, not empty.
        ref: Boolean reference mask G, same shape, not empty.
        spacing: Voxel size in mm per array axis.

    Returns:
        ``(d_pred_to_ref, d_ref_to_pred)``: one distance per surface voxel of S and of G (float64, unordered).

    Raises:
        ValueError: If a mask is empty (the empty-mask rules live in :func:`hd95` and :func:`assd`), or on a shape or
            spacing mismatch.

    Identities pinned by tests: equal to medpy's ``__surface_distances`` (also for masks touching the border);
    concentric boxes with equal gaps g mm on every axis give d(G→S) ≡ g and max d(S→G) = g√ndim.
    """
    pred, ref = _check_pair(pred, ref)
    sp = _check_spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        raise ValueError(
            f"surface_distances needs two non-empty masks (pred voxels {int(pred.sum())}, ref voxels "
            f"{int(ref.sum())}); hd95/assd apply the empty-mask conventions."
        )
    pred, ref, sp = _drop_singleton_axes(pred, ref, sp)
    pred_c, ref_c = crop_to_joint_bbox(pred, ref, margin=1)
    surf_pred, surf_ref = surface(pred_c), surface(ref_c)
    d_to_ref = ndimage.distance_transform_edt(~surf_ref, sampling=sp)
    d_to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sp)
    return d_to_ref[surf_pred], d_to_pred[surf_ref]


def _empty_distance(pred_empty: bool, ref_empty: bool, brats_empty: bool) -> float | None:
    """The distance-metric value fixed by the empty-mask rules, or None when both masks are non-empty."""
    if pred_empty and ref_empty:
        return 0.0
    if pred_empty or ref_empty:
        return BRATS_EMPTY_DISTANCE_MM if brats_empty else math.nan
    return None


def _p95(d: np.ndarray) -> float:
    return float(np.percentile(d, 95, method="linear"))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], *, brats_empty: bool = False) -> float:
    """95th-percentile symmetric Hausdorff distance in mm.

    .. math::

        \\mathrm{HD95}(S, G) = \\max\\big(P_{95}\\, d(S \\to G),\\; P_{95}\\, d(G \\to S)\\big)

    with :func:`surface_distances` and numpy's linear-interpolation percentile. Used in G. Wang et al., "A
    Noise-Robust Framework for Automatic Segmentation of COVID-19 Pneumonia Lesions from CT Images", IEEE TMI 2020,
    doi:10.1109/TMI.2020.3000314, and by the BraTS challenge.

    Args:
        pred: Boolean prediction mask S.
        ref: Boolean reference mask G (same shape).
        spacing: Voxel size in mm per array axis.
        brats_empty: Exactly one empty mask gives 373.12866 mm (BraTS) instead of NaN.

    Returns:
        HD95 in mm; 0 when both masks are empty.

    Identities pinned by tests: symmetric in (S, G); HD95(M, M) = 0; concentric boxes with gap g mm on every axis
    give g; agrees with medpy's ``hd95`` on shapes whose two directed distance sets coincide.
    """
    pred, ref = _check_pair(pred, ref)
    _check_spacing(spacing, pred.ndim)
    fixed = _empty_distance(not pred.any(), not ref.any(), brats_empty)
    if fixed is not None:
        return fixed
    d_sg, d_gs = surface_distances(pred, ref, spacing)
    return max(_p95(d_sg), _p95(d_gs))


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], *, brats_empty: bool = False) -> float:
    """Average symmetric surface distance in mm: the mean of all surface distances of both directions.

    .. math::

        \\mathrm{ASSD}(S, G) = \\frac{\\sum d(S \\to G) + \\sum d(G \\to S)}{|\\partial S| + |\\partial G|}

    (Heimann et al., IEEE TMI 2009, doi:10.1109/TMI.2009.2013851). medpy's ``assd`` instead averages the two directed
    means.

    Args:
        pred: Boolean prediction mask S.
        ref: Boolean reference mask G (same shape).
        spacing: Voxel size in mm per array axis.
        brats_empty: Exactly one empty mask gives 373.12866 mm instead of NaN (same rule as :func:`hd95`).

    Returns:
        ASSD in mm; 0 when both masks are empty.

    Identities pinned by tests: symmetric; ASSD(M, M) = 0; equals a brute-force pairwise computation.
    """
    pred, ref = _check_pair(pred, ref)
    _check_spacing(spacing, pred.ndim)
    fixed = _empty_distance(not pred.any(), not ref.any(), brats_empty)
    if fixed is not None:
        return fixed
    d_sg, d_gs = surface_distances(pred, ref, spacing)
    return float((d_sg.sum() + d_gs.sum()) / (d_sg.size + d_gs.size))


def _counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    return tp, fp, fn, pred.size - tp - fp - fn


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _dice_from_counts(tp: int, fp: int, fn: int) -> float:
    return 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2.0 * tp + fp + fn)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient.

    .. math::

        \\mathrm{Dice}(S, G) = \\frac{2 |S \\cap G|}{|S| + |G|}

    (Dice, Ecology 1945, doi:10.2307/1932409). No smoothing term.

    Args:
        pred: Boolean prediction mask S.
        ref: Boolean reference mask G (same shape).

    Returns:
        Dice in [0, 1]; 1 when both masks are empty, 0 when exactly one is.

    Identities pinned by tests: Dice(M, M) = 1; symmetric; hand-counted value on a 1-D example.
    """
    pred, ref = _check_pair(pred, ref)
    tp, fp, fn, _ = _counts(pred, ref)
    return _dice_from_counts(tp, fp, fn)


def rve(pred: np.ndarray, ref: np.ndarray) -> float:
    """Relative volume error (the voxel volume cancels, so no spacing is needed).

    .. math::

        \\mathrm{RVE}(S, G) = \\frac{\\lvert V_S - V_G \\rvert}{V_G}

    (G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314).

    Args:
        pred: Boolean prediction mask S.
        ref: Boolean reference mask G (same shape).

    Returns:
        RVE ≥ 0 (a fraction, not %); NaN when G is empty; 1 when only S is empty.

    Identities pinned by tests: RVE(M, M) = 0; hand-counted value; independent of overlap.
    """
    pred, ref = _check_pair(pred, ref)
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    return _ratio(abs(n_pred - n_ref), n_ref)


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sensitivity (recall, true-positive rate) TP / (TP + FN); NaN when the reference is empty.

    Identities pinned by tests: 1 when S ⊇ G; hand-counted value.
    """
    pred, ref = _check_pair(pred, ref)
    tp, _, fn, _ = _counts(pred, ref)
    return _ratio(tp, tp + fn)


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Specificity (true-negative rate) TN / (TN + FP) over the whole array; NaN when the reference fills it.

    Identities pinned by tests: 1 when S ⊆ G; hand-counted value.
    """
    pred, ref = _check_pair(pred, ref)
    _, fp, _, tn = _counts(pred, ref)
    return _ratio(tn, tn + fp)


def label_or_region_to_key(label_or_region: LabelOrRegion | Sequence[int]) -> str:
    """nnU-Net's JSON key: ``"1"`` for label 1, ``"(1, 2, 3)"`` for a region, ``"(3,)"`` for a one-label region."""
    if isinstance(label_or_region, Iterable) and not isinstance(label_or_region, str):
        return str(tuple(int(v) for v in label_or_region))
    return str(int(label_or_region))


def _metrics_from_counts(
    tp: int, fp: int, fn: int, tn: int, voxel_size: float, hd95_mm: float, assd_mm: float, ndim: int
) -> dict[str, float | int]:
    n_pred, n_ref = tp + fp, tp + fn
    ref_key, pred_key = size_keys(ndim)
    return {
        "Dice": _dice_from_counts(tp, fp, fn),
        "HD95_mm": hd95_mm,
        "ASSD_mm": assd_mm,
        "RVE": _ratio(abs(n_pred - n_ref), n_ref),
        "Sensitivity": _ratio(tp, tp + fn),
        "Specificity": _ratio(tn, tn + fp),
        ref_key: n_ref * voxel_size,
        pred_key: n_pred * voxel_size,
        "IoU": 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn),
        "TP": tp,
        "FP": fp,
        "FN": fn,
        "TN": tn,
        "n_pred": n_pred,
        "n_ref": n_ref,
    }


def mask_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], *, brats_empty: bool = False
) -> dict[str, float | int]:
    """All metrics of :func:`metric_keys` for one pair of boolean masks (surface distances computed once).

    ``IoU`` follows the Dice convention (1 when both masks are empty); nnU-Net's own ``compute_metrics`` gives NaN
    there. ``TP/FP/FN/TN/n_pred/n_ref`` are voxel counts as in nnU-Net. Masks with two axes get areas in mm²
    (:data:`METRIC_KEYS_2D`), others volumes in mm³ (:data:`METRIC_KEYS`).
    """
    pred, ref = _check_pair(pred, ref)
    sp = _check_spacing(spacing, pred.ndim)
    tp, fp, fn, tn = _counts(pred, ref)
    fixed = _empty_distance(tp + fp == 0, tp + fn == 0, brats_empty)
    if fixed is None:
        d_sg, d_gs = surface_distances(pred, ref, sp)
        hd, asd = max(_p95(d_sg), _p95(d_gs)), float((d_sg.sum() + d_gs.sum()) / (d_sg.size + d_gs.size))
    else:
        hd = asd = fixed
    return _metrics_from_counts(tp, fp, fn, tn, float(np.prod(sp)), hd, asd, pred.ndim)


def both_empty_metrics(n_voxels: int, voxel_size: float, ndim: int = 3) -> dict[str, float | int]:
    """The metrics of a label absent from both masks of a case with ``n_voxels`` voxels (no arrays needed).

    Args:
        n_voxels: Voxels (pixels) of the case.
        voxel_size: Voxel volume in mm³, or pixel area in mm² when ``ndim`` is 2.
        ndim: Axes of the case's masks (2: area keys, as :func:`mask_metrics`).
    """
    return _metrics_from_counts(0, 0, 0, int(n_voxels), float(voxel_size), 0.0, 0.0, int(ndim))


def region_mask(seg: np.ndarray, label_or_region: LabelOrRegion | Sequence[int]) -> np.ndarray:
    """Boolean mask of a label (``seg == label``) or of a region (union of its labels)."""
    if isinstance(label_or_region, Iterable) and not isinstance(label_or_region, str):
        return np.isin(seg, np.asarray(list(label_or_region)))
    return seg == label_or_region


def compute_case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels_or_regions: Sequence[LabelOrRegion | Sequence[int]],
    brats_empty: bool = False,
) -> dict[str, dict[str, float | int]]:
    """Metrics of one case for each label (``seg == l``) or region (``seg ∈ r``) of two label maps.

    Args:
        pred: Predicted label map (integer array).
        ref: Reference label map, same shape.
        spacing: Voxel size in mm per array axis.
        labels_or_regions: Foreground labels (ints) and/or regions (tuples of labels), as nnU-Net's
            ``LabelManager.foreground_labels`` / ``foreground_regions``.
        brats_empty: Exactly one empty mask gives HD95/ASSD 373.12866 mm instead of NaN.

    Returns:
        ``{key: {metric: value}}`` with nnU-Net's keys (``"1"``, ``"(1, 2, 3)"``) and :func:`metric_keys` of the
        maps' axes (areas in mm² for 2-D maps, volumes in mm³ otherwise).

    Raises:
        ValueError: On a shape mismatch, a bad spacing or an empty ``labels_or_regions``.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref label maps must have the same shape, got {pred.shape} and {ref.shape}.")
    if pred.dtype == np.bool_ or ref.dtype == np.bool_:
        raise TypeError("compute_case_metrics takes integer label maps; use mask_metrics for boolean masks.")
    if len(labels_or_regions) == 0:
        raise ValueError("labels_or_regions is empty; give the foreground labels or regions to evaluate.")
    return {
        label_or_region_to_key(lr): mask_metrics(
            region_mask(pred, lr), region_mask(ref, lr), spacing, brats_empty=brats_empty
        )
        for lr in labels_or_regions
    }
