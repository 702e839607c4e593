"""``nnunet-ext prune``: audit -> pruned copy (links, dataset.json, manifest) -> nnU-Net planning and preprocessing of
the copy, and an audit with the loss column on it; refusals without a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from audit.fake_cv import emptied, fake_cross_validation, shifted

from nnunet_ext.cli.main import main
from nnunet_ext.synthetic import make_lesion_dataset


@pytest.fixture(scope="module")
def audited(nnunet_dirs):
    """Dataset 866 (10 cases, 2 test cases), two wrong labels, audited (no loss)."""
    folder = make_lesion_dataset(nnunet_dirs.raw, 866, "PruneSrc", num_train=10, num_test=2, shape=(6, 32, 32))
    cv = fake_cross_validation(folder, nnunet_dirs, {"prunesrc_002": emptied, "prunesrc_007": shifted(5)})
    assert main(["audit", "-d", "866", "-c", "2d", "--no-loss"]) == 0
    cv.csv = cv.model / "audit" / "audit.csv"
    return cv


def _prune(*args: str) -> int:
    return main(["prune", *args])


def test_round_trip_links_dataset_json_and_manifest(audited, nnunet_dirs, capsys):
    from nnunet_ext.trusted import load_trusted, save_trusted

    save_trusted(audited.name, ["prunesrc_000", "prunesrc_002"])  # a trusted case the rule below does not remove
    assert _prune("-d", "866", "--audit", str(audited.csv), "--top-fraction", "0.15", "--out-id", "867") == 0
    out = capsys.readouterr().out
    target = nnunet_dirs.raw / "Dataset867_PruneSrcPruned"
    manifest = json.loads((target / "prune_manifest.json").read_text())
    # the audit was written before the cases were trusted: ceil(0.15 x 10) = 2 top-ranked cases go
    assert [r["case"] for r in manifest["removed"]] == ["prunesrc_002", "prunesrc_007"]
    assert [r["rank"] for r in manifest["removed"]] == [1, 2] and all(r["score"] > 0 for r in manifest["removed"])
    assert manifest["rule"] == {"kind": "top_fraction", "fraction": 0.15, "n_ranked": 10, "n_removed": 2}
    assert manifest["source"]["dataset"] == "Dataset866_PruneSrc" and manifest["source"]["n_training"] == 10
    assert manifest["target"]["n_training"] == 8 and len(manifest["kept"]) == 8
    assert manifest["audit"]["dataset"] == "Dataset866_PruneSrc"
    assert manifest["trusted_carried_over"] == ["prunesrc_000"]
    assert load_trusted(target.name) == ["prunesrc_000"]

    dataset_json = json.loads((target / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 8 and dataset_json["name"] == "PruneSrcPruned"
    assert dataset_json["labels"] == {"background": 0, "lesion": 1}
    labels = sorted(p.name for p in (target / "labelsTr").iterdir())
    assert len(labels) == 8 and "prunesrc_002.nii.gz" not in labels and "prunesrc_007.nii.gz" not in labels
    images = sorted(p.name for p in (target / "imagesTr").iterdir())
    assert images == [n.replace(".nii.gz", "_0000.nii.gz") for n in labels]
    for path in [*(target / "imagesTr").iterdir(), *(target / "labelsTr").iterdir()]:
        assert path.is_symlink() and path.resolve().parent.parent == audited.folder.resolve()
    assert sorted(p.name for p in (target / "imagesTs").iterdir()) == sorted(
        p.name for p in (audited.folder / "imagesTs").iterdir()
    )
    assert len(list((target / "labelsTs").iterdir())) == 2
    assert manifest["links"] == {"symlink": 8 + 8 + 4, "copy": 0}
    assert "8 of 10 training cases" in out and "prunesrc_002 (rank 1)" in out
    assert "nnUNetv2_plan_and_preprocess -d 867" in out

    # the id is taken now
    assert _prune("-d", "866", "--audit", str(audited.csv), "--cases", "prunesrc_001", "--out-id", "867") == 2
    err = capsys.readouterr().err
    assert "dataset id 867 is already used by ['Dataset867_PruneSrcPruned']" in err and "Traceback" not in err


@pytest.mark.slow
def test_pruned_dataset_preprocesses_and_audits_with_the_loss(audited, nnunet_dirs, capsys):
    """nnU-Net's planning and preprocessing run on the copy unchanged; with its real plans the audit's loss column is
    computed (stock Dice + CE), on probabilities where a .npz exists."""
    from nnunet_ext.benchmark.datasets import plan_and_preprocess

    assert _prune("-d", "866", "--audit", str(audited.csv), "--cases", "prunesrc_002", "--out-id", "868") == 0
    capsys.readouterr()
    pre = plan_and_preprocess(868, ("2d",), verify_integrity=True)
    cases = sorted(p.name[: -len(".pkl")] for p in (pre / "nnUNetPlans_2d").glob("*.pkl"))
    assert len(cases) == 9 and "prunesrc_002" not in cases
    assert json.loads((pre / "dataset.json").read_text())["numTraining"] == 9

    target = nnunet_dirs.raw / "Dataset868_PruneSrcPruned"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    cv = fake_cross_validation(target, nnunet_dirs, {}, plans_json=plans)
    fold0 = cv.model / "fold_0" / "validation"
    case = cv.splits[0]["val"][0]
    import SimpleITK as sitk

    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(fold0 / f"{case}.nii.gz")))
    np.savez_compressed(fold0 / f"{case}.npz", probabilities=np.stack([seg == 0, seg == 1]).astype(np.float32))
    assert main(["audit", "-d", "868", "-c", "2d", "--score", "loss"]) == 0
    rows = {r["case"]: r for r in _csv(cv.model / "audit" / "audit.csv")}
    assert rows[case]["loss_on"] == "probabilities"
    assert {r["loss_on"] for c, r in rows.items() if c != case} == {"one_hot"}
    assert all(np.isfinite(float(r["loss"])) for r in rows.values())
    assert "DC_and_CE_loss" in (cv.model / "audit" / "audit.md").read_text()


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_explicit_cases_copies_where_links_fail_and_dry_run(audited, nnunet_dirs, monkeypatch, capsys):
    assert (
        _prune(
            "-d",
            "866",
            "--audit",
            str(audited.csv),
            "--cases",
            "prunesrc_005",
            "--out-id",
            "869",
            "--name",
            "Dry",
            "--dry-run",
        )
        == 0
    )
    assert "would write" in capsys.readouterr().out and not (nnunet_dirs.raw / "Dataset869_Dry").exists()

    def no_symlinks(*args, **kwargs):
        raise OSError("symbolic links not supported")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    assert (
        _prune(
            "-d",
            "866",
            "--audit",
            str(audited.csv),
            "--cases",
            "prunesrc_005",
            "prunesrc_005",
            "--out-id",
            "869",
            "--name",
            "Copied",
        )
        == 0
    )
    target = nnunet_dirs.raw / "Dataset869_Copied"
    manifest = json.loads((target / "prune_manifest.json").read_text())
    assert manifest["rule"] == {"kind": "cases", "n_removed": 1}
    assert manifest["removed"][0]["case"] == "prunesrc_005" and manifest["removed"][0]["rank"] > 2
    assert manifest["links"]["symlink"] == 0 and manifest["links"]["copy"] == 9 + 9 + 4
    assert not any(p.is_symlink() for p in (target / "labelsTr").iterdir())
    shutil.rmtree(target)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-fraction", "0"], "--top-fraction must be in (0, 1), got 0.0"),
        (["--top-fraction", "1.5"], "--top-fraction must be in (0, 1)"),
        (["--cases", "prunesrc_0005"], "did you mean 'prunesrc_005'?"),
        (["--cases", "prunesrc_001", "--out-id", "0"], "--out-id must be in 1..999"),
        (["--cases", "prunesrc_001", "--name", "bad name"], "is not a dataset name"),
    ],
)
def test_bad_input_exits_2_without_traceback(audited, capsys, args, message):
    argv = ["-d", "866", "--audit", str(audited.csv), *args]
    if "--out-id" not in args:
        argv += ["--out-id", "870"]
    assert _prune(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext prune: error: ") and message in err and "Traceback" not in err


def test_wrong_or_missing_audit_files(audited, nnunet_dirs, tmp_path, capsys):
    assert _prune("-d", "866", "--audit", str(tmp_path / "none.csv"), "--top-fraction", "0.1", "--out-id", "870") == 2
    assert "audit file" in capsys.readouterr().err
    (tmp_path / "other.csv").write_text("case,Dice\nx,1\n")
    assert _prune("-d", "866", "--audit", str(tmp_path / "other.csv"), "--top-fraction", "0.1", "--out-id", "870") == 2
    assert "is not an audit.csv (missing columns ['rank', 'score'])" in capsys.readouterr().err
    other = make_lesion_dataset(nnunet_dirs.raw, 871, "PruneOther", num_train=3, num_test=0, shape=(2, 8, 8))
    assert _prune("-d", "871", "--audit", str(audited.csv), "--top-fraction", "0.1", "--out-id", "870") == 2
    err = capsys.readouterr().err
    assert "is an audit of Dataset866_PruneSrc, not of Dataset871_PruneOther" in err and "Traceback" not in err
    shutil.rmtree(other)
    with pytest.raises(SystemExit) as info:  # argparse: exactly one rule
        main(["prune", "-d", "866", "--audit", str(audited.csv), "--out-id", "870"])
    assert info.value.code == 2
