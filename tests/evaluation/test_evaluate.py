from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.evaluation.evaluate import evaluate_folders
from nnunet_ext.evaluation.metrics import BRATS_EMPTY_DISTANCE_MM, METRIC_KEYS, compute_case_metrics

ITK_SPACING = (0.8, 0.8, 2.5)  # x, y, z as SimpleITK stores it; numpy order is (2.5, 0.8, 0.8)
NP_SPACING = (2.5, 0.8, 0.8)
SHAPE = (8, 24, 24)


def _write(arr, path, spacing=ITK_SPACING, origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def _box(center, half):
    m = np.zeros(SHAPE, dtype=np.uint8)
    m[tuple(slice(c - h, c + h + 1) for c, h in zip(center, half))] = 1
    return m


@pytest.fixture
def dataset(tmp_path):
    """Three cases: shifted along x by 2 voxels, exact, and a missed label-2 structure."""
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    ref0 = _box((4, 12, 10), (2, 6, 5))
    pred0 = _box((4, 12, 12), (2, 6, 5))
    ref1 = _box((4, 12, 12), (3, 4, 4))
    ref1[3:5, 10:13, 10:13] = 2
    ref2 = _box((3, 8, 8), (1, 3, 3))
    ref2[5:7, 15:20, 15:20] = 2
    pred2 = ref2.copy()
    pred2[pred2 == 2] = 0
    for case, ref, pred in (("c0", ref0, pred0), ("c1", ref1, ref1), ("c2", ref2, pred2)):
        _write(ref, ref_dir / f"{case}.nii.gz")
        _write(pred, pred_dir / f"{case}.nii.gz")
    return ref_dir, pred_dir, {"c0": (pred0, ref0), "c1": (ref1, ref1), "c2": (pred2, ref2)}


def test_values_csv_and_summary(dataset, tmp_path):
    ref_dir, pred_dir, arrays = dataset
    out = tmp_path / "out"
    summary = evaluate_folders(ref_dir, pred_dir, num_processes=1, output_dir=out)
    per_case = {c["case"]: c for c in summary["metric_per_case"]}
    assert list(per_case) == ["c0", "c1", "c2"]
    for case, (pred, ref) in arrays.items():
        expected = compute_case_metrics(pred, ref, NP_SPACING, [1, 2])
        got = per_case[case]["metrics"]
        assert list(got) == list(expected)
        for key in expected:
            assert got[key] == pytest.approx(expected[key], nan_ok=True)
    # The shift is 2 voxels along x (0.8 mm): HD95 1.6 mm proves the ITK spacing was reversed to numpy order.
    assert per_case["c0"]["metrics"]["1"]["HD95_mm"] == pytest.approx(1.6)
    assert per_case["c0"]["spacing_mm"] == pytest.approx(NP_SPACING)
    # Label 2 is absent from both maps of c0: both-empty values.
    assert per_case["c0"]["metrics"]["2"]["Dice"] == 1.0 and per_case["c0"]["metrics"]["2"]["HD95_mm"] == 0.0
    # Means ignore NaN (c2 label 2: prediction empty) and count it.
    assert math.isnan(per_case["c2"]["metrics"]["2"]["HD95_mm"])
    assert summary["mean"]["2"]["HD95_mm"] == pytest.approx(0.0)
    assert summary["nan_count"]["2"]["HD95_mm"] == 1
    assert summary["mean"]["1"]["Dice"] == pytest.approx(np.mean([per_case[c]["metrics"]["1"]["Dice"] for c in arrays]))
    assert summary["foreground_mean"]["Dice"] == pytest.approx(
        (summary["mean"]["1"]["Dice"] + summary["mean"]["2"]["Dice"]) / 2
    )
    # Files: nnU-Net can read the summary back; the CSV has one row per case and label.
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    loaded = load_summary_json(str(out / "summary.json"))
    assert set(loaded["mean"]) == {1, 2}
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and list(rows[0])[4:] == list(METRIC_KEYS)
    assert {r["size_group"] for r in rows} == {"A"}
    assert not (pred_dir / "summary.json").exists()


def test_size_groups(dataset):
    ref_dir, pred_dir, arrays = dataset
    # c1 label 1 has 7*9*9 - 2*3*3 = 549 voxels of 1.6 mm^3 = 0.8784 cc; edges 0.5 / 0.9 put it in B.
    summary = evaluate_folders(ref_dir, pred_dir, size_edges_cc=(0.5, 0.9), num_processes=1)
    groups = {c["case"]: c["size_group"] for c in summary["metric_per_case"]}
    assert groups["c1"]["1"] == "B"
    sg = summary["size_groups"]
    assert sg["edges_cc"] == [0.5, 0.9]
    assert sum(g["n_cases"] for g in sg["per_label_or_region"]["1"].values()) == 3


def test_dataset_json_regions_and_brats_empty(dataset):
    ref_dir, pred_dir, _ = dataset
    ds = {
        "labels": {"background": 0, "whole": [1, 2], "core": [2]},
        "regions_class_order": [1, 2],
        "file_ending": ".nii.gz",
        "channel_names": {"0": "T1"},
        "numTraining": 3,
    }
    summary = evaluate_folders(ref_dir, pred_dir, dataset_json=ds, brats_empty=True, num_processes=1)
    assert list(summary["mean"]) == ["(1, 2)", "(2,)"]
    c2 = next(c for c in summary["metric_per_case"] if c["case"] == "c2")
    assert c2["metrics"]["(2,)"]["HD95_mm"] == BRATS_EMPTY_DISTANCE_MM
    assert summary["settings"]["has_regions"] is True


def test_missing_cases(dataset, tmp_path):
    ref_dir, pred_dir, _ = dataset
    (pred_dir / "c1.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"no prediction.*\['c1'\]"):
        evaluate_folders(ref_dir, pred_dir, num_processes=1)
    summary = evaluate_folders(ref_dir, pred_dir, num_processes=1, chill=True)
    assert [c["case"] for c in summary["metric_per_case"]] == ["c0", "c2"]
    _write(np.zeros(SHAPE), pred_dir / "extra.nii.gz")
    with pytest.raises(ValueError, match=r"no reference.*\['extra'\]"):
        evaluate_folders(ref_dir, pred_dir, num_processes=1, chill=True)


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [({"spacing": (0.8, 0.8, 3.0)}, "spacing"), ({"origin": (0.0, 5.0, 0.0)}, "origin")],
)
def test_geometry_mismatch_names_case(dataset, kwargs, what):
    ref_dir, pred_dir, arrays = dataset
    _write(arrays["c1"][0], pred_dir / "c1.nii.gz", **kwargs)
    with pytest.raises(ValueError, match=rf"case 'c1'.*{what}"):
        evaluate_folders(ref_dir, pred_dir, num_processes=1)


def test_shape_mismatch(dataset):
    ref_dir, pred_dir, _ = dataset
    _write(np.zeros((8, 24, 20)), pred_dir / "c2.nii.gz")
    with pytest.raises(ValueError, match=r"case 'c2'.*shape"):
        evaluate_folders(ref_dir, pred_dir, num_processes=1)


def test_multiprocessing_matches_sequential(dataset, tmp_path):
    ref_dir, pred_dir, _ = dataset
    a = evaluate_folders(ref_dir, pred_dir, num_processes=1, output_dir=tmp_path / "a")
    b = evaluate_folders(ref_dir, pred_dir, num_processes=2, output_dir=tmp_path / "b")
    assert json.dumps(a["metric_per_case"]) == json.dumps(b["metric_per_case"])


def test_png_dataset(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    ref = np.zeros((20, 30), dtype=np.uint8)
    ref[5:15, 5:20] = 1
    pred = np.roll(ref, 3, axis=1)
    sitk.WriteImage(sitk.GetImageFromArray(ref), str(ref_dir / "img1.png"))
    sitk.WriteImage(sitk.GetImageFromArray(pred), str(pred_dir / "img1.png"))
    ds = {"labels": {"background": 0, "road": 1}, "file_ending": ".png"}
    summary = evaluate_folders(ref_dir, pred_dir, dataset_json=ds, num_processes=1)
    m = summary["metric_per_case"][0]["metrics"]["1"]
    assert m["HD95_mm"] == pytest.approx(3.0)  # pixel spacing 1
    assert m["Dice"] == pytest.approx(2 * 10 * 12 / (2 * 150))


def test_bad_inputs(dataset, tmp_path):
    ref_dir, pred_dir, _ = dataset
    with pytest.raises(NotImplementedError, match="tif"):
        evaluate_folders(ref_dir, pred_dir, file_ending=".tif")
    with pytest.raises(NotImplementedError, match="ignore"):
        evaluate_folders(ref_dir, pred_dir, dataset_json={"labels": {"background": 0, "a": 1, "ignore": 2}})
    with pytest.raises(FileNotFoundError):
        evaluate_folders(tmp_path / "nope", pred_dir)
    empty_ref, empty_pred = tmp_path / "er", tmp_path / "ep"
    empty_ref.mkdir()
    empty_pred.mkdir()
    _write(np.zeros(SHAPE), empty_ref / "z.nii.gz")
    _write(np.zeros(SHAPE), empty_pred / "z.nii.gz")
    with pytest.raises(ValueError, match="no foreground label"):
        evaluate_folders(empty_ref, empty_pred, num_processes=1)
