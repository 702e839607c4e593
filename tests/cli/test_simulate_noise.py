from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.cli.main import main
from nnunet_ext.cli.simulate_noise import target_name


def _refused(capsys, argv: list[str], *parts: str) -> str:
    """``main(argv)`` exits 2 with one error line naming every part (the CLI's error convention)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext simulate-noise: error: ") and "Traceback" not in err
    assert all(part in err for part in parts), err
    return err


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
    _refused(capsys, args, "exists", "--overwrite")
    assert main([*args, "--overwrite"]) == 0


def test_simulate_noise_cli_refuses_used_id(raw_root, capsys):
    (raw_root / "Dataset503_Other").mkdir()
    argv = ["simulate-noise", "-d", "Dataset501_Synth", "--out-id", "503", "--level", "severe", "--seed", "1"]
    _refused(capsys, argv, "already used", "choose another --out-id")
    assert (raw_root / "Dataset503_Other").is_dir()


def test_target_name():
    assert target_name("Dataset501_Synth", 7, None, "moderate") == "Dataset007_SynthNoisyModerate"
    assert target_name("Dataset501_Synth", 502, "Mine", "mild") == "Dataset502_Mine"
    with pytest.raises(ValueError, match="out-id"):
        target_name("Dataset501_Synth", 1000, None, "mild")


def test_missing_nnunet_raw(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    argv = ["simulate-noise", "-d", "Dataset501_Synth", "--out-id", "502", "--level", "mild", "--seed", "0"]
    _refused(capsys, argv, "nnUNet_raw is not set", "export nnUNet_raw=")


def test_missing_source_dataset(raw_root, capsys):
    base = ["--out-id", "502", "--level", "mild", "--seed", "0"]
    _refused(capsys, ["simulate-noise", "-d", "777", *base], "dataset '777' not found", "check -d")
    _refused(capsys, ["simulate-noise", "-d", "Dataset777_X", *base], "Dataset777_X is not in nnUNet_raw=")
    _refused(capsys, ["simulate-noise", "-d", "lesions", *base], "'lesions' is neither", "give an id")


@pytest.fixture
def lung_raw_root(tmp_path, monkeypatch):
    """A tiny 2-D PNG dataset: lung-like ellipse pairs at 96 px."""
    root = tmp_path / "raw"
    src = root / "Dataset531_Lungs"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    yy, xx = np.ogrid[:96, :96]
    for i in range(2):
        seg = np.zeros((96, 96), dtype=np.uint8)
        for cx in (28 + i, 68):
            seg[((yy - 48) / 28.0) ** 2 + ((xx - cx) / 11.0) ** 2 <= 1] = 1
        sitk.WriteImage(sitk.GetImageFromArray(seg), str(src / "labelsTr" / f"l_{i}.png"))
        sitk.WriteImage(sitk.GetImageFromArray(seg * 200), str(src / "imagesTr" / f"l_{i}_0000.png"))
    ds = {"channel_names": {"0": "R"}, "labels": {"background": 0, "lung": 1}, "numTraining": 2, "file_ending": ".png"}
    (src / "dataset.json").write_text(json.dumps(ds))
    monkeypatch.setenv("nnUNet_raw", str(root))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return root


def test_simulate_noise_cli_published_presets(lung_raw_root, capsys):
    base = ["simulate-noise", "-d", "531", "--seed", "0"]
    assert main([*base, "--out-id", "532", "--level", "j1"]) == 0
    out = capsys.readouterr().out
    target = lung_raw_root / "Dataset532_LungsNoisyJ1"
    manifest = json.loads((target / "noise_manifest.json").read_text())
    assert manifest["level"] == "j1" and manifest["parameters"]["steps"] == 180
    assert "size change" in out and "boundary shift" in out
    change = manifest["mean_relative_change_per_label_or_region"]["1"]
    assert change > 0.2 and f"{100 * change:+.1f} %" in out
    noisy = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "l_0.png")))
    clean = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr_clean" / "l_0.png")))
    assert noisy.sum() > clean.sum()
    assert main([*base, "--out-id", "533", "--level", "j2"]) == 0
    j2 = json.loads((lung_raw_root / "Dataset533_LungsNoisyJ2" / "noise_manifest.json").read_text())
    assert j2["mean_relative_change_per_label_or_region"]["1"] < 0
    assert main([*base, "--out-id", "534", "--level", "j3", "--dry-run"]) == 0
    assert "would write" in capsys.readouterr().out


def test_simulate_noise_cli_custom_markov(lung_raw_root, capsys):
    base = ["simulate-noise", "-d", "531", "--out-id", "535", "--seed", "0"]
    assert main([*base, "--markov", "40", "0.2", "0.1", "0"]) == 0
    manifest = json.loads((lung_raw_root / "Dataset535_LungsNoisyMarkov" / "noise_manifest.json").read_text())
    assert manifest["level"] == "markov"
    assert {k: manifest["parameters"][k] for k in ("steps", "expand_prob", "flip_prob", "random_flip_prob")} == {
        "steps": 40,
        "expand_prob": 0.2,
        "flip_prob": 0.1,
        "random_flip_prob": 0.0,
    }
    assert manifest["mean_relative_change_per_label_or_region"]["1"] < 0
    _refused(capsys, [*base, "--markov", "2.5", "0.8", "0.05", "0.2", "--dry-run"], "whole number", "e.g. --markov")
    _refused(capsys, [*base, "--markov", "10", "1.8", "0.05", "0.2", "--dry-run"], "expand_prob", "e.g. --markov")
    with pytest.raises(SystemExit):  # --level and --markov exclude each other; one is required
        main([*base, "--level", "j1", "--markov", "10", "0.8", "0.05", "0.2"])
    with pytest.raises(SystemExit):
        main(base)
