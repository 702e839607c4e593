"""``nnunet-ext label-update`` on a tiny dataset with a 2-fold ensemble, then retraining on the new labels."""

from __future__ import annotations

import json

import pytest

from nnunet_ext.cli.main import main

DATASET = "Dataset701_TinyBench"
TARGET = "Dataset702_TinyBenchLabelUpdate"


@pytest.fixture(scope="module")
def tiny_bench(nnunet_dirs):
    """Dataset 701 (shared with the other CLI tests; built once)."""
    from nnunet_ext.benchmark.datasets import plan_and_preprocess, shrink_plans
    from nnunet_ext.synthetic import make_lesion_dataset

    if not (nnunet_dirs.preprocessed / DATASET / "nnUNetPlans.json").is_file():
        make_lesion_dataset(nnunet_dirs.raw, 701, "TinyBench", num_train=5, num_test=2, shape=(6, 48, 48))
        plan_and_preprocess(701, ("2d",), verify_integrity=False)
        shrink_plans(701, "2d", batch_size=2, max_features=16)
    return nnunet_dirs


def test_dry_run_names_the_new_dataset(tiny_bench, capsys):
    assert main(["label-update", "-d", "701", "--out-id", "702", "-o", "unused", "--folds", "0", "1", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"new dataset: {tiny_bench.raw / TARGET}" in printed
    assert "folds [0, 1]" in printed


def test_folds_take_nnunet_spelling(tiny_bench, capsys):
    assert main(["label-update", "-d", "701", "--out-id", "702", "-o", "unused", "-f", "0", "2", "--dry-run"]) == 0
    assert "folds [0, 2]" in capsys.readouterr().out  # --folds (above) stays accepted, hidden from -h


def test_taken_id_is_refused(tiny_bench, tmp_path, capsys):
    argv = ["label-update", "-d", "701", "--out-id", "701", "--out-name", "TinyBench", "-o", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext label-update: error: ") and "is the source dataset itself" in err


def test_missing_source_is_refused(tiny_bench, tmp_path, capsys):
    assert main(["label-update", "-d", "709", "--out-id", "710", "-o", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet-ext label-update: error: dataset '709' not found in ") and "check -d" in err


@pytest.mark.slow
def test_two_fold_label_update_and_retrain(tiny_bench, tmp_path, capsys):
    out = tmp_path / "lu"
    argv = "label-update -d 701 --out-id 702 --folds 0 1 --epochs 1 --iterations-per-epoch 2"
    argv = [*argv.split(), "--val-iterations-per-epoch", "1", "--skip-final-validation", "--disable-tta"]
    argv += ["-device", "cpu", "--retrain", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mean Dice new vs old labels: 1:" in printed
    target = tiny_bench.raw / TARGET
    source = tiny_bench.raw / DATASET
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        assert sorted(p.name for p in (target / sub).iterdir()) == sorted(p.name for p in (source / sub).iterdir())
    assert (target / "imagesTr").iterdir().__next__().stat().st_nlink >= 2  # hard links, not copies
    manifest = json.loads((target / "label_update_manifest.json").read_text())
    assert manifest["folds"] == [0, 1] and manifest["trainer"] == "DiceTrainer"
    assert [m["fold"] for m in manifest["ensemble_members"]] == [0, 1]
    dice = manifest["dice_new_vs_old"]
    assert set(dice["per_case"]) == {p.name[: -len(".nii.gz")] for p in (source / "labelsTr").iterdir()}
    assert 0.0 <= dice["mean"]["1"] <= 1.0
    assert json.loads((target / "dataset.json").read_text())["name"] == "TinyBenchLabelUpdate"
    for fold in (0, 1):
        fold_dir = out / "nnUNet_results" / DATASET / "DiceTrainer__nnUNetPlans__2d" / f"fold_{fold}"
        assert (fold_dir / "checkpoint_final.pth").is_file()
    # retraining: plans transferred from the source, preprocessed, one-trainer benchmark against labelsTs
    plans = json.loads((tiny_bench.preprocessed / TARGET / "nnUNetPlans.json").read_text())
    source_plans = json.loads((tiny_bench.preprocessed / DATASET / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d"] == source_plans["configurations"]["2d"]
    assert plans["dataset_name"] == TARGET
    report = (out / "retrain" / "report.md").read_text()
    assert "DiceTrainer (baseline)" in report
    assert manifest["retrain"] == {"trainer": "DiceTrainer", "folds": [0], "benchmark": str(out / "retrain")}

    assert main(argv) == 0  # resumed: dataset reused, retraining run skipped
    assert "mean Dice new vs old labels" in capsys.readouterr().out
    assert (
        json.loads((out / "retrain" / "manifest.json").read_text())["runs"][f"{TARGET}/2d/DiceTrainer/fold_0"]["status"]
        == "skipped (finished)"
    )
