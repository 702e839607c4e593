from __future__ import annotations

import json

import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_ext.cli.main import main

DATASET = "Dataset778_AddConfig"


def _configuration(identifier: str, patch_size: list[int], strides: list) -> dict:
    dim = len(patch_size)
    return {
        "data_identifier": identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch_size,
        "median_image_size_in_voxels": patch_size,
        "spacing": [1.0] * dim,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": len(strides), "strides": strides},
            "_kw_requires_import": [],
        },
        "batch_dice": True,
    }


@pytest.fixture
def plans_path(tmp_path, monkeypatch):
    """``$nnUNet_preprocessed/Dataset778_AddConfig/nnUNetPlans.json`` with a 2d and a 3d_fullres configuration."""
    for var in ("nnUNet_raw", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    folder = tmp_path / DATASET
    folder.mkdir()
    plans = {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": _configuration("nnUNetPlans_2d", [64, 64], [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]),
            "3d_fullres": _configuration("nnUNetPlans_3d_fullres", [36, 64, 64], [[1, 1, 1], [2, 2, 2], [2, 2, 2]]),
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }
    path = folder / "nnUNetPlans.json"
    path.write_text(json.dumps(plans, indent=4))
    return path


def test_dry_run_prints_the_block_and_writes_nothing(plans_path, capsys):
    before = plans_path.read_text()
    assert main(["add-config", "-d", "778", "--base", "2d", "--arch", "coplenet", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Dry run: nothing written" in out
    printed = json.loads(out[: out.index("Dry run")])
    assert printed["2d_coplenet"]["inherits_from"] == "2d"
    assert printed["2d_coplenet"]["architecture"]["network_class_name"] == "nnunet_ext.architectures.coplenet.COPLENet"
    assert plans_path.read_text() == before


def test_writes_configuration_and_is_idempotent(plans_path, capsys):
    assert main(["add-config", "-d", DATASET, "--arch", "coplenet"]) == 0  # --base defaults to 2d
    out = capsys.readouterr().out
    assert "Added configuration '2d_coplenet'" in out
    assert "nnUNetv2_train Dataset778_AddConfig 2d_coplenet FOLD -tr NRDiceAdaptiveMTTrainer" in out
    written = plans_path.read_text()
    cm = PlansManager(json.loads(written)).get_configuration("2d_coplenet")
    assert cm.data_identifier == "nnUNetPlans_2d" and cm.patch_size == [64, 64]
    assert cm.network_arch_init_kwargs["deep_supervision_heads"] is True

    assert main(["add-config", "-d", "778", "--arch", "coplenet"]) == 0
    assert "already in" in capsys.readouterr().out
    assert plans_path.read_text() == written


def test_no_heads_arch_kwargs_and_overwrite(plans_path, capsys):
    assert main(["add-config", "-d", "778", "--arch", "coplenet"]) == 0
    capsys.readouterr()
    args = [
        "add-config",
        "-d",
        "778",
        "--arch",
        "coplenet",
        "--no-deep-supervision-heads",
        "--arch-kwargs",
        '{"aspp": false}',
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "nnunet-ext add-config: error:" in err and "--overwrite" in err
    assert main([*args, "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "Replaced configuration '2d_coplenet'" in out and "stock nnUNetTrainer cannot train it" in out
    kwargs = json.loads(plans_path.read_text())["configurations"]["2d_coplenet"]["architecture"]["arch_kwargs"]
    assert kwargs["deep_supervision_heads"] is False and kwargs["aspp"] is False


def test_dilated_unet_with_patch_size_override(plans_path, capsys):
    args = ["add-config", "-d", "778", "--arch", "dilated_unet", "--name", "3d_brats", "-p", "nnUNetPlans"]
    assert main(args) == 2
    assert "'3d_fullres' has patch size [36, 64, 64]" in capsys.readouterr().err
    assert main([*args, "--patch-size", "32", "64", "64"]) == 0
    cfg = json.loads(plans_path.read_text())["configurations"]["3d_brats"]
    assert cfg["patch_size"] == [32, 64, 64] and cfg["inherits_from"] == "3d_fullres"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--arch", "coplenet", "--base", "3d_fullres"], "is 2-D but base configuration '3d_fullres' is 3-D"),
        (["--arch", "coplenet", "--arch-kwargs", "{aspp: 1}"], "--arch-kwargs is not valid JSON"),
        (["--arch", "coplenet", "--arch-kwargs", "[1]"], "must be a JSON object"),
        (["--arch", "coplenet", "-p", "nnUNetResEncUNetMPlans"], "nnUNetResEncUNetMPlans.json not found"),
        (
            ["--arch", "coplenet", "--no-deep-supervision-heads", "--arch-kwargs", '{"deep_supervision_heads": true}'],
            "contradicts",
        ),
    ],
)
def test_refusals(plans_path, capsys, extra, match):
    assert main(["add-config", "-d", "778", *extra]) == 2
    assert match in capsys.readouterr().err


def test_unknown_dataset(plans_path, capsys):
    assert main(["add-config", "-d", "779", "--arch", "coplenet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext add-config: error: dataset '779' not found in ") and "check -d" in err
    assert err.count("\n") == 1  # one line, not nnU-Net's multi-line lookup message
