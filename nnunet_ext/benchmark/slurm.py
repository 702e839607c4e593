"""SLURM job arrays for a benchmark: one array task per cell, then a report job once every task succeeded.

:func:`emit_slurm` writes, without running or submitting anything, into a folder::

    spec.json              the frozen spec: every task reads this file, so all see the same matrix and settings
    cells.tsv              index -> cell label (dataset/configuration/trainer/fold[/seed][/checkpoint])
    benchmark_cells.sbatch job array #SBATCH --array=0-(N-1); task i runs
                           nnunet-ext benchmark --spec spec.json -o OUTPUT --cell $SLURM_ARRAY_TASK_ID
    benchmark_report.sbatch nnunet-ext benchmark --spec spec.json -o OUTPUT --report-only
    submit.sh              sbatch the array, then the report with --dependency=afterok:<array job id>
    logs/                  SLURM output of every task (SLURM does not create missing output folders)

A task is the in-process runner's code for one cell (:func:`nnunet_ext.benchmark.runner.run_cell`), resumable: a
requeued or re-submitted task skips its cell when finished, and finished cells of an earlier in-process run of the
same spec and output folder count. The scripts export the ``nnUNet_*`` variables of the emitting shell (the data
folders the spec was checked against; of ``nnUNet_extTrainer`` only the user's own entries, since every task registers
the plugin's folder itself) and call the ``nnunet-ext`` of the emitting interpreter by absolute path. Paths in
``#SBATCH`` lines cannot be quoted: keep the job folder free of spaces.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunet_ext import trainer_folder
from nnunet_ext._registration import ENV_VAR
from nnunet_ext.benchmark.provenance import nnunet_environment, write_json_atomic
from nnunet_ext.benchmark.spec import BenchmarkSpec

CELLS_SCRIPT = "benchmark_cells.sbatch"
REPORT_SCRIPT = "benchmark_report.sbatch"
SUBMIT_SCRIPT = "submit.sh"
SPEC_FILE = "spec.json"
CELLS_FILE = "cells.tsv"
# SLURM --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_SLURM_TIME = re.compile(r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$")
_PARTITION = re.compile(r"^[A-Za-z0-9_.,-]+$")


@dataclass(frozen=True)
class SlurmOptions:
    """``#SBATCH`` resources of the cell tasks (None: the cluster's default; the line is left out).

    Attributes:
        partition: ``--partition`` of every job.
        gpus_per_task: ``--gpus-per-task`` of a cell task; None: 1, or 0 when the spec's device is ``cpu``/``mps``.
        time: ``--time`` limit of a cell task (minutes, ``HH:MM:SS`` or ``D-HH:MM:SS``).
        cpus_per_task: ``--cpus-per-task`` of a cell task (nnU-Net's augmentation workers need cores).
        job_name: ``--job-name`` prefix.
    """

    partition: str | None = None
    gpus_per_task: int | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    job_name: str = "nnunet-ext-benchmark"

    def __post_init__(self) -> None:
        if self.partition is not None and not _PARTITION.match(self.partition):
            raise ValueError(f"--partition {self.partition!r} is not a SLURM partition name; give e.g. --partition gpu")
        if self.gpus_per_task is not None and (isinstance(self.gpus_per_task, bool) or self.gpus_per_task < 0):
            raise ValueError(f"--gpus-per-task must be an integer >= 0, got {self.gpus_per_task!r}; e.g. 1")
        if self.cpus_per_task is not None and (isinstance(self.cpus_per_task, bool) or self.cpus_per_task < 1):
            raise ValueError(f"--cpus-per-task must be an integer >= 1, got {self.cpus_per_task!r}; e.g. 8")
        if self.time is not None and not _SLURM_TIME.match(self.time):
            raise ValueError(
                f"--time {self.time!r} is not a SLURM time limit; give minutes (90), HH:MM:SS (12:00:00) or "
                "D-HH:MM:SS (1-12:00:00)"
            )
        if not _PARTITION.match(self.job_name):
            raise ValueError(f"job name {self.job_name!r} has characters SLURM scripts do not take; use [A-Za-z0-9_.-]")


@dataclass(frozen=True)
class SlurmScripts:
    """The files :func:`emit_slurm` wrote."""

    folder: Path
    spec: Path
    cells: Path
    cells_script: Path
    report_script: Path
    submit_script: Path
    num_cells: int


def default_launcher() -> list[str]:
    """The ``nnunet-ext`` console script beside this interpreter, else ``python -m nnunet_ext.cli.main``."""
    script = Path(sys.executable).parent / "nnunet-ext"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "nnunet_ext.cli.main"]


def frozen_spec(spec: BenchmarkSpec) -> BenchmarkSpec:
    """``spec`` with its folders made absolute, so that tasks do not depend on their working directory."""
    data = spec.to_dict()
    for key in ("test_images", "references"):
        data[key] = {k: os.path.abspath(v) for k, v in data[key].items()}
    if data["results_dir"] is not None:
        data["results_dir"] = os.path.abspath(data["results_dir"])
    return BenchmarkSpec.from_dict(data)


def _q(value: str | os.PathLike) -> str:
    return shlex.quote(str(value))


def _exports(environment: Mapping[str, str]) -> list[str]:
    environment = dict(environment)
    # the plugin's own trainer folder is registered by every nnunet-ext process; keep only the user's entries
    user_trainers = [p for p in environment.pop(ENV_VAR, "").split(os.pathsep) if p and p != trainer_folder()]
    if user_trainers:
        environment[ENV_VAR] = os.pathsep.join(user_trainers)
    if not environment:
        return []
    lines = ["# nnU-Net's variables of the shell that emitted these scripts (the spec was checked against them)"]
    lines += [f"export {k}={_q(v)}" for k, v in sorted(environment.items())]
    return [*lines, ""]


def _sbatch_header(lines: Sequence[str]) -> list[str]:
    return ["#!/bin/bash", *(f"#SBATCH {line}" for line in lines)]


def emit_slurm(
    spec: BenchmarkSpec,
    output_dir: str | os.PathLike,
    folder: str | os.PathLike,
    options: SlurmOptions | None = None,
    *,
    verbose: bool = False,
    launcher: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> SlurmScripts:
    """Write the job-array script, the report script, ``submit.sh``, the frozen spec and the cell list.

    Args:
        spec: The benchmark; checked first (:func:`nnunet_ext.benchmark.runner.check_spec`), so a broken spec is
            not submitted. Its N cells become the array ``0-(N-1)``.
        output_dir: The benchmark's output folder (``-o``), shared by all tasks.
        folder: Where the scripts go (created).
        options: ``#SBATCH`` resources.
        verbose: Tasks show nnU-Net's console output (in their SLURM log).
        launcher: Command that runs ``nnunet-ext`` (default :func:`default_launcher`).
        environment: Variables exported by the scripts (default: this process's ``nnUNet_*`` variables).

    Returns:
        A :class:`SlurmScripts`.
    """
    from nnunet_ext.benchmark.runner import check_spec

    options = options if options is not None else SlurmOptions()
    folder = Path(folder).absolute()
    output_dir = Path(output_dir).absolute()
    spec = frozen_spec(spec)
    labels = [p.label for p in check_spec(spec, output_dir)]
    num_cells = len(labels)
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    spec_file = folder / SPEC_FILE
    write_json_atomic(spec.to_dict(), spec_file)
    cells_file = folder / CELLS_FILE
    cells_file.write_text("index\tcell\n" + "".join(f"{i}\t{label}\n" for i, label in enumerate(labels)))

    command = " ".join(_q(a) for a in (launcher if launcher is not None else default_launcher()))
    common = f"{command} benchmark --spec {_q(spec_file)} -o {_q(output_dir)}"
    exports = _exports(nnunet_environment() if environment is None else environment)
    gpus = options.gpus_per_task
    if gpus is None:
        gpus = 0 if spec.device in ("cpu", "mps") else 1

    cell_lines = [f"--job-name={options.job_name}", f"--array=0-{num_cells - 1}", "--ntasks=1"]
    cell_lines.append(f"--output={logs / 'cell_%a_job_%A.out'}")
    if options.partition:
        cell_lines.append(f"--partition={options.partition}")
    if gpus > 0:
        cell_lines.append(f"--gpus-per-task={gpus}")
    if options.cpus_per_task is not None:
        cell_lines.append(f"--cpus-per-task={options.cpus_per_task}")
    if options.time is not None:
        cell_lines.append(f"--time={options.time}")
    cells_script = folder / CELLS_SCRIPT
    cells_script.write_text(
        "\n".join(
            [
                *_sbatch_header(cell_lines),
                f"# One task per benchmark cell ({num_cells}); task i = row i of {cells_file.name}. Generated by",
                "# nnunet-ext benchmark --emit slurm; resumable: a finished cell is skipped.",
                "set -euo pipefail",
                ': "${SLURM_ARRAY_TASK_ID:?submit with sbatch (submit.sh), or set SLURM_ARRAY_TASK_ID=INDEX}"',
                "",
                *exports,
                f'exec {common} --cell "$SLURM_ARRAY_TASK_ID" --no-progress' + (" --verbose" if verbose else ""),
                "",
            ]
        )
    )

    report_lines = [f"--job-name={options.job_name}-report", "--ntasks=1", f"--output={logs / 'report_job_%j.out'}"]
    if options.partition:
        report_lines.append(f"--partition={options.partition}")
    report_script = folder / REPORT_SCRIPT
    report_script.write_text(
        "\n".join(
            [
                *_sbatch_header(report_lines),
                "# The benchmark report from the finished cells (results.csv, report.md, box plots, manifest.json).",
                "set -euo pipefail",
                "",
                *exports,
                f"exec {common} --report-only",
                "",
            ]
        )
    )

    submit_script = folder / SUBMIT_SCRIPT
    submit_script.write_text(
        "\n".join(
            [
                "#!/bin/bash",
                f"# Submit the {num_cells} cells as one job array, then the report job once every task succeeded.",
                "set -euo pipefail",
                f"array_job=$(sbatch --parsable {_q(cells_script)})",
                'array_job="${array_job%%;*}"  # --parsable prints JOBID[;CLUSTER]',
                f'report_job=$(sbatch --parsable --dependency=afterok:"$array_job" {_q(report_script)})',
                'report_job="${report_job%%;*}"',
                f'echo "cells: job array $array_job ({num_cells} tasks); report: job $report_job (after all cells)"',
                f"echo logs: {_q(logs)}, output: {_q(output_dir)}",
                "",
            ]
        )
    )
    for script in (cells_script, report_script, submit_script):
        script.chmod(0o755)
    return SlurmScripts(folder, spec_file, cells_file, cells_script, report_script, submit_script, num_cells)
