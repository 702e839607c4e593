"""``nnunet-ext calibrate``: measure a trained model's per-class boundary offset on its held-out trusted cases.

For each fold the trusted cases of its validation set (``nnunet-ext trust``) are predicted in nnU-Net's
preprocessed space and compared with their trusted labels; the offsets in mm (> 0: the model's boundary lies
outside the trusted one) go to ``<model folder>/fold_F/boundary_offset.json``, which
``nnunet-ext predict --boundary-offset calibrated`` applies. Any trainer works, stock ``nnUNetTrainer`` included::

    nnunet-ext trust -d 502 case_003 case_017 --as-validation     # before training
    nnUNetv2_train 502 2d 0
    nnunet-ext calibrate -d 502 -c 2d -f 0
    nnunet-ext predict -i imagesTs -o pred -d 502 -c 2d -f 0 --boundary-offset calibrated

Thin wrapper over :func:`nnunet_ext.correction.calibrate.calibrate_fold`.
"""

from __future__ import annotations

import argparse

from nnunet_ext.cli._common import add_device_argument, dataset_name, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", required=True, help="dataset name or ID")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-tr", default="nnUNetTrainer", help="trainer used for training (default: nnUNetTrainer)")
    parser.add_argument("-f", nargs="+", default=["0"], help="folds to calibrate (default: 0)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default: checkpoint_final.pth)")
    add_device_argument(parser)


def _fold(value: str) -> int | str:
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"-f takes fold numbers or 'all', got {value!r}; e.g. -f 0 1") from None


def _table(content: dict) -> list[str]:
    from nnunet_ext.correction.boundary import voxel_size_mm

    voxel = voxel_size_mm(content["spacing"], [2] * len(content["spacing"]))
    lines = [f"{'class':<24} {'offset_mm':>10} {'voxels':>8} {'cases':>6}"]
    for key, b in content["offsets_mm"].items():
        name = content["class_names"].get(key)
        label = f"{key} {name}" if name else key
        n = sum(1 for v in content["per_case"].values() if v.get(key) is not None)
        shown = (f"{b:+.3f}", f"{b / voxel:+.2f}") if b is not None else ("-", "-")
        lines.append(f"{label:<24} {shown[0]:>10} {shown[1]:>8} {n:>6}")
    return lines


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.cli.predict import ensure_trainer_lookup
    from nnunet_ext.correction.calibrate import calibrate_fold, offset_file

    folds = [_fold(f) for f in args.f]
    name = dataset_name(args.d, "-d")
    device = resolve_device(args.device).type
    ensure_trainer_lookup()
    for fold in folds:
        # user errors (ValueError, FileNotFoundError, NotImplementedError) name the fix; main prints them
        content = calibrate_fold(name, args.c, args.tr, fold, args.p, args.chk, device)
        from nnunetv2.utilities.file_path_utilities import get_output_folder

        path = offset_file(get_output_folder(content["dataset"], args.tr, args.p, args.c), fold)
        print(
            f"fold {fold}: {len(content['cases'])} held-out trusted cases, {args.chk}, spacing "
            f"{tuple(content['spacing'])} mm{' (per slice)' if content['per_slice'] else ''} -> {path}"
        )
        print("\n".join(_table(content)))
    print(
        "offset > 0: the model's boundary lies outside the trusted one; predict --boundary-offset calibrated moves "
        "it inward"
    )
    return 0
