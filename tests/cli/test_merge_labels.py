"""``nnunet-ext merge-labels`` on hand-made label-map folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.cli.main import main

SPACING = (0.9, 0.9, 2.0)
ORIGIN = (1.0, -2.0, 3.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
# A \ B over nnU-Net labels 0 bg, 1 edema, 2 NCR/NET, 3 ET (rows A, columns B), one case per row.
A = np.repeat(np.arange(4), 4).reshape(4, 1, 1, 4)
B = np.tile(np.arange(4), 4).reshape(4, 1, 1, 4)
EXPECTED = np.array([[0, 1, 0, 0], [0, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]]).reshape(4, 1, 1, 4)


def _write(array: np.ndarray, path: Path, spacing=SPACING) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    for i in range(4):
        _write(A[i], a / f"case_{i}.nii.gz")
        _write(B[i], b / f"case_{i}.nii.gz")
    (a / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "labels": {"background": 0}}))
    (a / "plans.json").write_text("{}")  # other files are ignored
    return a, b, tmp_path / "OUT"


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def test_merges_every_case_and_keeps_geometry(folders):
    a, b, out = folders
    assert main(["merge-labels", str(a), str(b), str(out)]) == 0
    for i in range(4):
        image = _read(out / f"case_{i}.nii.gz")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), EXPECTED[i])
        assert image.GetSpacing() == pytest.approx(SPACING) and image.GetOrigin() == pytest.approx(ORIGIN)
        assert image.GetDirection() == pytest.approx(DIRECTION)
    assert (out / "dataset.json").is_file()
    manifest = json.loads((out / "merge_labels.json").read_text())
    assert manifest["cases"] == [f"case_{i}" for i in range(4)] and manifest["convention"] == "nnunet"


def test_brats_convention(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    to_brats = np.array([0, 2, 1, 4])
    _write(to_brats[A.ravel()].reshape(4, 4, 1), a / "c.nii.gz")
    _write(to_brats[B.ravel()].reshape(4, 4, 1), b / "c.nii.gz")
    assert main(["merge-labels", str(a), str(b), str(tmp_path / "O"), "--convention", "brats"]) == 0
    got = sitk.GetArrayFromImage(_read(tmp_path / "O" / "c.nii.gz"))
    np.testing.assert_array_equal(got, to_brats[EXPECTED.ravel()].reshape(4, 4, 1))
    # the same maps in the wrong convention: value 4 is refused, naming the case and the fix
    assert main(["merge-labels", str(a), str(b), str(tmp_path / "P")]) == 2


def test_missing_cases_and_overwrite(folders, capsys):
    a, b, out = folders
    (b / "case_3.nii.gz").unlink()
    _write(B[0], b / "extra.nii.gz")
    assert main(["merge-labels", str(a), str(b), str(out)]) == 2
    assert "missing in B: ['case_3'], missing in A: ['extra']" in capsys.readouterr().err
    (b / "extra.nii.gz").rename(b / "case_3.nii.gz")
    assert main(["merge-labels", str(a), str(b), str(out)]) == 0
    assert main(["merge-labels", str(a), str(b), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["merge-labels", str(a), str(b), str(out), "--overwrite"]) == 0
    assert main(["merge-labels", str(a / "nope"), str(b), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_geometry_mismatch(folders, capsys):
    a, b, out = folders
    _write(B[2], b / "case_2.nii.gz", spacing=(0.9, 0.9, 2.5))
    assert main(["merge-labels", str(a), str(b), str(out)]) == 2
    err = capsys.readouterr().err
    assert "case 'case_2': spacing differs" in err and "2.5" in err
    assert not out.exists()  # checked before anything is written
    _write(np.zeros((1, 2, 4)), b / "case_2.nii.gz")
    assert main(["merge-labels", str(a), str(b), str(out), "--overwrite"]) == 2
    assert "size differs" in capsys.readouterr().err


def test_label_values_outside_convention(folders, capsys):
    a, b, out = folders
    _write(np.full((1, 1, 4), 4), b / "case_1.nii.gz")
    assert main(["merge-labels", str(a), str(b), str(out)]) == 2
    err = capsys.readouterr().err
    assert "case 'case_1'" in err and "[4]" in err and "'brats'" in err
