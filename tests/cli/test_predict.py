"""``nnunet-ext predict``: nnUNetv2_predict's flags, TTA selection, trainer lookup, a real 2-D prediction."""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import nnunet_ext
from nnunet_ext.cli import predict as predict_cli
from nnunet_ext.cli.main import build_parser, main


def _nnunet_predict_flags() -> set[str]:
    from nnunetv2.inference import predict_from_raw_data

    tree = ast.parse(inspect.getsource(predict_from_raw_data.predict_entry_point))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) == "add_argument"
        and isinstance(node.args[0], ast.Constant)
    }


def _our_flags() -> set[str]:
    parser = build_parser("predict")
    sub = next(a for a in parser._actions if a.dest == "command").choices["predict"]
    return {s for a in sub._actions for s in a.option_strings} - {"-h", "--help"}


def test_accepts_every_nnunetv2_predict_flag():
    theirs = _nnunet_predict_flags()
    assert {"-i", "-o", "-d", "-chk", "--disable_tta", "-npp"} <= theirs  # the scan works
    assert _our_flags() == theirs | {"--tta", "--boundary-offset"}


def test_defaults_match_nnunet():
    args = build_parser("predict").parse_args(["predict", "-i", "in", "-o", "out", "-d", "4", "-c", "2d"])
    assert (args.p, args.tr, args.f, args.step_size, args.chk, args.device) == (
        "nnUNetPlans",
        "nnUNetTrainer",
        ["0", "1", "2", "3", "4"],
        0.5,
        "checkpoint_final.pth",
        "auto",  # the plugin's one device rule: CUDA if available (nnU-Net's default), else CPU
    )
    assert predict_cli.resolve_device(args.device).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert predict_cli.resolve_tta(args.tta, args.disable_tta) == "mirror"


def test_tta_choices_are_the_predictors():
    from nnunet_ext.inference import TTA_MODES

    assert predict_cli.TTA_MODES == TTA_MODES


def test_resolve_tta():
    assert predict_cli.resolve_tta("rot90", False) == "rot90"
    assert predict_cli.resolve_tta(None, True) == predict_cli.resolve_tta("none", True) == "none"
    with pytest.raises(ValueError, match="contradicts --tta rot90"):
        predict_cli.resolve_tta("rot90", True)


def test_trainer_folder_appended_once_after_user_entries(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", "/my/trainers")
    predict_cli.ensure_trainer_lookup()
    predict_cli.ensure_trainer_lookup()
    assert os.environ["nnUNet_extTrainer"].split(os.pathsep) == ["/my/trainers", nnunet_ext.trainer_folder()]
    monkeypatch.delenv("nnUNet_extTrainer")
    predict_cli.ensure_trainer_lookup()
    assert os.environ["nnUNet_extTrainer"] == nnunet_ext.trainer_folder()


def test_user_errors_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    base = ["predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "-d", "Dataset999_None", "-c", "2d"]
    assert main([*base, "--tta", "rot90", "--disable_tta"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main([*base, "-f", "zero"]) == 2
    assert "'zero'" in capsys.readouterr().err
    assert main([*base, "-part_id", "2", "-num_parts", "2"]) == 2
    assert "pass -part_id from 0 to 1" in capsys.readouterr().err
    assert main([*base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext predict: error: dataset Dataset999_None is not in nnUNet_results=")
    assert "train it first" in err
    (tmp_path / "results" / "Dataset999_None").mkdir(parents=True)
    assert main([*base]) == 2
    assert "no trained model at" in capsys.readouterr().err
    assert main([*base, "-device", "cuda" if not torch.cuda.is_available() else "mps"]) == 2
    assert "requested but" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--tta", "rot180"])


# --- a real prediction through nnU-Net's code paths (untrained plugin network, 2-D, 12 transforms) -------------


@pytest.mark.slow
def test_predicts_with_rot90_and_keeps_geometry(tiny_lesion_2d, tmp_path, monkeypatch):
    from nnunetv2.paths import nnUNet_preprocessed

    ds = tiny_lesion_2d
    pre = os.path.join(nnUNet_preprocessed, ds.name)
    plans = json.loads(open(os.path.join(pre, "nnUNetPlans.json")).read())
    plans["continue_training"] = False
    dataset_json = json.loads(open(os.path.join(pre, "dataset.json")).read())
    from nnunet_ext.trainers.nnunet_ext_trainers import MAETrainer

    trainer = MAETrainer(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    trainer.inference_allowed_mirroring_axes = (0, 1)
    os.makedirs(trainer.output_folder, exist_ok=True)
    trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    shutil.copyfile(os.path.join(pre, "dataset.json"), os.path.join(trainer.output_folder_base, "dataset.json"))
    with open(os.path.join(trainer.output_folder_base, "plans.json"), "w") as f:
        json.dump(plans, f)

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)  # the CLI must find the plugin trainer itself
    out = tmp_path / "pred"
    argv = ["predict", "-i", str(ds.raw / "imagesTs"), "-o", str(out), "-d", str(ds.id), "-c", "2d", "-f", "0"]
    argv += ["-tr", "MAETrainer", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar"]
    assert main([*argv, "--tta", "rot90"]) == 0

    manifest = json.loads((out / "nnunet_ext_predict.json").read_text())
    assert manifest["tta"] == "rot90" and manifest["trainer"] == "MAETrainer" and manifest["folds"] == [0]
    assert len(manifest["tta_transforms"]) == 12  # 2-D: flips none/Y/X x 4 quarter turns
    images = sorted((ds.raw / "imagesTs").glob("*_0000.nii.gz"))
    assert len(images) == 2
    for image_path in images:
        case = image_path.name[: -len("_0000.nii.gz")]
        image, pred = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert pred.GetSize() == image.GetSize()
        np.testing.assert_allclose(pred.GetSpacing(), image.GetSpacing())
        np.testing.assert_allclose(pred.GetOrigin(), image.GetOrigin())
        np.testing.assert_allclose(pred.GetDirection(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}
