from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.noise.corruptions import ellipsoid


def make_lesion_seg(rng: np.random.Generator, shape, spacing, radius_mm, max_lesions: int = 3) -> np.ndarray:
    """A label map with 1..max_lesions ellipsoid lesions (label 1) of mean radius in ``radius_mm``."""
    seg = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, max_lesions + 1))):
        r = rng.uniform(*radius_mm)
        center = rng.uniform(np.array(shape) * 0.25, np.array(shape) * 0.75)
        seg[ellipsoid(shape, center, r * rng.uniform(0.8, 1.2, size=3), spacing)] = 1
    return seg


def write_raw_dataset(root: Path, n_cases: int = 4, shape=(16, 40, 40), spacing=(2.5, 0.8, 0.8), seed: int = 7):
    """A tiny nnU-Net raw dataset (one CT channel, label 1 lesions, two test images with labels)."""
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)

    def write(arr, path):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(tuple(reversed(spacing)))
        img.SetOrigin((-10.0, 5.0, 2.0))
        sitk.WriteImage(img, str(path), useCompression=True)

    for i in range(n_cases + 2):
        rng = np.random.default_rng([seed, i])
        seg = make_lesion_seg(rng, shape, spacing, (4.0, 8.0))
        img = (rng.normal(0, 1, shape) + 3 * seg).astype(np.float32)
        split = "Tr" if i < n_cases else "Ts"
        write(img, root / f"images{split}" / f"case_{i:03d}_0000.nii.gz")
        write(seg, root / f"labels{split}" / f"case_{i:03d}.nii.gz")
    ds = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "name": "Synth",
    }
    (root / "dataset.json").write_text(json.dumps(ds))
    return root


@pytest.fixture
def raw_dataset(tmp_path):
    return write_raw_dataset(tmp_path / "Dataset501_Synth")


@pytest.fixture
def lesion_seg():
    """The :func:`make_lesion_seg` factory (test modules cannot import conftest under --import-mode=importlib)."""
    return make_lesion_seg


def make_lungs(shape=(256, 256)) -> np.ndarray:
    """Two upright ellipses (150 × 60 px at 256 px, scaled with ``shape``): a lung-field-like 2-D mask."""
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    mask = np.zeros(shape, dtype=bool)
    for cx in (0.293 * w, 0.707 * w):
        mask |= ((yy - 0.5 * h) / (0.293 * h)) ** 2 + ((xx - cx) / (0.117 * w)) ** 2 <= 1.0
    return mask


@pytest.fixture
def lungs():
    """The :func:`make_lungs` factory."""
    return make_lungs
