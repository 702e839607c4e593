"""``nnunet-ext predict``: ``nnUNetv2_predict`` with a choice of test-time augmentation.

Same flags as ``nnUNetv2_predict`` (nnU-Net 2.8.1 ``predict_entry_point``) plus ``--tta {mirror,rot90,none}``;
``mirror`` (default) is nnU-Net's behaviour, ``rot90`` the BraTS 2020 rotational TTA (16 flips x quarter turns,
:mod:`nnunet_ext.inference`), ``none`` equals ``--disable_tta``. nnU-Net's own code paths do the work
(``initialize_from_trained_model_folder``, ``predict_from_files``); a ``nnunet_ext_predict.json`` manifest next to the
predictions records the TTA used. ``--boundary-offset calibrated|MM`` shifts the class boundaries of the fold-averaged
logits before export (:mod:`nnunet_ext.correction.calibrate`; ``calibrated`` averages what ``nnunet-ext calibrate``
stored per fold; the manifest records the offsets)::

    nnunet-ext predict -i imagesTs -o pred -d 600 -c 3d_fullres_dilated_unet -f 0 1 2 3 4 \\
        -tr RegionDiceSWATrainer --tta rot90
"""

from __future__ import annotations

import argparse
import json
import math
import os

from nnunet_ext.cli._common import add_device_argument, dataset_name, resolve_device

# nnunet_ext.inference.TTA_MODES, spelled out so that parsing and refusing bad input need no torch (a test pins it)
TTA_MODES = ("mirror", "rot90", "none")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None else int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", required=True, help="input folder (channels as _0000, _0001, ... like the training data)")
    parser.add_argument("-o", required=True, help="output folder (created if missing)")
    parser.add_argument("-d", required=True, help="dataset name or ID")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-tr", default="nnUNetTrainer", help="trainer used for training (default: nnUNetTrainer)")
    parser.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument(
        "-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds to ensemble, or 'all' (default: 0 1 2 3 4)"
    )
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step, fraction of the patch")
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        help="test-time augmentation: mirror (nnU-Net's, default), rot90 (flips x 90-degree in-plane rotations, "
        "logits averaged) or none",
    )
    parser.add_argument(
        "--boundary-offset",
        default=None,
        metavar="calibrated|MM",
        help="shift every class boundary before export: 'calibrated' uses the per-class offsets that nnunet-ext "
        "calibrate stored per fold (averaged over -f), a number of mm applies to every class; > 0 moves boundaries "
        "inward (the prediction was too large), < 0 outward (default: no shift)",
    )
    parser.add_argument("--disable_tta", action="store_true", help="no test-time augmentation (same as --tta none)")
    parser.add_argument("--verbose", action="store_true", help="nnU-Net's verbose output")
    parser.add_argument(
        "--save_probabilities", action="store_true", help="also write .npz probabilities (needed for ensembling)"
    )
    parser.add_argument(
        "--continue_prediction", action="store_true", help="keep existing outputs, predict the missing cases only"
    )
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default: checkpoint_final.pth)")
    parser.add_argument(
        "-npp",
        type=int,
        default=_env_int("nnUNet_npp", 3),
        help="preprocessing processes (default: $nnUNet_npp or 3); -npp 0 -nps 0 runs without multiprocessing",
    )
    parser.add_argument(
        "-nps", type=int, default=_env_int("nnUNet_nps", 3), help="export processes (default: $nnUNet_nps or 3)"
    )
    parser.add_argument("-prev_stage_predictions", default=None, help="previous-stage predictions (cascade only)")
    parser.add_argument("-num_parts", type=int, default=1, help="split the cases into this many parts (default: 1)")
    parser.add_argument("-part_id", type=int, default=0, help="which part this call predicts (0 .. num_parts - 1)")
    add_device_argument(parser)
    parser.add_argument("--disable_progress_bar", action="store_true", help="no tqdm progress bar")
    parser.add_argument(
        "--not_on_device", action="store_true", help="keep the full-image logits in CPU memory (large cases)"
    )


def resolve_tta(tta: str | None, disable_tta: bool) -> str:
    """The TTA mode from ``--tta`` and ``--disable_tta`` (which may not contradict each other)."""
    if disable_tta:
        if tta not in (None, "none"):
            raise ValueError(f"--disable_tta contradicts --tta {tta}; pass one of them")
        return "none"
    return tta or "mirror"


def ensure_trainer_lookup() -> None:
    """Append the plugin's trainer folder to ``nnUNet_extTrainer``: the predictor finds the trainer class by the
    name stored in the checkpoint, and the ``.pth`` autoload does not run for editable installs."""
    from nnunet_ext._registration import register_trainer_folder

    register_trainer_folder()


def _folds(values: list[str]) -> list[int | str]:
    folds: list[int | str] = []
    for v in values:
        if v == "all":
            folds.append(v)
            continue
        try:
            folds.append(int(v))
        except ValueError:
            raise ValueError(f"-f takes fold numbers or 'all', got {v!r}; e.g. -f 0 1 2 3 4 or -f all") from None
    return folds


def parse_boundary_offset(value: str | None) -> str | float | None:
    """``--boundary-offset``: None, ``"calibrated"`` or a finite number of mm."""
    if value is None or value == "calibrated":
        return value
    try:
        mm = float(value)
    except ValueError:
        mm = math.nan
    if not math.isfinite(mm):
        raise ValueError(
            f"--boundary-offset takes 'calibrated' or a finite number of mm (> 0 moves boundaries inward), "
            f"got {value!r}"
        )
    return mm


def _calibrate_command(args: argparse.Namespace, folds: list[int | str]) -> str:
    line = f"nnunet-ext calibrate -d {args.d} -c {args.c} -tr {args.tr} -f {' '.join(str(f) for f in folds)}"
    if args.p != "nnUNetPlans":
        line += f" -p {args.p}"
    if args.chk != "checkpoint_final.pth":
        line += f" -chk {args.chk}"
    return line


def _boundary_offsets(args: argparse.Namespace, predictor, model_folder: str, folds: list[int | str]) -> dict | None:
    """Set the predictor's offsets from ``--boundary-offset``; returns the manifest entry."""
    from nnunet_ext.correction.calibrate import load_calibrated_offsets, uniform_offsets

    mode = parse_boundary_offset(args.boundary_offset)
    if mode is None:
        return None
    per_fold = None
    if mode == "calibrated":
        try:
            offsets, per_fold = load_calibrated_offsets(model_folder, folds, args.chk)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"--boundary-offset calibrated: {err}; run {_calibrate_command(args, folds)}") from None
    else:
        offsets = uniform_offsets(predictor.label_manager, mode)
    predictor.set_boundary_offsets(offsets)
    return {
        "mode": "calibrated" if mode == "calibrated" else "fixed",
        "offsets_mm": offsets,
        "per_fold": per_fold,
        "sign": "> 0 moves the boundary inward (prediction larger than the trusted reference)",
        "applied_to": "fold-averaged logits in preprocessed space, before resampling and export; saved "
        "probabilities are those of the shifted logits",
    }


def _build_predictor(args: argparse.Namespace):
    """Validate the arguments and return ``(predictor, manifest)``; user errors raise ValueError/FileNotFoundError."""
    tta = resolve_tta(args.tta, args.disable_tta)
    folds = _folds(args.f)
    parse_boundary_offset(args.boundary_offset)  # refuse a bad value before loading the model
    if not 0 <= args.part_id < args.num_parts:
        raise ValueError(
            f"-part_id must be in 0 .. num_parts - 1 = {args.num_parts - 1}, got {args.part_id}; pass -part_id from 0 "
            f"to {args.num_parts - 1}"
        )
    if args.npp == 0 and args.nps == 0 and args.num_parts > 1:
        raise ValueError(
            "-num_parts > 1 needs multiprocessing (nnU-Net's sequential mode, -npp 0 -nps 0, ignores it); set -npp and "
            "-nps > 0 or drop -num_parts"
        )
    if not os.path.isdir(args.i):
        raise FileNotFoundError(f"input folder -i {args.i} does not exist; check the path")

    dataset = dataset_name(args.d, "-d", need="results")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    import nnunet_ext
    from nnunet_ext.inference import Rot90Predictor

    device = resolve_device(args.device)
    ensure_trainer_lookup()
    model_folder = get_output_folder(dataset, args.tr, args.p, args.c)
    if not os.path.isdir(model_folder):
        raise FileNotFoundError(
            f"no trained model at {model_folder}; check -d, -tr, -p, -c and $nnUNet_results "
            f"({os.environ.get('nnUNet_results')})"
        )
    predictor = Rot90Predictor(
        tta=tta,
        tile_step_size=args.step_size,
        use_gaussian=True,
        perform_everything_on_device=not args.not_on_device,
        device=device,
        verbose=args.verbose,
        verbose_preprocessing=args.verbose,
        allow_tqdm=not args.disable_progress_bar,
    )
    predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint_name=args.chk)
    boundary = _boundary_offsets(args, predictor, model_folder, folds)
    patch = tuple(predictor.configuration_manager.patch_size)
    manifest = {
        "nnunet_ext_version": nnunet_ext.__version__,
        "model_folder": os.path.abspath(model_folder),
        "trainer": predictor.trainer_name,
        "configuration": args.c,
        "folds": folds,
        "checkpoint": args.chk,
        "tta": tta,
        "tta_transforms": [t.name for t in predictor.rot90_transforms(patch)] if tta == "rot90" else None,
        "tta_mirror_axes": list(predictor.allowed_mirroring_axes or ()) if tta == "mirror" else None,
        "tta_averaging": "logits",
        "step_size": args.step_size,
        "patch_size": list(patch),
        "boundary_offset": boundary,
    }
    return predictor, manifest


def run(args: argparse.Namespace) -> int:
    predictor, manifest = _build_predictor(args)  # user errors: ValueError / FileNotFoundError (main prints them)
    os.makedirs(args.o, exist_ok=True)
    with open(os.path.join(args.o, "nnunet_ext_predict.json"), "w") as f:
        json.dump(manifest, f, indent=2)

    if args.npp == 0 and args.nps == 0:
        predictor.predict_from_files_sequential(
            args.i,
            args.o,
            save_probabilities=args.save_probabilities,
            overwrite=not args.continue_prediction,
            folder_with_segs_from_prev_stage=args.prev_stage_predictions,
        )
    else:
        predictor.predict_from_files(
            args.i,
            args.o,
            save_probabilities=args.save_probabilities,
            overwrite=not args.continue_prediction,
            num_processes_preprocessing=args.npp,
            num_processes_segmentation_export=args.nps,
            folder_with_segs_from_prev_stage=args.prev_stage_predictions,
            num_parts=args.num_parts,
            part_id=args.part_id,
        )
    return 0
