"""``nnunet-ext benchmark``: flags and spec file merge, and one tiny real benchmark run that is then resumed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def test_nnunet_flag_spellings_and_deprecated_alias():
    assert cli.spec_from_args(parse(["-o", "o", "-d", "5", "-tr", "A", "--disable_tta"])).disable_tta is True
    assert cli.spec_from_args(parse(["-o", "o", "-d", "5", "-tr", "A", "--disable-tta"])).disable_tta is True
    assert cli.spec_from_args(parse(["-o", "o", "-d", "5", "-tr", "A"])).disable_tta is False
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    shown = parser.format_help()
    assert "--disable_tta" in shown and "--disable-tta" not in shown and "-device" in shown


def test_seed_and_checkpoint_flags(tmp_path):
    base = ["-o", "o", "-d", "5", "-tr", "A"]
    assert cli.spec_from_args(parse([*base, "--seeds", "0", "1"])).seeds == (0, 1)
    one = cli.spec_from_args(parse([*base, "--seed", "2"]))
    assert (one.seed, one.seeds, one.multi_seed) == (2, (2,), False)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"trainers": ["A"], "datasets": [5], "seeds": [0, 1]}))
    assert cli.spec_from_args(parse(["--spec", str(spec_file), "-o", "o", "--seed", "3"])).seeds == (3,)
    assert cli.spec_from_args(parse(["--spec", str(spec_file), "-o", "o"])).seeds == (0, 1)
    with pytest.raises(ValueError, match="--seed 1 and --seeds"):
        cli.spec_from_args(parse([*base, "--seed", "1", "--seeds", "0", "1"]))
    assert cli.spec_from_args(parse(base)).checkpoint == "final"
    assert cli.spec_from_args(parse([*base, "--checkpoint", "best"])).checkpoint == "best"
    assert cli.spec_from_args(parse([*base, "-chk", "checkpoint_best.pth"])).checkpoint == "best"


@pytest.fixture(scope="module")
def stub_dataset(nnunet_dirs):
    """Dataset 706: plans and empty test folders, enough for the checks that run before training."""
    name = "Dataset706_StubBench"
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    for sub in ("imagesTs", "labelsTs"):
        (nnunet_dirs.raw / name / sub).mkdir(parents=True, exist_ok=True)
    (nnunet_dirs.raw / name / "dataset.json").write_text(json.dumps(dataset_json))
    (nnunet_dirs.preprocessed / name).mkdir(exist_ok=True)
    (nnunet_dirs.preprocessed / name / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    (nnunet_dirs.preprocessed / name / "dataset.json").write_text(json.dumps(dataset_json))
    return name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-d", "998", "-tr", "NRDiceTrainer"], "dataset '998' not found in nnUNet_raw="),
        (["-d", "706", "-tr", "NRDiceTrianer"], "trainer 'NRDiceTrianer' not found in nnU-Net or nnunet_ext; use "),
        (["-d", "706", "-tr", "NRDiceTrainer", "--seeds", "1", "1"], "seeds lists [1] more than once; give each"),
        (["-d", "706", "-tr", "NRDiceTrainer", "--cell", "2"], "--cell 2 is out of range: the spec has 2 cell(s), 0-1"),
        (["-d", "706", "-tr", "NRDiceTrainer", "--emit", "pbs", "j"], "--emit 'pbs' is not supported; use --emit"),
        (["-d", "706", "-c", "3d", "-tr", "NRDiceTrainer"], "configuration '3d' not in "),
    ],
)
def test_user_errors_are_one_line_and_exit_2(stub_dataset, tmp_path, capsys, extra, message):
    assert main(["benchmark", "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nnunet-ext benchmark: error: {message}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_slurm_tasks_and_report_job_match_the_in_process_run(tiny_bench, tmp_path, capsys):
    """Every array task run locally (SLURM_ARRAY_TASK_ID set), then the report job: the same results.csv and
    report.md as the in-process run of the same spec; seeds get their own models; checkpoint best reuses them."""
    import os
    import subprocess

    import torch

    spec = "benchmark -d 701 -tr nnUNetTrainer --seeds 0 1 --epochs 2 --iterations-per-epoch 2"
    spec = [*spec.split(), "--val-iterations-per-epoch", "1", "--skip-final-validation", "-device", "cpu"]
    spec += ["--disable_tta", "--no-progress"]
    in_process, cluster, jobs = tmp_path / "in_process", tmp_path / "cluster", tmp_path / "jobs"
    assert main([*spec, "-o", str(in_process)]) == 0
    assert main([*spec, "-o", str(cluster), "--emit", "slurm", str(jobs)]) == 0
    cells_script = jobs / "benchmark_cells.sbatch"
    assert "#SBATCH --array=0-1\n" in cells_script.read_text()  # 1 trainer x 2 seeds x 1 fold
    assert not (cluster / "runs").exists()  # emitting runs nothing
    for index in (0, 1):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index)}
        done = subprocess.run(["bash", str(cells_script)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"cell {index}: " in done.stdout and done.stdout.rstrip().endswith(" done")
    report = subprocess.run(["bash", str(jobs / "benchmark_report.sbatch")], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    for name in ("results.csv", "report.md"):
        assert (cluster / name).read_text() == (in_process / name).read_text(), name
    md = (cluster / "report.md").read_text()
    assert "; seeds 0, 1; device cpu." in md and "Over seeds 0, 1 (all cases)" in md
    assert (cluster / "results.csv").read_text().startswith("dataset,configuration,trainer,fold,seed,case,")

    model = Path(DATASET) / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0"
    folds = [in_process / "nnUNet_results" / f"seed_{s}" / model for s in (0, 1)]
    assert [json.loads((f / "nnunet_ext_training.json").read_text())["seed"] for f in folds] == [0, 1]
    weights = [torch.load(f / "checkpoint_final.pth", weights_only=False)["network_weights"] for f in folds]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the seeds trained apart
    capsys.readouterr()
    assert main([*spec, "-o", str(cluster), "--cell", "1"]) == 0  # a finished cell is skipped
    assert capsys.readouterr().out.strip().endswith("seed_1 skipped (finished)")

    mtime = (folds[0] / "checkpoint_final.pth").stat().st_mtime_ns
    assert main([*spec, "-o", str(in_process), "--checkpoint", "best"]) == 0
    assert capsys.readouterr().out.count("done (model reused)") == 2
    assert (folds[0] / "checkpoint_final.pth").stat().st_mtime_ns == mtime
    best = in_process / "runs" / DATASET / "2d" / "nnUNetTrainer" / "checkpoint_best" / "seed_0" / "fold_0"
    assert len(list((best / "predictions").glob("*.nii.gz"))) == 2
    assert json.loads((best / "run.json").read_text())["checkpoint"] == "best"
    assert "Predicted from `checkpoint_best.pth`" in (in_process / "report.md").read_text()
