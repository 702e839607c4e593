from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.evaluation.evaluate import evaluate_folders
from nnunet_ext.evaluation.metrics import (
    BRATS_EMPTY_DISTANCE_MM,
    METRIC_KEYS,
    METRIC_KEYS_2D,
    assd,
    compute_case_metrics,
    hd95,
    rve,
)

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


# ---------------------------------------------------------------- 2-D data: areas in mm², area groups

PIXEL_MM = 0.5
SLICE_SHAPE = (140, 140)


def _disc(center, radius_px):
    yy, xx = np.ogrid[: SLICE_SHAPE[0], : SLICE_SHAPE[1]]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius_px**2).astype(np.uint8)


def _write_slice(arr2d, path, layout):
    if layout == "slice3d":  # the JSRT example and nnU-Net's 2-D convention: (1, H, W), z spacing 999 mm
        img = sitk.GetImageFromArray(arr2d[None])
        img.SetSpacing((PIXEL_MM, PIXEL_MM, 999.0))
    else:  # a 2-D NIfTI: two axes, no out-of-plane spacing at all
        img = sitk.GetImageFromArray(arr2d)
        img.SetSpacing((PIXEL_MM, PIXEL_MM))
    sitk.WriteImage(img, str(path))


def _slice_dataset(root, layout):
    """s0: disc of 30 mm radius (2827 mm^2, group B; 2824 cc with the 999 mm 'thickness') and a concentric 28 mm one;
    s1: disc of 10 mm radius (314 mm^2, group A) shifted by 4 px (2 mm) along x."""
    ref_dir, pred_dir = root / f"ref_{layout}", root / f"pred_{layout}"
    ref_dir.mkdir()
    pred_dir.mkdir()
    arrays = {
        "s0": (_disc((70, 70), 56), _disc((70, 70), 60)),
        "s1": (_disc((70, 74), 20), _disc((70, 70), 20)),
    }
    for case, (pred, ref) in arrays.items():
        _write_slice(ref, ref_dir / f"{case}.nii.gz", layout)
        _write_slice(pred, pred_dir / f"{case}.nii.gz", layout)
    return ref_dir, pred_dir, arrays


@pytest.mark.parametrize("layout", ["slice3d", "nifti2d"])
def test_2d_slices_report_areas_in_mm2_and_area_groups(tmp_path, layout):
    ref_dir, pred_dir, arrays = _slice_dataset(tmp_path, layout)
    out = tmp_path / "out"
    summary = evaluate_folders(ref_dir, pred_dir, num_processes=1, output_dir=out)
    assert summary["settings"]["spatial_dims"] == 2
    per_case = {c["case"]: c for c in summary["metric_per_case"]}
    s0, s1 = per_case["s0"]["metrics"]["1"], per_case["s1"]["metrics"]["1"]
    assert list(s0) == list(METRIC_KEYS_2D) and "volume_ref_mm3" not in s0
    assert per_case["s0"]["spacing_mm"] == pytest.approx([PIXEL_MM, PIXEL_MM])  # in-plane: no 999
    # Hand values pi r^2. Pixelisation: 11289 px vs pi 60^2 = 11309.7 (-0.18 %), 9845 vs 9852.0 (-0.07 %), 1257 vs
    # 1256.6 (+0.03 %); the lattice bound pi (R -+ 1/sqrt(2))^2 allows 2.4-7 %; the tolerance is 0.5 %.
    assert s0["area_ref_mm2"] == pytest.approx(math.pi * 30.0**2, rel=0.005)
    assert s0["area_pred_mm2"] == pytest.approx(math.pi * 28.0**2, rel=0.005)
    assert s1["area_ref_mm2"] == pytest.approx(math.pi * 10.0**2, rel=0.005)
    # RVE unchanged: a ratio of pixel counts (1 - (28/30)^2 = 0.129 for the discs).
    pred0, ref0 = (a.astype(bool) for a in arrays["s0"])
    assert s0["RVE"] == rve(pred0, ref0) == pytest.approx(1 - (28 / 30) ** 2, rel=0.02)
    # In-plane surface distances: as the 2-D arrays give them; about 2 mm (4 px), nothing near 999 mm.
    pred1, ref1 = (a.astype(bool) for a in arrays["s1"])
    assert s1["HD95_mm"] == pytest.approx(hd95(pred1, ref1, (PIXEL_MM, PIXEL_MM)))
    assert s1["HD95_mm"] == pytest.approx(2.0, abs=0.3)
    assert s0["ASSD_mm"] == pytest.approx(assd(pred0, ref0, (PIXEL_MM, PIXEL_MM)))
    assert s0["ASSD_mm"] == pytest.approx(2.0, abs=0.3)  # the radii differ by 2 mm
    # Area groups with the default edges 1600 / 4000 mm^2 (as volumes with the 999 mm, s0 would be C: 2824 cc).
    assert per_case["s0"]["size_group"]["1"] == "B" and per_case["s1"]["size_group"]["1"] == "A"
    sg = summary["size_groups"]
    assert sg["measure"] == "area_ref_mm2" and sg["edges_mm2"] == [1600.0, 4000.0] and "edges_cc" not in sg
    assert sg["intervals"]["B"] == "[1600, 4000) mm²"
    assert sg["per_label_or_region"]["1"]["B"]["n_cases"] == 1
    assert summary["mean"]["1"]["area_ref_mm2"] == pytest.approx((s0["area_ref_mm2"] + s1["area_ref_mm2"]) / 2)
    assert "volume_ref_mm3" not in summary["mean"]["1"]
    with open(out / "metrics.csv") as f:
        header = next(csv.reader(f))
    with open(out / "metrics.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert header[:4] == ["case", "label_or_region", "size_group", "area_ref_mm2"]
    assert len(header) == len(set(header)) and "volume_ref_cc" not in header and "area_pred_mm2" in header
    assert float(rows["s0"]["area_ref_mm2"]) == pytest.approx(s0["area_ref_mm2"]) and rows["s0"]["size_group"] == "B"
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    assert set(load_summary_json(str(out / "summary.json"))["mean"]) == {1}


def test_2d_layouts_agree_and_size_edges_mm2(tmp_path):
    ref_3, pred_3, _ = _slice_dataset(tmp_path, "slice3d")
    ref_2, pred_2, _ = _slice_dataset(tmp_path, "nifti2d")
    a = evaluate_folders(ref_3, pred_3, num_processes=1, output_dir=tmp_path / "a")
    b = evaluate_folders(ref_2, pred_2, num_processes=1, output_dir=tmp_path / "b")
    for ca, cb in zip(a["metric_per_case"], b["metric_per_case"]):
        assert ca["metrics"]["1"] == pytest.approx(cb["metrics"]["1"])
    c = evaluate_folders(
        ref_3,
        pred_3,
        num_processes=1,
        output_dir=tmp_path / "c",
        size_edges_mm2=(300.0, 3000.0),
        size_edges_cc=(0.001,),  # used for 3-D data only
    )
    assert {x["case"]: x["size_group"]["1"] for x in c["metric_per_case"]} == {"s0": "B", "s1": "B"}
    assert c["size_groups"]["edges_mm2"] == [300.0, 3000.0]
    with pytest.raises(ValueError, match="mm²"):
        evaluate_folders(ref_3, pred_3, size_edges_mm2=(10.0, 5.0))


def test_3d_data_keep_volumes_in_cc(dataset, tmp_path):
    ref_dir, pred_dir, arrays = dataset
    summary = evaluate_folders(ref_dir, pred_dir, num_processes=1, output_dir=tmp_path / "out")
    assert summary["settings"]["spatial_dims"] == 3
    c1 = next(c for c in summary["metric_per_case"] if c["case"] == "c1")["metrics"]["1"]
    assert list(c1) == list(METRIC_KEYS) and "area_ref_mm2" not in c1
    assert c1["volume_ref_mm3"] == pytest.approx(549 * 2.5 * 0.8 * 0.8)  # 7*9*9 - 2*3*3 voxels of 1.6 mm^3
    sg = summary["size_groups"]
    assert sg["measure"] == "volume_ref_cc" and sg["edges_cc"] == [50.0, 200.0] and "edges_mm2" not in sg
    assert sg["intervals"]["A"] == "[0, 50) cc"
    with open(tmp_path / "out" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[:4] == ["case", "label_or_region", "size_group", "volume_ref_cc"] and "area_ref_mm2" not in header


def test_single_slice_among_volumes_stays_3d(dataset, caplog):
    ref_dir, pred_dir, _ = dataset
    flat = np.zeros((1, 24, 24), dtype=np.uint8)
    flat[0, 5:10, 5:15] = 1
    _write(flat, ref_dir / "thin.nii.gz")
    _write(flat, pred_dir / "thin.nii.gz")
    with caplog.at_level("WARNING", logger="nnunet_ext.evaluation.evaluate"):
        summary = evaluate_folders(ref_dir, pred_dir, num_processes=1)
    assert summary["settings"]["spatial_dims"] == 3 and "single slices" in caplog.text and "thin" in caplog.text
    thin = next(c for c in summary["metric_per_case"] if c["case"] == "thin")["metrics"]["1"]
    assert thin["volume_ref_mm3"] == pytest.approx(50 * 2.5 * 0.8 * 0.8)  # its slice thickness counts


def test_2d_images_mixed_with_volumes_raise(dataset):
    ref_dir, pred_dir, _ = dataset
    img = sitk.GetImageFromArray(np.ones((24, 24), dtype=np.uint8))
    sitk.WriteImage(img, str(ref_dir / "flat.nii.gz"))
    sitk.WriteImage(img, str(pred_dir / "flat.nii.gz"))
    with pytest.raises(ValueError, match=r"mix 2-D images.*flat"):
        evaluate_folders(ref_dir, pred_dir, num_processes=1)
