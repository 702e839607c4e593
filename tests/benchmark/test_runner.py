"""Runner without training: resumption from finished-run files, model reuse checks, paths, seeding."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from nnunet_ext.benchmark import runner
from nnunet_ext.benchmark.spec import BenchmarkSpec, TrainingBudget
from nnunet_ext.evaluation.metrics import METRIC_KEYS

DATASET = "Dataset703_FakeBench"
CASES = ("fake_000", "fake_001", "fake_002")


@pytest.fixture(scope="module")
def fake_dataset(nnunet_dirs):
    """Raw and preprocessed folders with just enough for the runner's checks (no images are read)."""
    raw = nnunet_dirs.raw / DATASET
    labels = {"background": 0, "lesion": 1}
    dataset_json = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}
    for sub in ("imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (raw / "imagesTs" / f"{case}_0000.nii.gz").write_bytes(b"")
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    pre = nnunet_dirs.preprocessed / DATASET
    pre.mkdir(exist_ok=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    (pre / "dataset.json").write_text(json.dumps(dataset_json))
    return raw


def summary_for(trainer_shift: float) -> dict:
    per_case = []
    for i, case in enumerate(CASES):
        metrics = {m: 0.0 for m in METRIC_KEYS}
        metrics.update(Dice=0.5 + 0.1 * i + trainer_shift, HD95_mm=3.0 - trainer_shift, RVE=0.2)
        metrics["volume_ref_mm3"] = 1000.0 * (10 + 60 * i)
        per_case.append({"case": case, "metrics": {"1": metrics}, "size_group": {"1": "AB"[min(i, 1)]}})
    return {"metric_per_case": per_case}


def fake_finished(paths: runner.RunPaths, spec: BenchmarkSpec, shift: float) -> None:
    paths.fold_dir.mkdir(parents=True, exist_ok=True)
    (paths.fold_dir / runner.CHECKPOINT).write_bytes(b"")
    record = runner._training_record(
        paths.key.trainer, paths.dataset_name, paths.key.configuration, paths.key.fold, spec.plans, spec.budget, 0
    )
    (paths.fold_dir / runner.TRAINING_RECORD).write_text(json.dumps(record))
    paths.predictions.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (paths.predictions / f"{case}.nii.gz").write_bytes(b"")
    (paths.run_dir / "summary.json").write_text(json.dumps(summary_for(shift)))
    files = [f"{c}.nii.gz" for c in CASES]
    run_record = {"prediction_files": files, "wall_s": {"train_s": 1.0}, "finished": "x", "model_trained_now": True}
    run_record.update(test_images=str(paths.test_images), references=str(paths.references))
    run_record["prediction"] = {"disable_tta": spec.disable_tta, "tile_step_size": spec.tile_step_size}
    (paths.run_dir / runner.RUN_RECORD).write_text(json.dumps(run_record))


def test_finished_runs_are_skipped_and_reported(fake_dataset, tmp_path):
    spec = BenchmarkSpec(trainers=("NRDiceTrainer",), datasets=("703",), num_epochs=1, metrics=("Dice", "HD95_mm"))
    all_paths = runner.run_paths(spec, tmp_path)
    assert [p.label for p in all_paths] == [f"{DATASET}/2d/nnUNetTrainer/fold_0", f"{DATASET}/2d/NRDiceTrainer/fold_0"]
    assert all_paths[0].model_dir == tmp_path / "nnUNet_results" / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    assert all_paths[0].references == fake_dataset / "labelsTs"
    for paths, shift in zip(all_paths, (0.0, 0.05)):
        assert not runner.run_is_finished(paths)
        fake_finished(paths, spec, shift)
        assert runner.run_is_finished(paths)

    outcome = runner.run_benchmark(spec, tmp_path, progress=False)
    assert set(outcome.statuses.values()) == {"skipped (finished)"}
    assert len(outcome.rows) == 6
    manifest = json.loads(outcome.manifest.read_text())
    assert manifest["seed"] == 0 and manifest["spec"]["num_epochs"] == 1
    assert set(manifest["runs"]) == {p.label for p in all_paths}
    assert {"nnunetv2", "torch", "nnunet_ext"} <= set(manifest["versions"])
    md = outcome.report.report_md.read_text()
    assert "| all | NRDiceTrainer | Dice | 3 | 0 | 0 | 0.0500 |" in md

    (all_paths[1].predictions / f"{CASES[0]}.nii.gz").unlink()  # a missing prediction un-finishes the run
    assert not runner.run_is_finished(all_paths[1])
    other_refs = BenchmarkSpec(**{**spec.__dict__, "references": {"703": str(tmp_path)}})
    assert not runner.run_is_finished(runner.run_paths(other_refs, tmp_path)[0])  # other references: evaluate again
    no_tta = BenchmarkSpec(**{**spec.__dict__, "disable_tta": True})
    assert not runner.run_is_finished(runner.run_paths(no_tta, tmp_path)[0])  # other prediction settings


def test_reused_model_must_match_budget_and_seed(fake_dataset, tmp_path):
    fold_dir = tmp_path / DATASET / "DiceTrainer__nnUNetPlans__2d" / "fold_0"
    fold_dir.mkdir(parents=True)
    (fold_dir / runner.CHECKPOINT).write_bytes(b"")
    kwargs = {"results_dir": tmp_path, "budget": TrainingBudget(num_epochs=2), "seed": 1}
    foreign = runner.train_model("DiceTrainer", "703", "2d", 0, **kwargs)  # no record: trained elsewhere, reused
    assert (foreign.trained, foreign.record) == (False, None)
    with pytest.raises(ValueError, match="not trained by the benchmark"):
        runner.remove_model_fold(fold_dir)

    record_budget = TrainingBudget(num_epochs=3)
    record = runner._training_record("DiceTrainer", "703", "2d", 0, "nnUNetPlans", record_budget, 1)
    (fold_dir / runner.TRAINING_RECORD).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"trained with other settings .*'budget'"):
        runner.train_model("DiceTrainer", "703", "2d", 0, **kwargs)
    with pytest.raises(ValueError, match=r"trained with other settings .*'ext_overrides'"):
        overrides = {"loss": {"gamma": 2.0}}
        runner.train_model(
            "DiceTrainer", "703", "2d", 0, **{**kwargs, "budget": record_budget, "ext_overrides": overrides}
        )
    reused = runner.train_model("DiceTrainer", "703", "2d", 0, **{**kwargs, "budget": TrainingBudget(num_epochs=3)})
    assert reused.trained is False and reused.record["budget"]["num_epochs"] == 3
    runner.remove_model_fold(fold_dir)
    assert not fold_dir.exists()


def test_check_spec_fails_early(fake_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"trainer 'NRDiceTrianer' not found .*did you mean 'NRDiceTrainer'\?"):
        runner.check_spec(BenchmarkSpec(trainers=("NRDiceTrianer",), datasets=("703",)), tmp_path)
    with pytest.raises(ValueError, match=r"configuration '3d_fullres' not in .*Available: \['2d'\]"):
        runner.check_spec(
            BenchmarkSpec(trainers=("nnUNetTrainer",), datasets=("703",), configurations=("3d_fullres",)), tmp_path
        )
    spec = BenchmarkSpec(trainers=("nnUNetTrainer",), datasets=("703",), references={"703": str(tmp_path / "nope")})
    with pytest.raises(FileNotFoundError, match="references folder .*nope.* set it with --ref or"):
        runner.check_spec(spec, tmp_path)


def test_overrides_only_for_plugin_trainers(fake_dataset, tmp_path):
    spec = BenchmarkSpec(trainers=("nnUNetTrainer",), datasets=("703",), trainer_overrides={"nnUNetTrainer": {"a": 1}})
    with pytest.raises(ValueError, match="nnUNetTrainer is not an nnunet_ext trainer"):
        runner.check_spec(spec, tmp_path)
    with pytest.raises(ValueError, match="nnUNetTrainer is not an nnunet_ext trainer"):
        runner.build_trainer("nnUNetTrainer", "703", "2d", 0, device="cpu", ext_overrides={"num_epochs": 3})


def test_merge_ext_block_merges_addon_entries():
    block = {"num_epochs": 5, "mean_teacher": {"ema_late": 0.999, "gate_window": 50}}
    merged = runner.merge_ext_block(block, {"mean_teacher": {"ema_late": 0.99}, "loss": {"gamma": 2}})
    assert merged == {"num_epochs": 5, "mean_teacher": {"ema_late": 0.99, "gate_window": 50}, "loss": {"gamma": 2}}
    assert block["mean_teacher"]["ema_late"] == 0.999  # input untouched


def test_seed_everything_repeats_draws():
    runner.seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    runner.seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_nnunet_results_is_restored(tmp_path):
    before = os.environ.get("nnUNet_results")
    with runner.nnunet_results(tmp_path):
        assert os.environ["nnUNet_results"] == str(tmp_path)
    assert os.environ.get("nnUNet_results") == before


def test_several_seeds_live_apart_and_are_summarised_over_seeds(fake_dataset, tmp_path):
    spec = BenchmarkSpec(trainers=("NRDiceTrainer",), datasets=("703",), seeds=(0, 1), metrics=("Dice",))
    all_paths = runner.run_paths(spec, tmp_path)
    assert [p.label for p in all_paths] == [
        f"{DATASET}/2d/nnUNetTrainer/fold_0/seed_0",
        f"{DATASET}/2d/NRDiceTrainer/fold_0/seed_0",
        f"{DATASET}/2d/nnUNetTrainer/fold_0/seed_1",
        f"{DATASET}/2d/NRDiceTrainer/fold_0/seed_1",
    ]
    p = all_paths[3]
    assert p.model_dir == tmp_path / "nnUNet_results" / "seed_1" / DATASET / "NRDiceTrainer__nnUNetPlans__2d"
    assert p.run_dir == tmp_path / "runs" / DATASET / "2d" / "NRDiceTrainer" / "seed_1" / "fold_0"
    assert (p.key.seed, p.key.checkpoint) == (1, "final")
    # per-seed mean Dice (cases 0.5, 0.6, 0.7 + shift): baseline 0.60 and 0.62, NRDice 0.65 and 0.69
    for paths, shift in zip(all_paths, (0.0, 0.05, 0.02, 0.09)):
        fake_finished(paths, spec, shift)
    outcome = runner.run_benchmark(spec, tmp_path, progress=False)
    assert set(outcome.statuses.values()) == {"skipped (finished)"}
    assert sorted({r["seed"] for r in outcome.rows}) == [0, 1] and len(outcome.rows) == 12
    md = outcome.report.report_md.read_text()
    assert "; seeds 0, 1; device" in md
    assert "| nnUNetTrainer (baseline) | 2 | 0.6100 ± 0.0141 |" in md  # mean and ddof=1 SD of 0.60, 0.62
    assert "| NRDiceTrainer | 2 | 0.6700 ± 0.0283 |" in md
    assert "| all | NRDiceTrainer | Dice | 3 | 0 | 0 | 0.0600 |" in md  # per case: (0.05 + 0.09 - 0.02) / 2
    assert outcome.report.results_csv.read_text().startswith("dataset,configuration,trainer,fold,seed,case")
    manifest = json.loads(outcome.manifest.read_text())
    assert manifest["seeds"] == [0, 1] and manifest["spec"]["seeds"] == [0, 1]


def test_best_checkpoint_cells_share_the_trained_model(fake_dataset, tmp_path):
    final = BenchmarkSpec(trainers=("nnUNetTrainer",), datasets=("703",))
    best = BenchmarkSpec(trainers=("nnUNetTrainer",), datasets=("703",), checkpoint="best")
    (f,) = runner.run_paths(final, tmp_path)
    (b,) = runner.run_paths(best, tmp_path)
    assert b.model_dir == f.model_dir and b.checkpoint_file == f.fold_dir / "checkpoint_best.pth"
    assert b.run_dir == tmp_path / "runs" / DATASET / "2d" / "nnUNetTrainer" / "checkpoint_best" / "fold_0"
    assert b.label == f"{DATASET}/2d/nnUNetTrainer/fold_0/checkpoint_best"
    fake_finished(f, final, 0.0)
    fake_finished(b, best, 0.0)  # a run.json without "checkpoint" reads as final: not this cell's
    assert runner.run_is_finished(f) and not runner.run_is_finished(b)
    record = json.loads((b.run_dir / runner.RUN_RECORD).read_text())
    (b.run_dir / runner.RUN_RECORD).write_text(json.dumps({**record, "checkpoint": "best"}))
    assert not runner.run_is_finished(b)  # checkpoint_best.pth missing
    (b.fold_dir / "checkpoint_best.pth").write_bytes(b"")
    assert runner.run_is_finished(b) and runner.run_is_finished(f)


def test_a_retrained_model_unfinishes_its_cells(fake_dataset, tmp_path):
    spec = BenchmarkSpec(trainers=("nnUNetTrainer",), datasets=("703",))
    (p,) = runner.run_paths(spec, tmp_path)
    fake_finished(p, spec, 0.0)
    assert runner.run_is_finished(p)
    record = json.loads((p.fold_dir / runner.TRAINING_RECORD).read_text())
    (p.fold_dir / runner.TRAINING_RECORD).write_text(json.dumps({**record, "finished": "later"}))
    assert not runner.run_is_finished(p)  # e.g. retrained by a --checkpoint best --overwrite run


def test_report_only_names_missing_cells_and_run_cell_checks_the_index(fake_dataset, tmp_path):
    spec = BenchmarkSpec(trainers=("NRDiceTrainer",), datasets=("703",), metrics=("Dice",))
    with pytest.raises(FileNotFoundError, match=r"no finished cell of this spec .*\(0 of 2\); run the cells first"):
        runner.report_only(spec, tmp_path)
    base, other = runner.run_paths(spec, tmp_path)
    fake_finished(base, spec, 0.0)
    outcome = runner.report_only(spec, tmp_path)
    assert outcome.missing == [other.label] and outcome.statuses == {base.label: "finished", other.label: "missing"}
    md = outcome.report.report_md.read_text()
    assert f"- **Incomplete**: 1 of 2 cells not finished and left out: `{other.label}`." in md
    manifest = json.loads(outcome.manifest.read_text())
    assert manifest["missing"] == [other.label] and manifest["runs"][base.label]["status"] == "done"
    with pytest.raises(ValueError, match=r"--cell 2 is out of range: the spec has 2 cell\(s\), 0-1; list them"):
        runner.run_cell(spec, tmp_path, 2)
    with pytest.raises(ValueError, match="out of range"):
        runner.run_cell(spec, tmp_path, -1)
    assert runner.run_cell(spec, tmp_path, 0).status == "skipped (finished)"  # the in-process code path
