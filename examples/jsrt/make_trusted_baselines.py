"""Write the two trusted-case baselines of the spatial-correction benchmark as nnU-Net raw datasets.

From a noisy JSRT dataset written by ``convert_jsrt.py`` (148 noisy training cases, 24 clean validation cases that
are also its trusted cases) and a number K of trusted cases (the first K validation cases by name):

- ``--trusted-only-id A``: stock nnU-Net trained on the K trusted cases alone (clean labels). Fold 0 trains on the K
  cases and validates on the other 24 - K validation cases (on all K when K = 24, as nothing else is clean).
- ``--noisy-plus-trusted-id B``: stock nnU-Net trained on the 148 noisy cases plus the K trusted cases with their
  expert labels; fold 0 validates on the other validation cases (on the K when K = 24).

Images and labels are symbolic links into the noisy dataset (copies where links are not allowed); test images and
references are the same 75 cases. Run ``nnUNetv2_plan_and_preprocess -d A B -c 2d`` afterwards (the
``splits_final.json`` this script writes into ``nnUNet_preprocessed`` is kept by nnU-Net).

Usage:
    python examples/jsrt/make_trusted_baselines.py -d 801 -k 3 --trusted-only-id 803 --noisy-plus-trusted-id 805
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name


def _link(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copy2(src, dst)


def write_dataset(
    noisy_folder: Path, out_folder: Path, preprocessed: Path, train: list[str], val: list[str], description: str
) -> None:
    dataset_json = json.loads((noisy_folder / "dataset.json").read_text())
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out_folder / sub).mkdir(parents=True, exist_ok=True)
    cases = list(dict.fromkeys(train + val))
    for case in cases:
        _link(noisy_folder / "imagesTr" / f"{case}_0000.nii.gz", out_folder / "imagesTr" / f"{case}_0000.nii.gz")
        _link(noisy_folder / "labelsTr" / f"{case}.nii.gz", out_folder / "labelsTr" / f"{case}.nii.gz")
    for sub in ("imagesTs", "labelsTs"):
        for path in sorted((noisy_folder / sub).glob("*.nii.gz")):
            _link(path, out_folder / sub / path.name)
    dataset_json.update(numTraining=len(cases), name=out_folder.name.split("_", 1)[1], description=description)
    (out_folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    pre = preprocessed / out_folder.name
    pre.mkdir(parents=True, exist_ok=True)
    (pre / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}], indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", required=True, help="the noisy JSRT dataset (id or name) written by convert_jsrt.py")
    parser.add_argument("-k", type=int, required=True, help="number of trusted cases (first K validation cases)")
    parser.add_argument("--trusted-only-id", type=int, required=True)
    parser.add_argument("--noisy-plus-trusted-id", type=int, required=True)
    args = parser.parse_args(argv)
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            parser.error(f"set {var} first (nnU-Net's data folders)")
    raw, preprocessed = Path(os.environ["nnUNet_raw"]), Path(os.environ["nnUNet_preprocessed"])
    name = maybe_convert_to_dataset_name(args.d)
    splits_file = preprocessed / name / "splits_final.json"
    if not splits_file.is_file():
        parser.error(f"{splits_file} not found; run examples/jsrt/convert_jsrt.py for {name} first")
    split = json.loads(splits_file.read_text())[0]
    val = sorted(split["val"])
    if not 1 <= args.k <= len(val):
        parser.error(f"-k must be between 1 and {len(val)} (the validation cases), got {args.k}")
    trusted, rest = val[: args.k], val[args.k :]
    structure = name.split("_", 1)[1].removeprefix("JSRT").removesuffix("Noisy")
    write_dataset(
        raw / name,
        raw / f"Dataset{args.trusted_only_id:03d}_JSRT{structure}TrustedK{args.k}",
        preprocessed,
        trusted,
        rest or trusted,
        f"stock baseline: the {args.k} trusted cases of {name} alone",
    )
    write_dataset(
        raw / name,
        raw / f"Dataset{args.noisy_plus_trusted_id:03d}_JSRT{structure}NoisyPlusTrustedK{args.k}",
        preprocessed,
        sorted(split["train"]) + trusted,
        rest or trusted,
        f"stock baseline: the noisy training cases of {name} plus its {args.k} trusted cases",
    )
    print(f"trusted cases: {' '.join(trusted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
