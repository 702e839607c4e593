"""The one trainer-folder registration (``nnunet_ext._registration``), used by the autoload and the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys

import nnunet_ext
from nnunet_ext._registration import ENV_VAR, register_trainer_folder


def test_appended_once_after_user_entries(monkeypatch):
    monkeypatch.setenv(ENV_VAR, os.pathsep.join(["/my/trainers", "", "/other"]))
    assert register_trainer_folder() == nnunet_ext.trainer_folder()
    register_trainer_folder()
    assert os.environ[ENV_VAR].split(os.pathsep) == ["/my/trainers", "/other", nnunet_ext.trainer_folder()]
    monkeypatch.delenv(ENV_VAR)
    register_trainer_folder()
    assert os.environ[ENV_VAR] == nnunet_ext.trainer_folder()
    register_trainer_folder("/extra")
    assert os.environ[ENV_VAR].split(os.pathsep) == [nnunet_ext.trainer_folder(), "/extra"]


def test_autoload_module_registers_without_torch(tmp_path):
    """The autoload (run by the .pth at start-up) sets the variable through the helper and imports no torch."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(nnunet_ext.__file__)))
    code = "import sys, os, nnunet_ext_autoload; print(os.environ['nnUNet_extTrainer']); print('torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = root
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tmp_path
    )
    entries, torch_loaded = out.stdout.splitlines()
    assert entries.split(os.pathsep) == [nnunet_ext.trainer_folder()]
    assert torch_loaded == "False"
