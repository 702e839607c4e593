"""Append ``nnunet_ext/trainers`` to ``nnUNet_extTrainer`` at interpreter start-up.

Executed through ``nnunet_ext.pth`` in site-packages, so it must stay import-light: it locates the package without
importing it (no torch, no nnU-Net). A user's own ``nnUNet_extTrainer`` entries are kept and come first.
"""

import importlib.util
import os


def _register() -> None:
    try:
        spec = importlib.util.find_spec("nnunet_ext")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "trainers")
    if not os.path.isdir(folder):
        return
    entries = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in entries:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*entries, folder])


_register()
