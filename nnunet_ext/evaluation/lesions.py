"""Lesion-size groups by reference volume (METHODS.md §7; COPLE paper Figs. 5, 7, 9).

Volumes are in cc (1 cc = 1000 mm³ = voxels × voxel volume in mm³ / 1000). With edges ``(e_1, …, e_k)`` the groups
are named ``A, B, C, …`` and are **closed on the left, open on the right**:

    A = [0, e_1),  B = [e_1, e_2),  …,  last = [e_k, ∞)

so with the default edges (50, 200): A < 50 cc, 50 cc ≤ B < 200 cc, C ≥ 200 cc (exactly 50 cc is B, exactly 200 cc
is C). An empty reference (0 cc) falls into A. The paper does not say which group owns a boundary; this rule is ours,
pinned by tests.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Final

import numpy as np

DEFAULT_SIZE_EDGES_CC: Final[tuple[float, ...]] = (50.0, 200.0)


def check_size_edges(edges_cc: Sequence[float]) -> tuple[float, ...]:
    """Validate group edges: at least one, finite, positive, strictly increasing, at most 25 (A … Z).

    Raises:
        ValueError: Naming the bad edges.
    """
    edges = tuple(float(e) for e in edges_cc)
    if not edges or len(edges) > 25:
        raise ValueError(f"size edges must have 1 to 25 entries (groups A..Z), got {edges}.")
    if not all(math.isfinite(e) and e > 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"size edges must be positive, finite and strictly increasing (in cc), got {edges}.")
    return edges


def group_names(edges_cc: Sequence[float] = DEFAULT_SIZE_EDGES_CC) -> tuple[str, ...]:
    """Names of the ``len(edges) + 1`` groups: ``("A", "B", "C")`` for two edges."""
    return tuple(string.ascii_uppercase[: len(check_size_edges(edges_cc)) + 1])


def group_intervals(edges_cc: Sequence[float] = DEFAULT_SIZE_EDGES_CC) -> dict[str, str]:
    """Human-readable intervals, e.g. ``{"A": "[0, 50) cc", "B": "[50, 200) cc", "C": "[200, inf) cc"}``."""
    edges = check_size_edges(edges_cc)
    bounds = (0.0, *edges, math.inf)
    return {name: f"[{bounds[i]:g}, {bounds[i + 1]:g}) cc" for i, name in enumerate(group_names(edges))}


def volume_cc(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a boolean mask in cc (voxels × voxel volume in mm³ / 1000)."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be boolean, got dtype {mask.dtype}.")
    if len(spacing) != mask.ndim:
        raise ValueError(f"spacing {tuple(spacing)} needs one entry per mask axis ({mask.ndim}).")
    return float(np.count_nonzero(mask)) * float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0


def size_group(volume_in_cc: float, edges_cc: Sequence[float] = DEFAULT_SIZE_EDGES_CC) -> str:
    """Group name of a reference volume in cc (left-closed intervals: exactly an edge belongs to the upper group).

    Raises:
        ValueError: For a negative or NaN volume, or bad edges.
    """
    edges = check_size_edges(edges_cc)
    v = float(volume_in_cc)
    if not v >= 0:  # also catches NaN
        raise ValueError(f"volume must be >= 0 cc, got {volume_in_cc}.")
    return string.ascii_uppercase[int(np.searchsorted(edges, v, side="right"))]
