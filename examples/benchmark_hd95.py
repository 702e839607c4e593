"""Time ``nnunet_ext.evaluation.metrics.hd95`` against medpy's ``hd95`` on a 512 x 512 x 300 pair of lesion masks.

The pair is seeded: a reference with a few ellipsoidal lesions inside a lung-sized region and a prediction that
dilates one lesion, shifts another, misses a small one and adds a false positive. Both functions see the same
arrays and spacing; the script prints both timings (best of ``--repeats``), the ratio, both HD95 values and our
directed 95th percentiles (medpy pools both directions, so its value differs: ours is the larger directed one).

Run on one core for comparable numbers::

    OMP_NUM_THREADS=1 python examples/benchmark_hd95.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nnunet_ext.evaluation.metrics import hd95, surface_distances


def _ellipsoid(shape: tuple[int, ...], center: np.ndarray, radii_mm: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Boolean ellipsoid, built inside its own bounding box to keep memory low."""
    mask = np.zeros(shape, dtype=bool)
    half = np.ceil(radii_mm / spacing).astype(int) + 1
    lo = np.maximum(center - half, 0)
    hi = np.minimum(center + half + 1, shape)
    grids = np.ogrid[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    dist = sum((((g - c) * s) / r) ** 2 for g, c, s, r in zip(grids, center, spacing, radii_mm))
    mask[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] = dist <= 1.0
    return mask


def make_pair(seed: int, shape: tuple[int, int, int], spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    # Lesions inside one lung-sized region (about 120 x 200 x 160 voxels) of the volume.
    region_lo = np.array([shape[0] * 0.3, shape[1] * 0.3, shape[2] * 0.2])
    region_hi = np.array([shape[0] * 0.7, shape[1] * 0.7, shape[2] * 0.5])
    for i in range(5):
        center = np.round(rng.uniform(region_lo, region_hi)).astype(int)
        radii = rng.uniform(6.0, 22.0, size=3)
        lesion = _ellipsoid(shape, center, radii, spacing)
        ref |= lesion
        if i == 0:
            pred |= _ellipsoid(shape, center, radii + 2.0, spacing)  # over-segmented
        elif i == 1:
            pred |= _ellipsoid(shape, center + np.array([2, 4, -3]), radii, spacing)  # shifted
        elif i == 4:
            continue  # missed lesion
        else:
            pred |= _ellipsoid(shape, center, radii * 0.9, spacing)  # under-segmented
    fp_center = np.round(rng.uniform(region_lo, region_hi)).astype(int)
    pred |= _ellipsoid(shape, fp_center, np.array([5.0, 5.0, 5.0]), spacing)  # false positive
    return pred, ref


def _best_time(fn, repeats: int) -> tuple[float, float, float]:
    """Best wall-clock and best CPU time (``time.process_time``: robust to a busy machine) and the value."""
    best_wall, best_cpu, value = np.inf, np.inf, np.nan
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return best_wall, best_cpu, float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of nnunet_ext's hd95 (best is reported)")
    parser.add_argument(
        "--medpy-repeats", type=int, default=1, help="timed runs of medpy's hd95 (tens of seconds each)"
    )
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), help="numpy shape (z, y, x)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 0.75, 0.75), help="mm, numpy order")
    args = parser.parse_args()

    from medpy.metric.binary import hd95 as medpy_hd95

    spacing = np.asarray(args.spacing, dtype=np.float64)
    pred, ref = make_pair(args.seed, tuple(args.shape), spacing)
    sp_txt = tuple(float(s) for s in spacing)
    print(f"shape {pred.shape}, spacing {sp_txt} mm, pred {int(pred.sum())} voxels, ref {int(ref.sum())} voxels")

    ours_w, ours_c, ours = _best_time(lambda: hd95(pred, ref, spacing), args.repeats)
    medpy_w, medpy_c, theirs = _best_time(lambda: medpy_hd95(pred, ref, voxelspacing=spacing), args.medpy_repeats)
    d_sg, d_gs = surface_distances(pred, ref, spacing)
    p_sg, p_gs = np.percentile(d_sg, 95), np.percentile(d_gs, 95)

    print(f"nnunet_ext hd95: {ours:9.4f} mm  CPU {ours_c:7.3f} s, wall {ours_w:7.3f} s (best of {args.repeats})")
    print(
        f"medpy hd95:      {theirs:9.4f} mm  CPU {medpy_c:7.3f} s, wall {medpy_w:7.3f} s (best of {args.medpy_repeats})"
    )
    print(f"speed-up (medpy / ours): CPU {medpy_c / ours_c:.1f}x, wall {medpy_w / ours_w:.1f}x")
    print(f"directed P95: pred->ref {p_sg:.4f} mm, ref->pred {p_gs:.4f} mm (medpy pools both directions)")


if __name__ == "__main__":
    main()
