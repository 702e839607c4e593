"""The one place that makes nnU-Net's trainer lookup see the plugin: ``nnUNet_extTrainer`` gets its trainer folder.

nnU-Net 2.8 searches its own trainer tree first, then every folder listed (``os.pathsep``-separated) in
``nnUNet_extTrainer``. Used by the ``.pth`` autoload at interpreter start-up (so it imports nothing heavy: only
``os``, and ``nnunet_ext/__init__`` which is import-light), by the benchmark before building or loading a trainer,
and by ``nnunet-ext predict`` (the predictor finds the trainer class by the name stored in the checkpoint; the autoload
does not run for editable installs).
"""

from __future__ import annotations

import os

from nnunet_ext import trainer_folder

ENV_VAR = "nnUNet_extTrainer"


def register_trainer_folder(folder: str | None = None) -> str:
    """Append ``folder`` (default: the plugin's trainer folder) to ``nnUNet_extTrainer`` unless it is listed.

    A user's own entries are kept and come first; empty entries are dropped. The variable is set in ``os.environ``,
    so it holds for this process and the processes it starts (nnU-Net's spawned workers, subprocesses).

    Returns:
        The registered folder.
    """
    folder = trainer_folder() if folder is None else folder
    entries = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if folder not in entries:
        os.environ[ENV_VAR] = os.pathsep.join([*entries, folder])
    return folder
