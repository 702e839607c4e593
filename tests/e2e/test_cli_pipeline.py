"""The stock nnU-Net CLIs find and run the plugin's trainers with zero configuration (installed package).

Runs the real pipeline on generated data: nnUNetv2_train (fresh, then --c), nnUNetv2_predict,
nnUNetv2_find_best_configuration, in subprocesses whose environment has no nnUNet_extTrainer. These tests need the
non-editable install that ``make test`` performs (the wheel's nnunet_ext.pth is what makes discovery automatic).
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import nnunet_ext

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _installed_with_pth() -> bool:
    pkg = Path(nnunet_ext.__file__).resolve().parent
    return any(
        (Path(p) / "nnunet_ext.pth").is_file() and pkg.parent == Path(p).resolve() for p in site.getsitepackages()
    )


requires_install = pytest.mark.skipif(
    not _installed_with_pth(), reason="needs the non-editable install with nnunet_ext.pth (run `make test`)"
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def predict(dataset, out, trainer: str, configuration: str, env: dict[str, str]) -> None:
    """Stock nnUNetv2_predict of the dataset's test images, fold 0, no TTA, in-process workers."""
    run(
        [
            str(BIN / "nnUNetv2_predict"),
            "-i",
            str(dataset.raw / "imagesTs"),
            "-o",
            str(out),
            "-d",
            str(dataset.id),
            "-c",
            configuration,
            "-f",
            "0",
            "-tr",
            trainer,
            "-device",
            "cpu",
            "--disable_tta",
            "-npp",
            "1",
            "-nps",
            "1",
        ],
        env,
    )


def set_ext_block(dataset, **block) -> None:
    plans_file = dataset.dirs.preprocessed / dataset.name / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["2d"]["nnunet_ext"] = block
    plans_file.write_text(json.dumps(plans, indent=2))


@requires_install
def test_autoload_keeps_user_entries_and_env_command(tmp_path):
    user = tmp_path / "my_trainers"
    user.mkdir()
    (user / "__init__.py").write_text("")
    (user / "my_trainer_module.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class MyOwnTrainer(nnUNetTrainer):\n    pass\n"
    )
    code = (
        "import os\n"
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
        "print(os.environ['nnUNet_extTrainer'])\n"
        "print(find('MyOwnTrainer').__name__, find('NRDiceAdaptiveMTTrainer').__name__)\n"
    )
    out = run([sys.executable, "-c", code], clean_env(nnUNet_extTrainer=str(user))).stdout.splitlines()
    assert out[0].split(os.pathsep) == [str(user), nnunet_ext.trainer_folder()]
    assert out[-1] == "MyOwnTrainer NRDiceAdaptiveMTTrainer"
    line = run([str(BIN / "nnunet-ext"), "env"], clean_env()).stdout.strip()
    assert line.startswith("export nnUNet_extTrainer=") and nnunet_ext.trainer_folder() in line


@requires_install
def test_train_resume_predict_find_best_with_nrdice(tiny_lesion_2d, tmp_path):
    ds = tiny_lesion_2d
    env = clean_env()
    common = [str(ds.id), "2d", "0", "-tr", "NRDiceTrainer", "-device", "cpu"]
    set_ext_block(ds, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    run([str(BIN / "nnUNetv2_train"), *common, "--npz"], env)
    fold = ds.dirs.results / ds.name / "NRDiceTrainer__nnUNetPlans__2d" / "fold_0"
    first = torch.load(fold / "checkpoint_final.pth", weights_only=False, map_location="cpu")
    assert first["trainer_name"] == "NRDiceTrainer" and first["current_epoch"] == 1

    set_ext_block(ds, num_epochs=2, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    run([str(BIN / "nnUNetv2_train"), *common, "--c", "--npz"], env)
    resumed = torch.load(fold / "checkpoint_final.pth", weights_only=False, map_location="cpu")
    assert resumed["current_epoch"] == 2
    assert len(resumed["logging"]["train_losses"]) == 2  # epoch 0 kept from the first run, epoch 1 added
    assert resumed["logging"]["train_losses"][0] == first["logging"]["train_losses"][0]

    out = tmp_path / "pred"
    predict(ds, out, "NRDiceTrainer", "2d", env)
    for ref in sorted((ds.raw / "labelsTs").glob("*.nii.gz")):
        pred, img = (
            sitk.ReadImage(str(out / ref.name)),
            sitk.ReadImage(str(ds.raw / "imagesTs" / ref.name.replace(".nii.gz", "_0000.nii.gz"))),
        )
        assert pred.GetSize() == img.GetSize()
        np.testing.assert_allclose(pred.GetSpacing(), img.GetSpacing())
        np.testing.assert_allclose(pred.GetOrigin(), img.GetOrigin())
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}

    run(
        [
            str(BIN / "nnUNetv2_find_best_configuration"),
            str(ds.id),
            "-c",
            "2d",
            "-tr",
            "NRDiceTrainer",
            "-f",
            "0",
            "--disable_ensembling",
            "-np",
            "1",
        ],
        env,
    )
    assert (ds.dirs.results / ds.name / "inference_information.json").is_file()


@requires_install
def test_flagship_trains_and_predicts_with_teacher(tiny_lesion_2d, tmp_path):
    ds = tiny_lesion_2d
    env = clean_env()
    set_ext_block(ds, num_epochs=2, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    run([str(BIN / "nnUNetv2_train"), str(ds.id), "2d", "0", "-tr", "NRDiceAdaptiveMTTrainer", "-device", "cpu"], env)
    fold = ds.dirs.results / ds.name / "NRDiceAdaptiveMTTrainer__nnUNetPlans__2d" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=False, map_location="cpu")
    assert ckpt["nnunet_ext_state"]["mean_teacher"]["step"] == 4
    assert len(ckpt["logging"]["ext_teacher_update_fraction"]) == 2
    assert any(not torch.equal(ckpt["network_weights"][k], v) for k, v in ckpt["nnunet_ext_student_weights"].items())
    assert (fold / "progress_nnunet_ext.png").is_file() and (fold / "validation" / "summary.json").is_file()
    out = tmp_path / "pred"
    predict(ds, out, "NRDiceAdaptiveMTTrainer", "2d", env)
    assert len(list(out.glob("*.nii.gz"))) == 2


@requires_install
def test_coplenet_configuration_with_flagship_train_resume_predict(tiny_lesion_2d, tmp_path):
    """add-config -> nnUNetv2_train 2d_coplenet with the flagship -> --c -> nnUNetv2_predict (issue 4)."""
    ds = tiny_lesion_2d
    env = clean_env()
    run(
        [
            str(BIN / "nnunet-ext"),
            "add-config",
            "-d",
            str(ds.id),
            "--base",
            "2d",
            "--arch",
            "coplenet",
            "--name",
            "2d_coplenet",
            "--arch-kwargs",
            '{"features_per_stage": [8, 16, 32, 64, 128]}',
        ],
        env,
    )
    set_ext_block(ds, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)  # inherited
    common = [str(ds.id), "2d_coplenet", "0", "-tr", "NRDiceAdaptiveMTTrainer", "-device", "cpu"]
    run([str(BIN / "nnUNetv2_train"), *common], env)
    set_ext_block(ds, num_epochs=2, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
    run([str(BIN / "nnUNetv2_train"), *common, "--c"], env)
    fold = ds.dirs.results / ds.name / "NRDiceAdaptiveMTTrainer__nnUNetPlans__2d_coplenet" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=False, map_location="cpu")
    assert ckpt["current_epoch"] == 2 and ckpt["nnunet_ext_state"]["mean_teacher"]["step"] == 4
    assert any(k.startswith("decoder.seg_layers") for k in ckpt["network_weights"])  # COPLE-Net weights
    out = tmp_path / "pred"
    predict(ds, out, "NRDiceAdaptiveMTTrainer", "2d_coplenet", env)
    assert len(list(out.glob("*.nii.gz"))) == 2
