from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.cli.main import main


def _write(arr, path):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing((0.8, 0.8, 2.5))
    sitk.WriteImage(img, str(path))


@pytest.fixture
def folders(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for i in range(2):
        ref = np.zeros((6, 20, 20), dtype=np.uint8)
        ref[1:5, 4:14, 4:14] = 1
        pred = np.roll(ref, i + 1, axis=2)
        _write(ref, ref_dir / f"c{i}.nii.gz")
        _write(pred, pred_dir / f"c{i}.nii.gz")
    return ref_dir, pred_dir


def test_evaluate_cli(folders, tmp_path, capsys):
    ref_dir, pred_dir = folders
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "-ref",
            str(ref_dir),
            "-pred",
            str(pred_dir),
            "-o",
            str(out),
            "-np",
            "1",
            "--size-edges",
            "0.1",
            "1",
            "--brats-empty",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "HD95_mm" in text and "foreground" in text and "2 cases" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["brats_empty"] is True
    assert summary["size_groups"]["edges_cc"] == [0.1, 1.0]
    assert summary["mean"]["1"]["HD95_mm"] == pytest.approx(1.2)  # shifts of 0.8 and 1.6 mm along x
    assert (out / "metrics.csv").is_file()


def test_evaluate_cli_with_dataset_json_and_errors(folders, tmp_path, capsys):
    ref_dir, pred_dir = folders
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({"labels": {"background": 0, "lesion": 1, "other": 2}, "file_ending": ".nii.gz"}))
    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "-djfile", str(dj), "-np", "1"]) == 0
    assert "\n2 " in capsys.readouterr().out  # label 2 of dataset.json is evaluated although absent
    (pred_dir / "c1.nii.gz").unlink()
    capsys.readouterr()
    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "-np", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext evaluate: error: 1 reference case(s)") and "c1" in err and "--chill" in err
    missing = str(tmp_path / "nope")
    for argv, flag in (
        (["-ref", missing, "-pred", str(pred_dir)], "-ref"),
        (["-ref", str(ref_dir), "-pred", missing], "-pred"),
        (["-ref", str(ref_dir), "-pred", str(pred_dir), "-djfile", missing], "-djfile"),
    ):
        assert main(["evaluate", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"nnunet-ext evaluate: error: {flag} {missing} is not a") and "; give " in err
    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "-np", "1", "--chill"]) == 0


def test_evaluate_cli_2d_slices_print_areas(tmp_path, capsys):
    # nnU-Net's 2-D layout: (1, H, W) slices with an out-of-plane spacing of 999 mm.
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    ref = np.zeros((1, 40, 40), dtype=np.uint8)
    ref[0, 10:30, 10:30] = 1  # 400 px of 0.25 mm^2 = 100 mm^2 (as a volume with 999 mm: 99.9 cc)
    for folder, arr in ((ref_dir, ref), (pred_dir, np.roll(ref, 2, axis=2))):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.5, 0.5, 999.0))
        sitk.WriteImage(img, str(folder / "s0.nii.gz"))
    out = tmp_path / "out"
    args = ["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "-o", str(out), "-np", "1"]
    assert main([*args, "--size-edges-mm2", "50", "150"]) == 0
    text = capsys.readouterr().out
    assert "2-D data" in text and "areas in mm²" in text and "B [50, 150) mm²" in text
    summary = json.loads((out / "summary.json").read_text())
    case = summary["metric_per_case"][0]
    assert case["metrics"]["1"]["area_ref_mm2"] == pytest.approx(100.0) and case["size_group"]["1"] == "B"
    assert case["metrics"]["1"]["HD95_mm"] == pytest.approx(1.0)  # 2 px at 0.5 mm, in-plane
    assert summary["size_groups"]["edges_mm2"] == [50.0, 150.0]
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("case,label_or_region,size_group,area_ref_mm2,Dice")


def test_evaluate_cli_3d_prints_volumes(folders, tmp_path, capsys):
    ref_dir, pred_dir = folders
    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "-o", str(tmp_path / "o"), "-np", "1"]) == 0
    assert "3-D data: volumes in mm³" in capsys.readouterr().out
