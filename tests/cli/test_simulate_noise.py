from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.cli.main import main
from nnunet_ext.cli.simulate_noise import target_name


@pytest.fixture
def raw_root(tmp_path, monkeypatch):
    root = tmp_path / "raw"
    src = root / "Dataset501_Synth"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    for i in range(2):
        seg = np.zeros((8, 32, 32), dtype=np.uint8)
        seg[2:6, 8 + i : 20, 8:22] = 1
        img = sitk.GetImageFromArray(seg)
        img.SetSpacing((0.8, 0.8, 2.5))
        sitk.WriteImage(img, str(src / "labelsTr" / f"s_{i}.nii.gz"))
        sitk.WriteImage(sitk.Cast(img, sitk.sitkFloat32), str(src / "imagesTr" / f"s_{i}_0000.nii.gz"))
    ds = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (src / "dataset.json").write_text(json.dumps(ds))
    monkeypatch.setenv("nnUNet_raw", str(root))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return root


def test_simulate_noise_cli(raw_root, capsys):
    args = ["simulate-noise", "-d", "501", "--out-id", "502", "--level", "mild", "--seed", "0"]
    assert main([*args, "--dry-run"]) == 0
    assert "would write" in capsys.readouterr().out
    assert not (raw_root / "Dataset502_SynthNoisyMild").exists()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mean noisy-vs-clean Dice" in out
    manifest = json.loads((raw_root / "Dataset502_SynthNoisyMild" / "noise_manifest.json").read_text())
    assert f"{manifest['mean_dice']:.4f}" in out
    with pytest.raises(FileExistsError, match="overwrite"):
        main(args)
    assert main([*args, "--overwrite"]) == 0


def test_simulate_noise_cli_refuses_used_id(raw_root):
    (raw_root / "Dataset503_Other").mkdir()
    with pytest.raises(ValueError, match="already used"):
        main(["simulate-noise", "-d", "Dataset501_Synth", "--out-id", "503", "--level", "severe", "--seed", "1"])
    assert (raw_root / "Dataset503_Other").is_dir()


def test_target_name():
    assert target_name("Dataset501_Synth", 7, None, "moderate") == "Dataset007_SynthNoisyModerate"
    assert target_name("Dataset501_Synth", 502, "Mine", "mild") == "Dataset502_Mine"
    with pytest.raises(ValueError, match="out-id"):
        target_name("Dataset501_Synth", 1000, None, "mild")


def test_missing_nnunet_raw(monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(RuntimeError, match="nnUNet_raw"):
        main(["simulate-noise", "-d", "Dataset501_Synth", "--out-id", "502", "--level", "mild", "--seed", "0"])
