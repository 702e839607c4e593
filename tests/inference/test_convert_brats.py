"""``examples/brats/convert_brats.py`` on a tiny fake BraTS folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "brats" / "convert_brats.py"
SHAPE = (5, 6, 7)  # numpy z, y, x
SPACING = (1.0, 1.0, 1.5)  # ITK x, y, z
ORIGIN = (-10.0, 4.0, 2.5)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def converter():
    spec = importlib.util.spec_from_file_location("convert_brats", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path))


def _fake_case(root: Path, case: str, seed: int, seg_name: str | None = "{case}_seg.nii.gz", labels=(0, 1, 2, 4)):
    rng = np.random.default_rng(seed)
    folder = root / case
    folder.mkdir(parents=True)
    for i, modality in enumerate(("t1", "t1ce", "t2", "flair")):
        ending = ".nii" if (modality == "t2" and seed == 2) else ".nii.gz"  # one uncompressed image
        _write((rng.normal(size=SHAPE) + 10 * i).astype(np.float32), folder / f"{case}_{modality}{ending}")
    seg = rng.choice(labels, size=SHAPE).astype(np.uint8)
    if seg_name is not None:
        _write(seg, folder / seg_name.format(case=case))
    return seg


@pytest.fixture
def fake_brats(tmp_path):
    train = tmp_path / "MICCAI_BraTS2020_TrainingData"
    segs = {
        "BraTS20_Training_001": _fake_case(train, "BraTS20_Training_001", 1),
        # BraTS 2020 case 355 style: a segmentation named differently
        "BraTS20_Training_002": _fake_case(train, "BraTS20_Training_002", 2, seg_name="W39_1998.09.19_Segm.nii"),
    }
    (train / "survival_info.csv").write_text("not a case\n")
    val = tmp_path / "MICCAI_BraTS2020_ValidationData"
    _fake_case(val, "BraTS20_Validation_001", 3, seg_name=None)
    segs["BraTS20_Validation_002"] = _fake_case(val, "BraTS20_Validation_002", 4)  # a labelled held-out case
    return train, val, segs


def test_converts_images_labels_and_dataset_json(converter, fake_brats, tmp_path):
    train, val, segs = fake_brats
    out_root = tmp_path / "raw"
    rc = converter.main(
        [str(train), "-d", "777", "--name", "FakeBraTS", "--test-dir", str(val), "--out-root", str(out_root)]
    )
    assert rc == 0
    folder = out_root / "Dataset777_FakeBraTS"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"BraTS20_Training_00{c}_000{i}.nii.gz" for c in (1, 2) for i in range(4)
    ]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
        f"BraTS20_Validation_00{c}_000{i}.nii.gz" for c in (1, 2) for i in range(4)
    ]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["BraTS20_Validation_002.nii.gz"]
    # channel 1 is T1ce (open_brats order t1, t1ce, t2, flair); the uncompressed T2 was rewritten as .nii.gz
    src = sitk.GetArrayFromImage(
        sitk.ReadImage(str(train / "BraTS20_Training_001" / "BraTS20_Training_001_t1ce.nii.gz"))
    )
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / "BraTS20_Training_001_0001.nii.gz"))), src
    )
    t2 = sitk.ReadImage(str(folder / "imagesTr" / "BraTS20_Training_002_0002.nii.gz"))
    assert t2.GetSpacing() == SPACING and t2.GetOrigin() == ORIGIN and t2.GetDirection() == DIRECTION
    for case, seg in segs.items():
        split = "Tr" if "Training" in case else "Ts"
        label = sitk.ReadImage(str(folder / f"labels{split}" / f"{case}.nii.gz"))
        assert label.GetSpacing() == SPACING and label.GetOrigin() == ORIGIN and label.GetDirection() == DIRECTION
        got = sitk.GetArrayFromImage(label)
        for brats, nnunet in ((0, 0), (1, 2), (2, 1), (4, 3)):
            assert np.all(got[seg == brats] == nnunet)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {
        "background": 0,
        "whole_tumor": [1, 2, 3],
        "tumor_core": [2, 3],
        "enhancing_tumor": [3],
    }
    assert list(dataset["labels"]) == ["background", "whole_tumor", "tumor_core", "enhancing_tumor"]
    assert dataset["regions_class_order"] == [1, 2, 3]
    assert dataset["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"


@pytest.mark.slow  # nnU-Net's checker spawns a worker process
def test_output_passes_nnunet_integrity_check(converter, fake_brats, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    train, _, _ = fake_brats
    folder = converter.convert(train, 778, "FakeBraTS", tmp_path / "raw")
    verify_dataset_integrity(str(folder), num_processes=1)


def test_errors(converter, fake_brats, tmp_path, capsys):
    train, val, _ = fake_brats
    raw = tmp_path / "raw"
    assert converter.main([str(train), "-d", "779", "--out-root", str(raw)]) == 0
    assert converter.main([str(train), "-d", "779", "--out-root", str(raw)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert converter.main([str(train), "-d", "779", "--name", "Other", "--out-root", str(raw)]) == 2
    assert "taken by ['Dataset779_BraTS']" in capsys.readouterr().err
    assert converter.main([str(train), "-d", "779", "--out-root", str(raw), "--overwrite"]) == 0
    # as a training folder: case 001 of the validation folder has no segmentation
    assert converter.main([str(val), "-d", "780", "--out-root", str(raw)]) == 2
    assert "BraTS20_Validation_001_seg.nii.gz" in capsys.readouterr().err
    bad = tmp_path / "bad"
    _fake_case(bad, "BraTS20_Training_009", 9, labels=(0, 3))
    assert converter.main([str(bad), "-d", "781", "--out-root", str(raw)]) == 2
    assert "BraTS20_Training_009" in capsys.readouterr().err
    assert converter.main([str(tmp_path), "-d", "782", "--out-root", str(raw)]) == 2
    assert "no case folders" in capsys.readouterr().err
