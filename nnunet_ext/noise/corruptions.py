"""Pure label-noise operations on boolean masks (no I/O, randomness only through a passed ``np.random.Generator``).

Every distance is in mm with ``spacing`` in the mask's axis order (z, y, x for SimpleITK arrays), so the same
parameters mean the same physical corruption at any resolution.

- :func:`dilate` / :func:`erode`: morphology with the ball of radius ``r`` mm, i.e. an ellipsoidal structuring element
  in voxel units on anisotropic grids (:func:`ball_structure`), computed exactly with Euclidean distance transforms.
- :func:`markov_boundary_noise`: a random walk of the boundary; each step flips outer-boundary voxels in and
  inner-boundary voxels out where a smooth random field is high or low, the field being an AR(1) (Markov) chain in
  time, so bumps and dents persist and grow over steps.
- :func:`markov_expand_shrink_noise`: the published Markov process of Yao et al. (ICLR 2023) that made the JSRT
  noisy labels J1/J2: T steps that each expand (probability θ1) or shrink the mask by flipping ring voxels with
  probability θ2, then random flips of every voxel (θ3), a 5 × 5 Gaussian blur and a threshold. θ1 ≠ 0.5 makes a
  *biased* (systematically too large or too small) label. Defined in voxels, as published.
- :func:`random_dilate_or_erode`: dilation or erosion (sign and radius drawn) by a ball, Yao et al.'s J3 kind.
- :func:`drop_lesions`: removes whole connected components (missed lesions).
- :func:`add_spurious_blobs`: adds small ellipsoids near or far from the foreground (false-positive lesions).

Outside the array counts as background everywhere (as scipy's ``border_value=0``), except in
:func:`markov_expand_shrink_noise`, which follows the official code (see there). Identities pinned by tests:
``dilate``/``erode`` equal scipy's binary dilation/erosion with :func:`ball_structure`; radius 0 and empty masks are
no-ops; every random operation is reproducible for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, Final, Literal

import numpy as np
from scipy import ndimage

from nnunet_ext.evaluation.metrics import crop_to_joint_bbox

_EPS_MM: Final[float] = 1e-6  # distances within this of the radius count as inside (floating-point ties)


def _check(mask: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be boolean, got dtype {mask.dtype}.")
    if spacing is None:
        return mask, None
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.size != mask.ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing {tuple(spacing)} must give one positive voxel size in mm per axis ({mask.ndim}).")
    return mask, sp


def bounding_box(mask: np.ndarray, margin: Sequence[int] | int = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` widened by ``margin`` voxels per axis, clipped to the array."""
    margins = [int(margin)] * mask.ndim if np.isscalar(margin) else [int(m) for m in margin]
    slices = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo = max(int(present[0]) - margins[axis], 0)
        hi = min(int(present[-1]) + 1 + margins[axis], mask.shape[axis])
        slices.append(slice(lo, hi))
    return tuple(slices)


def ball_structure(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Structuring element of all voxel offsets within ``radius_mm`` (an ellipsoid in voxels when anisotropic).

    .. math::

        B_r = \\{ k \\in \\mathbb{Z}^n : \\lVert k \\odot h \\rVert_2 \\le r \\}

    Args:
        radius_mm: Radius r in mm (≥ 0; below the smallest spacing the element is the single centre voxel).
        spacing: Voxel size h in mm per axis.

    Returns:
        Boolean array of odd size per axis.
    """
    if not radius_mm >= 0:
        raise ValueError(f"radius_mm must be >= 0, got {radius_mm}.")
    sp = np.asarray(spacing, dtype=np.float64)
    half = np.floor((radius_mm + _EPS_MM) / sp).astype(int)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s) ** 2 for g, s in zip(grids, sp)) <= (radius_mm + _EPS_MM) ** 2


def distance_outside(mask: np.ndarray, spacing: Sequence[float], max_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Distance in mm from each voxel to the nearest foreground voxel, inside the box reachable within ``max_mm``.

    Returns:
        ``(box, distances)``: the crop of the array (foreground bounding box + ``max_mm``) and the distances there.
    """
    mask, sp = _check(mask, spacing)
    box = bounding_box(mask, np.ceil(max_mm / sp).astype(int) + 1)
    return box, ndimage.distance_transform_edt(~mask[box], sampling=sp)


def distance_inside(mask: np.ndarray, spacing: Sequence[float]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Distance in mm from each foreground voxel to the nearest background voxel (outside the array included).

    Returns:
        ``(box, distances)``: the foreground bounding box and the distances there (0 on background).
    """
    mask, sp = _check(mask, spacing)
    box = bounding_box(mask)
    # One padded background layer stands in for everything outside the box (and the array): it is always nearer.
    (padded,) = crop_to_joint_bbox(mask[box], margin=1)
    return box, ndimage.distance_transform_edt(padded, sampling=sp)[(slice(1, -1),) * mask.ndim]


def dilate(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Binary dilation with :func:`ball_structure` (``radius_mm``, ``spacing``): voxels within r mm of the mask."""
    mask, _ = _check(mask, spacing)
    if radius_mm < 0:
        raise ValueError(f"radius_mm must be >= 0, got {radius_mm}.")
    if radius_mm == 0 or not mask.any():
        return mask.copy()
    box, d = distance_outside(mask, spacing, radius_mm)
    out = mask.copy()
    out[box] = d <= radius_mm + _EPS_MM
    return out


def erode(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Binary erosion with :func:`ball_structure`: voxels whose whole r-mm ball lies in the mask."""
    mask, _ = _check(mask, spacing)
    if radius_mm < 0:
        raise ValueError(f"radius_mm must be >= 0, got {radius_mm}.")
    if radius_mm == 0 or not mask.any():
        return mask.copy()
    box, d = distance_inside(mask, spacing)
    out = np.zeros_like(mask)
    out[box] = d > radius_mm + _EPS_MM
    return out


def markov_boundary_noise(
    mask: np.ndarray,
    rng: np.random.Generator,
    spacing: Sequence[float],
    *,
    steps: int,
    flip_prob: float,
    correlation_mm: float,
    persistence: float = 0.8,
    allowed: np.ndarray | None = None,
    move_axes: Sequence[int] | None = None,
) -> np.ndarray:
    """Random walk of the boundary driven by a smooth AR(1) random field.

    At step t, with unit-variance field :math:`F_t = \\rho F_{t-1} + \\sqrt{1-\\rho^2}\\, W_t` (W_t white noise
    smoothed by a Gaussian of ``correlation_mm`` and renormalised) and :math:`\\tau = \\Phi^{-1}(1 - p)`:

    .. math::

        M_t = \\big(M_{t-1} \\cup \\{x \\in \\partial^+ M_{t-1} : F_t(x) > \\tau\\}\\big)
              \\setminus \\{x \\in \\partial^- M_{t-1} : F_t(x) < -\\tau\\}

    with outer/inner face-connected boundaries :math:`\\partial^\\pm` (faces along ``move_axes`` only). Each step moves
    the boundary by at most one voxel, so a fraction about ``flip_prob`` of it moves per step, in spatially coherent
    patches.

    Args:
        mask: Boolean mask.
        rng: Random generator (the only source of randomness).
        spacing: Voxel size in mm per axis.
        steps: Number of steps (≥ 0).
        flip_prob: Fraction p of each boundary flipped per step, in [0, 0.5].
        correlation_mm: Standard deviation of the Gaussian smoothing of the field, in mm (> 0).
        persistence: AR(1) coefficient ρ in [0, 1): 0 = independent steps, near 1 = drifting bumps.
        allowed: Optional boolean mask the result is clipped to (grown voxels stay inside it).
        move_axes: Axes along which the boundary moves (default all); :func:`in_plane_axes` leaves out the thick
            axis of anisotropic images, where a one-voxel step would be several mm (annotators draw per slice).

    Returns:
        The corrupted mask (same shape).
    """
    mask, sp = _check(mask, spacing)
    if steps < 0 or not 0 <= flip_prob <= 0.5 or not correlation_mm > 0 or not 0 <= persistence < 1:
        raise ValueError(
            f"need steps >= 0, 0 <= flip_prob <= 0.5, correlation_mm > 0, 0 <= persistence < 1; got steps={steps}, "
            f"flip_prob={flip_prob}, correlation_mm={correlation_mm}, persistence={persistence}."
        )
    if steps == 0 or flip_prob == 0 or not mask.any():
        return mask.copy()
    box = bounding_box(mask, steps + 1)
    m = mask[box].copy()
    allowed_c = None if allowed is None else np.asarray(allowed, dtype=bool)[box]
    face = ndimage.generate_binary_structure(m.ndim, 1)
    if move_axes is not None:
        axes = {int(a) % m.ndim for a in move_axes}
        if not axes:
            raise ValueError("move_axes must name at least one axis.")
        for a in set(range(m.ndim)) - axes:  # no face neighbours along this axis
            idx = [1] * m.ndim
            for k in (0, 2):
                idx[a] = k
                face[tuple(idx)] = False
    tau = NormalDist().inv_cdf(1.0 - flip_prob)
    sigma = correlation_mm / sp
    field = None
    for _ in range(steps):
        fresh = ndimage.gaussian_filter(rng.standard_normal(m.shape), sigma, mode="nearest")
        std = fresh.std()
        fresh = fresh / std if std > 0 else fresh
        field = fresh if field is None else persistence * field + math.sqrt(1 - persistence**2) * fresh
        inner = m & ~ndimage.binary_erosion(m, face, border_value=0)
        outer = ndimage.binary_dilation(m, face) & ~m
        m = (m | (outer & (field > tau))) & ~(inner & (field < -tau))
        if allowed_c is not None:
            m &= allowed_c
    out = mask.copy()
    out[box] = m
    return out


def check_markov_parameters(
    steps: int,
    expand_prob: float,
    flip_prob: float,
    random_flip_prob: float,
    blur_sigma: float,
    blur_radius: int,
) -> None:
    """Raise ``ValueError`` naming the first bad parameter of :func:`markov_expand_shrink_noise`."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps (T) must be a whole number >= 0, got {steps!r}.")
    for name, theta, value in (
        ("expand_prob", "θ1", expand_prob),
        ("flip_prob", "θ2", flip_prob),
        ("random_flip_prob", "θ3", random_flip_prob),
    ):
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"{name} ({theta}) must be a probability in [0, 1], got {value!r}.")
    if not blur_sigma >= 0.0 or not math.isfinite(blur_sigma):
        raise ValueError(f"blur_sigma must be >= 0 voxels (0 = no blur and no threshold), got {blur_sigma!r}.")
    if isinstance(blur_radius, bool) or not isinstance(blur_radius, (int, np.integer)) or blur_radius < 1:
        raise ValueError(f"blur_radius must be a whole number >= 1 voxel (kernel 2r + 1 wide), got {blur_radius!r}.")


def markov_expand_shrink_noise(
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    steps: int,
    expand_prob: float,
    flip_prob: float,
    random_flip_prob: float,
    blur_sigma: float = 2.0,
    blur_radius: int = 2,
) -> np.ndarray:
    """Yao et al.'s Markov expand/shrink label noise (T, θ1, θ2, θ3), in voxel units, 2-D or 3-D.

    Step t = 1..T, with :math:`u_t \\sim U(0, 1)` drawn for all steps up front and face (4- / 6-) neighbourhoods:

    .. math::

        M_t = \\begin{cases}
            M_{t-1} \\cup \\{x \\in \\partial^+ M_{t-1} : v_x < \\theta_2\\} & u_t < \\theta_1 \\text{ (expand)} \\\\
            M_{t-1} \\setminus \\{x \\in \\partial^- M_{t-1} : v_x < \\theta_2\\} & \\text{otherwise (shrink)}
        \\end{cases}

    with :math:`\\partial^+ M` the background voxels with a foreground face neighbour (distance exactly 1) and
    :math:`\\partial^- M` the foreground voxels with a background face neighbour inside the array, and a fresh
    :math:`v_x \\sim U(0, 1)` per ring voxel and step. Then every voxel of the array is flipped with probability θ3
    (independently; foreground and background alike, near the mask or not), the mask is blurred with a Gaussian of
    σ = ``blur_sigma`` truncated to ``2 * blur_radius + 1`` voxels per axis (5 × 5, σ = 2: ``cv2.GaussianBlur(m, (5,
    5), 2)``; edges mirrored as OpenCV's default ``BORDER_REFLECT_101``) and thresholded: result = blur > 0.5.

    θ1 sets the bias: a step moves a fraction θ2 of the ring in the direction drawn, so the drift is outward for
    θ1 > 0.5 and inward for θ1 < 0.5, by more than (2θ1 - 1) θ2 T voxels because the boundary roughens and a rough
    boundary has more ring voxels (J1 on a lung-shaped mask at 256 px: about 9 px after the steps, +10 px after
    the blur, against 0.6 · 0.05 · 180 = 5.4). The random flips do not shift the boundary; the blur removes most of
    them (a few clusters survive as specks) and fills the holes the steps leave. Published settings (JSRT, 256 ×
    256): J1 lungs and heart (180, 0.8, 0.05, 0.2), clavicles (100, 0.8, 0.02, 0.2); J2 θ1 = 0.2.

    Faithful to the official ``noise_generator.py`` (``_MarkovNoise_random``; read, not copied) in: the draw order
    (all step directions first, then one number per ring voxel in C order each step, then one per voxel for the
    flips), flips only where the draw is below θ2 / θ3, the rings defined by a Euclidean distance of exactly 1 (so a
    mask cut by the array border is not shrunk from the border, where the official distance transform sees no
    background), the blur kernel and the threshold. Differences: the official blurs the 0/255 ``uint8`` image and
    rounds to integers (ties at exactly 0.5 may go the other way here); its 3-D variant blurs with scipy's σ = 1
    (9 voxels, edge mode ``nearest``) instead: pass ``blur_sigma=1, blur_radius=4`` for that kernel. An empty mask
    stays empty here (the official code would add specks from the random flips).

    Args:
        mask: Boolean mask, any number of axes (steps cost one binary morphology of the mask's bounding box + T + 1).
        rng: Random generator (the only source of randomness).
        steps: Number of steps T (a whole number >= 0).
        expand_prob: θ1, probability that a step expands (else it shrinks).
        flip_prob: θ2, probability that a ring voxel flips in a step.
        random_flip_prob: θ3, probability that any voxel flips after the steps.
        blur_sigma: Standard deviation of the final blur in voxels; 0 = no blur and no threshold.
        blur_radius: Half-width of the blur kernel in voxels (kernel ``2 * blur_radius + 1`` per axis).

    Returns:
        The noisy mask (same shape, boolean).

    Raises:
        TypeError: For a non-boolean mask.
        ValueError: For parameters outside their ranges (the message names the parameter and its θ).

    Identities pinned by tests: θ2 = 1, θ3 = 0, no blur gives T face dilations (θ1 = 1) or erosions (θ1 = 0);
    f(M; θ1 = 1) = ~f(~M; θ1 = 0) with the same generator; the blur equals the 5 × 5 σ = 2 kernel; seeded.
    """
    mask, _ = _check(mask)
    check_markov_parameters(steps, expand_prob, flip_prob, random_flip_prob, blur_sigma, blur_radius)
    out = mask.copy()
    if not mask.any():
        return out
    expand = rng.random(int(steps)) < expand_prob
    if steps > 0 and flip_prob > 0:
        # The mask moves at most one voxel per step, so the box of the mask + T + 1 holds every ring of every step;
        # clipping it to the array keeps the array border where it is.
        box = bounding_box(mask, int(steps) + 1)
        m = mask[box].copy(order="C")
        flat = m.reshape(-1)  # a view of the C-ordered copy: writing through it updates m
        face = ndimage.generate_binary_structure(m.ndim, 1)
        for grow in expand:
            if grow:
                ring = ndimage.binary_dilation(m, face) & ~m
            else:  # border_value=1: outside the array is no background (the official distance transform has none)
                ring = m & ~ndimage.binary_erosion(m, face, border_value=1)
            idx = np.flatnonzero(ring)
            flat[idx[rng.random(idx.size) < flip_prob]] = grow
        out[box] = m
    if random_flip_prob > 0:
        out ^= rng.random(out.shape, dtype=np.float32) < random_flip_prob
    if blur_sigma > 0:
        # truncate = r / σ makes scipy's kernel radius int(truncate * σ + 0.5) exactly r.
        blurred = ndimage.gaussian_filter(
            out.astype(np.float32), blur_sigma, mode="mirror", truncate=blur_radius / blur_sigma
        )
        out = blurred > 0.5
    return out


def random_dilate_or_erode(
    mask: np.ndarray,
    rng: np.random.Generator,
    spacing: Sequence[float],
    *,
    radius_mm: tuple[float, float],
    dilate_prob: float = 0.5,
) -> tuple[np.ndarray, Literal["dilate", "erode"], float]:
    """Dilate (probability ``dilate_prob``) or erode by a ball of radius r ~ U(``radius_mm``): Yao et al.'s J3 noise.

    Unbiased over cases (with ``dilate_prob`` 0.5), but every single mask is all too large or all too small. J3 on
    JSRT at 256 px: r in 7-9 px (lungs, heart), 3-5 px (clavicles); the official ``_dilateORerode`` keeps voxels at
    a distance below r (dilation) or at least r (erosion), the same as :func:`dilate` / :func:`erode` for a drawn r
    (ties have probability 0), except that :func:`erode` also erodes from the array border.

    Args:
        mask: Boolean mask.
        rng: Random generator: one draw for the sign, then one for the radius.
        spacing: Voxel size per axis, in the unit of ``radius_mm`` (ones for radii in voxels).
        radius_mm: Range ``(lo, hi)`` of the radius, ``0 <= lo <= hi``.
        dilate_prob: Probability of dilation.

    Returns:
        ``(noisy, op, radius)`` with ``op`` ``"dilate"`` or ``"erode"``.
    """
    lo, hi = (float(r) for r in radius_mm)
    if not 0 <= lo <= hi:
        raise ValueError(f"radius_mm must satisfy 0 <= lo <= hi, got {tuple(radius_mm)}.")
    if not 0 <= dilate_prob <= 1:
        raise ValueError(f"dilate_prob must be in [0, 1], got {dilate_prob!r}.")
    grow = bool(rng.random() < dilate_prob)
    radius = float(rng.uniform(lo, hi))
    if grow:
        return dilate(mask, radius, spacing), "dilate", radius
    return erode(mask, radius, spacing), "erode", radius


def in_plane_axes(spacing: Sequence[float], anisotropy_threshold: float = 3.0) -> tuple[int, ...]:
    """Axes whose voxel size is below ``anisotropy_threshold`` × the smallest (nnU-Net's ``ANISO_THRESHOLD`` = 3)."""
    sp = np.asarray(spacing, dtype=np.float64)
    return tuple(int(i) for i in np.flatnonzero(sp < anisotropy_threshold * sp.min()))


def drop_lesions(
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    n: int = 1,
    max_volume_fraction: float = 0.5,
    keep_at_least_one: bool = True,
) -> tuple[np.ndarray, list[int]]:
    """Remove up to ``n`` random connected components (full connectivity) that are small enough.

    Only components holding at most ``max_volume_fraction`` of the foreground are eligible; with
    ``keep_at_least_one`` the largest component is never removed. Voxel counts need no spacing.

    Returns:
        ``(mask, removed_sizes)``: the new mask and the voxel counts of the removed components.
    """
    mask, _ = _check(mask)
    if n < 0 or not 0 <= max_volume_fraction <= 1:
        raise ValueError(f"need n >= 0 and 0 <= max_volume_fraction <= 1, got n={n}, {max_volume_fraction}.")
    labels, count = ndimage.label(mask, ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    if count == 0 or n == 0:
        return mask.copy(), []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    eligible = np.flatnonzero(sizes <= max_volume_fraction * sizes.sum())
    if keep_at_least_one:
        eligible = eligible[eligible != int(np.argmax(sizes))]
    if eligible.size == 0:
        return mask.copy(), []
    chosen = rng.choice(eligible, size=min(n, eligible.size), replace=False)
    out = mask & ~np.isin(labels, chosen + 1)
    return out, [int(sizes[c]) for c in sorted(chosen)]


def ellipsoid(shape: Sequence[int], center: Sequence[float], semi_axes_mm: Sequence[float], spacing: Sequence[float]):
    """Boolean ellipsoid with the given centre (voxel coordinates) and semi-axes in mm, clipped to the array."""
    sp = np.asarray(spacing, dtype=np.float64)
    axes = np.asarray(semi_axes_mm, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    lo = np.clip(np.floor(c - axes / sp).astype(int), 0, shape)
    hi = np.clip(np.ceil(c + axes / sp).astype(int) + 1, 0, shape)
    out = np.zeros(tuple(shape), dtype=bool)
    if np.any(hi <= lo):
        return out
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    inside = sum((((g - ci) * s) / a) ** 2 for g, ci, s, a in zip(grids, c, sp, axes)) <= 1.0
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = inside
    out[tuple(np.clip(np.round(c).astype(int), 0, np.asarray(shape) - 1))] = True  # at least the centre voxel
    return out


def add_spurious_blobs(
    mask: np.ndarray,
    rng: np.random.Generator,
    spacing: Sequence[float],
    *,
    n: int = 1,
    radius_mm: tuple[float, float] = (2.0, 8.0),
    placement: Literal["near", "far"] = "near",
    near_gap_mm: tuple[float, float] = (1.0, 10.0),
    far_min_mm: float = 20.0,
    max_tries: int = 50,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Add ``n`` axis-aligned ellipsoids that do not touch the foreground (false-positive lesions).

    Each blob has a mean radius drawn from ``radius_mm`` and per-axis factors in [0.7, 1.3]. ``"near"``: its surface
    lies a gap drawn from ``near_gap_mm`` away from a random foreground voxel, in a random direction. ``"far"``: its
    centre is uniform in the array and at least ``far_min_mm`` + its radius from every foreground voxel (centres are
    re-drawn up to ``max_tries`` times; a blob that finds no place is skipped). Blobs never overlap the foreground.

    Returns:
        ``(mask, blobs)``: the new mask and, per added blob, its centre (voxels), semi-axes (mm) and voxel count.
    """
    mask, sp = _check(mask, spacing)
    lo_r, hi_r = radius_mm
    if not 0 < lo_r <= hi_r or n < 0 or placement not in ("near", "far"):
        raise ValueError(
            f"need 0 < radius_mm[0] <= radius_mm[1], n >= 0, placement near|far; got {radius_mm}, {n}, {placement!r}."
        )
    out = mask.copy()
    blobs: list[dict[str, Any]] = []
    fg = np.argwhere(mask)
    if fg.size == 0 or n == 0:
        return out, blobs
    # The nearest foreground voxel of an outside point is a surface voxel: distances need only those.
    fg_mm = np.argwhere(mask & ~ndimage.binary_erosion(mask, border_value=0)) * sp
    shape = np.asarray(mask.shape)
    for _ in range(n):
        r = rng.uniform(lo_r, hi_r)
        axes = r * rng.uniform(0.7, 1.3, size=mask.ndim)
        center = None
        for _try in range(max_tries):
            if placement == "near":
                anchor = fg[rng.integers(len(fg))]
                direction = rng.standard_normal(mask.ndim)
                direction /= np.linalg.norm(direction) or 1.0
                gap = rng.uniform(*near_gap_mm)
                cand = anchor + direction * (axes.max() + gap) / sp
            else:
                cand = rng.uniform(0, shape - 1)
                if np.min(np.linalg.norm(fg_mm - cand * sp, axis=1)) < far_min_mm + axes.max():
                    continue
            if np.all(cand >= 0) and np.all(cand <= shape - 1):
                blob = ellipsoid(mask.shape, cand, axes, sp)
                if not (blob & mask).any():
                    center = cand
                    break
        if center is None:
            continue
        out |= blob
        blobs.append(
            {
                "center_vox": [round(float(c), 2) for c in center],
                "semi_axes_mm": [round(float(a), 3) for a in axes],
                "voxels": int(blob.sum()),
                "placement": placement,
            }
        )
    return out, blobs
