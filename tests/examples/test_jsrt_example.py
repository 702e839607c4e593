"""The JSRT example's converter and report on a fake JSRT folder (the real data is never needed by the tests)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.trusted import held_out_trusted, load_trusted

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jsrt"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


@pytest.fixture
def fake_jsrt(tmp_path) -> Path:
    root = tmp_path / "JSRT"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    lung = ((yy - 16) ** 2 + (xx - 12) ** 2 < 64) * 255
    noisy = ((yy - 16) ** 2 + (xx - 14) ** 2 < 64) * 255  # shifted by 2 px
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(n):
            case = f"JPCLN{split}{i}.png"
            _png(rng.integers(0, 255, (32, 32)), root / f"images_{split}" / case)
            _png(lung, root / f"lung_gts_{split}" / case)
            if split == "train":
                _png(noisy, root / "lung_180_0.8_0.05_0.2" / case)
    return root


def test_convert_writes_noisy_and_oracle_datasets(fake_jsrt, tmp_path):
    convert = _load("convert_jsrt")
    manifest = convert.convert(fake_jsrt, tmp_path / "raw", tmp_path / "pre", "lung", 811, 812, size=16)
    noisy, clean = tmp_path / "raw" / "Dataset811_JSRTLungNoisy", tmp_path / "raw" / "Dataset812_JSRTLungClean"
    assert (manifest["n_train"], manifest["n_val"], manifest["n_test"]) == (3, 1, 2)
    assert manifest["spacing_mm"] == pytest.approx(1.4 * 256 / 16)
    img = sitk.ReadImage(str(noisy / "imagesTr" / "JPCLNtrain0_0000.nii.gz"))
    assert img.GetSize() == (16, 16, 1) and img.GetSpacing()[:2] == pytest.approx((22.4, 22.4))
    train_noisy = sitk.GetArrayFromImage(sitk.ReadImage(str(noisy / "labelsTr" / "JPCLNtrain0.nii.gz")))
    train_clean = sitk.GetArrayFromImage(sitk.ReadImage(str(clean / "labelsTr" / "JPCLNtrain0.nii.gz")))
    assert set(np.unique(train_clean)) == {0, 1} and not np.array_equal(train_noisy, train_clean)
    for folder in (noisy, clean):  # validation and test labels are clean in both datasets
        for sub, case in (("labelsTr", "JPCLNval0"), ("labelsTs", "JPCLNtest1")):
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / sub / f"{case}.nii.gz")))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(clean / sub / f"{case}.nii.gz")))
            assert np.array_equal(a, b)
    splits = json.loads((tmp_path / "pre" / "Dataset811_JSRTLungNoisy" / "splits_final.json").read_text())
    assert splits == [{"train": ["JPCLNtrain0", "JPCLNtrain1", "JPCLNtrain2"], "val": ["JPCLNval0"]}]
    assert manifest["n_trusted"] == 1
    for folder in (noisy, clean):  # the clean validation cases are trusted, and fold 0 holds them out
        assert load_trusted(folder.name, preprocessed=tmp_path / "pre") == ["JPCLNval0"]
        assert held_out_trusted(folder.name, 0, preprocessed=tmp_path / "pre", raw=tmp_path / "raw") == ["JPCLNval0"]
    expected = convert._dice(
        convert._mask(fake_jsrt / "lung_180_0.8_0.05_0.2" / "JPCLNtrain0.png", 16),
        convert._mask(fake_jsrt / "lung_gts_train" / "JPCLNtrain0.png", 16),
    )
    assert manifest["noisy_vs_clean_dice_train"]["mean"] == pytest.approx(expected)
    assert 0 < expected < 1


def test_convert_names_a_wrong_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="JSRT folder"):
        _load("convert_jsrt").convert(tmp_path, tmp_path / "raw", tmp_path / "pre", "lung", 811, 812, size=16)


def test_report_gap_recovered_and_paired_tests():
    report = _load("report_jsrt")
    cases = [f"c{i}" for i in range(6)]

    def rows(trainer, config, dice):
        return [
            {"trainer": trainer, "configuration": config, "case": c, "Dice": d, "HD95_mm": 10 * (1 - d), "RVE": 0.1}
            for c, d in zip(cases, dice)
        ]

    base = [0.70, 0.72, 0.69, 0.71, 0.70, 0.72]
    noisy = rows("nnUNetTrainer", "2d", base) + rows("NRDiceTrainer", "2d", [d + 0.05 for d in base])
    oracle = rows("nnUNetTrainer", "2d", [d + 0.10 for d in base])
    table = report.build_table(noisy, oracle, ("nnUNetTrainer", "2d"), ("nnUNetTrainer", "2d"))
    line = next(x for x in table.splitlines() if "NRDiceTrainer" in x)
    assert line.endswith("| 50 % |")  # half of the 0.10 gap
    assert "(baseline)" in next(x for x in table.splitlines() if "| noisy | nnUNetTrainer" in x)
    assert "gap in mean Dice: 0.1000" in table
