"""``nnunet-ext calibrate`` and ``predict --boundary-offset``: offsets per class on held-out trusted cases, the shift
applied before export, refusals that name the fix."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_ext.cli import predict as predict_cli
from nnunet_ext.cli.main import main
from nnunet_ext.correction import calibrate as cal

DATASET_ID = 531
TRUSTED = ["calib_000", "calib_001"]
DILATION_PX = 2


def _disc_logits(shape=(48, 48), radius=12.0, slope=1.0) -> np.ndarray:
    """Softmax logits (2, 1, H, W) whose foreground is a disc, margin linear in the distance (z1 - z0 = -slope d)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2) - radius
    z1 = (-slope * d).astype(np.float32)
    return np.stack([np.zeros_like(z1), z1])[:, None]


LABELS = SimpleNamespace(has_regions=False, foreground_labels=[1], foreground_regions=None)
REGIONS = SimpleNamespace(has_regions=True, foreground_labels=[1, 2], foreground_regions=[(1, 2), (2,)])


def test_case_offsets_measure_a_dilated_reference_per_slice():
    logits = _disc_logits()
    ref = np.argmax(logits, axis=0)  # (1, H, W)
    eroded = ndimage.binary_erosion(ref[0] == 1, iterations=DILATION_PX)[None].astype(np.int16)
    got = cal.case_offsets(logits, eroded, LABELS, [0.5, 0.5], two_d=True)
    assert list(got) == ["1"] and got["1"] == pytest.approx(DILATION_PX * 0.5, abs=0.25)  # prediction larger: > 0
    assert cal.case_offsets(logits, ref, LABELS, [0.5, 0.5], two_d=True) == {"1": 0.0}
    ref_minus = np.where(ref == 1, ref, -1)  # nnU-Net's -1 outside the nonzero mask is background
    assert cal.case_offsets(logits, ref_minus, LABELS, [0.5, 0.5], two_d=True) == {"1": 0.0}


def test_apply_shrinks_labels_and_regions_and_pools_over_folds():
    logits = _disc_logits()
    area = (np.argmax(logits, axis=0) == 1).sum()
    shifted = cal.apply_boundary_offsets(logits, {"1": 3.0}, LABELS, [1.0, 1.0], two_d=True)
    assert (np.argmax(shifted, axis=0) == 1).sum() < area
    grown = cal.apply_boundary_offsets(logits, {"1": -3.0}, LABELS, [1.0, 1.0], two_d=True)
    assert (np.argmax(grown, axis=0) == 1).sum() > area
    np.testing.assert_array_equal(cal.apply_boundary_offsets(logits, {"1": None}, LABELS, [1, 1], True), logits)
    with pytest.raises(ValueError, match=r"\['7'\]"):
        cal.apply_boundary_offsets(logits, {"7": 1.0}, LABELS, [1, 1], True)

    regions = np.concatenate([logits[1:], logits[1:] - 4.0])  # two region channels
    offsets = cal.uniform_offsets(REGIONS, 3.0)
    assert offsets == {"(1, 2)": 3.0, "(2,)": 3.0}
    out = cal.apply_boundary_offsets(regions, {"(1, 2)": 3.0}, REGIONS, [1.0, 1.0], two_d=True)
    assert (out[0] > 0).sum() < (regions[0] > 0).sum()
    np.testing.assert_array_equal(out[1], regions[1])

    per_fold = {"0": {"1": 1.0, "2": None}, "1": {"1": 3.0, "2": None}}
    assert cal.pool_offsets(per_fold, ["1", "2"]) == {"1": 2.0, "2": None}


def test_boundary_offset_values(tmp_path):
    assert predict_cli.parse_boundary_offset(None) is None
    assert predict_cli.parse_boundary_offset("calibrated") == "calibrated"
    assert predict_cli.parse_boundary_offset("-1.5") == -1.5
    for bad in ("nan", "inf", "three"):
        with pytest.raises(ValueError, match=f"'{bad}'"):
            predict_cli.parse_boundary_offset(bad)
    with pytest.raises(FileNotFoundError, match="fold 0 .* is not calibrated"):
        cal.load_calibrated_offsets(tmp_path, [0], "checkpoint_final.pth")


def test_refuses_without_trusted_cases(nnunet_dirs, capsys):
    from nnunet_ext.synthetic import make_lesion_dataset

    folder = make_lesion_dataset(nnunet_dirs.raw, 532, "NoTrust", num_train=6, num_test=1, shape=(2, 16, 16))
    model = nnunet_dirs.results / folder.name / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0"
    model.mkdir(parents=True)
    (model / "checkpoint_final.pth").write_bytes(b"")  # refused before it is read
    assert main(["calibrate", "-d", "532", "-c", "2d", "-f", "0", "-device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext calibrate: error: no trusted cases recorded for Dataset532_NoTrust")
    assert "nnunet-ext trust -d Dataset532_NoTrust" in err and "Traceback" not in err
    assert main(["calibrate", "-d", "532", "-c", "2d", "-f", "1", "-device", "cpu"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


# --- stock nnUNetTrainer on labels dilated by 2 px, 2 clean trusted cases held out -----------------------------


@pytest.fixture(scope="module")
def stock_model(nnunet_dirs):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.benchmark.datasets import plan_and_preprocess, shrink_plans
    from nnunet_ext.synthetic import make_lesion_dataset

    folder = make_lesion_dataset(nnunet_dirs.raw, DATASET_ID, "Calib", num_train=8, num_test=1, shape=(4, 64, 64))
    structure = ndimage.generate_binary_structure(2, 1)
    for path in sorted((folder / "labelsTr").glob("*.nii.gz")):
        if path.name.split(".")[0] in TRUSTED:
            continue
        image = sitk.ReadImage(str(path))
        seg = sitk.GetArrayFromImage(image)
        noisy = np.stack([ndimage.binary_dilation(s == 1, structure, DILATION_PX) for s in seg]).astype(seg.dtype)
        out = sitk.GetImageFromArray(noisy)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path), useCompression=True)
    plan_and_preprocess(DATASET_ID, ("2d",), verify_integrity=False)
    shrink_plans(DATASET_ID, "2d", batch_size=2, max_features=16)
    assert main(["trust", "-d", str(DATASET_ID), *TRUSTED, "--as-validation"]) == 0

    pre = nnunet_dirs.preprocessed / folder.name
    plans = {**json.loads((pre / "nnUNetPlans.json").read_text()), "continue_training": False}
    dataset_json = json.loads((pre / "dataset.json").read_text())
    torch.manual_seed(0)
    trainer = nnUNetTrainer(
        plans=plans, configuration="2d", fold=0, dataset_json=dataset_json, device=torch.device("cpu")
    )
    trainer.initialize()
    _fit(trainer, pre / "nnUNetPlans_2d", json.loads((pre / "splits_final.json").read_text())[0]["train"])
    os.makedirs(trainer.output_folder, exist_ok=True)
    trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))  # nnU-Net's own format
    shutil.copyfile(pre / "dataset.json", Path(trainer.output_folder_base) / "dataset.json")
    (Path(trainer.output_folder_base) / "plans.json").write_text(json.dumps(plans))
    return SimpleNamespace(name=folder.name, raw=folder, fold=Path(trainer.output_folder))


def _fit(trainer, data_folder: Path, cases: list[str], steps: int = 40) -> None:
    """A few full-slice Adam steps of the stock trainer's network (nnU-Net's loop with augmentation takes minutes
    per epoch on a shared 2-core CPU): enough to see the dilated lesions, not a converged model."""
    import torch
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    ds = infer_dataset_class(str(data_folder))(str(data_folder), identifiers=cases)
    images, labels = [], []
    for case in cases:
        data, seg, _, _ = ds.load_case(case)
        images.append(np.asarray(data[:], dtype=np.float32)[0])
        labels.append(np.clip(np.asarray(seg[:])[0], 0, None))
    x = torch.from_numpy(np.concatenate(images))[:, None]
    y = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    net = trainer.network
    trainer.set_deep_supervision_enabled(False)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    weight = torch.tensor([1.0, 5.0])  # lesions are small
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), size=min(8, len(x)), replace=False))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx], weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trainer.set_deep_supervision_enabled(True)


def _predict(ds, out, *extra: str) -> int:
    argv = ["predict", "-i", str(ds.raw / "imagesTs"), "-o", str(out), "-d", str(DATASET_ID), "-c", "2d", "-f", "0"]
    argv += ["-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar", "--disable_tta", *extra]
    return main(argv)


def _foreground(folder) -> int:
    return int(sum((sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0).sum() for p in folder.glob("*.nii.gz")))


@pytest.mark.slow
def test_calibrate_and_predict_with_boundary_offset_on_stock_model(stock_model, tmp_path, capsys):
    ds = stock_model
    assert _predict(ds, tmp_path / "refused", "--boundary-offset", "calibrated") == 2
    err = capsys.readouterr().err
    assert "--boundary-offset calibrated: fold 0 of" in err and "is not calibrated" in err
    assert f"run nnunet-ext calibrate -d {DATASET_ID} -c 2d -tr nnUNetTrainer -f 0" in err

    assert main(["calibrate", "-d", str(DATASET_ID), "-c", "2d", "-f", "0", "-device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "fold 0: 2 held-out trusted cases, checkpoint_final.pth" in out and "1 lesion" in out
    content = json.loads((ds.fold / "boundary_offset.json").read_text())
    assert content["schema_version"] == 1 and content["cases"] == TRUSTED
    assert (content["configuration"], content["trainer"], content["checkpoint"]) == (
        "2d",
        "nnUNetTrainer",
        "checkpoint_final.pth",
    )
    assert set(content["per_case"]) == set(TRUSTED) and list(content["offsets_mm"]) == ["1"]
    assert len(content["spacing"]) == 2 and content["per_slice"] is True
    stored = content["offsets_mm"]["1"]
    assert stored is None or math.isfinite(stored)

    assert _predict(ds, tmp_path / "none") == 0
    assert _predict(ds, tmp_path / "zero", "--boundary-offset", "0") == 0
    assert _predict(ds, tmp_path / "shrunk", "--boundary-offset", "3") == 0
    assert _predict(ds, tmp_path / "calibrated", "--boundary-offset", "calibrated", "--save_probabilities") == 0
    area = {k: _foreground(tmp_path / k) for k in ("none", "zero", "shrunk")}
    assert area["zero"] == area["none"]
    assert area["shrunk"] < area["none"] or area["none"] == 0
    manifest = json.loads((tmp_path / "calibrated" / "nnunet_ext_predict.json").read_text())
    assert manifest["boundary_offset"]["mode"] == "calibrated"
    assert manifest["boundary_offset"]["offsets_mm"] == {"1": stored}
    assert manifest["boundary_offset"]["per_fold"] == {"0": {"1": stored}}
    fixed = json.loads((tmp_path / "shrunk" / "nnunet_ext_predict.json").read_text())["boundary_offset"]
    assert fixed["mode"] == "fixed" and fixed["offsets_mm"] == {"1": 3.0}
    assert json.loads((tmp_path / "none" / "nnunet_ext_predict.json").read_text())["boundary_offset"] is None
    # probabilities are those of the shifted logits: their argmax is the exported segmentation
    npz = next((tmp_path / "calibrated").glob("*.npz"))
    probabilities = np.load(npz)["probabilities"]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(npz.with_suffix(".nii.gz"))))
    assert np.mean(np.argmax(probabilities, axis=0) == seg) > 0.999
