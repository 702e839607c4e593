"""SLURM job-array emission without SLURM: scripts parse (``bash -n``), one array task per cell, frozen spec,
``submit.sh`` chains the report job on the array with ``afterok`` (a stand-in ``sbatch`` records the calls)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from nnunet_ext.benchmark import runner, slurm
from nnunet_ext.benchmark.spec import BenchmarkSpec

DATASET = "Dataset705_FakeSlurm"


@pytest.fixture(scope="module")
def fake_dataset(nnunet_dirs):
    """Raw and preprocessed folders with just enough for check_spec (nothing is trained)."""
    raw = nnunet_dirs.raw / DATASET
    for sub in ("imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    pre = nnunet_dirs.preprocessed / DATASET
    pre.mkdir(exist_ok=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    (pre / "dataset.json").write_text(json.dumps(dataset_json))
    return raw


def sbatch_lines(script) -> list[str]:
    return [line[len("#SBATCH ") :] for line in script.read_text().splitlines() if line.startswith("#SBATCH ")]


def test_one_array_task_per_cell_and_scripts_parse(fake_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = BenchmarkSpec(trainers=("NRDiceTrainer",), datasets=("705",), seeds=(0, 1, 2), references={"705": "refs"})
    (tmp_path / "refs").mkdir()
    options = slurm.SlurmOptions(partition="gpu", time="1-12:00:00", cpus_per_task=8)
    scripts = slurm.emit_slurm(spec, "out", "jobs", options)
    n = len(spec.runs())
    assert n == scripts.num_cells == 6
    for script in (scripts.cells_script, scripts.report_script, scripts.submit_script):
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert os.access(script, os.X_OK)
    cell_lines = sbatch_lines(scripts.cells_script)
    (array,) = [line for line in cell_lines if line.startswith("--array=")]
    first, last = map(int, re.fullmatch(r"--array=(\d+)-(\d+)", array).groups())
    assert (first, last + 1) == (0, n)
    assert {"--partition=gpu", "--time=1-12:00:00", "--cpus-per-task=8", "--gpus-per-task=1"} <= set(cell_lines)
    assert f"--output={tmp_path / 'jobs' / 'logs' / 'cell_%a_job_%A.out'}" in cell_lines
    assert (tmp_path / "jobs" / "logs").is_dir()  # SLURM does not create it
    assert "--gpus-per-task=1" not in sbatch_lines(scripts.report_script)

    frozen = BenchmarkSpec.from_json(scripts.spec)
    assert frozen == BenchmarkSpec(**{**spec.__dict__, "references": {"705": str(tmp_path / "refs")}})  # absolute
    body = scripts.cells_script.read_text()
    assert f'--spec {scripts.spec} -o {tmp_path / "out"} --cell "$SLURM_ARRAY_TASK_ID"' in body
    assert f"export nnUNet_preprocessed={os.environ['nnUNet_preprocessed']}" in body
    assert "nnUNet_extTrainer" not in body  # only the plugin's own folder, registered by every task anyway
    assert f"-o {tmp_path / 'out'} --report-only" in scripts.report_script.read_text()
    rows = scripts.cells.read_text().splitlines()
    labels = [p.label for p in runner.run_paths(frozen, tmp_path / "out")]
    assert rows == ["index\tcell", *(f"{i}\t{label}" for i, label in enumerate(labels))]

    cpu = slurm.emit_slurm(BenchmarkSpec(**{**spec.__dict__, "device": "cpu"}), "out", "cpu_jobs")
    assert not any(line.startswith("--gpus-per-task") for line in sbatch_lines(cpu.cells_script))

    missing_id = subprocess.run(["bash", str(scripts.cells_script)], capture_output=True, text=True, env={})
    assert missing_id.returncode != 0 and "SLURM_ARRAY_TASK_ID" in missing_id.stderr


def test_submit_chains_the_report_after_the_array(fake_dataset, tmp_path):
    scripts = slurm.emit_slurm(BenchmarkSpec(trainers=("NRDiceTrainer",), datasets=("705",)), tmp_path / "o", tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    fake = bin_dir / "sbatch"  # stands in for SLURM: records its arguments, answers as --parsable does
    fake.write_text(
        f'#!/bin/bash\necho "$*" >> {log}\nif [ "$(wc -l < {log})" -eq 1 ]; then echo "4242;clusterA"; '
        "else echo 4243; fi\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(scripts.submit_script)], env=env, capture_output=True, text=True, check=True)
    assert log.read_text().splitlines() == [
        f"--parsable {scripts.cells_script}",
        f"--parsable --dependency=afterok:4242 {scripts.report_script}",
    ]
    assert "job array 4242 (2 tasks); report: job 4243" in out.stdout


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time": "2h"}, r"--time '2h' is not a SLURM time limit; give minutes"),
        ({"partition": "gpu big"}, r"--partition 'gpu big' is not a SLURM partition name"),
        ({"gpus_per_task": -1}, r"--gpus-per-task must be an integer >= 0, got -1"),
        ({"cpus_per_task": 0}, r"--cpus-per-task must be an integer >= 1, got 0"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        slurm.SlurmOptions(**kwargs)


def test_emission_checks_the_spec_first(fake_dataset, tmp_path):
    spec = BenchmarkSpec(trainers=("NRDiceTrianer",), datasets=("705",))
    with pytest.raises(ValueError, match="did you mean 'NRDiceTrainer'"):
        slurm.emit_slurm(spec, tmp_path / "o", tmp_path / "jobs")
    assert not (tmp_path / "jobs").exists()
