"""Convert a BraTS 2020/2021 training folder into an nnU-Net region dataset (labels as nnU-Net's Dataset137).

Input: one sub-folder per case, ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (``.nii`` accepted), e.g.
``MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz`` or
``BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz``. A segmentation that does not follow the
naming (BraTS 2020 case 355 ships ``W39_1998.09.19_Segm.nii``) is found as the only file with "seg" in its name.

Output: ``$nnUNet_raw/Dataset<ID>_<NAME>/`` with channels 0 T1, 1 T1ce, 2 T2, 3 FLAIR (open_brats order), labels
remapped BraTS 2 -> 1 (edema), 1 -> 2 (NCR/NET), 4 -> 3 (enhancing), and the regions whole tumour (1, 2, 3), tumour
core (2, 3), enhancing tumour (3,) with ``regions_class_order`` (1, 2, 3). Optional ``--test-dir`` cases go to
``imagesTs``, and their segmentations, where present (a held-out part of the training data, not the unlabelled
validation set), to ``labelsTs``. Geometry is kept: ``.nii.gz`` images are copied, labels are rewritten with the image
information of the original segmentation::

    python examples/brats/convert_brats.py /data/MICCAI_BraTS2020_TrainingData -d 600 --name BraTS2020 \\
        --test-dir /data/MICCAI_BraTS2020_ValidationData -np 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ext.inference import BRATS_REGION_LABELS, BRATS_REGIONS_CLASS_ORDER, brats_to_nnunet_labels

MODALITIES = ("t1", "t1ce", "t2", "flair")  # channel i of nnU-Net = MODALITIES[i]
CHANNEL_NAMES = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
FILE_ENDING = ".nii.gz"


def _find(case_dir: Path, suffix: str, required: bool = True) -> Path | None:
    """``<case>_<suffix>.nii.gz`` or ``.nii``; for ``seg`` also the only file with "seg" in its name."""
    case = case_dir.name
    for ending in (".nii.gz", ".nii"):
        path = case_dir / f"{case}_{suffix}{ending}"
        if path.is_file():
            return path
    candidates = sorted(p for p in case_dir.glob(f"*_{suffix}.nii*") if p.is_file())
    if suffix == "seg" and not candidates:
        candidates = sorted(p for p in case_dir.glob("*.nii*") if "seg" in p.name.lower())
    if len(candidates) == 1:
        return candidates[0]
    if required or len(candidates) > 1:
        found = sorted(p.name for p in case_dir.iterdir())
        raise FileNotFoundError(
            f"case {case}: expected exactly one {case}_{suffix}.nii.gz (or .nii) in {case_dir}, found {found}"
        )
    return None


def find_cases(folder: Path) -> list[Path]:
    """Case folders (sub-folders holding a FLAIR image), sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"BraTS folder {folder} does not exist")
    cases = sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("*_flair.nii*")))
    if not cases:
        raise FileNotFoundError(f"no case folders with *_flair.nii.gz in {folder}; pass the folder holding the cases")
    return cases


def _copy_image(src: Path, dst: Path) -> None:
    if src.name.endswith(FILE_ENDING):
        shutil.copyfile(src, dst)
    else:  # .nii: nnU-Net needs one file ending for the whole dataset
        sitk.WriteImage(sitk.ReadImage(str(src)), str(dst), useCompression=True)


def convert_case(case_dir: Path, images_dir: Path, labels_dir: Path, seg_required: bool = True) -> str:
    """Write one case's four channels and its remapped label map (if it has one); returns the case name."""
    case = case_dir.name
    sources = [_find(case_dir, m) for m in MODALITIES]
    seg_path = _find(case_dir, "seg", required=seg_required)
    for channel, src in enumerate(sources):
        _copy_image(src, images_dir / f"{case}_{channel:04d}{FILE_ENDING}")
    if seg_path is not None:
        seg = sitk.ReadImage(str(seg_path))
        try:
            labels = brats_to_nnunet_labels(np.rint(sitk.GetArrayFromImage(seg)).astype(np.int64))
        except ValueError as err:
            raise ValueError(f"case {case} ({seg_path.name}): {err}") from None
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(seg)
        sitk.WriteImage(out, str(labels_dir / f"{case}{FILE_ENDING}"), useCompression=True)
    return case


def _convert_star(args: tuple[Path, Path, Path, bool]) -> str:
    return convert_case(*args)


def convert(
    train_dir: Path,
    dataset_id: int,
    name: str,
    out_root: Path,
    test_dir: Path | None = None,
    num_processes: int = 1,
    overwrite: bool = False,
) -> Path:
    """Convert a BraTS training folder (and optional test folder); returns the nnU-Net dataset folder."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    if not name or "_" in name or os.sep in name:
        raise ValueError(f"dataset name must be non-empty without '_' or '{os.sep}', got {name!r}")
    folder = out_root / f"Dataset{dataset_id:03d}_{name}"
    train_cases = find_cases(train_dir)
    test_cases = find_cases(test_dir) if test_dir is not None else []
    others = sorted(p.name for p in out_root.glob(f"Dataset{dataset_id:03d}_*") if p != folder)
    if others:
        raise FileExistsError(f"dataset id {dataset_id} is taken by {others} in {out_root}; pick another -d")
    if folder.exists():
        if not overwrite:
            raise FileExistsError(f"{folder} exists; pass --overwrite to replace it")
        shutil.rmtree(folder)
    jobs = [(c, folder / "imagesTr", folder / "labelsTr", True) for c in train_cases]
    jobs += [(c, folder / "imagesTs", folder / "labelsTs", False) for c in test_cases]
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if num_processes > 1:
        with Pool(num_processes) as pool:
            for done, case in enumerate(pool.imap_unordered(_convert_star, jobs), 1):
                print(f"[{done}/{len(jobs)}] {case}", flush=True)
    else:
        for done, job in enumerate(jobs, 1):
            print(f"[{done}/{len(jobs)}] {convert_case(*job)}", flush=True)
    dataset_json = {
        "channel_names": CHANNEL_NAMES,
        "labels": BRATS_REGION_LABELS,
        "regions_class_order": BRATS_REGIONS_CLASS_ORDER,
        "numTraining": len(train_cases),
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"BraTS converted from {train_dir}: nnU-Net labels 1 edema (BraTS 2), 2 NCR/NET (BraTS 1), "
        "3 enhancing tumour (BraTS 4)",
        "reference": "https://www.med.upenn.edu/cbica/brats/",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir", type=Path, help="BraTS training folder (one sub-folder per case)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    parser.add_argument("--name", default="BraTS", help="dataset name (default: BraTS)")
    parser.add_argument("--test-dir", type=Path, default=None, help="cases without labels for imagesTs (optional)")
    parser.add_argument("--out-root", type=Path, default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    args = parser.parse_args(argv)
    out_root = args.out_root or (Path(os.environ["nnUNet_raw"]) if os.environ.get("nnUNet_raw") else None)
    if out_root is None:
        parser.error("set $nnUNet_raw or pass --out-root")
    try:
        folder = convert(
            args.train_dir, args.dataset_id, args.name, out_root, args.test_dir, args.num_processes, args.overwrite
        )
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"convert_brats: error: {err}", file=sys.stderr)
        return 2
    print(f"Wrote {folder}. Next: nnUNetv2_plan_and_preprocess -d {args.dataset_id} -c 3d_fullres")
    return 0


if __name__ == "__main__":
    sys.exit(main())
