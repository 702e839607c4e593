"""Noise levels and the per-case calibrated corruption of label maps.

A level fixes a target noisy-vs-clean Dice (mild 0.9, moderate 0.8, severe 0.7) and the mix of operations of
:mod:`nnunet_ext.noise.corruptions`. Every foreground mask (label or region) of a case is corrupted by
:func:`corrupt_mask`, which calibrates the strength **per mask** so that its Dice lands near its own target
(the level's target plus a uniform jitter), whatever the lesion size and spacing:

1. draw the mask's target t, which discrete operations run, their seeds and the preferred morphology (all draws
   happen up front, in a fixed order, from the case generator);
2. discrete operations, limited to use at most ``discrete_budget`` of the Dice loss 1 - t: drop one small connected
   component (missed lesion, only if there are several), add one spurious ellipsoid near or far from the foreground;
3. Markov boundary noise with the level's steps and flip fraction, moving in-plane only on anisotropic grids
   (:func:`~nnunet_ext.noise.corruptions.in_plane_axes`); it may use ``boundary_share`` of the Dice still left above
   t: if it goes further, the flip fraction is bisected down (same random field) until it fits;
4. dilation or erosion by a ball of radius r mm, r chosen exactly: the Dice of every possible radius is computed from
   one sorted distance map and the radius closest to t is taken (the other morphology is used when the preferred one
   cannot get within 0.02 of t). When neither gets within 0.02 (small masks, where one voxel of morphology is a
   large step), boundary noise alone is calibrated to t (flip fraction up to 0.5) and the closer result is kept.

Label maps with several labels: each label is corrupted on its own clean mask; the results are written in ascending
label order, so a voxel claimed by several corrupted labels takes the **highest** label (nnU-Net's "later overwrites"
rule). Region datasets (nested labels, e.g. BraTS whole tumour ⊃ tumour core ⊃ enhancing): the region masks are
corrupted **outermost first**, each inner region clipped to its already-corrupted parent (also during calibration),
and the label map is re-encoded by writing each region's ``regions_class_order`` value from the outside in. The
result is a valid nested label map whose region masks are exactly the corrupted regions. Regions that are not
nested raise ``NotImplementedError``.

Published noise (Yao et al., ICLR 2023, the JSRT noisy labels; METHODS.md §9.1) is not calibrated to a Dice: its
parameters are fixed, so the Dice, the size change and the boundary shift are what the process gives on your masks.
Presets (:data:`PUBLISHED_LEVELS`), all in **voxels**, as published for 256 × 256 images:

- ``j1``: :class:`MarkovNoise` (T 180, θ1 0.8, θ2 0.05, θ3 0.2), an outward drift (real J1 lungs: area ×1.36–1.81,
  boundary +10.1 ± 0.9 px outside, Dice 0.784);
- ``j2``: the same with θ1 0.2, the mirror image (an inward drift of the same size);
- ``j3``: :class:`MorphologyNoise`, a dilation or an erosion (50/50) by a radius drawn in 7–9 voxels: unbiased over
  cases, but every mask is all too large or all too small.

Each mask (label or region) of a case draws its own seed from the case generator, so it gets its own direction draws
(J3: its own sign and radius), as the official generator, which processes each class's masks on its own. The
process runs on the clean mask; label maps and nested regions are assembled as above (regions clipped to their
corrupted parent afterwards). The voxel units follow the paper: at other resolutions the same preset moves the
boundary by the same number of voxels, a different share of the object (scale T, or the J3 radii, for the same
relative drift), and on anisotropic grids it moves as many voxels along the thick axis, several times the distance
in mm. On objects much smaller than 256-px lungs (lesions) J1 mostly adds a ~10-voxel shell.

Reported Dice per key is measured on the final label map (after overwriting), against the clean map, and so is the
size change per key (:func:`size_change`: voxels, relative change, median signed boundary shift in mm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Final, TypeAlias

import numpy as np
from scipy import ndimage

from nnunet_ext.evaluation.io import LabelDefinition
from nnunet_ext.evaluation.metrics import crop_to_joint_bbox, dice, label_or_region_to_key, region_mask, surface
from nnunet_ext.noise.corruptions import (
    add_spurious_blobs,
    check_markov_parameters,
    distance_inside,
    distance_outside,
    drop_lesions,
    in_plane_axes,
    markov_boundary_noise,
    markov_expand_shrink_noise,
    random_dilate_or_erode,
)

_TIE_MM: Final[float] = 1e-9
_TOLERANCE: Final[float] = 0.02  # |Dice - target| beyond which the fallbacks (other morphology, boundary only) run
_MAX_FLIP: Final[float] = 0.5
_FLIP_BISECTION_STEPS: Final[int] = 8


@dataclass(frozen=True)
class NoiseLevel:
    """Parameters of one noise level.

    Attributes:
        name: Level name (recorded in the manifest).
        target_dice: Mean noisy-vs-clean Dice aimed at, per foreground mask.
        target_jitter: Each mask's target is ``target_dice + U(-jitter, jitter)``.
        drop_prob: Probability of dropping one small connected component (missed lesion).
        spurious_prob: Probability of adding one spurious blob (false-positive lesion), near or far (50/50).
        boundary_steps: Steps of Markov boundary noise.
        boundary_flip_prob: Fraction of the boundary flipped per step.
        correlation_mm: Smoothing of the boundary-noise field in mm; None = 1.5 × the smallest voxel size.
        persistence: AR(1) coefficient of the boundary-noise field.
        discrete_budget: Share of the Dice loss ``1 - target`` that dropped/spurious lesions may use.
        boundary_share: Share of the Dice left above the target (after discrete operations) that boundary noise may
            use; dilation/erosion does the rest.
        blob_radius_mm: Range of spurious-blob radii in mm (capped further by the budget).
    """

    kind: ClassVar[str] = "calibrated"
    name: str
    target_dice: float
    target_jitter: float = 0.03
    drop_prob: float = 0.0
    spurious_prob: float = 0.0
    boundary_steps: int = 3
    boundary_flip_prob: float = 0.3
    correlation_mm: float | None = None
    persistence: float = 0.8
    discrete_budget: float = 0.5
    boundary_share: float = 0.5
    blob_radius_mm: tuple[float, float] = (2.0, 8.0)

    def __post_init__(self) -> None:
        if not 0 < self.target_dice < 1:
            raise ValueError(f"target_dice must be in (0, 1), got {self.target_dice}.")
        if not 0 <= self.target_jitter < min(self.target_dice, 1 - self.target_dice):
            raise ValueError(f"target_jitter must be >= 0 and keep the target inside (0, 1), got {self.target_jitter}.")
        for name in ("drop_prob", "spurious_prob", "discrete_budget", "boundary_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.boundary_steps < 0 or not 0 <= self.boundary_flip_prob <= 0.5:
            raise ValueError(
                f"need boundary_steps >= 0 and 0 <= boundary_flip_prob <= 0.5, got {self.boundary_steps}, "
                f"{self.boundary_flip_prob}."
            )
        if self.correlation_mm is not None and not self.correlation_mm > 0:
            raise ValueError(f"correlation_mm must be > 0 or None, got {self.correlation_mm}.")
        if not 0 <= self.persistence < 1:
            raise ValueError(f"persistence must be in [0, 1), got {self.persistence}.")
        lo, hi = self.blob_radius_mm
        if not 0 < lo <= hi:
            raise ValueError(f"blob_radius_mm must satisfy 0 < lo <= hi, got {self.blob_radius_mm}.")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class MarkovNoise:
    """Yao et al.'s Markov expand/shrink noise with fixed parameters, in voxels.

    Applied per mask by :func:`~nnunet_ext.noise.corruptions.markov_expand_shrink_noise`.

    Attributes:
        name: Level name (recorded in the manifest).
        steps: T, number of steps.
        expand_prob: θ1, probability that a step expands the mask (> 0.5: outward bias, < 0.5: inward).
        flip_prob: θ2, probability that a ring voxel flips in a step.
        random_flip_prob: θ3, probability that any voxel flips after the steps (before the blur).
        blur_sigma: σ of the final Gaussian blur in voxels (0 = none).
        blur_radius: Half-width of the blur kernel in voxels (2 with σ 2: the published 5 × 5 kernel).
    """

    kind: ClassVar[str] = "markov"
    name: str
    steps: int
    expand_prob: float
    flip_prob: float
    random_flip_prob: float
    blur_sigma: float = 2.0
    blur_radius: int = 2

    def __post_init__(self) -> None:
        check_markov_parameters(
            self.steps, self.expand_prob, self.flip_prob, self.random_flip_prob, self.blur_sigma, self.blur_radius
        )

    def parameters(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~nnunet_ext.noise.corruptions.markov_expand_shrink_noise`."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class MorphologyNoise:
    """Random dilation or erosion per mask, radius in voxels (Yao et al.'s J3 kind).

    Applied per mask by :func:`~nnunet_ext.noise.corruptions.random_dilate_or_erode` with unit spacing (J3 at 256 px:
    7-9 px for lungs and heart, 3-5 px for clavicles).

    Attributes:
        name: Level name (recorded in the manifest).
        radius_voxels: Range ``(lo, hi)`` of the ball radius in voxels, drawn uniformly per mask.
        dilate_prob: Probability of dilation (else erosion).
    """

    kind: ClassVar[str] = "morphology"
    name: str
    radius_voxels: tuple[float, float] = (7.0, 9.0)
    dilate_prob: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.radius_voxels
        if not 0 <= lo <= hi:
            raise ValueError(f"radius_voxels must satisfy 0 <= lo <= hi, got {tuple(self.radius_voxels)}.")
        if not 0 <= self.dilate_prob <= 1:
            raise ValueError(f"dilate_prob must be in [0, 1], got {self.dilate_prob!r}.")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


AnyLevel: TypeAlias = NoiseLevel | MarkovNoise | MorphologyNoise
"""Any noise level: calibrated to a Dice, or published with fixed parameters."""

LEVELS: Final[dict[str, NoiseLevel]] = {
    "mild": NoiseLevel("mild", 0.9, drop_prob=0.1, spurious_prob=0.1, boundary_steps=2, boundary_flip_prob=0.2),
    "moderate": NoiseLevel("moderate", 0.8, drop_prob=0.2, spurious_prob=0.2, boundary_steps=3, boundary_flip_prob=0.3),
    "severe": NoiseLevel("severe", 0.7, drop_prob=0.3, spurious_prob=0.3, boundary_steps=4, boundary_flip_prob=0.4),
}

PUBLISHED_LEVELS: Final[dict[str, MarkovNoise | MorphologyNoise]] = {
    "j1": MarkovNoise("j1", steps=180, expand_prob=0.8, flip_prob=0.05, random_flip_prob=0.2),
    "j2": MarkovNoise("j2", steps=180, expand_prob=0.2, flip_prob=0.05, random_flip_prob=0.2),
    "j3": MorphologyNoise("j3", radius_voxels=(7.0, 9.0), dilate_prob=0.5),
}
"""Yao et al.'s JSRT noise (ICLR 2023): J1 outward Markov drift, J2 inward, J3 random dilation/erosion."""


def get_level(level: str | AnyLevel) -> AnyLevel:
    """A level by name (``mild``, ``moderate``, ``severe``, ``j1``, ``j2``, ``j3``) or as given."""
    if isinstance(level, AnyLevel):
        return level
    if level in LEVELS:
        return LEVELS[level]
    if level in PUBLISHED_LEVELS:
        return PUBLISHED_LEVELS[level]
    raise ValueError(
        f"unknown noise level {level!r}; choose one of {[*LEVELS, *PUBLISHED_LEVELS]} or pass a NoiseLevel, "
        "MarkovNoise or MorphologyNoise."
    )


def calibrate_morphology(
    mask: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    target: float,
    mode: str,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float]:
    """Dilate or erode ``mask`` by the ball radius whose Dice against ``ref`` is closest to ``target``.

    Exact: every radius changes the mask by whole shells of equal distance, so sorting the distances gives the Dice
    of every radius at once. The result equals ``dilate(mask, r) & allowed | mask`` or ``erode(mask, r)``.

    Args:
        mask: Boolean mask to corrupt further.
        ref: Clean boolean mask (the Dice reference, not empty).
        spacing: Voxel size in mm per axis.
        target: Dice aimed at.
        mode: ``"dilate"`` or ``"erode"``.
        allowed: Dilation stays inside this mask (nested regions).

    Returns:
        ``(new_mask, radius_mm, dice)``; radius 0 means unchanged.
    """
    if mode not in ("dilate", "erode"):
        raise ValueError(f"mode must be 'dilate' or 'erode', got {mode!r}.")
    sp = np.asarray(spacing, dtype=np.float64)
    n_ref = int(ref.sum())
    n_mask = int(mask.sum())
    inter0 = int((mask & ref).sum())
    dice0 = 2.0 * inter0 / (n_mask + n_ref) if n_mask + n_ref else 1.0
    if n_mask == 0:
        return mask.copy(), 0.0, dice0
    if mode == "dilate":
        # Enough room to reach any Dice of interest: twice the radius of a ball of the reference volume.
        r_eq = (3.0 * n_ref * float(np.prod(sp)) / (4.0 * math.pi)) ** (1.0 / 3.0)
        max_mm = 2.0 * r_eq + float(sp.max())
        box, d = distance_outside(mask, sp, max_mm)
        cand = ~mask[box] & (d <= max_mm)
        if allowed is not None:
            cand &= allowed[box]
        sign = 1
    else:
        box, d = distance_inside(mask, sp)
        cand = mask[box].copy()
        sign = -1
    dist = d[cand]
    in_ref = ref[box][cand]
    order = np.argsort(dist, kind="stable")
    dist, in_ref = dist[order], in_ref[order]
    if dist.size == 0:
        return mask.copy(), 0.0, dice0
    inter = inter0 + sign * np.cumsum(in_ref)
    size = n_mask + sign * np.arange(1, dist.size + 1)
    dices = 2.0 * inter / (size + n_ref)
    ends = np.flatnonzero(np.r_[dist[1:] > dist[:-1] + _TIE_MM, True])  # a radius takes whole distance shells
    options = np.r_[dice0, dices[ends]]
    radii = np.r_[0.0, dist[ends]]
    best = int(np.argmin(np.abs(options - target)))
    radius = float(radii[best])
    out = mask.copy()
    if radius > 0:
        shell = cand & (d <= radius + _TIE_MM)
        out[box] = (out[box] | shell) if mode == "dilate" else (out[box] & ~shell)
    return out, radius, float(options[best])


def corrupt_mask(
    clean: np.ndarray,
    rng: np.random.Generator,
    spacing: Sequence[float],
    level: NoiseLevel,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Corrupt one boolean mask so that its Dice against ``clean`` is near a target drawn around the level's.

    See the module docstring for the steps. Empty masks stay empty.

    Args:
        clean: Clean boolean mask.
        rng: Generator of this case (consumed in a fixed order).
        spacing: Voxel size in mm per axis.
        level: Noise level.
        allowed: The result is clipped to this mask (the corrupted parent region); None = no constraint.

    Returns:
        ``(noisy, record)``; the record lists the target, the operations with their parameters, and the Dice.
    """
    if not clean.any():
        return clean.copy(), {"target_dice": None, "operations": [], "dice": 1.0}
    sp = np.asarray(spacing, dtype=np.float64)
    # All random draws first, in a fixed order, so that the stream does not depend on the branches taken.
    target = float(level.target_dice + rng.uniform(-level.target_jitter, level.target_jitter))
    do_drop = bool(rng.random() < level.drop_prob)
    do_blob = bool(rng.random() < level.spurious_prob)
    placement = "near" if rng.random() < 0.5 else "far"
    mode = "dilate" if rng.random() < 0.5 else "erode"
    drop_seed, blob_seed, boundary_seed = (int(s) for s in rng.integers(0, 2**63 - 1, size=3))

    ops: list[dict[str, Any]] = []
    floor = 1.0 - level.discrete_budget * (1.0 - target)  # discrete operations keep the Dice at or above this
    x = clean.copy()
    n_clean = int(clean.sum())
    if do_drop:
        max_fraction = 2.0 * (1.0 - floor) / (2.0 - floor)  # Dice of removing v of V voxels: 2(V - v) / (2V - v)
        x, removed = drop_lesions(x, np.random.default_rng(drop_seed), n=1, max_volume_fraction=max_fraction)
        if removed:
            ops.append({"op": "drop_lesions", "removed_voxels": removed})
    if do_blob:
        inter, n_x = int((x & clean).sum()), int(x.sum())
        max_voxels = 2.0 * inter / floor - n_x - n_clean  # Dice 2I / (|X| + b + V) >= floor
        # 1.3: the largest per-axis factor of a blob; the cap keeps even the most elongated blob within budget.
        cap_mm = (3.0 * max(max_voxels, 0.0) * float(np.prod(sp)) / (4.0 * math.pi)) ** (1.0 / 3.0) / 1.3
        lo, hi = level.blob_radius_mm
        if cap_mm >= 0.5 * float(sp.min()):
            radius = (min(lo, cap_mm), min(hi, cap_mm))
            y, blobs = add_spurious_blobs(
                x, np.random.default_rng(blob_seed), sp, n=1, radius_mm=radius, placement=placement
            )
            if allowed is not None:
                y &= allowed
            if blobs and dice(y, clean) >= floor:
                x = y
                ops.append({"op": "spurious_blobs", "blobs": blobs})
    if allowed is not None:
        x &= allowed

    corr = level.correlation_mm if level.correlation_mm is not None else 1.5 * float(sp.min())
    move_axes = in_plane_axes(sp)
    d_discrete = dice(x, clean)
    boundary_floor = d_discrete - level.boundary_share * max(d_discrete - target, 0.0)

    def boundary(p: float) -> np.ndarray:
        return markov_boundary_noise(
            x,
            np.random.default_rng(boundary_seed),
            sp,
            steps=level.boundary_steps,
            flip_prob=p,
            correlation_mm=corr,
            persistence=level.persistence,
            allowed=allowed,
            move_axes=move_axes,
        )

    def boundary_down_to(floor: float, max_flip: float) -> tuple[np.ndarray, float]:
        """The strongest boundary noise (flip fraction <= max_flip) whose Dice stays >= floor (bisection)."""
        if level.boundary_steps == 0 or max_flip == 0:
            return x, 0.0
        b = boundary(max_flip)
        if dice(b, clean) >= floor:
            return b, max_flip
        lo_p, hi_p, best_p, best = 0.0, max_flip, 0.0, x
        for _ in range(_FLIP_BISECTION_STEPS):
            mid = 0.5 * (lo_p + hi_p)
            cand = boundary(mid)
            if dice(cand, clean) >= floor:
                lo_p, best_p, best = mid, mid, cand
            else:
                hi_p = mid
        return best, best_p

    def morphology(b: np.ndarray) -> tuple[np.ndarray, float, float, str]:
        noisy, radius, achieved = calibrate_morphology(b, clean, sp, target, mode, allowed)
        used = mode
        if abs(achieved - target) > _TOLERANCE:
            other = "erode" if mode == "dilate" else "dilate"
            alt = calibrate_morphology(b, clean, sp, target, other, allowed)
            if abs(alt[2] - target) < abs(achieved - target):
                used, (noisy, radius, achieved) = other, alt
        return noisy, radius, achieved, used

    b, flip = boundary_down_to(boundary_floor, level.boundary_flip_prob)
    noisy, radius, achieved, used = morphology(b)
    if abs(achieved - target) > _TOLERANCE:
        # Small masks: one voxel of dilation/erosion overshoots. Let boundary noise (finely adjustable through its
        # flip fraction, up to the maximum 0.5) carry the whole Dice loss instead, if that lands closer.
        b2, flip2 = boundary_down_to(target, _MAX_FLIP)
        alt = morphology(b2)
        if abs(alt[2] - target) < abs(achieved - target):
            flip, (noisy, radius, achieved, used) = flip2, alt
    if flip > 0:
        ops.append(
            {
                "op": "markov_boundary_noise",
                "steps": level.boundary_steps,
                "flip_prob": round(flip, 6),
                "correlation_mm": corr,
                "persistence": level.persistence,
                "move_axes": list(move_axes),
            }
        )
    if radius > 0:
        ops.append({"op": used, "radius_mm": radius})
    return noisy, {"target_dice": target, "operations": ops, "dice": achieved}


def corrupt_mask_published(
    clean: np.ndarray,
    rng: np.random.Generator,
    level: MarkovNoise | MorphologyNoise,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply a published (uncalibrated) noise to one boolean mask.

    One seed is drawn from ``rng`` for the mask, also when it is empty (so a mask's noise does not depend on whether
    an earlier label of the case was empty); empty masks stay empty.

    Args:
        clean: Clean boolean mask.
        rng: Generator of this case.
        level: The noise (its parameters are in voxels).
        allowed: The result is clipped to this mask (the corrupted parent region); None = no constraint.

    Returns:
        ``(noisy, record)``; the record lists the operation with its parameters (J3: the drawn sign and radius) and
        the Dice against ``clean``.
    """
    mask_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
    if not clean.any():
        return clean.copy(), {"operations": [], "dice": 1.0}
    if isinstance(level, MarkovNoise):
        noisy = markov_expand_shrink_noise(clean, mask_rng, **level.parameters())
        op: dict[str, Any] = {"op": "markov_expand_shrink", **level.parameters()}
    else:
        noisy, kind, radius = random_dilate_or_erode(
            clean, mask_rng, (1.0,) * clean.ndim, radius_mm=level.radius_voxels, dilate_prob=level.dilate_prob
        )
        op = {"op": kind, "radius_voxels": radius}
    if allowed is not None:
        noisy &= allowed
    return noisy, {"operations": [op], "dice": dice(noisy, clean)}


def boundary_shift_mm(noisy: np.ndarray, clean: np.ndarray, spacing: Sequence[float]) -> float:
    """Median signed distance in mm of the noisy boundary from the clean one (positive = outside).

    .. math::

        s = \\operatorname{median}_{x \\in \\partial N} \\pm d(x, \\partial C),
        \\quad + \\text{ outside } C, \\ - \\text{ inside}

    with the surfaces ∂ of :func:`nnunet_ext.evaluation.metrics.surface` (face connectivity, outside the array =
    background) and exact Euclidean distances between voxel centres. A dilation (erosion) of a flat boundary by k
    voxels gives +k (−k) voxels; identical masks give 0. The median ignores the few specks far from the object
    that Markov noise leaves. NaN when either mask is empty.

    Identities pinned by tests: 0 for identical masks; ±k for k face dilations/erosions of a square; scales with
    the spacing.
    """
    if not noisy.any() or not clean.any():
        return math.nan
    sp = np.asarray(spacing, dtype=np.float64)
    n, c = crop_to_joint_bbox(noisy, clean, margin=1)
    c_surface = surface(c)
    d = ndimage.distance_transform_edt(~c_surface, sampling=sp)
    signed = np.where(c & ~c_surface, -d, d)
    return float(np.median(signed[surface(n)]))


def size_change(noisy: np.ndarray, clean: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    """How much larger or smaller ``noisy`` is than ``clean``: what biased noise changes and Dice does not show.

    Returns:
        ``clean_voxels``, ``noisy_voxels``, ``signed_change_voxels`` (noisy − clean), ``relative_change``
        (noisy / clean − 1; NaN for an empty clean mask) and ``boundary_shift_mm`` (:func:`boundary_shift_mm`).
    """
    n_clean, n_noisy = int(clean.sum()), int(noisy.sum())
    return {
        "clean_voxels": n_clean,
        "noisy_voxels": n_noisy,
        "signed_change_voxels": n_noisy - n_clean,
        "relative_change": n_noisy / n_clean - 1.0 if n_clean else math.nan,
        "boundary_shift_mm": boundary_shift_mm(noisy, clean, spacing),
    }


def _corrupt_one(
    clean: np.ndarray,
    rng: np.random.Generator,
    spacing: np.ndarray,
    level: AnyLevel,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    if isinstance(level, NoiseLevel):
        return corrupt_mask(clean, rng, spacing, level, allowed)
    return corrupt_mask_published(clean, rng, level, allowed)


def nested_region_order(label_def: LabelDefinition) -> list[tuple[Any, int]]:
    """Regions with their ``regions_class_order`` value, outermost first; checks that they are nested.

    Nested means: sorted by size, each region contains the next, and region i is exactly the set of class values of
    itself and all regions inside it (so writing class values from the outside in re-encodes the regions).

    Raises:
        NotImplementedError: For regions that are not nested this way.
    """
    assert label_def.has_regions and label_def.regions_class_order is not None
    pairs = list(zip(label_def.labels_or_regions, label_def.regions_class_order))

    def as_set(r: Any) -> frozenset[int]:
        return frozenset(int(v) for v in r) if isinstance(r, Sequence) else frozenset({int(r)})

    pairs.sort(key=lambda p: -len(as_set(p[0])))
    sets = [as_set(r) for r, _ in pairs]
    for i, s in enumerate(sets):
        inner_classes = frozenset(c for _, c in pairs[i:])
        if s != inner_classes or (i + 1 < len(sets) and not sets[i + 1] < s):
            raise NotImplementedError(
                f"regions {[tuple(sorted(x)) for x in sets]} with regions_class_order "
                f"{list(label_def.regions_class_order)} are not nested (each region = its class value plus those of "
                "the regions inside it); noise simulation supports label maps and nested regions only."
            )
    return pairs


def corrupt_label_map(
    seg: np.ndarray,
    spacing: Sequence[float],
    label_def: LabelDefinition,
    level: AnyLevel,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Corrupt a clean label map (labels or nested regions; see the module docstring).

    Axes of length 1 are dropped while corrupting (a 2-D slice stored as 3-D is treated as 2-D).

    Args:
        seg: Clean integer label map.
        spacing: Voxel size in mm per axis.
        label_def: Foreground labels or regions of the dataset.
        level: Noise level: calibrated (:class:`NoiseLevel`) or published (:class:`MarkovNoise`,
            :class:`MorphologyNoise`).
        rng: The case's generator (``np.random.default_rng([seed, case_index])``).

    Returns:
        ``(noisy_seg, record)``: the noisy map (same shape and dtype) and ``{"dice": {key: d}, "change": {key:
        size_change}, "operations": {key: record}, "foreground_mean_dice": mean Dice over keys with a non-empty
        clean mask (NaN if none)}``; the size change is :func:`size_change` with the working spacing.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.size != seg.ndim:
        raise ValueError(f"spacing {tuple(spacing)} needs one entry per axis of the label map {seg.shape}.")
    keep = [i for i, n in enumerate(seg.shape) if n > 1] or [0]
    work = seg.reshape(tuple(seg.shape[i] for i in keep))
    sp_work = sp[keep]
    out = np.zeros_like(work)
    records: dict[str, Any] = {}
    if label_def.has_regions:
        parent = None
        for region, value in nested_region_order(label_def):
            noisy, rec = _corrupt_one(region_mask(work, region), rng, sp_work, level, allowed=parent)
            out[noisy] = value
            records[label_or_region_to_key(region)] = rec
            parent = noisy
        keys = list(label_def.labels_or_regions)
    else:
        for label in sorted(label_def.labels_or_regions):
            noisy, rec = _corrupt_one(work == label, rng, sp_work, level)
            out[noisy] = label
            records[label_or_region_to_key(label)] = rec
        keys = sorted(label_def.labels_or_regions)
    dices, changes, nonempty = {}, {}, []
    for k in keys:
        clean_k, noisy_k = region_mask(work, k), region_mask(out, k)
        d = dice(noisy_k, clean_k)
        dices[label_or_region_to_key(k)] = d
        changes[label_or_region_to_key(k)] = size_change(noisy_k, clean_k, sp_work)
        if clean_k.any():
            nonempty.append(d)
    summary = {
        "dice": dices,
        "change": changes,
        "foreground_mean_dice": float(np.mean(nonempty)) if nonempty else math.nan,
        "operations": records,
    }
    return out.reshape(seg.shape), summary
