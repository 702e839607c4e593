"""Convert the JSRT chest X-ray folder into two nnU-Net 2D datasets: noisy training labels and the clean oracle.

Both datasets share the images. Training cases (148) carry the published "J1" noisy masks (Yao et al., ICLR 2023) in
the noisy dataset and the expert SCR masks in the oracle dataset; the 24 validation cases carry clean masks in both
and form nnU-Net's validation fold through ``splits_final.json`` (fold 0: train = training cases, val = validation
cases); they are also recorded as trusted (expert-labelled) cases in ``trusted_cases.json`` next to it, as
``nnunet-ext trust`` would, so trainers that estimate the label bias use them (fold 0 never trains on them); the 75
test images go to ``imagesTs`` with their clean masks in ``labelsTs`` for the final evaluation only.

Images are stored as NIfTI slices (1 x H x W) with the in-plane pixel spacing of the downsampled radiographs
(JSRT: 0.175 mm at 2048 px, so 1.4 mm at 256 px), so distances come out in mm. ``--size 128`` halves the resolution
(area-averaged masks thresholded at 0.5) for CPU budgets.

``--noise j3 --seed S`` replaces the published J1 masks by Yao et al.'s J3 noise made from the expert masks: each
mask dilated or eroded (50/50) by a disc of radius drawn in 7-9 px at 256 px (METHODS §9.1), applied at 256 px before
any down-sampling, reproducibly per seed. ``--noisy-validation`` gives the validation cases the same kind of noise
(the setting of a user without trusted cases: nnU-Net's ``checkpoint_best`` is then chosen on noisy labels, and no
trusted cases are recorded); J1 validation noise needs ``--noise j1`` masks the published folder lacks, so there it
is made with the simulator's ``j1`` Markov preset at 256 px.

Usage:
    python examples/jsrt/convert_jsrt.py /path/to/JSRT --structure lung --noisy-id 801 --clean-id 802 [--size 128]
(needs ``nnUNet_raw`` and ``nnUNet_preprocessed`` set). Cite JSRT (Shiraishi et al. 2000) and SCR (van Ginneken
et al. 2006) when showing results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ext.noise.corruptions import random_dilate_or_erode
from nnunet_ext.noise.levels import corrupt_mask_published, get_level
from nnunet_ext.trusted import save_trusted, validate_case_ids

NOISY_FOLDERS = {
    "lung": "lung_180_0.8_0.05_0.2",
    "heart": "heart_180_0.8_0.05_0.2",
    "clavicle": "clavicle_100_0.8_0.02_0.2",
}
JSRT_SPACING_AT_256 = 1.4  # mm: 0.175 mm x 2048 / 256


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    factor = array.shape[0] // size
    if factor * size != array.shape[0] or array.shape[0] != array.shape[1]:
        raise ValueError(f"--size must divide the image size {array.shape}, got {size}")
    return array.reshape(size, factor, size, factor).mean(axis=(1, 3))


def _write(array: np.ndarray, spacing: float, path: Path) -> None:
    image = sitk.GetImageFromArray(array[None])
    image.SetSpacing((spacing, spacing, 999.0))  # nnU-Net convention for 2D: a large out-of-plane spacing
    sitk.WriteImage(image, str(path), useCompression=True)


def _mask(path: Path, size: int) -> np.ndarray:
    return _down(_read(path) > 127, size)


def _down(mask: np.ndarray, size: int) -> np.ndarray:
    return (_resize(mask.astype(np.float32), size) >= 0.5).astype(np.uint8)


J3_RADIUS_PX_AT_256 = (7.0, 9.0)  # lungs and heart (METHODS §9.1); clavicles 3-5 px
J3_RADIUS_CLAVICLE = (3.0, 5.0)


def _simulated(clean_256: np.ndarray, noise: str, structure: str, rng: np.random.Generator) -> np.ndarray:
    """Noisy mask at 256 px made from the expert mask ``clean_256`` (bool)."""
    if noise == "j3":
        radius = J3_RADIUS_CLAVICLE if structure == "clavicle" else J3_RADIUS_PX_AT_256
        noisy, _, _ = random_dilate_or_erode(clean_256, rng, (1.0, 1.0), radius_mm=radius)
        return noisy
    noisy, _ = corrupt_mask_published(clean_256, rng, get_level(noise))
    return np.asarray(noisy, dtype=bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denominator = a.sum() + b.sum()
    return 1.0 if denominator == 0 else float(2 * np.logical_and(a, b).sum() / denominator)


def convert(
    jsrt: Path,
    raw: Path,
    preprocessed: Path,
    structure: str,
    noisy_id: int,
    clean_id: int,
    size: int,
    noise: str = "j1",
    seed: int = 0,
    noisy_validation: bool = False,
) -> dict:
    if noise not in ("j1", "j3"):
        raise ValueError(f"noise must be 'j1' or 'j3', got {noise!r}")
    rng = np.random.default_rng(seed)
    published = noise == "j1"
    needed = ["images_train", "images_val", "images_test", f"{structure}_gts_train"]
    for sub in needed + ([NOISY_FOLDERS[structure]] if published else []):
        if not (jsrt / sub).is_dir():
            raise FileNotFoundError(f"{jsrt / sub} not found: is {jsrt} the JSRT folder (see its README.md)?")
    spacing = JSRT_SPACING_AT_256 * 256 / size
    tag = ("" if published else noise.upper()) + ("NoisyVal" if noisy_validation else "")
    datasets = {
        "noisy": (noisy_id, f"JSRT{structure.capitalize()}Noisy{tag}"),
        "clean": (clean_id, f"JSRT{structure.capitalize()}Clean"),
    }
    folders = {}
    for kind, (did, name) in datasets.items():
        folder = raw / f"Dataset{did:03d}_{name}"
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        folders[kind] = folder
    splits = {"train": [], "val": []}
    noisy_dice, noisy_val_dice = [], []
    for split, key in (("train", "train"), ("val", "val"), ("test", "test")):
        for img_path in sorted((jsrt / f"images_{split}").glob("*.png")):
            case = img_path.stem
            image = _resize(_read(img_path), size)
            clean_256 = _read(jsrt / f"{structure}_gts_{split}" / img_path.name) > 127
            clean = _down(clean_256, size)
            noisy_case = split == "train" or (split == "val" and noisy_validation)
            if noisy_case:
                if published and split == "train":
                    noisy = _mask(jsrt / NOISY_FOLDERS[structure] / img_path.name, size)
                else:
                    noisy = _down(_simulated(clean_256, noise, structure, rng), size)
                (noisy_dice if split == "train" else noisy_val_dice).append(_dice(noisy, clean))
            for kind, folder in folders.items():
                tag = "Tr" if split != "test" else "Ts"
                _write(image, spacing, folder / f"images{tag}" / f"{case}_0000.nii.gz")
                label = noisy if (noisy_case and kind == "noisy") else clean
                _write(label, spacing, folder / f"labels{tag}" / f"{case}.nii.gz")
            if split != "test":
                splits[key].append(case)
    for kind, folder in folders.items():
        n_tr = len(splits["train"]) + len(splits["val"])
        dataset_json = {
            "channel_names": {"0": "zscore"},
            "labels": {"background": 0, structure: 1},
            "numTraining": n_tr,
            "file_ending": ".nii.gz",
            "name": folder.name.split("_", 1)[1],
            "reference": "JSRT (Shiraishi et al. 2000), SCR masks (van Ginneken et al. 2006); noisy "
            f"training masks {noise.upper()} (Yao et al. 2023)"
            if kind == "noisy"
            else "JSRT (Shiraishi et al. 2000), SCR masks (van Ginneken et al. 2006)",
        }
        (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        pre = preprocessed / folder.name
        pre.mkdir(parents=True, exist_ok=True)
        (pre / "splits_final.json").write_text(json.dumps([splits], indent=2))
        if not (noisy_validation and kind == "noisy"):
            trusted = validate_case_ids(folder.name, splits["val"], raw=raw, preprocessed=preprocessed)
            save_trusted(folder.name, trusted, preprocessed=preprocessed)
    manifest = {
        "source": str(jsrt),
        "structure": structure,
        "size": size,
        "spacing_mm": spacing,
        "noisy_dataset": folders["noisy"].name,
        "clean_dataset": folders["clean"].name,
        "n_train": len(splits["train"]),
        "n_val": len(splits["val"]),
        "n_trusted": 0 if noisy_validation else len(splits["val"]),
        "noise": noise if not published else "j1 (published masks)",
        "seed": None if published and not noisy_validation else seed,
        "noisy_validation": noisy_validation,
        "n_test": len(list((folders["noisy"] / "imagesTs").glob("*.nii.gz"))),
        "noisy_vs_clean_dice_train": {"mean": float(np.mean(noisy_dice)), "sd": float(np.std(noisy_dice))},
    }
    if noisy_val_dice:
        manifest["noisy_vs_clean_dice_val"] = {
            "mean": float(np.mean(noisy_val_dice)),
            "sd": float(np.std(noisy_val_dice)),
        }
    (folders["noisy"] / "jsrt_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsrt", type=Path, help="the JSRT folder (images_*, *_gts_*, noisy mask folders)")
    parser.add_argument("--structure", choices=sorted(NOISY_FOLDERS), default="lung")
    parser.add_argument("--noisy-id", type=int, default=801)
    parser.add_argument("--clean-id", type=int, default=802)
    parser.add_argument("--size", type=int, default=256, help="output in-plane size (256 = as stored)")
    parser.add_argument(
        "--noise", choices=("j1", "j3"), default="j1", help="j1: the published masks; j3: random dilation/erosion"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated noise (j3, noisy validation)")
    parser.add_argument(
        "--noisy-validation", action="store_true", help="validation labels carry the same noise (no trusted cases)"
    )
    args = parser.parse_args(argv)
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            parser.error(f"set {var} first (nnU-Net's data folders)")
    manifest = convert(
        args.jsrt,
        Path(os.environ["nnUNet_raw"]),
        Path(os.environ["nnUNet_preprocessed"]),
        args.structure,
        args.noisy_id,
        args.clean_id,
        args.size,
        noise=args.noise,
        seed=args.seed,
        noisy_validation=args.noisy_validation,
    )
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
