"""Append ``nnunet_ext/trainers`` to ``nnUNet_extTrainer`` at interpreter start-up.

Executed through ``nnunet_ext.pth`` in site-packages, so it must stay import-light: it imports only
``nnunet_ext._registration`` (``os`` and the import-light package ``__init__``; no torch, no nnU-Net). A user's own
``nnUNet_extTrainer`` entries are kept and come first. It never fails interpreter start-up: a broken or half-removed
installation leaves the variable alone.
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
    if not os.path.isdir(os.path.join(next(iter(spec.submodule_search_locations)), "trainers")):
        return
    try:
        from nnunet_ext._registration import register_trainer_folder
    except Exception:  # a .pth line that raises prints a traceback at every interpreter start
        return
    register_trainer_folder()


_register()
