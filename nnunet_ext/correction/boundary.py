"""Trusted-case spatial label correction: boundary offsets in mm and the Gaussian logit shift (METHODS.md §9.3).

J. Yao et al., *Learning to Segment from Noisy Annotations: A Spatial Correction Approach*, ICLR 2023,
arXiv:2308.02498 (official code: GitHub ``michaelofsbu/SpatialCorrection``, ``utils/LabelClean.py``). A model
trained on labels with a consistent boundary bias reproduces the bias; its predictions on a few trusted
(expert-checked) cases measure it, and the training labels are replaced by the model's predictions with the
boundary moved back by the measured amount.

Pure numpy/scipy. Masks are boolean arrays; ``spacing`` is the voxel size in mm per array axis (numpy order, i.e.
the reversed SimpleITK spacing). Axes of length 1 are ignored (a 2-D image stored as ``(1, H, W)`` with nnU-Net's
out-of-plane spacing 999 gives in-plane answers).

Sign convention (all functions): an **offset b > 0 means the prediction is larger than the reference** (its
boundary lies outside the reference's) and the correction moves the boundary **inward** by about 0.75·b; b < 0
moves it outward. The official code uses the opposite sign (its ``diff < 0`` shrinks).

Definitions (pinned by tests):

- Boundary rings of a mask M: the inner ring ∂⁻M (voxels of M with a face neighbour outside M, i.e. the surface
  voxels) and the outer ring ∂⁺M (voxels outside M with a face neighbour in M). The array border is **not** a
  boundary: a mask cut by the field of view continues beyond it, so there is nothing to shift there (the official
  code behaves the same way; :func:`nnunet_ext.evaluation.metrics.surface` instead treats outside the array as
  background, which is right for surface distances but not for moving a boundary).
- Signed distance (:func:`signed_distance`): half the sum of the Euclidean distances between voxel centres to the
  nearest inner-ring and the nearest outer-ring voxel, negative in M. The boundary lies on the voxel faces between
  the rings: inner-ring voxels get −h/2 and outer-ring voxels +h/2, h the spacing across their boundary face
  ("±½ voxel"), and an axis-aligned flat boundary gets the exact distance to the face plane at every voxel. The
  official code uses −EDT(M) + EDT(¬M) in pixels, where the rings sit at ±1 pixel (a jump of 2 across a boundary
  of width 0), so its distances are about half a pixel too large in magnitude.
- Boundary offset (:func:`boundary_offset`): the mean over the reference's surface voxels v ∈ ∂⁻G of
  d_G(v) − d_S(v), how much deeper the reference boundary lies in the prediction S than in G itself. Subtracting
  d_G(v) (−h/2) moves the sample from the voxel centre onto the reference boundary; identical masks give exactly 0
  and a flat boundary dilated or eroded by k voxels gives exactly ±k·h. The official code averages d_S − 1 over
  the reference's outer ring with its ±1-pixel distances: exact for an erosion but one pixel too large for a
  dilation, which is precisely the case of the J1 noise (predictions too large).

On curved boundaries voxel distances read slightly short (the nearest voxel centre of a ring is always the one
that sticks out most, and more so the farther away it is): the offset of a disc dilated or eroded by r mm at
0.7 mm pixels has a magnitude 0–0.4 mm below r, of a sphere at (2.5, 0.8, 0.8) mm 0.5–0.9 mm below r, partly
because a threshold dilation itself moves such surfaces by less than r (4.70 mm for a disc and r = 4.9 mm).

Cost: two Euclidean distance transforms per mask (about 0.3–0.5 µs per voxel each on one core); a 100 × 256 × 256
volume takes a few seconds per class, less for small objects (the transforms are cropped to the object).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np
from scipy import ndimage

from nnunet_ext.evaluation.metrics import LabelOrRegion, _check_spacing, region_mask

GAUSSIAN_CUTOFF: Final[float] = 8.0
"""Beyond ``GAUSSIAN_CUTOFF · |b|`` from the mask the shift term A·exp(−d²/2b²) is below exp(−32) ≈ 1e-14 · A and
is set to 0, so the signed distance is only computed up to that distance (it decides the cost for small masks)."""


def _check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean mask, got dtype {mask.dtype}; pass e.g. `seg == label`.")
    if mask.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, got a scalar.")
    return mask


def _check_logits(logits: np.ndarray, name: str = "logits") -> np.ndarray:
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {logits.dtype}.")
    if logits.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, got a scalar.")
    return logits


def _check_offset(offset_mm: float) -> float:
    b = float(offset_mm)
    if not math.isfinite(b):
        raise ValueError(f"offset_mm must be finite, got {offset_mm}.")
    return b


def _spatial_axes(shape: Sequence[int]) -> list[int]:
    """The axes longer than 1 (one axis kept when there are none, so that a single voxel stays an array)."""
    keep = [i for i, n in enumerate(shape) if n > 1]
    return keep or [0]


def voxel_size_mm(spacing: Sequence[float], shape: Sequence[int]) -> float:
    """One voxel in mm: the smallest spacing over the axes longer than 1.

    This is the smallest step by which a boundary can move (the smallest in-plane spacing for the usual data, whose
    out-of-plane spacing is the largest one or belongs to a singleton axis). It is the threshold of
    :func:`correct_label` and the value of the one-sided empty cases of :func:`boundary_offset`.

    Args:
        spacing: Voxel size in mm per array axis.
        shape: The array's shape.
    """
    sp = _check_spacing(spacing, len(shape))
    return float(sp[_spatial_axes(shape)].min())


def _rings(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    inner = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=1)
    outer = ~mask & ndimage.binary_dilation(mask, structure=structure)
    return inner, outer


def _signed_distance_in_box(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """:func:`signed_distance` of a mask with a boundary (neither empty nor full), no axis handling."""
    inner, outer = _rings(mask)
    half = ndimage.distance_transform_edt(~inner, sampling=spacing)
    half += ndimage.distance_transform_edt(~outer, sampling=spacing)
    half *= 0.5
    np.negative(half, out=half, where=mask)
    return half


def _box(mask: np.ndarray, margins: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask widened by ``margins`` voxels per axis and clipped to the array (not padded:
    padding would turn the array border into a boundary)."""
    box = []
    for axis, margin in enumerate(margins):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, int(present[0]) - margin), min(mask.shape[axis], int(present[-1]) + 1 + margin)))
    return tuple(box)


def signed_distance(mask: np.ndarray, spacing: Sequence[float], *, max_distance_mm: float | None = None) -> np.ndarray:
    """Signed Euclidean distance in mm to the mask's boundary, negative inside, boundary voxels at ±½ voxel.

    .. math::

        d_M(x) = \\mp \\tfrac12 \\left( \\min_{v \\in \\partial^- M} \\lVert (x - v) \\odot h \\rVert_2
        + \\min_{v \\in \\partial^+ M} \\lVert (x - v) \\odot h \\rVert_2 \\right),
        \\quad - \\text{ for } x \\in M

    with the inner and outer rings ∂⁻M, ∂⁺M (face connectivity; the array border is not a boundary) and voxel
    size h, from two ``scipy.ndimage.distance_transform_edt(·, sampling=spacing)``. Ring voxels get ∓h_a/2, h_a the
    spacing across their boundary face; a flat axis-aligned boundary gets the exact distance to the face plane. Axes
    of length 1 are ignored. Not in the official code, whose −EDT(M) + EDT(¬M) puts the rings at ±1 pixel.

    Args:
        mask: Boolean mask M.
        spacing: Voxel size in mm per array axis (a singleton axis's value is ignored).
        max_distance_mm: If given, only voxels within this distance of the mask's bounding box are computed (exactly);
            the others lie outside M and get +inf. Saves time for small masks.

    Returns:
        float64 array of the mask's shape; +inf everywhere for an empty mask, −inf for a mask filling the array (no
        boundary to measure to).

    Raises:
        TypeError: If ``mask`` is not boolean.
        ValueError: On a spacing of the wrong length or not positive, or a negative ``max_distance_mm``.

    Identities pinned by tests: a half-space gives ±(k − ½)·h at the k-th voxel from the boundary, on anisotropic
    grids with the spacing of the axis across it; a disc of radius R gives |x − c| − R within half a voxel
    everywhere, unbiased at the boundary, a sphere within half its largest voxel side (isotropic: within half a
    voxel on the axes, up to 0.7 voxel for voxels touching it only at an edge or corner); a ``(1, H, W)`` slice with
    spacing 999 gives the ``(H, W)`` result; ``max_distance_mm`` changes no value within that distance.
    """
    mask = _check_mask(mask, "mask")
    sp = _check_spacing(spacing, mask.ndim)
    if max_distance_mm is not None and not max_distance_mm >= 0:
        raise ValueError(f"max_distance_mm must be >= 0 or None, got {max_distance_mm}.")
    keep = _spatial_axes(mask.shape)
    m = mask.reshape(tuple(mask.shape[a] for a in keep))
    sp = sp[keep]
    if not m.any():
        return np.full(mask.shape, np.inf)
    if m.all():
        return np.full(mask.shape, -np.inf)
    if max_distance_mm is None:
        return _signed_distance_in_box(m, sp).reshape(mask.shape)
    # +1 voxel keeps the outer ring inside the box; every ring voxel is in it, so the distances there are exact.
    box = _box(m, [1 + math.ceil(max_distance_mm / h) for h in sp])
    out = np.full(m.shape, np.inf)
    out[box] = _signed_distance_in_box(m[box], sp)
    return out.reshape(mask.shape)


def boundary_offset(prediction_mask: np.ndarray, reference_mask: np.ndarray, spacing: Sequence[float]) -> float | None:
    """Mean signed offset in mm of the prediction's boundary from the reference's: > 0 when the prediction is larger.

    .. math::

        b = \\frac{1}{|\\partial^- G|} \\sum_{v \\in \\partial^- G} \\bigl( d_G(v) - d_S(v) \\bigr)

    with the prediction S, the reference G, the reference's surface voxels ∂⁻G (face connectivity, not at the array
    border) and the signed distances d of :func:`signed_distance`. ``d_G(v)`` (= −h/2) moves each sample from the
    surface voxel's centre onto the reference boundary, so identical masks give exactly 0 and a flat boundary
    dilated (eroded) by k voxels gives exactly +k·h (−k·h). Sampling the official outer ring instead works just as
    well with these ±½-voxel distances; with the official ±1-pixel ones it reads a dilation one pixel too large.

    Masks without a boundary, following the official rules in mm (one voxel = :func:`voxel_size_mm`):

    =====================================  ===============  ==============================================
    Case                                   Result           Official (pixels, opposite sign)
    =====================================  ===============  ==============================================
    both empty                             None             skipped (not counted)
    reference empty, prediction not        +1 voxel         −1
    prediction empty, reference not        −1 voxel         +1
    reference fills the array (no          None             undefined
    boundary), prediction not empty
    prediction fills the array,            +1 voxel         undefined (scipy measures to a phantom voxel)
    reference does not
    =====================================  ===============  ==============================================

    Args:
        prediction_mask: Boolean prediction S (the model's thresholded output).
        reference_mask: Boolean trusted reference G, same shape.
        spacing: Voxel size in mm per array axis (a singleton axis's value is ignored).

    Returns:
        The offset in mm, or None where it is undefined.

    Raises:
        TypeError: If a mask is not boolean.
        ValueError: On a shape or spacing mismatch.

    Identities pinned by tests: 0 for identical masks; ±k·h for a half-space dilated/eroded by k voxels along any
    axis of an anisotropic grid (where the official estimate reads −(k + 1) and +k pixels); within half a voxel of
    ±r for discs and anisotropic cylinders dilated/eroded by r ≤ 4 mm, within 0.25 mm of the area displacement up to
    r = 7 mm; within half the slice spacing for anisotropic spheres; the ``(1, H, W)`` slice gives the ``(H, W)``
    value; the array border is no boundary; the empty-mask table.
    """
    pred = _check_mask(prediction_mask, "prediction_mask")
    ref = _check_mask(reference_mask, "reference_mask")
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction_mask and reference_mask must have the same shape, got {pred.shape} and {ref.shape}."
        )
    sp = _check_spacing(spacing, pred.ndim)
    keep = _spatial_axes(pred.shape)
    shape = tuple(pred.shape[a] for a in keep)
    pred, ref, sp = pred.reshape(shape), ref.reshape(shape), sp[keep]
    voxel = float(sp.min())
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not ref_any:
        return voxel if pred_any else None
    if not pred_any:
        return -voxel
    if ref.all():
        return None
    if pred.all():
        return voxel
    # Crop to the joint bounding box + 1 voxel: it holds every ring voxel of both masks, so distances are exact.
    box = _box(pred | ref, [1] * pred.ndim)
    pred, ref = pred[box], ref[box]
    inner, outer = _rings(ref)
    d_ref = -0.5 * ndimage.distance_transform_edt(~outer, sampling=sp)[inner]
    d_pred = _signed_distance_in_box(pred, sp)[inner]
    return float(np.mean(d_ref - d_pred))


def _class_key(label_or_region: LabelOrRegion | Sequence[int]) -> LabelOrRegion:
    if isinstance(label_or_region, Iterable) and not isinstance(label_or_region, str):
        return tuple(int(v) for v in label_or_region)
    return int(label_or_region)


def estimate_offsets(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    spacings: Iterable[Sequence[float]],
    classes: Sequence[LabelOrRegion | Sequence[int]],
) -> dict[LabelOrRegion, float | None]:
    """Per-class boundary offset in mm pooled over trusted cases: the mean of the per-case offsets.

    .. math::

        b_c = \\frac{1}{|K_c|} \\sum_{k \\in K_c} b(S_{k,c}, G_{k,c}),
        \\quad K_c = \\{k : b(S_{k,c}, G_{k,c}) \\text{ defined}\\}

    with :func:`boundary_offset` b per case k. Every case counts once whatever its size (one large organ does not
    decide the estimate, and the ±1-voxel values of one-sided empty cases get the weight of a case), as in the
    official code. The official code divides the sum by the number of defined (case, class) pairs over **all**
    classes, so with 3 classes each offset is about a third of the measured one; here each class is normalised by
    its own count |K_c| (METHODS.md §9.3 [D]). The official σ factor γ (offset · γ) is the caller's.

    Args:
        pairs: ``(prediction, reference)`` label maps per trusted case (integer arrays of one shape per case; the
            prediction is the model's argmax or region decoding). May be a generator (cases are read once).
        spacings: Voxel size in mm per array axis, one per case, in the same order.
        classes: Foreground labels (ints) and/or regions (tuples of labels), as nnU-Net's
            ``LabelManager.foreground_labels`` / ``foreground_regions``.

    Returns:
        ``{class: offset}`` with ints for labels and tuples for regions as keys; None for a class that no case
        defines (absent from every prediction and reference).

    Raises:
        ValueError: If ``classes`` is empty or ``pairs`` and ``spacings`` differ in length; as
            :func:`boundary_offset`.

    Identities pinned by tests: per-class normalisation (a class absent from a case does not dilute another);
    equal to the mean of :func:`boundary_offset` over cases; None for a class absent everywhere.
    """
    keys = [_class_key(c) for c in classes]
    if not keys:
        raise ValueError("classes is empty; give the foreground labels or regions to estimate offsets for.")
    values: dict[LabelOrRegion, list[float]] = {k: [] for k in keys}
    n_cases = 0
    for (pred, ref), spacing in zip(pairs, spacings, strict=True):
        pred, ref = np.asarray(pred), np.asarray(ref)
        if pred.shape != ref.shape:
            raise ValueError(f"case {n_cases}: prediction and reference shapes differ, {pred.shape} vs {ref.shape}.")
        for k in keys:
            b = boundary_offset(region_mask(pred, k), region_mask(ref, k), spacing)
            if b is not None:
                values[k].append(b)
        n_cases += 1
    return {k: (float(np.mean(v)) if v else None) for k, v in values.items()}


def _shift_term(margin: np.ndarray, distance: np.ndarray, offset_mm: float) -> np.ndarray | None:
    """−sign(b)·A·exp(−d²/2b²) (float64), or None when the band holds no voxel (nothing to scale A by)."""
    b = abs(offset_mm)
    band = (distance >= -b) & (distance < 0) if offset_mm > 0 else (distance > 0) & (distance <= b)
    if not band.any():
        return None
    amplitude = float(np.abs(margin[band]).max())
    term = np.square(distance)
    term *= -1.0 / (2.0 * b * b)
    np.exp(term, out=term)  # d = ±inf (beyond the cutoff, or no boundary) gives exactly 0
    term *= -amplitude if offset_mm > 0 else amplitude
    return term


def shift_logits(logits: np.ndarray, offset_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Move the boundary of a binary logit map (foreground z > 0) inward (b > 0) or outward (b < 0).

    .. math::

        z' = z - \\operatorname{sign}(b)\\, A\\, e^{-d^2 / 2 b^2},
        \\qquad A = \\max_{x \\in B} |z(x)|,
        \\quad B = \\begin{cases} \\{-|b| \\le d < 0\\} & b > 0 \\\\ \\{0 < d \\le |b|\\} & b < 0 \\end{cases}

    with d the :func:`signed_distance` of the mask z > 0 (sigmoid p > 0.5) and the new label z′ > 0. This is the
    official ``_shrink``/``_expand`` with the sign flipped to this module's convention (official ``diff < 0``
    shrinks) and distances in mm. For logits linear in the distance (z = −s·d) A = s|b| and the boundary moves by
    u·|b| with u = e^{−u²/2}, u ≈ 0.7531 (so by about 0.75 |b|, not |b|, as in the official code).

    Deviations, all where the official code has no answer: an empty band (|b| below half the spacing across every
    boundary face) gives A = 0 and no change (the official ``np.max`` of an empty array raises); the term is 0
    beyond :data:`GAUSSIAN_CUTOFF`·|b| from the mask (below 1e-14·A); b = 0 changes nothing. A mask that is empty or
    fills the array has no boundary and is kept, as in the official code.

    Args:
        logits: Logit map z of one class (sigmoid logit, or the softmax margin of :func:`class_margins`); spatial
            axes only. Probabilities p can be passed as log(p / (1 − p)).
        offset_mm: Boundary offset b in mm (:func:`boundary_offset` convention: > 0 shrinks).
        spacing: Voxel size in mm per array axis.

    Returns:
        z′, same shape and dtype as ``logits``.

    Raises:
        TypeError: If ``logits`` is not a floating-point array.
        ValueError: On a non-finite offset or a bad spacing.

    Identities pinned by tests: a hand-computed 1-D ramp (A, z′ and the new boundary); on a linear logit ramp the
    disc radius changes by ∓0.7531·|b| within half a voxel; b > 0 never adds foreground and b < 0 never removes
    any; b = 0, an all-negative map and an empty band change nothing; singleton axes are ignored.
    """
    z = _check_logits(logits)
    sp = _check_spacing(spacing, z.ndim)
    b = _check_offset(offset_mm)
    if b == 0:
        return z.copy()
    d = signed_distance(z > 0, sp, max_distance_mm=GAUSSIAN_CUTOFF * abs(b))
    term = _shift_term(z, d, b)
    return z.copy() if term is None else z + term.astype(z.dtype, copy=False)


def class_margins(logits: np.ndarray) -> np.ndarray:
    """Softmax logit margins m_c = z_c − max_{k≠c} z_k, channel first: class c is the argmax where m_c > 0.

    The margin is the softmax analogue of a sigmoid logit: its zero level is the argmax boundary, i.e. the boundary of
    nnU-Net's label map (log p_c / (1 − p_c) would put it at p_c = 0.5, which is not the argmax boundary for more
    than 2 classes); for 2 classes m_1 = z_1 − z_0 = the sigmoid logit. It is invariant to adding a per-voxel
    constant, so log-probabilities give the same margins as logits.

    Args:
        logits: Softmax logits ``(C, *spatial)``, C ≥ 2.

    Returns:
        Margins of the same shape and dtype.

    Raises:
        TypeError: If ``logits`` is not a floating-point array.
        ValueError: If there are fewer than 2 channels.
    """
    z = _check_logits(logits)
    if z.ndim < 2 or z.shape[0] < 2:
        raise ValueError(f"logits must be (C, *spatial) with C >= 2 classes, got shape {z.shape}.")
    second, first = np.partition(z, z.shape[0] - 2, axis=0)[-2:]  # second largest and largest per voxel
    # max over the other classes: the second largest for the maximum's class, the largest for all others (a tie for
    # the maximum makes both equal, so tied classes get margin 0)
    return z - np.where(z == first, second, first)


def _check_class_offsets(offsets_mm: Mapping[int, float | None], n_classes: int) -> dict[int, float | None]:
    checked = {}
    for c, b in offsets_mm.items():
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 1 <= int(c) < n_classes:
            raise ValueError(
                f"offsets_mm keys must be foreground class indices 1..{n_classes - 1} (the background is not "
                f"shifted), got {c!r}."
            )
        checked[int(c)] = None if b is None else _check_offset(b)
    return checked


def shift_class_logits(logits: np.ndarray, offsets_mm: Mapping[int, float], spacing: Sequence[float]) -> np.ndarray:
    """Shift each foreground class of softmax logits by its own offset; the new label map is their argmax.

    .. math::

        z'_c = z_c - \\operatorname{sign}(b_c)\\, A_c\\, e^{-d_c^2 / 2 b_c^2}

    with the margin m_c of :func:`class_margins` in the role of the binary logit of :func:`shift_logits`: d_c is the
    :func:`signed_distance` of the argmax region of c and A_c = max |m_c| over its band. Subtracting the term from
    z_c shifts m_c by exactly that term against the unchanged classes. All terms come from the original logits, so
    the result does not depend on the order of the classes. Overlaps (two expanded classes claiming a voxel) and
    holes (a voxel given up by a shrunk class) are resolved by the argmax of z′, i.e. by the corrected margins
    z′_c − max_{k≠c} z′_k: a voxel left by class c goes to its runner-up class (background or a neighbour).

    Args:
        logits: Softmax logits ``(C, *spatial)`` (log-probabilities work too).
        offsets_mm: ``{class index: offset in mm}`` for the classes to shift (1..C − 1; :func:`boundary_offset`
            convention, > 0 shrinks); classes not given, or given 0, are left unchanged.
        spacing: Voxel size in mm per spatial axis.

    Returns:
        z′, same shape and dtype as ``logits``.

    Raises:
        TypeError: If ``logits`` is not a floating-point array.
        ValueError: On a class index outside 1..C − 1, a non-finite offset or a bad spacing.

    Identities pinned by tests: with 2 classes equal to :func:`shift_logits` on z_1 − z_0; two classes move by their
    own ∓0.7531·|b_c|; voxels leaving a class go to the runner-up.
    """
    z = _check_logits(logits)
    if z.ndim < 2 or z.shape[0] < 2:
        raise ValueError(f"logits must be (C, *spatial) with C >= 2 classes, got shape {z.shape}.")
    sp = _check_spacing(spacing, z.ndim - 1)
    offsets = {c: b for c, b in _check_class_offsets(offsets_mm, z.shape[0]).items() if b}
    out = z.copy()
    if not offsets:
        return out
    labels = np.argmax(z, axis=0)
    margins = class_margins(z)
    for c, b in offsets.items():
        d = signed_distance(labels == c, sp, max_distance_mm=GAUSSIAN_CUTOFF * abs(b))
        term = _shift_term(margins[c], d, b)
        if term is not None:
            out[c] += term.astype(z.dtype, copy=False)
    return out


def correct_label(logits: np.ndarray, offset_mm: float | None, spacing: Sequence[float]) -> np.ndarray:
    """The corrected training label of one class from a binary logit map (official rule, METHODS.md §9.3).

    |b| below one voxel (:func:`voxel_size_mm`, the official 1 pixel) or b undefined (None): the model's thresholded
    prediction z > 0; otherwise the shifted label :func:`shift_logits` z′ > 0. The noisy label is not used.

    Args:
        logits: Logit map of the class (sigmoid logit or a region's logit), spatial axes only.
        offset_mm: The class's offset b in mm (> 0 shrinks), e.g. from :func:`estimate_offsets` times the
            official γ; None keeps the prediction.
        spacing: Voxel size in mm per array axis.

    Returns:
        Boolean mask of the logits' shape.

    Raises:
        TypeError, ValueError: As :func:`shift_logits`.
    """
    z = _check_logits(logits)
    sp = _check_spacing(spacing, z.ndim)
    if offset_mm is None or abs(_check_offset(offset_mm)) < voxel_size_mm(sp, z.shape):
        return z > 0
    return shift_logits(z, offset_mm, sp) > 0


def correct_label_map(
    logits: np.ndarray, offsets_mm: Mapping[int, float | None], spacing: Sequence[float]
) -> np.ndarray:
    """The corrected training label map from softmax logits: :func:`correct_label`'s rule per foreground class.

    Classes with |b_c| below one voxel (:func:`voxel_size_mm` of the spatial axes), None or missing keep the model's
    prediction; the others are shifted together by :func:`shift_class_logits`; the label map is the argmax.

    Args:
        logits: Softmax logits ``(C, *spatial)`` (log-probabilities work too).
        offsets_mm: ``{class index: offset in mm or None}`` for foreground classes 1..C − 1 (> 0 shrinks).
        spacing: Voxel size in mm per spatial axis.

    Returns:
        Label map of the spatial shape, dtype uint8 (uint16 beyond 256 classes), values = channel indices.

    Raises:
        TypeError, ValueError: As :func:`shift_class_logits`.
    """
    z = _check_logits(logits)
    if z.ndim < 2 or z.shape[0] < 2:
        raise ValueError(f"logits must be (C, *spatial) with C >= 2 classes, got shape {z.shape}.")
    sp = _check_spacing(spacing, z.ndim - 1)
    voxel = voxel_size_mm(sp, z.shape[1:])
    shifted = {
        c: b for c, b in _check_class_offsets(offsets_mm, z.shape[0]).items() if b is not None and abs(b) >= voxel
    }
    corrected = shift_class_logits(z, shifted, sp) if shifted else z
    dtype = np.uint8 if z.shape[0] <= 256 else np.uint16
    return np.argmax(corrected, axis=0).astype(dtype)
