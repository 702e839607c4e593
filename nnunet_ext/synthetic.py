"""Small synthetic nnU-Net raw datasets for tests, the demo and smoke benchmarks.

Two generators, both deterministic for a seed (case ``i`` draws from ``np.random.default_rng([seed, i])``):

- :func:`make_lesion_dataset`: CT-like anisotropic 3D volumes (HU-scaled soft tissue with a darker "lung" ellipsoid
  and bright lesions inside it), one label ``lesion``. Test cases keep their clean labels in ``labelsTs``.
- :func:`make_region_dataset`: 4-channel BraTS-like volumes with nested labels 1 edema, 2 necrosis, 3 enhancing and
  nnU-Net region definitions (whole tumour, tumour core, enhancing tumour).

Images are written with SimpleITK (spacing given in numpy axis order z, y, x and reversed for ITK).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def _ellipsoid(shape: Sequence[int], center: Sequence[float], radii_vox: Sequence[float]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii_vox))
    return dist <= 1.0


def _write(array: np.ndarray, spacing_zyx: Sequence[float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(image, str(path), useCompression=True)


def _lesion_case(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], max_lesions: int):
    shape = tuple(shape)
    img = rng.normal(40.0, 20.0, size=shape).astype(np.float32)  # soft tissue around the lung
    center = np.array(shape) / 2.0
    lung = _ellipsoid(shape, center, [s * 0.45 for s in shape])
    img[lung] = rng.normal(-800.0, 40.0, size=int(lung.sum()))
    seg = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, max_lesions + 1))):
        radius_mm = rng.uniform(3.0, 9.0)
        radii = [max(radius_mm / sp, 1.0) for sp in spacing]
        c = [rng.uniform(s * 0.3, s * 0.7) for s in shape]
        blob = _ellipsoid(shape, c, radii) & lung
        seg[blob] = 1
    img[seg == 1] = rng.normal(-150.0, 40.0, size=int((seg == 1).sum()))
    return img, seg


def make_lesion_dataset(
    raw_root: str | Path,
    dataset_id: int,
    name: str = "SynthLesion",
    num_train: int = 8,
    num_test: int = 4,
    shape: Sequence[int] = (12, 64, 64),
    spacing: Sequence[float] = (2.5, 0.8, 0.8),
    max_lesions: int = 3,
    seed: int = 0,
) -> Path:
    """Write ``Dataset{id:03d}_{name}`` with CT-like volumes and one ``lesion`` label.

    Args:
        raw_root: the ``nnUNet_raw`` folder.
        dataset_id: nnU-Net dataset id (1-999).
        name: dataset name suffix.
        num_train: cases in ``imagesTr``/``labelsTr``.
        num_test: cases in ``imagesTs`` with clean references in ``labelsTs``.
        shape: volume shape in numpy order (z, y, x).
        spacing: voxel spacing in mm, numpy order.
        max_lesions: lesions per case are drawn from 1..max_lesions.
        seed: base seed; case ``i`` uses ``default_rng([seed, i])``.

    Returns:
        The dataset folder.
    """
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num_train + num_test):
        rng = np.random.default_rng([seed, i])
        img, seg = _lesion_case(rng, shape, spacing, max_lesions)
        split = "Tr" if i < num_train else "Ts"
        case = f"{name.lower()}_{i:03d}"
        _write(img, spacing, folder / f"images{split}" / f"{case}_0000.nii.gz")
        _write(seg, spacing, folder / f"labels{split}" / f"{case}.nii.gz")
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": name,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def _region_case(rng: np.random.Generator, shape: Sequence[int]):
    shape = tuple(shape)
    brain = _ellipsoid(shape, np.array(shape) / 2.0, [s * 0.45 for s in shape])
    c = [rng.uniform(s * 0.4, s * 0.6) for s in shape]
    r = rng.uniform(0.18, 0.26) * min(shape)
    edema = _ellipsoid(shape, c, [r] * 3) & brain
    core = _ellipsoid(shape, c, [r * 0.6] * 3) & brain
    enhancing = core & ~_ellipsoid(shape, c, [r * 0.35] * 3)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[edema] = 1
    seg[core] = 2
    seg[enhancing] = 3
    # One contrast per channel (T1, T1ce, T2, FLAIR): each sub-region is bright in a different subset.
    means = {0: (100, 90, 80, 85), 1: (100, 100, 160, 120), 2: (120, 140, 200, 180), 3: (110, 200, 150, 170)}
    images = []
    for ch in range(4):
        img = np.zeros(shape, dtype=np.float32)
        img[brain] = means[0][ch]
        for label in (1, 2, 3):
            img[seg == label] = means[label][ch]
        img += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
        img[~brain] = 0.0
        images.append(img)
    return images, seg


def make_region_dataset(
    raw_root: str | Path,
    dataset_id: int,
    name: str = "SynthBraTS",
    num_train: int = 6,
    num_test: int = 2,
    shape: Sequence[int] = (32, 32, 32),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> Path:
    """Write a 4-channel BraTS-like region dataset in nnU-Net's convention (see NNUNET_INTEGRATION §7).

    Labels: 1 edema, 2 necrosis/non-enhancing core, 3 enhancing tumour; regions whole tumour (1, 2, 3), tumour core
    (2, 3) and enhancing tumour (3,), ``regions_class_order`` (1, 2, 3).
    """
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num_train + num_test):
        rng = np.random.default_rng([seed, i])
        images, seg = _region_case(rng, shape)
        split = "Tr" if i < num_train else "Ts"
        case = f"{name.lower()}_{i:03d}"
        for ch, img in enumerate(images):
            _write(img, spacing, folder / f"images{split}" / f"{case}_{ch:04d}.nii.gz")
        _write(seg, spacing, folder / f"labels{split}" / f"{case}.nii.gz")
    dataset_json = {
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]},
        "regions_class_order": [1, 2, 3],
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": name,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder
