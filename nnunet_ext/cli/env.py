"""``nnunet-ext env``: the fallback route to trainer discovery when the ``.pth`` autoload cannot run.

The autoload does not run for editable installs, ``python -S`` or environments that skip site-packages ``.pth``
files; then ``eval "$(nnunet-ext env)"`` exports the variable for the current shell.
"""

from __future__ import annotations

import argparse
import os
import shlex

from nnunet_ext import trainer_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shell",
        choices=("sh", "fish", "powershell"),
        default="sh",
        help="syntax of the printed line (default: sh, for bash/zsh)",
    )


def export_line(shell: str = "sh") -> str:
    """The line that appends the plugin's trainer folder to ``nnUNet_extTrainer``, keeping user entries."""
    folder = trainer_folder()
    entries = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in entries:
        entries.append(folder)
    value = os.pathsep.join(entries)
    if shell == "fish":
        return f"set -gx nnUNet_extTrainer {shlex.quote(value)}"
    if shell == "powershell":
        return f'$env:nnUNet_extTrainer = "{value}"'
    return f"export nnUNet_extTrainer={shlex.quote(value)}"


def run(args: argparse.Namespace) -> int:
    print(export_line(args.shell))
    return 0
