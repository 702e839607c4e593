"""``nnunet-ext benchmark``: flags and spec file merge, and one tiny real benchmark run that is then resumed."""

from __future__ import annotations

import argparse
import json

import pytest

from nnunet_ext.cli import benchmark as cli
from nnunet_ext.cli.main import main

DATASET = "Dataset701_TinyBench"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_override_the_spec_file(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"trainers": ["DiceTrainer"], "datasets": [5], "num_epochs": 7, "seed": 3}))
    args = parse(["--spec", str(spec_file), "-o", "out", "--epochs", "2", "-tr", "NRDiceTrainer", "--disable-tta"])
    spec = cli.spec_from_args(args)
    assert spec.trainers == ("nnUNetTrainer", "NRDiceTrainer")
    assert (spec.num_epochs, spec.seed, spec.disable_tta, spec.skip_final_validation) == (2, 3, True, False)


def test_reference_folders_per_dataset():
    args = parse(["-o", "o", "-d", "5", "6", "-tr", "A", "--ref", "5=/c5", "--ref", "6=/c6", "--test-images", "6=/t"])
    spec = cli.spec_from_args(args)
    assert spec.references == {"5": "/c5", "6": "/c6"} and spec.test_images == {"6": "/t"}
    with pytest.raises(ValueError, match="name the dataset"):
        cli.spec_from_args(parse(["-o", "o", "-d", "5", "6", "-tr", "A", "--ref", "/c"]))
    one = cli.spec_from_args(parse(["-o", "o", "-d", "5", "-tr", "A", "--ref", "/c"]))
    assert one.references == {"5": "/c"}


def test_trainer_override_flag():
    args = parse(["-o", "o", "-d", "5", "-tr", "A", "--trainer-override", 'A={"mean_teacher": {"ema_late": 0.99}}'])
    assert cli.spec_from_args(args).trainer_overrides == {"A": {"mean_teacher": {"ema_late": 0.99}}}
    with pytest.raises(ValueError, match="not valid JSON"):
        cli.spec_from_args(parse(["-o", "o", "-d", "5", "-tr", "A", "--trainer-override", "A={bad"]))


def test_unknown_spec_key_reaches_the_user(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"trainers": ["A"], "datasets": [5], "iterations": 2}))
    with pytest.raises(ValueError, match="unknown benchmark spec key 'iterations'; did you mean"):
        cli.spec_from_args(parse(["--spec", str(spec_file), "-o", "o"]))


@pytest.fixture(scope="module")
def tiny_bench(nnunet_dirs):
    """Dataset 701: 5 training + 2 test volumes (6 x 48 x 48), 2d planned, narrow network (shared by CLI tests)."""
    from nnunet_ext.benchmark.datasets import plan_and_preprocess, shrink_plans
    from nnunet_ext.synthetic import make_lesion_dataset

    if not (nnunet_dirs.preprocessed / DATASET / "nnUNetPlans.json").is_file():
        make_lesion_dataset(nnunet_dirs.raw, 701, "TinyBench", num_train=5, num_test=2, shape=(6, 48, 48))
        plan_and_preprocess(701, ("2d",), verify_integrity=False)
        shrink_plans(701, "2d", batch_size=2, max_features=16)
    return nnunet_dirs


@pytest.mark.slow
def test_tiny_benchmark_end_to_end_then_resumed(tiny_bench, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = "benchmark -d 701 -tr NRDiceTrainer --epochs 1 --iterations-per-epoch 2 --val-iterations-per-epoch 1"
    argv = [*argv.split(), "-device", "cpu", "--disable-tta", "--no-progress", "-o", str(out)]
    argv += ["--trainer-override", 'NRDiceTrainer={"loss": {"gamma": 2.0}}']
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(" done") == 2
    assert "NRDiceTrainer" in printed and "p Dice (t / W)" in printed
    for name in ("results.csv", "report.md", "manifest.json"):
        assert (out / name).is_file()
    assert len(list((out / "boxplots").glob("*.png"))) == 1
    header, *lines = (out / "results.csv").read_text().splitlines()
    assert header.startswith("dataset,configuration,trainer,fold,case,label_or_region,size_group,volume_ref_cc,Dice")
    assert len(lines) == 4  # 2 trainers x 2 test cases x 1 label
    fold_dir = out / "nnUNet_results" / DATASET / "NRDiceTrainer__nnUNetPlans__2d" / "fold_0"
    record = json.loads((fold_dir / "nnunet_ext_training.json").read_text())
    assert record["effective"] == {"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1}
    assert (fold_dir / "validation" / "summary.json").is_file()  # nnU-Net's final validation ran
    model_plans = json.loads((fold_dir.parent / "plans.json").read_text())  # the override, recorded with the model
    assert model_plans["configurations"]["2d"]["nnunet_ext"] == {"loss": {"gamma": 2.0}}
    assert record["ext_overrides"] == {"loss": {"gamma": 2.0}}
    stock_plans = out / "nnUNet_results" / DATASET / "nnUNetTrainer__nnUNetPlans__2d" / "plans.json"
    assert "nnunet_ext" not in json.loads(stock_plans.read_text())["configurations"]["2d"]
    run_dir = out / "runs" / DATASET / "2d" / "NRDiceTrainer" / "fold_0"
    assert len(list((run_dir / "predictions").glob("*.nii.gz"))) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and set(manifest["runs"]) == {
        f"{DATASET}/2d/nnUNetTrainer/fold_0",
        f"{DATASET}/2d/NRDiceTrainer/fold_0",
    }

    checkpoint_mtime = (fold_dir / "checkpoint_final.pth").stat().st_mtime_ns
    summary = (run_dir / "summary.json").read_text()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped (finished)") == 2
    assert (fold_dir / "checkpoint_final.pth").stat().st_mtime_ns == checkpoint_mtime
    assert (run_dir / "summary.json").read_text() == summary
