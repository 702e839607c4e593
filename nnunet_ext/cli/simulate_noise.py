"""``nnunet-ext simulate-noise``: a copy of a raw dataset with simulated noisy training labels.

Reads ``$nnUNet_raw/<source>`` and writes ``$nnUNet_raw/Dataset<out-id>_<out-name>`` (noisy ``labelsTr``, clean
``labelsTr_clean``, linked images, ``noise_manifest.json``). Thin wrapper over
:func:`nnunet_ext.noise.simulate.simulate_noisy_dataset`.

The noise is one of ``--level`` (calibrated mild/moderate/severe, or Yao et al.'s published j1/j2/j3) or
``--markov T THETA1 THETA2 THETA3`` (Yao et al.'s Markov expand/shrink process with your parameters, in voxels).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nnunet_ext.cli._common import dataset_name
from nnunet_ext.noise.levels import LEVELS, PUBLISHED_LEVELS, MarkovNoise

_LEVEL_HELP = (
    "mild / moderate / severe: mixed noise calibrated to a mean Dice of 0.9 / 0.8 / 0.7; "
    "j1 / j2: Yao et al.'s Markov expand/shrink noise (T 180, theta1 0.8 / 0.2, theta2 0.05, theta3 0.2): "
    "masks drift outwards / inwards (~10 px at 256 px); "
    "j3: dilation or erosion (50/50) by 7-9 voxels per mask"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="source dataset name or id (in $nnUNet_raw)")
    parser.add_argument("--out-id", type=int, required=True, help="id of the new dataset (must not be in use)")
    parser.add_argument(
        "--out-name",
        default=None,
        help="name of the new dataset (default: <source name>Noisy<Level>, e.g. SynthCTNoisyModerate)",
    )
    noise = parser.add_mutually_exclusive_group(required=True)
    noise.add_argument("--level", choices=(*LEVELS, *PUBLISHED_LEVELS), help=_LEVEL_HELP)
    noise.add_argument(
        "--markov",
        nargs=4,
        type=float,
        metavar=("T", "THETA1", "THETA2", "THETA3"),
        help="Markov expand/shrink noise with these parameters: T steps, each expanding with probability THETA1 "
        "(else shrinking) and flipping boundary voxels with probability THETA2; then every voxel flipped with "
        "probability THETA3, 5x5 Gaussian blur (sigma 2), threshold 0.5 (j1 = 180 0.8 0.05 0.2)",
    )
    parser.add_argument("--seed", type=int, required=True, help="seed of all randomness (recorded in the manifest)")
    parser.add_argument("--dry-run", action="store_true", help="compute and report the Dice, write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing target dataset")
    parser.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes (default: 1)")


def _raw_root() -> Path:
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise ValueError("nnUNet_raw is not set; export nnUNet_raw=/path/to/nnUNet_raw (see nnU-Net's docs)")
    return Path(raw)


def markov_level(values: list[float]) -> MarkovNoise:
    """The :class:`MarkovNoise` named ``markov`` of ``--markov T THETA1 THETA2 THETA3``."""
    steps, theta1, theta2, theta3 = values
    fix = "e.g. --markov 180 0.8 0.05 0.2 (T >= 1 steps, probabilities in [0, 1])"
    if not float(steps).is_integer():
        raise ValueError(f"--markov T must be a whole number of steps, got {steps}; {fix}")
    try:
        return MarkovNoise("markov", int(steps), theta1, theta2, theta3)
    except ValueError as err:
        raise ValueError(f"--markov {' '.join(f'{v:g}' for v in values)}: {str(err).rstrip('.')}; {fix}") from None


def target_name(source_name: str, out_id: int, out_name: str | None, level: str) -> str:
    """``Dataset{out_id:03d}_{name}``; the default name is the source's plus ``Noisy<Level>``."""
    if not 0 <= out_id <= 999:
        raise ValueError(f"--out-id must be in 0..999 (nnU-Net uses three digits), got {out_id}; choose a free id")
    if out_name is None:
        base = source_name.split("_", 1)[1] if source_name.startswith("Dataset") and "_" in source_name else source_name
        out_name = f"{base}Noisy{level.capitalize()}"
    return f"Dataset{out_id:03d}_{out_name}"


def run(args: argparse.Namespace) -> int:
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets

    from nnunet_ext.noise.simulate import simulate_noisy_dataset

    level = args.level if args.markov is None else markov_level(args.markov)
    level_name = level if isinstance(level, str) else level.name
    raw = _raw_root()
    source = dataset_name(args.dataset, "-d", need="raw")
    target = target_name(source, args.out_id, args.out_name, level_name)
    taken = [str(c) for c in find_candidate_datasets(args.out_id) if str(c) != target]
    if taken:
        raise ValueError(f"dataset id {args.out_id} is already used by {taken}; choose another --out-id")
    if source == target:
        raise ValueError(f"target {target} equals the source; choose another --out-id")
    manifest = simulate_noisy_dataset(
        raw / source,
        raw / target,
        level,
        args.seed,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
        num_processes=args.num_processes,
    )
    per_key = ", ".join(f"{k}: {v:.4f}" for k, v in manifest["mean_dice_per_label_or_region"].items())
    changes = ", ".join(
        f"{k}: {100 * manifest['mean_relative_change_per_label_or_region'][k]:+.1f} %, boundary shift {v:+.2f} mm"
        for k, v in manifest["mean_boundary_shift_mm_per_label_or_region"].items()
    )
    action = "would write" if args.dry_run else "wrote"
    print(f"{action} {raw / target} ({manifest['n_cases']} cases, level {level_name}, seed {args.seed})")
    print(f"mean noisy-vs-clean Dice: {manifest['mean_dice']:.4f} (per label/region: {per_key})")
    print(f"mean size change (median boundary shift, + = outward) per label/region: {changes}")
    return 0
