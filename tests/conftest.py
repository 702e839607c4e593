"""Shared fixtures: nnU-Net folders in a temp dir and a tiny preprocessed dataset built once per session.

nnU-Net 2.8.1 reads ``nnUNet_raw/preprocessed/results`` lazily, so setting them here (before any run) is enough.
The variables are set in ``os.environ`` (not monkeypatched) because subprocesses of the stock CLIs need them too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("nnUNet_compile", "f")
os.environ.setdefault("nnUNet_n_proc_DA", "0")
os.environ.setdefault("nnUNet_def_n_proc", "1")


@pytest.fixture(scope="session")
def nnunet_dirs(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("nnunet")
    dirs = SimpleNamespace(raw=root / "raw", preprocessed=root / "preprocessed", results=root / "results")
    for key in ("raw", "preprocessed", "results"):
        getattr(dirs, key).mkdir()
        os.environ[f"nnUNet_{key}"] = str(getattr(dirs, key))
    return dirs


def plan_and_preprocess(dataset_id: int, configurations: tuple[str, ...] = ("2d",)) -> None:
    """nnU-Net's own fingerprint, planning and preprocessing (Python API, one process)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for the 0 used in training tests.
    saved = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = "2"
    try:
        extract_fingerprints([dataset_id], check_dataset_integrity=True, num_processes=1)
        plan_experiments([dataset_id])
        preprocess([dataset_id], configurations=configurations, num_processes=[1] * len(configurations))
    finally:
        if saved is None:
            os.environ.pop("nnUNet_n_proc_DA", None)
        else:
            os.environ["nnUNet_n_proc_DA"] = saved


def shrink_plans(
    preprocessed: Path,
    dataset_name: str,
    configuration: str,
    batch_size: int = 4,
    max_features: int = 32,
    ext_block: dict | None = None,
) -> Path:
    """Make a configuration CPU-test sized: small batch, narrow network; optionally add a "nnunet_ext" block."""
    plans_file = preprocessed / dataset_name / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"][configuration]
    cfg["batch_size"] = batch_size
    arch = cfg["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(f // 4, max_features) for f in arch["features_per_stage"]]
    if ext_block is not None:
        cfg["nnunet_ext"] = ext_block
    plans_file.write_text(json.dumps(plans, indent=2))
    return plans_file


@pytest.fixture(scope="session")
def tiny_lesion_2d(nnunet_dirs) -> SimpleNamespace:
    """Dataset 501: 6 training + 2 test CT-like volumes (8 x 64 x 64), planned and preprocessed for ``2d``."""
    from nnunet_ext.synthetic import make_lesion_dataset

    folder = make_lesion_dataset(nnunet_dirs.raw, 501, "TinyLesion", num_train=6, num_test=2, shape=(8, 64, 64))
    plan_and_preprocess(501, ("2d",))
    shrink_plans(nnunet_dirs.preprocessed, folder.name, "2d")
    return SimpleNamespace(id=501, name=folder.name, raw=folder, dirs=nnunet_dirs)


@pytest.fixture(scope="session")
def biased_lesion_2d(nnunet_dirs) -> SimpleNamespace:
    """Dataset 533: 8 training volumes whose labels are dilated in-plane by 2 voxels (a known outward bias of 1.6 mm),
    except the trusted cases 000 and 001 (clean, held out of training by a trust split), planned for ``2d``."""
    import SimpleITK as sitk
    from scipy import ndimage

    from nnunet_ext.synthetic import make_lesion_dataset
    from nnunet_ext.trusted import save_trusted, trusted_split, write_splits

    folder = make_lesion_dataset(nnunet_dirs.raw, 533, "BiasedLesion", num_train=8, num_test=1, shape=(6, 64, 64))
    trusted = ["biasedlesion_000", "biasedlesion_001"]
    structure = np.zeros((1, 3, 3), bool)
    structure[0] = ndimage.generate_binary_structure(2, 1)
    for path in sorted((folder / "labelsTr").glob("*.nii.gz")):
        if path.name.split(".")[0] in trusted:
            continue
        image = sitk.ReadImage(str(path))
        seg = sitk.GetArrayFromImage(image) > 0
        biased = ndimage.binary_dilation(seg, structure, iterations=2).astype(np.uint8)
        out = sitk.GetImageFromArray(biased)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path))
    plan_and_preprocess(533, ("2d",))
    shrink_plans(nnunet_dirs.preprocessed, folder.name, "2d")
    cases = sorted(p.name.split(".")[0] for p in (folder / "labelsTr").glob("*.nii.gz"))
    save_trusted(folder.name, trusted)
    write_splits(folder.name, trusted_split(cases, trusted), overwrite=True)
    return SimpleNamespace(id=533, name=folder.name, raw=folder, dirs=nnunet_dirs, trusted=trusted)
