"""``nnunet-ext`` console script.

Each subcommand lives in its own module under ``nnunet_ext.cli`` exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so ``nnunet-ext --help`` and
``nnunet-ext env`` stay fast (no torch import).

Errors: bad input ends the command with exit code 2 and one line on stderr,
``nnunet-ext <command>: error: <what is wrong>; <how to fix it>``, never a traceback. Subcommands raise
``ValueError`` / ``FileNotFoundError`` (:mod:`nnunet_ext.cli._common` lists the classes and the rule); argparse's own
errors use the same line, followed by the usage. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nnunet_ext.cli._common import USER_ERRORS, user_error_message

# name -> (module, one-line help). Order is the order shown by --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "env": ("nnunet_ext.cli.env", "print the export line that makes nnU-Net find the plugin's trainers"),
    "add-config": (
        "nnunet_ext.cli.add_config",
        "add a plugin-network configuration (COPLE-Net, dilated U-Net) to plans",
    ),
    "predict": ("nnunet_ext.cli.predict", "nnUNetv2_predict with optional rotational test-time augmentation"),
    "merge-labels": ("nnunet_ext.cli.merge_labels", "BraTS two-pass merge of two label-map folders"),
    "simulate-noise": ("nnunet_ext.cli.simulate_noise", "write a copy of a raw dataset with simulated noisy labels"),
    "evaluate": ("nnunet_ext.cli.evaluate", "Dice, HD95, ASSD, RVE ... of predictions against (clean) references"),
    "benchmark": ("nnunet_ext.cli.benchmark", "train/predict/evaluate trainers against stock nnU-Net, paired tests"),
    "label-update": ("nnunet_ext.cli.label_update", "label-update baseline: 5-fold ensemble relabels the training set"),
    "speed": ("nnunet_ext.cli.speed", "time training iterations (and inference) of trainers against nnUNetTrainer"),
    "trust": ("nnunet_ext.cli.trust", "record expert-labelled (trusted) training cases; splits that hold them out"),
    "calibrate": (
        "nnunet_ext.cli.calibrate",
        "per-class boundary offset of a trained model on its held-out trusted cases (for predict --boundary-offset)",
    ),
    "audit": ("nnunet_ext.cli.audit", "rank training labels by disagreement with the out-of-fold predictions"),
    "prune": ("nnunet_ext.cli.prune", "copy a raw dataset without the cases an audit flagged (patients removal)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with the error convention: the error line first (with a hint), then the usage; exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} -h'\n{self.format_usage()}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nnunet-ext", description="nnU-Net v2 plugin: noise-robust training, COPLE-Net, BraTS 2020 pipeline."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if command is None else 2
    try:
        return int(args._run(args) or 0)
    except (*USER_ERRORS, RuntimeError) as err:
        message = user_error_message(err, args.command)
        if message is None:
            raise
        print(f"nnunet-ext {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover - console script entry is main()
    sys.exit(main())
