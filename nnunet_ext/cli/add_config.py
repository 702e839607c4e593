"""``nnunet-ext add-config``: add a plugin-network configuration (COPLE-Net, dilated 3-D U-Net) to nnU-Net plans.

The new configuration inherits the base's preprocessed data, so no new preprocessing is needed::

    nnunet-ext add-config -d 4 --base 2d --arch coplenet            # writes 2d_coplenet into nnUNetPlans.json
    nnUNetv2_train 4 2d_coplenet 0 -tr NRDiceAdaptiveMTTrainer
"""

from __future__ import annotations

import argparse
import json
import os

from nnunet_ext._io import write_json_atomic
from nnunet_ext.cli._common import dataset_name

ARCH_CHOICES = ("coplenet", "dilated_unet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or ID (as for nnUNetv2_train)")
    parser.add_argument("--arch", required=True, choices=ARCH_CHOICES, help="plugin network")
    parser.add_argument(
        "--base",
        default=None,
        help="preprocessed configuration to inherit from (default: 2d for coplenet, 3d_fullres for dilated_unet)",
    )
    parser.add_argument("--name", default=None, help="new configuration name (default: <base>_<arch>)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument(
        "--arch-kwargs",
        default=None,
        metavar="JSON",
        help="overrides of the network arguments as a JSON object, e.g. '{\"aspp\": false}'",
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="patch size written into the new configuration (default: inherited from the base)",
    )
    parser.add_argument(
        "--no-deep-supervision-heads",
        action="store_true",
        help="build the network without deep-supervision heads (COPLE-Net as published; plugin trainers only)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the configuration block, write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, different configuration")


def _arch_kwargs(args: argparse.Namespace) -> dict:
    kwargs: dict = {}
    if args.arch_kwargs is not None:
        try:
            kwargs = json.loads(args.arch_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"--arch-kwargs is not valid JSON ({err}): {args.arch_kwargs!r}; quote it as one shell word, e.g. "
                "'{\"aspp\": false}'"
            ) from err
        if not isinstance(kwargs, dict):
            raise ValueError(f'--arch-kwargs must be a JSON object, got {args.arch_kwargs!r}; write {{"key": value}}')
    if args.no_deep_supervision_heads:
        if kwargs.get("deep_supervision_heads", False):
            raise ValueError(
                "--no-deep-supervision-heads contradicts deep_supervision_heads=true in --arch-kwargs; drop one of them"
            )
        kwargs["deep_supervision_heads"] = False
    return kwargs


def plans_file(dataset: str, plans: str) -> str:
    """``$nnUNet_preprocessed/<DatasetXXX_Name>/<plans>.json`` for a dataset name or ID."""
    name = dataset_name(dataset, "-d", need="preprocessed")
    folder = os.path.join(os.environ["nnUNet_preprocessed"], name)
    path = os.path.join(folder, f"{plans}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Plans file {path} not found; run nnUNetv2_plan_and_preprocess for this dataset first, or pass the "
            f"right plans identifier with -p."
        )
    return path


def run(args: argparse.Namespace) -> int:
    path = plans_file(args.dataset, args.plans)  # before the network modules (and torch) load
    from nnunet_ext.architectures.plans import add_configuration, default_configuration_name, get_spec

    spec = get_spec(args.arch)
    base = args.base or spec.default_base
    name = args.name or default_configuration_name(base, args.arch)
    with open(path) as f:
        plans = json.load(f)
    new_plans = add_configuration(
        plans,
        base=base,
        arch=args.arch,
        name=name,
        arch_kwargs=_arch_kwargs(args),
        patch_size=args.patch_size,
        overwrite=args.overwrite,
    )

    block = new_plans["configurations"][name]
    existed = name in plans["configurations"]
    unchanged = new_plans == plans
    print(json.dumps({name: block}, indent=4))
    if args.dry_run:
        print(f"Dry run: nothing written to {path}.")
        return 0
    if unchanged:
        print(f"Configuration {name!r} is already in {path} with this block; nothing to do.")
    else:
        write_json_atomic(new_plans, path, indent=4)
        verb = "Replaced" if existed else "Added"
        print(f"{verb} configuration {name!r} (inherits from {base!r}, same preprocessed data) in {path}.")
    plans_flag = "" if args.plans == "nnUNetPlans" else f" -p {args.plans}"
    print(f"Train with: nnUNetv2_train {args.dataset} {name} FOLD{plans_flag} -tr NRDiceAdaptiveMTTrainer")
    if not block["architecture"]["arch_kwargs"]["deep_supervision_heads"]:
        print("Note: no deep-supervision heads, so stock nnUNetTrainer cannot train it; use an nnunet_ext trainer.")
    return 0
