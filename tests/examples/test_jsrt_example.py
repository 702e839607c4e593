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


def _label(folder: Path, sub: str, case: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / sub / f"{case}.nii.gz")))


def test_convert_j3_noise_with_noisy_validation(fake_jsrt, tmp_path):
    """J3: every noisy mask is the expert mask dilated or eroded (7-9 px at the stored size); seeded; no trust list."""
    convert = _load("convert_jsrt")
    kwargs = dict(size=32, noise="j3", noisy_validation=True)
    manifest = convert.convert(fake_jsrt, tmp_path / "raw", tmp_path / "pre", "lung", 821, 822, seed=3, **kwargs)
    noisy = tmp_path / "raw" / "Dataset821_JSRTLungNoisyJ3NoisyVal"
    clean = tmp_path / "raw" / "Dataset822_JSRTLungClean"
    assert manifest["noise"] == "j3" and manifest["seed"] == 3 and manifest["n_trusted"] == 0
    assert "noisy_vs_clean_dice_val" in manifest
    for case in ("JPCLNtrain0", "JPCLNtrain1", "JPCLNtrain2", "JPCLNval0"):
        n, c = _label(noisy, "labelsTr", case).astype(bool), _label(clean, "labelsTr", case).astype(bool)
        assert n.sum() != c.sum() and (n <= c).all() or (n >= c).all()  # a pure erosion or a pure dilation
        # the disc of radius 8 loses or gains a ring of 7-9 px: an erosion empties it, a dilation adds >= 7 px
        assert n.sum() == 0 or n.sum() >= c.sum() + 7 * 2 * np.pi * 8
    assert np.array_equal(_label(noisy, "labelsTs", "JPCLNtest0"), _label(clean, "labelsTs", "JPCLNtest0"))
    assert not (tmp_path / "pre" / noisy.name / "trusted_cases.json").exists()  # validation labels are noisy
    assert load_trusted(clean.name, preprocessed=tmp_path / "pre") == ["JPCLNval0"]
    again = convert.convert(fake_jsrt, tmp_path / "raw2", tmp_path / "pre2", "lung", 821, 822, seed=3, **kwargs)
    assert again["noisy_vs_clean_dice_train"] == manifest["noisy_vs_clean_dice_train"]  # reproducible per seed


def test_trusted_baselines_write_splits(fake_jsrt, tmp_path, monkeypatch):
    convert = _load("convert_jsrt")
    convert.convert(fake_jsrt, tmp_path / "raw", tmp_path / "pre", "lung", 811, 812, size=16)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    make = _load("make_trusted_baselines")
    assert make.main(["-d", "811", "-k", "1", "--trusted-only-id", "813", "--noisy-plus-trusted-id", "815"]) == 0
    only = json.loads((tmp_path / "pre" / "Dataset813_JSRTLungTrustedK1" / "splits_final.json").read_text())
    plus = json.loads((tmp_path / "pre" / "Dataset815_JSRTLungNoisyPlusTrustedK1" / "splits_final.json").read_text())
    assert only == [{"train": ["JPCLNval0"], "val": ["JPCLNval0"]}]  # K = all validation cases: validate on them
    assert plus == [{"train": ["JPCLNtrain0", "JPCLNtrain1", "JPCLNtrain2", "JPCLNval0"], "val": ["JPCLNval0"]}]
    raw_plus = tmp_path / "raw" / "Dataset815_JSRTLungNoisyPlusTrustedK1"
    assert json.loads((raw_plus / "dataset.json").read_text())["numTraining"] == 4
    assert len(list((raw_plus / "labelsTs").glob("*.nii.gz"))) == 2
    with pytest.raises(SystemExit):
        make.main(["-d", "811", "-k", "2", "--trusted-only-id", "813", "--noisy-plus-trusted-id", "815"])


def test_budget_report_means_over_seeds(tmp_path):
    report = _load("report_budget")
    cases = [f"c{i}" for i in range(8)]
    header = "dataset,configuration,trainer,fold,case,Dice,seed,checkpoint\n"

    def write(folder: str, rows: list[tuple[str, int, str, float]]) -> None:
        (tmp_path / folder / "final").mkdir(parents=True)
        lines = [f"D,2d_cpu,{t},0,{c},{d + 0.001 * i},{s},{k}" for t, s, k, d in rows for i, c in enumerate(cases)]
        (tmp_path / folder / "final" / "results.csv").write_text(header + "\n".join(lines) + "\n")

    write(
        "j3_nv_8000",
        [
            ("nnUNetTrainer", 0, "final", 0.80),
            ("nnUNetTrainer", 1, "final", 0.82),
            ("EarlyLearningTrainer", 0, "final", 0.86),
            ("EarlyLearningTrainer", 1, "final", 0.90),
        ],
    )
    write("oracle832_8000", [("nnUNetTrainer", 0, "final", 0.96)])
    table = report.build_table(report.read_cells(tmp_path))
    el = next(x for x in table.splitlines() if "EarlyLearningTrainer" in x)
    cells = [c.strip() for c in el.split("|")]
    assert cells[5] == "2" and cells[6] == "0.8835"  # mean over seeds of (0.8635, 0.9035)
    assert cells[7] == f"{np.std([0.8635, 0.9035], ddof=1):.4f}" and cells[8] == "+0.0700"
    assert cells[10] == "47 %"  # 0.07 of the 0.9635 - 0.8135 = 0.15 gap
