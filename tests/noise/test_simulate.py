from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.evaluation.metrics import dice
from nnunet_ext.noise.simulate import MANIFEST_NAME, simulate_noisy_dataset


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_layout_manifest_and_level(raw_dataset, tmp_path):
    dst = tmp_path / "Dataset502_SynthNoisy"
    manifest = simulate_noisy_dataset(raw_dataset, dst, "moderate", seed=0)
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTr_clean", "labelsTs", MANIFEST_NAME]
    )
    assert _bytes(dst / "labelsTr_clean") == _bytes(raw_dataset / "labelsTr")
    assert _bytes(dst / "imagesTr") == _bytes(raw_dataset / "imagesTr")
    assert _bytes(dst / "labelsTs") == _bytes(raw_dataset / "labelsTs")
    ds = json.loads((dst / "dataset.json").read_text())
    assert ds["name"] == "SynthNoisy" and ds["labels"] == {"background": 0, "lesion": 1}
    on_disk = json.loads((dst / MANIFEST_NAME).read_text())
    assert on_disk["seed"] == 0 and on_disk["level"] == "moderate" and on_disk["n_cases"] == 4
    assert on_disk["parameters"]["target_dice"] == 0.8
    assert abs(manifest["mean_dice"] - 0.8) < 0.05
    for case in manifest["cases"]:
        noisy_img = sitk.ReadImage(str(dst / "labelsTr" / f"{case['case']}.nii.gz"))
        clean_img = sitk.ReadImage(str(raw_dataset / "labelsTr" / f"{case['case']}.nii.gz"))
        assert noisy_img.GetSpacing() == clean_img.GetSpacing() and noisy_img.GetOrigin() == clean_img.GetOrigin()
        assert noisy_img.GetPixelID() == clean_img.GetPixelID()
        noisy, clean = sitk.GetArrayFromImage(noisy_img), sitk.GetArrayFromImage(clean_img)
        assert case["dice"]["1"] == pytest.approx(dice(noisy == 1, clean == 1))
        assert case["case_index"] == int(case["case"][-3:])
        assert {op["op"] for op in case["operations"]["1"]["operations"]} <= {
            "drop_lesions",
            "spurious_blobs",
            "markov_boundary_noise",
            "dilate",
            "erode",
        }


def test_deterministic_for_a_seed(raw_dataset, tmp_path):
    simulate_noisy_dataset(raw_dataset, tmp_path / "a", "severe", seed=3)
    simulate_noisy_dataset(raw_dataset, tmp_path / "b", "severe", seed=3, num_processes=2)
    simulate_noisy_dataset(raw_dataset, tmp_path / "c", "severe", seed=4)
    a, b, c = (_bytes(tmp_path / x / "labelsTr") for x in "abc")
    assert a == b
    assert all(a[k] != c[k] for k in a)


def test_overwrite_dry_run_and_bad_targets(raw_dataset, tmp_path):
    dst = tmp_path / "Dataset503_X"
    dry = simulate_noisy_dataset(raw_dataset, dst, "mild", seed=0, dry_run=True)
    assert not dst.exists() and not list(tmp_path.glob(".Dataset503_X*"))
    real = simulate_noisy_dataset(raw_dataset, dst, "mild", seed=0)
    assert dry["cases"] == real["cases"]
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_noisy_dataset(raw_dataset, dst, "mild", seed=1)
    (dst / "stale.txt").write_text("old")
    simulate_noisy_dataset(raw_dataset, dst, "mild", seed=1, overwrite=True)
    assert not (dst / "stale.txt").exists()
    assert json.loads((dst / MANIFEST_NAME).read_text())["seed"] == 1
    with pytest.raises(ValueError, match="different folder"):
        simulate_noisy_dataset(raw_dataset, raw_dataset, "mild", seed=0, overwrite=True)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        simulate_noisy_dataset(tmp_path / "nope", tmp_path / "out", "mild", seed=0)


def test_region_dataset(tmp_path):
    src = tmp_path / "Dataset510_Regions"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    from nnunet_ext.noise.corruptions import ellipsoid

    shape, spacing = (20, 40, 40), (1.5, 1.0, 1.0)
    for i in range(2):
        seg = np.zeros(shape, dtype=np.uint8)
        seg[ellipsoid(shape, (10, 20, 20 + i), (12.0, 12.0, 12.0), spacing)] = 1
        seg[ellipsoid(shape, (10, 20, 21), (7.0, 7.0, 7.0), spacing)] = 2
        seg[ellipsoid(shape, (10, 21, 22), (4.0, 4.0, 4.0), spacing)] = 3
        img = sitk.GetImageFromArray(seg)
        img.SetSpacing(tuple(reversed(spacing)))
        sitk.WriteImage(img, str(src / "labelsTr" / f"b_{i}.nii.gz"))
        sitk.WriteImage(sitk.Cast(img, sitk.sitkFloat32), str(src / "imagesTr" / f"b_{i}_0000.nii.gz"))
    ds = {
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]},
        "regions_class_order": [1, 2, 3],
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (src / "dataset.json").write_text(json.dumps(ds))
    manifest = simulate_noisy_dataset(src, tmp_path / "Dataset511_RegionsNoisy", "moderate", seed=0)
    assert manifest["has_regions"] and list(manifest["mean_dice_per_label_or_region"]) == [
        "(1, 2, 3)",
        "(2, 3)",
        "(3,)",
    ]
    for v in manifest["mean_dice_per_label_or_region"].values():
        assert abs(v - 0.8) < 0.1
    bad = dict(ds, labels={"background": 0, "a": [1, 2], "b": [2, 3]}, regions_class_order=[1, 3])
    (src / "dataset.json").write_text(json.dumps(bad))
    with pytest.raises(NotImplementedError, match="not nested"):
        simulate_noisy_dataset(src, tmp_path / "Dataset512_Bad", "mild", seed=0)
    assert not (tmp_path / "Dataset512_Bad").exists()


def test_png_dataset(tmp_path):
    src = tmp_path / "Dataset520_Png"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    from nnunet_ext.noise.corruptions import ellipsoid

    for i in range(2):
        seg = ellipsoid((64, 64), (30, 30 + i), (14.0, 10.0), (1.0, 1.0)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(seg), str(src / "labelsTr" / f"p_{i}.png"))
        sitk.WriteImage(sitk.GetImageFromArray(seg * 200), str(src / "imagesTr" / f"p_{i}_0000.png"))
    ds = {"channel_names": {"0": "R"}, "labels": {"background": 0, "fg": 1}, "numTraining": 2, "file_ending": ".png"}
    (src / "dataset.json").write_text(json.dumps(ds))
    manifest = simulate_noisy_dataset(src, tmp_path / "Dataset521_PngNoisy", "mild", seed=0)
    noisy = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "Dataset521_PngNoisy" / "labelsTr" / "p_0.png")))
    assert noisy.shape == (64, 64) and noisy.dtype == np.uint8 and set(np.unique(noisy)) <= {0, 1}
    assert abs(manifest["mean_dice"] - 0.9) < 0.05


def _png_lung_dataset(root, lungs, n=2):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        seg = np.roll(lungs((128, 128)), i, axis=1).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(seg), str(root / "labelsTr" / f"l_{i}.png"))
        sitk.WriteImage(sitk.GetImageFromArray(seg * 200), str(root / "imagesTr" / f"l_{i}_0000.png"))
    ds = {"channel_names": {"0": "R"}, "labels": {"background": 0, "lung": 1}, "numTraining": n, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(ds))
    return root


def test_published_markov_noise_dataset(tmp_path, lungs):
    src = _png_lung_dataset(tmp_path / "Dataset530_Lungs", lungs)
    manifest = simulate_noisy_dataset(src, tmp_path / "a", "j1", seed=0)
    assert manifest["level"] == "j1" and manifest["parameters"]["kind"] == "markov"
    assert manifest["parameters"]["steps"] == 180 and manifest["parameters"]["expand_prob"] == 0.8
    for case in manifest["cases"]:
        clean = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "labelsTr" / f"{case['case']}.png")))
        noisy = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / "labelsTr" / f"{case['case']}.png")))
        change = case["change"]["1"]
        assert change["signed_change_voxels"] == int((noisy == 1).sum()) - int((clean == 1).sum()) > 0
        assert case["dice"]["1"] == pytest.approx(dice(noisy == 1, clean == 1))
        assert change["boundary_shift_mm"] > 5
    assert manifest["mean_relative_change_per_label_or_region"]["1"] > 0.2
    assert manifest["mean_boundary_shift_mm_per_label_or_region"]["1"] > 5
    simulate_noisy_dataset(src, tmp_path / "b", "j1", seed=0, num_processes=2)
    simulate_noisy_dataset(src, tmp_path / "c", "j1", seed=1)
    a, b, c = (_bytes(tmp_path / x / "labelsTr") for x in "abc")
    assert a == b and all(a[k] != c[k] for k in a)
    j3 = simulate_noisy_dataset(src, tmp_path / "d", "j3", seed=0, dry_run=True)
    assert j3["parameters"]["kind"] == "morphology" and tuple(j3["parameters"]["radius_voxels"]) == (7.0, 9.0)
    assert {c["operations"]["1"]["operations"][0]["op"] for c in j3["cases"]} <= {"dilate", "erode"}
