"""A fake nnU-Net cross-validation for audit tests: real raw datasets, "out-of-fold predictions" written as files in
nnU-Net's layout (``fold_k/validation/<case>.nii.gz``) from the clean labels, while chosen training labels are wrong.

Importable as ``audit.fake_cv`` because the suite runs from ``tests/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_ext.trusted import nnunet_split

TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CONFIGURATION = "2d"


def read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def write_like(array: np.ndarray, like: sitk.Image, path: Path) -> None:
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(like)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(path), useCompression=True)


def in_plane(mask: np.ndarray, iterations: int, grow: bool) -> np.ndarray:
    """In-plane dilation or erosion (axis 0 untouched) of a 3-D mask; plain for 2-D masks."""
    if iterations == 0:
        return mask
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    if mask.ndim == 3:
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
    op = ndimage.binary_dilation if grow else ndimage.binary_erosion
    return op(mask, structure, iterations=iterations)


def make_2d_dataset(raw: Path, dataset_id: int, name: str, num_train: int, spacing=(0.7, 0.5), seed: int = 0) -> Path:
    """2-D NIfTI images (H, W) with one ``lesion`` label: a bright disc on noise, anisotropic pixels."""
    folder = raw / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:40, :48]
    for i in range(num_train):
        rng = np.random.default_rng([seed, i])
        cy, cx, r = rng.uniform(14, 26), rng.uniform(16, 32), rng.uniform(5, 9)
        seg = (((yy - cy) * spacing[0]) ** 2 + ((xx - cx) * spacing[1]) ** 2 <= (r * 0.6) ** 2).astype(np.uint8)
        img = rng.normal(0, 1, seg.shape).astype(np.float32) + 3 * seg
        for array, path in (
            (img, folder / "imagesTr" / f"{name.lower()}_{i:03d}_0000.nii.gz"),
            (seg, folder / "labelsTr" / f"{name.lower()}_{i:03d}.nii.gz"),
        ):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(tuple(reversed(spacing)))
            sitk.WriteImage(image, str(path), useCompression=True)
    dataset_json = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": name,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def fake_cross_validation(
    folder: Path,
    dirs: SimpleNamespace,
    wrong: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    *,
    model_error: int = 1,
    folds: tuple[int, ...] = (0, 1, 2, 3, 4),
    splits: list[dict] | None = None,
    trainer: str = TRAINER,
    plans: str = PLANS,
    plans_json: dict | None = None,
    seed: int = 0,
) -> SimpleNamespace:
    """Write ``fold_k/validation`` predictions from the clean labels of ``folder``, then make ``wrong`` labels wrong.

    Each prediction is the clean label map with a small "model error": every foreground label grown or shrunk in-plane
    by ``model_error`` voxels (direction drawn per case). ``wrong`` maps a case to a function that turns its clean
    label map into the wrong training label. The split (nnU-Net's default one unless given) goes to
    ``splits_final.json``.
    """
    name = folder.name
    dataset_json = json.loads((folder / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (folder / "labelsTr").iterdir() if p.name.endswith(ending))
    splits = splits if splits is not None else nnunet_split(cases)
    pre = dirs.preprocessed / name
    pre.mkdir(parents=True, exist_ok=True)
    (pre / "splits_final.json").write_text(json.dumps(splits))
    model = dirs.results / name / f"{trainer}__{plans}__{CONFIGURATION}"
    model.mkdir(parents=True, exist_ok=True)
    (model / "dataset.json").write_text(json.dumps(dataset_json))
    (model / "plans.json").write_text(json.dumps(plans_json or {"dataset_name": name, "configurations": {}}))
    for fold in folds:
        for case in splits[fold]["val"]:
            seg, like = read(folder / "labelsTr" / f"{case}{ending}")
            grow = bool(np.random.default_rng([seed, cases.index(case)]).integers(2))
            prediction = np.zeros_like(seg)
            for value in sorted(int(v) for v in np.unique(seg) if v > 0):
                prediction[in_plane(seg >= value, model_error, grow) & (prediction < value)] = value
            write_like(prediction, like, model / f"fold_{fold}" / "validation" / f"{case}{ending}")
    for case, corrupt in (wrong or {}).items():
        path = folder / "labelsTr" / f"{case}{ending}"
        seg, like = read(path)
        write_like(corrupt(seg), like, path)
    return SimpleNamespace(
        name=name, id=int(name[7:10]), folder=folder, model=model, cases=cases, splits=splits, wrong=sorted(wrong or {})
    )


def shifted(offset: int, axis: int = -1) -> Callable[[np.ndarray], np.ndarray]:
    """A label moved by ``offset`` voxels along ``axis`` (a misregistered annotation)."""
    return lambda seg: np.roll(seg, offset, axis=axis)


def emptied(seg: np.ndarray) -> np.ndarray:
    """A missing annotation."""
    return np.zeros_like(seg)


def set_env_dirs(dirs: SimpleNamespace) -> None:
    for key in ("raw", "preprocessed", "results"):
        os.environ[f"nnUNet_{key}"] = str(getattr(dirs, key))
