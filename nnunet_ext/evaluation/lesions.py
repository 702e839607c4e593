"""Lesion-size groups by reference volume (3-D data) or reference area (2-D data) (METHODS.md §7; COPLE Figs. 5, 7, 9).

Volumes are in cc (1 cc = 1000 mm³ = voxels × voxel volume in mm³ / 1000), areas in mm² (pixels × pixel area in
mm²). With edges ``(e_1, …, e_k)`` the groups are named ``A, B, C, …`` and are **closed on the left, open on the
right**:

    A = [0, e_1),  B = [e_1, e_2),  …,  last = [e_k, ∞)

so with the default volume edges (50, 200) cc: A < 50 cc, 50 cc ≤ B < 200 cc, C ≥ 200 cc (exactly 50 cc is B,
exactly 200 cc is C). An empty reference (0) falls into A. The paper does not say which group owns a boundary; this
rule is ours, pinned by tests.

2-D data (a single slice; how it is detected: :mod:`nnunet_ext.evaluation.evaluate`) has no volume: the out-of-plane
"spacing" of a 2-D image is a storage convention (nnU-Net uses 999, or 999 × the largest pixel size), so a volume
would measure the convention, not the anatomy. Its groups use the reference **area** with the default edges
:data:`DEFAULT_SIZE_EDGES_MM2` = (1600, 4000) mm²: the central cross-sections of spheres of 50 cc and 200 cc are
1641 mm² and 4135 mm² (discs of radius 22.9 and 36.3 mm), rounded down to 16 and 40 cm². A lesion that is a sphere
in 3-D thus falls into the same group in 3-D and in a slice through its centre (up to the rounding).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np

DEFAULT_SIZE_EDGES_CC: Final[tuple[float, ...]] = (50.0, 200.0)
"""Volume edges of the size groups of 3-D data in cc (COPLE paper: < 50, 50–200, > 200 cc)."""

DEFAULT_SIZE_EDGES_MM2: Final[tuple[float, ...]] = (1600.0, 4000.0)
"""Area edges of the size groups of 2-D data in mm² (the 3-D edges' sphere cross-sections, rounded down)."""

SizeUnit = Literal["cc", "mm²"]


def check_size_edges(edges: Sequence[float], unit: SizeUnit = "cc") -> tuple[float, ...]:
    """Validate group edges: at least one, finite, positive, strictly increasing, at most 25 (A … Z).

    Args:
        edges: Group edges in ``unit``.
        unit: Only used in the error message.

    Raises:
        ValueError: Naming the bad edges.
    """
    edges = tuple(float(e) for e in edges)
    if not edges or len(edges) > 25:
        raise ValueError(f"size edges must have 1 to 25 entries (groups A..Z), got {edges}.")
    if not all(math.isfinite(e) and e > 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"size edges must be positive, finite and strictly increasing (in {unit}), got {edges}.")
    return edges


def group_names(edges: Sequence[float] = DEFAULT_SIZE_EDGES_CC) -> tuple[str, ...]:
    """Names of the ``len(edges) + 1`` groups: ``("A", "B", "C")`` for two edges."""
    return tuple(string.ascii_uppercase[: len(check_size_edges(edges)) + 1])


def group_intervals(edges: Sequence[float] = DEFAULT_SIZE_EDGES_CC, unit: SizeUnit = "cc") -> dict[str, str]:
    """Human-readable intervals, e.g. ``{"A": "[0, 50) cc", "B": "[50, 200) cc", "C": "[200, inf) cc"}``."""
    edges = check_size_edges(edges, unit)
    bounds = (0.0, *edges, math.inf)
    return {name: f"[{bounds[i]:g}, {bounds[i + 1]:g}) {unit}" for i, name in enumerate(group_names(edges))}


def _measure(mask: np.ndarray, spacing: Sequence[float]) -> float:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be boolean, got dtype {mask.dtype}.")
    if len(spacing) != mask.ndim:
        raise ValueError(f"spacing {tuple(spacing)} needs one entry per mask axis ({mask.ndim}).")
    return float(np.count_nonzero(mask)) * float(np.prod(np.asarray(spacing, dtype=np.float64)))


def volume_cc(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a boolean mask in cc (voxels × voxel volume in mm³ / 1000)."""
    return _measure(mask, spacing) / 1000.0


def area_mm2(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Area of a 2-D boolean mask in mm² (pixels × pixel area in mm²).

    Raises:
        ValueError: If the mask does not have two axes (drop the singleton axis of a ``(1, H, W)`` slice and its
            out-of-plane spacing first), or on a spacing mismatch.
    """
    if np.ndim(mask) != 2:
        raise ValueError(f"area_mm2 needs a 2-D mask, got shape {np.shape(mask)}; use volume_cc for 3-D masks.")
    return _measure(mask, spacing)


def size_group(size: float, edges: Sequence[float] = DEFAULT_SIZE_EDGES_CC) -> str:
    """Group name of a reference size (left-closed intervals: exactly an edge belongs to the upper group).

    Args:
        size: Reference volume in cc (3-D data) or area in mm² (2-D data), in the unit of ``edges``.
        edges: Group edges, e.g. :data:`DEFAULT_SIZE_EDGES_CC` or :data:`DEFAULT_SIZE_EDGES_MM2`.

    Raises:
        ValueError: For a negative or NaN size, or bad edges.
    """
    edges = check_size_edges(edges)
    v = float(size)
    if not v >= 0:  # also catches NaN
        raise ValueError(f"volume/area must be >= 0, got {size}.")
    return string.ascii_uppercase[int(np.searchsorted(edges, v, side="right"))]
