"""``nnunet-ext audit`` on fake cross-validations (real raw datasets, out-of-fold predictions written as files in
nnU-Net's layout from the clean labels, two training labels deliberately wrong): ranking, columns, montage, trusted
offset, region and 2-D datasets, refusals that name the nnU-Net command, bad input without a traceback."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from audit.fake_cv import emptied, fake_cross_validation, in_plane, make_2d_dataset, read, shifted, write_like

from nnunet_ext.cli.main import main
from nnunet_ext.synthetic import make_lesion_dataset, make_region_dataset


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _audit(*extra: str, dataset: int, configuration: str = "2d") -> int:
    return main(["audit", "-d", str(dataset), "-c", configuration, "--no-loss", *extra])


@pytest.fixture(scope="module")
def lesion_cv(nnunet_dirs):
    """3-D anisotropic lesions, 10 cases; case 003's label misses every lesion, case 006's is shifted by 6 voxels."""
    folder = make_lesion_dataset(nnunet_dirs.raw, 861, "AuditLesion", num_train=10, num_test=2, shape=(8, 40, 40))
    wrong = {"auditlesion_003": emptied, "auditlesion_006": shifted(6)}
    return fake_cross_validation(folder, nnunet_dirs, wrong)


def test_two_wrong_labels_rank_in_the_top_three(lesion_cv, capsys):
    assert _audit("--top", "3", dataset=861) == 0
    out = capsys.readouterr().out
    audit_dir = lesion_cv.model / "audit"
    rows = _read_csv(audit_dir / "audit.csv")
    assert [int(r["rank"]) for r in rows] == list(range(1, 11))  # sorted by rank
    assert len(rows) == 10 and {r["rank"] for r in rows} == {str(k) for k in range(1, 11)}
    top3 = {r["case"] for r in rows if int(r["rank"]) <= 3}
    assert set(lesion_cv.wrong) <= top3, rows[:4]
    by_case = {r["case"]: r for r in rows}
    missed = by_case["auditlesion_003"]
    assert float(missed["Dice"]) == 0.0 and float(missed["volume_ratio"]) == 0.0
    assert float(missed["offset_mm"]) == pytest.approx(-0.8)  # the label is smaller: one voxel (0.8 mm) inward
    assert missed["loss"] == "nan" and missed["loss_on"] == ""
    assert list(rows[0])[:13] == [
        "case",
        "rank",
        "score",
        "trusted",
        "folds",
        "Dice",
        "HD95_mm",
        "ASSD_mm",
        "offset_mm",
        "abs_offset_mm",
        "volume_ratio",
        "loss",
        "loss_on",
    ]
    assert "Dice_lesion" in rows[0] and "offset_mm_lesion" in rows[0]
    # every case has its own fold
    assert sorted(r["folds"] for r in rows) == sorted(str(k) for k, s in enumerate(lesion_cv.splits) for _ in s["val"])

    md = (audit_dir / "audit.md").read_text()
    assert "## Top 3 cases" in md and "auditlesion_003" in md and "![worst cases](worst_cases.png)" in md
    assert "`offset_mm` | signed boundary offset in mm, > 0 = the label's boundary lies outside" in md
    assert "**Score** (`rank`)" in md and "not computed (--no-loss)" in md
    settings = json.loads((audit_dir / "audit.json").read_text())["settings"]
    assert settings["spatial_dims"] == 3 and settings["n_cases"] == 10 and settings["score"] == "rank"

    import matplotlib.image

    png = matplotlib.image.imread(audit_dir / "worst_cases.png")
    assert png.ndim == 3 and png.shape[0] > png.shape[1] * 0.5  # three rows of panels
    assert "auditlesion_003" in out and "rank" in out and "wrote" in out


def test_dice_score_and_output_folder(lesion_cv, tmp_path):
    assert _audit("--score", "dice", "-o", str(tmp_path / "a"), "--top", "1", dataset=861) == 0
    rows = _read_csv(tmp_path / "a" / "audit.csv")
    assert rows[0]["case"] == "auditlesion_003"  # Dice 0 is the largest 1 - Dice
    assert float(rows[0]["score"]) == pytest.approx(1.0)
    assert all(float(a["score"]) >= float(b["score"]) for a, b in zip(rows, rows[1:]))


def test_trusted_cases_are_not_ranked_and_give_the_systematic_offset(nnunet_dirs, capsys):
    """Predictions 2 mm too wide everywhere (isotropic 1 mm voxels): on clean trusted labels the offset is ~ -2 mm."""
    from scipy import ndimage

    from nnunet_ext.trusted import save_trusted, trusted_split

    folder = make_lesion_dataset(
        nnunet_dirs.raw, 862, "AuditTrusted", num_train=8, num_test=0, shape=(16, 40, 40), spacing=(1.0, 1.0, 1.0)
    )
    cases = sorted(p.name[:-7] for p in (folder / "labelsTr").glob("*.nii.gz"))
    trusted = cases[:2]
    splits = trusted_split(cases, trusted)  # trusted cases in every validation set (nnunet-ext trust --as-validation)
    cv = fake_cross_validation(folder, nnunet_dirs, {}, splits=splits, model_error=0)
    for fold in range(5):  # a model biased outwards by 2 mm
        for case in splits[fold]["val"]:
            path = cv.model / f"fold_{fold}" / "validation" / f"{case}.nii.gz"
            seg, like = read(path)
            write_like(ndimage.distance_transform_edt(seg == 0) <= 2.0, like, path)
    save_trusted(folder.name, [trusted[0]])
    assert _audit("--trusted", trusted[1], dataset=862) == 0
    out = capsys.readouterr().out
    rows = _read_csv(cv.model / "audit" / "audit.csv")
    by_case = {r["case"]: r for r in rows}
    for case in trusted:
        assert by_case[case]["trusted"] == "1" and by_case[case]["rank"] == "" and by_case[case]["score"] == ""
        assert by_case[case]["folds"] == "0 1 2 3 4"
    assert [r["trusted"] for r in rows] == ["0"] * 6 + ["1"] * 2  # ranked cases first
    content = json.loads((cv.model / "audit" / "audit.json").read_text())
    systematic = content["systematic_offset"]
    assert systematic["cases"] == trusted and systematic["n_cases"] == 2
    assert systematic["per_class"]["1"]["offset_mm"] == pytest.approx(-2.0, abs=0.5)  # within half a voxel
    assert "systematic offset on 2 trusted cases" in out
    md = (cv.model / "audit" / "audit.md").read_text()
    assert "Mean signed offset over the 2 trusted cases" in md


def test_region_dataset(nnunet_dirs):
    folder = make_region_dataset(nnunet_dirs.raw, 863, "AuditRegions", num_train=6, num_test=0, shape=(16, 16, 16))

    def no_enhancing(seg):  # enhancing tumour annotated as necrosis
        return np.where(seg == 3, 2, seg)

    cv = fake_cross_validation(folder, nnunet_dirs, {"auditregions_004": no_enhancing}, model_error=0)
    assert _audit(dataset=863) == 0
    rows = _read_csv(cv.model / "audit" / "audit.csv")
    assert rows[0]["case"] == "auditregions_004"
    top = rows[0]
    assert float(top["Dice_whole_tumor"]) == 1.0 and float(top["Dice_tumor_core"]) == 1.0
    assert float(top["Dice_enhancing_tumor"]) == 0.0 and float(top["volume_ratio_enhancing_tumor"]) == 0.0
    assert float(top["Dice"]) == pytest.approx(2 / 3)
    assert all(float(r["Dice"]) == 1.0 for r in rows[1:])
    assert json.loads((cv.model / "audit" / "audit.json").read_text())["settings"]["has_regions"] is True


def test_two_d_dataset_with_anisotropic_pixels(nnunet_dirs):
    folder = make_2d_dataset(nnunet_dirs.raw, 864, "AuditFlat", num_train=6, spacing=(0.7, 0.5))

    def grown(seg):  # two pixels wider on every side
        return in_plane(seg > 0, 2, True).astype(np.uint8)

    cv = fake_cross_validation(folder, nnunet_dirs, {"auditflat_002": grown}, model_error=0)
    assert _audit(dataset=864) == 0
    rows = _read_csv(cv.model / "audit" / "audit.csv")
    assert rows[0]["case"] == "auditflat_002"
    offset = float(rows[0]["offset_mm"])
    assert 0.5 * 2 <= offset <= 0.7 * 2 + 0.1  # between 2 pixels of 0.5 mm and 2 of 0.7 mm
    assert float(rows[0]["volume_ratio"]) > 1
    assert json.loads((cv.model / "audit" / "audit.json").read_text())["settings"]["spatial_dims"] == 2
    assert (cv.model / "audit" / "worst_cases.png").is_file()


def test_missing_folds_and_validation_name_the_nnunet_command(nnunet_dirs, capsys):
    folder = make_lesion_dataset(nnunet_dirs.raw, 865, "AuditMissing", num_train=6, num_test=0, shape=(4, 24, 24))
    assert _audit(dataset=865) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext audit: error: no trained model")
    assert "nnUNetv2_train 865 2d 0 -tr nnUNetTrainer" in err and "Traceback" not in err

    cv = fake_cross_validation(folder, nnunet_dirs, {}, folds=(0, 1))
    (cv.model / "fold_2").mkdir()
    (cv.model / "fold_2" / "checkpoint_final.pth").write_bytes(b"")  # trained, not validated
    (cv.model / "fold_3").mkdir()
    (cv.model / "fold_3" / "checkpoint_latest.pth").write_bytes(b"")  # unfinished
    assert _audit(dataset=865) == 2
    err = capsys.readouterr().err
    assert "fold(s) 3, 4 of" in err and "are not trained" in err
    assert "nnUNetv2_train 865 2d 3 -tr nnUNetTrainer --c;" in err  # resumes the unfinished training
    assert "nnUNetv2_train 865 2d 4 -tr nnUNetTrainer;" in err
    assert "fold(s) 2 are trained but lack validation predictions" in err
    assert "fold 2: no validation folder or predictions" in err
    assert "nnUNetv2_train 865 2d 2 -tr nnUNetTrainer --val --npz" in err and "Traceback" not in err
    # the folds that exist can be audited on their own
    assert _audit("-f", "0", "1", dataset=865) == 0
    rows = _read_csv(cv.model / "audit" / "audit.csv")
    assert len(rows) == len(cv.splits[0]["val"]) + len(cv.splits[1]["val"])
    assert "of 6 training cases" in (cv.model / "audit" / "audit.md").read_text()
    # a validation folder with a case missing
    assert len(cv.splits[0]["val"]) == 2
    (cv.model / "fold_0" / "validation" / f"{cv.splits[0]['val'][1]}.nii.gz").unlink()
    assert _audit("-f", "0", "-p", "nnUNetPlans", dataset=865) == 2
    err = capsys.readouterr().err
    assert f"fold 0: 1 missing, e.g. ['{cv.splits[0]['val'][1]}']" in err and "--val --npz" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-f", "x"], "-f takes fold numbers, got 'x'"),
        (["-f", "all"], "fold 'all' trains on every case"),
        (["--top", "0"], "--top must be >= 1"),
        (["--trusted", "auditlesion_0031"], "did you mean 'auditlesion_003'?"),
        (["-f", "7"], "fold 7 is not in the 5-fold split"),
        (["-tr", "NoSuchTrainer"], "no trained model"),
    ],
)
def test_bad_input_exits_2_without_traceback(lesion_cv, capsys, extra, message):
    assert _audit(*extra, dataset=861) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext audit: error: ") and message in err and "Traceback" not in err


def test_argparse_errors_and_unknown_dataset(lesion_cv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["audit", "-d", "861", "-c", "2d", "--score", "iou"])
    assert info.value.code == 2
    assert "invalid choice: 'iou'" in capsys.readouterr().err
    assert main(["audit", "-d", "869", "-c", "2d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext audit: error: ") and "Traceback" not in err
    assert main(["audit", "-d", "861", "-c", "2d", "--score", "loss", "--no-loss"]) == 2
    assert "needs the loss" in capsys.readouterr().err


def test_loss_needs_real_plans_or_is_left_empty(lesion_cv, capsys):
    """Default (loss on) with the fake model folder's plans: refused with the fix, never a traceback."""
    code = main(["audit", "-d", "861", "-c", "2d"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "plans.json" in err and "--no-loss" in err
