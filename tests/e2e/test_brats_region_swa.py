"""BraTS pipeline end to end on a tiny 4-channel region dataset: dilated U-Net, SWA, rot90 prediction, merge.

Follows examples/brats/README.md: dataset 601 (6 train + 2 test, 16 x 32 x 32) is planned and preprocessed for
``3d_fullres`` by nnU-Net; the base configuration gets batch 2 and a ``"nnunet_ext"`` block with a 1-epoch main
schedule and 2 one-epoch SWA cycles (snapshot every epoch: 1 + 2 = 3 snapshots), which ``nnunet-ext add-config --arch
dilated_unet`` (width 4) inherits. ``RegionDiceSWATrainer`` trains through nnU-Net's ``run_training()``; the
checkpoint must export the mean of the captured snapshots. Then ``nnunet-ext predict --tta rot90`` and ``--tta none``
write two prediction folders, which ``nnunet-ext merge-labels`` merges. Two more tests train on the same region dataset
in 3D: ``RegionDiceAdamTrainer`` (Adam variant) and the adaptive mean teacher (``NRDiceAdaptiveMTTrainer``), which
then predicts with the exported teacher.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_ext.cli.main import main
from nnunet_ext.inference import merge_two_pass
from nnunet_ext.synthetic import make_region_dataset
from nnunet_ext.training.base import STATE_KEY, STUDENT_KEY
from nnunet_ext.training.swa import SWAPhase

pytestmark = pytest.mark.slow

DATASET_ID = 601
BASE = "3d_fullres"
CONFIG = "3d_fullres_dilated_unet"
TRAINER = "RegionDiceSWATrainer"
EXT_BLOCK = {
    "num_epochs": 1,
    "num_iterations_per_epoch": 2,
    "num_val_iterations_per_epoch": 1,
    "swa": {"cycles": 2, "cycle_epochs": 1, "snapshot_every": 1},
}


def _conftest_helpers(request):
    """``plan_and_preprocess``/``shrink_plans`` of tests/conftest.py (not importable by name in importlib mode)."""
    for plugin in request.config.pluginmanager.get_plugins():
        if hasattr(plugin, "plan_and_preprocess") and hasattr(plugin, "shrink_plans"):
            return plugin
    raise RuntimeError("tests/conftest.py with plan_and_preprocess and shrink_plans was not loaded")


@pytest.fixture(scope="module")
def tiny_brats(request, nnunet_dirs) -> SimpleNamespace:
    helpers = _conftest_helpers(request)
    folder = make_region_dataset(nnunet_dirs.raw, DATASET_ID, "TinyBraTS", num_train=6, num_test=2, shape=(16, 32, 32))
    helpers.plan_and_preprocess(DATASET_ID, (BASE,))
    helpers.shrink_plans(
        nnunet_dirs.preprocessed, folder.name, BASE, batch_size=2, max_features=16, ext_block=EXT_BLOCK
    )
    assert main(["add-config", "-d", str(DATASET_ID), "--arch", "dilated_unet", "--arch-kwargs", '{"width": 4}']) == 0
    return SimpleNamespace(name=folder.name, raw=folder, dirs=nnunet_dirs)


def _make_trainer(ds):
    from nnunet_ext.trainers.nnunet_ext_trainers import RegionDiceSWATrainer

    pre = ds.dirs.preprocessed / ds.name
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((pre / "dataset.json").read_text())
    return RegionDiceSWATrainer(
        plans=plans, configuration=CONFIG, fold=0, dataset_json=dataset_json, device=torch.device("cpu")
    )


def _assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing())
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin())
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection())


def test_swa_training_rot90_prediction_and_merge(tiny_brats, tmp_path):
    ds = tiny_brats
    trainer = _make_trainer(ds)
    trainer.initialize()
    assert type(trainer.network).__name__ == "DilatedUNet3D" and trainer.configuration_manager.batch_size == 2
    swa = trainer.ext_addon(SWAPhase)
    assert (swa.main_epochs, trainer.num_epochs) == (1, 3)

    snapshots: list[dict[str, torch.Tensor]] = []
    update = swa.average.update_parameters

    def capture(model):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        update(model)

    swa.average.update_parameters = capture
    trainer.run_training()

    # --- the checkpoint exports the equal-weight mean of 1 + 2 snapshots ----------------------------------------
    fold = Path(trainer.output_folder)
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == TRAINER and ckpt["current_epoch"] == 3
    assert len(snapshots) == 3 and ckpt[STATE_KEY]["swa"]["n_averaged"] == 3
    assert ckpt["logging"]["ext_swa_snapshots"] == [0, 2, 3]  # epoch 1 adds the main-schedule weights and one more
    exported, student = ckpt["network_weights"], ckpt[STUDENT_KEY]
    floats = [k for k, v in exported.items() if v.dtype.is_floating_point]
    assert floats
    for k in floats:
        mean = torch.stack([s[k] for s in snapshots]).mean(0)
        torch.testing.assert_close(exported[k], mean, rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(student[k], snapshots[-1][k], rtol=0, atol=0, msg=k)  # last snapshot = final
    assert any(not torch.allclose(exported[k], student[k]) for k in floats)

    # --- nnunet-ext predict --tta rot90 (and --tta none as the second "model") ---------------------------------
    images = ds.raw / "imagesTs"
    common = ["-i", str(images), "-d", str(DATASET_ID), "-c", CONFIG, "-f", "0", "-tr", TRAINER, "-device", "cpu"]
    common += ["-npp", "0", "-nps", "0", "--disable_progress_bar"]
    pred_a, pred_b = tmp_path / "rot90", tmp_path / "plain"
    assert main(["predict", *common, "-o", str(pred_a), "--tta", "rot90"]) == 0
    assert main(["predict", *common, "-o", str(pred_b), "--tta", "none"]) == 0
    manifest = json.loads((pred_a / "nnunet_ext_predict.json").read_text())
    assert manifest["tta"] == "rot90" and len(manifest["tta_transforms"]) == 16

    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    assert len(cases) == 2
    for case in cases:
        image = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
        for folder in (pred_a, pred_b):
            pred = sitk.ReadImage(str(folder / f"{case}.nii.gz"))
            _assert_same_geometry(pred, image)
            assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2, 3}

    # --- nnunet-ext merge-labels A B OUT --------------------------------------------------------------------------
    merged_dir = tmp_path / "merged"
    assert main(["merge-labels", str(pred_a), str(pred_b), str(merged_dir)]) == 0
    for case in cases:
        a = sitk.ReadImage(str(pred_a / f"{case}.nii.gz"))
        b = sitk.ReadImage(str(pred_b / f"{case}.nii.gz"))
        merged = sitk.ReadImage(str(merged_dir / f"{case}.nii.gz"))
        _assert_same_geometry(merged, a)
        expected = merge_two_pass(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(merged), expected)


SHORT_CONFIG = "3d_fullres_dilated_short"


def _short_trainer(ds, cls):
    """``cls`` on the dilated U-Net with a short schedule and no SWA entry (for trainers without SWA)."""
    plans_file = ds.dirs.preprocessed / ds.name / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"][SHORT_CONFIG] = {
        "inherits_from": CONFIG,
        "nnunet_ext": {"num_epochs": 1, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 1},
    }
    plans_file.write_text(json.dumps(plans, indent=2))
    plans["continue_training"] = False
    dataset_json = json.loads((ds.dirs.preprocessed / ds.name / "dataset.json").read_text())
    trainer = cls(
        plans=plans, configuration=SHORT_CONFIG, fold=0, dataset_json=dataset_json, device=torch.device("cpu")
    )
    trainer.initialize()
    return trainer


def test_region_dice_adam_trainer_trains(tiny_brats):
    """The BraTS paper's Adam variant: Adam at 1e-4 without weight decay, region Dice, one short epoch."""
    from nnunet_ext.trainers.nnunet_ext_trainers import RegionDiceAdamTrainer

    trainer = _short_trainer(tiny_brats, RegionDiceAdamTrainer)
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0
    before = [p.detach().clone() for p in trainer.network.parameters()]
    trainer.run_training()
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, trainer.network.parameters()))
    ckpt = torch.load(Path(trainer.output_folder) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == "RegionDiceAdamTrainer" and np.isfinite(ckpt["logging"]["train_losses"]).all()


def test_adaptive_mean_teacher_on_region_dataset(tiny_brats, tmp_path):
    """NRDiceAdaptiveMTTrainer on sigmoid regions in 3D: trains, exports the teacher, predicts through the plugin."""
    from nnunet_ext.trainers.nnunet_ext_trainers import NRDiceAdaptiveMTTrainer
    from nnunet_ext.training.consistency import MeanTeacher

    ds = tiny_brats
    trainer = _short_trainer(ds, NRDiceAdaptiveMTTrainer)
    config = SHORT_CONFIG
    assert trainer.label_manager.has_regions and type(trainer.network).__name__ == "DilatedUNet3D"
    trainer.run_training()

    teacher = trainer.ext_addon(MeanTeacher).teacher.module
    ckpt = torch.load(Path(trainer.output_folder) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(ckpt["network_weights"][k], v.cpu(), rtol=0, atol=0, msg=k)
    floats = [k for k, v in ckpt["network_weights"].items() if v.dtype.is_floating_point]
    assert any(not torch.equal(ckpt["network_weights"][k], ckpt[STUDENT_KEY][k]) for k in floats)
    logging = ckpt["logging"]
    assert len(logging["ext_teacher_update_fraction"]) == 1
    for key in ("ext_student_seg_loss", "ext_teacher_seg_loss", "ext_consistency_loss"):
        assert np.isfinite(logging[key][0]) and logging[key][0] > 0, key

    out = tmp_path / "pred"
    args = ["predict", "-i", str(ds.raw / "imagesTs"), "-o", str(out), "-d", str(DATASET_ID), "-c", config, "-f", "0"]
    args += ["-tr", "NRDiceAdaptiveMTTrainer", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar"]
    assert main([*args, "--tta", "none"]) == 0
    predictions = sorted(out.glob("*.nii.gz"))
    assert len(predictions) == 2
    for p in predictions:
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))) <= {0, 1, 2, 3}
