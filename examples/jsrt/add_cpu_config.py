"""Add a reduced-width copy of a dataset's ``2d`` configuration (``2d_cpu``) for CPU benchmark budgets.

The new configuration inherits everything from ``2d`` (same preprocessed data) and only divides
``features_per_stage`` of nnU-Net's U-Net by ``--divisor`` (inheritance is shallow, so the whole architecture block is
written). Usage: ``python examples/jsrt/add_cpu_config.py -d 801 802 [--divisor 2]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", nargs="+", required=True, help="dataset ids or names")
    parser.add_argument("--divisor", type=int, default=2)
    parser.add_argument("--name", default="2d_cpu")
    args = parser.parse_args(argv)
    for dataset in args.d:
        plans_file = (
            Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(dataset) / "nnUNetPlans.json"
        )
        plans = json.loads(plans_file.read_text())
        architecture = copy.deepcopy(plans["configurations"]["2d"]["architecture"])
        kwargs = architecture["arch_kwargs"]
        kwargs["features_per_stage"] = [max(f // args.divisor, 1) for f in kwargs["features_per_stage"]]
        plans["configurations"][args.name] = {"inherits_from": "2d", "architecture": architecture}
        plans_file.write_text(json.dumps(plans, indent=4))
        print(f"{plans_file}: {args.name} = 2d with features_per_stage {kwargs['features_per_stage']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
