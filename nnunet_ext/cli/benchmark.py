"""``nnunet-ext benchmark``: train, predict and evaluate trainers against a baseline, with paired tests.

Thin wrapper over :func:`nnunet_ext.benchmark.runner.run_benchmark`. The run matrix comes from flags or a JSON spec
(``--spec``; flags given as well override its entries)::

    nnunet-ext benchmark -d 502 -c 2d -f 0 -tr NRDiceTrainer NRDiceAdaptiveMTTrainer \\
        --epochs 50 --iterations-per-epoch 100 --ref /data/Dataset501_Clean/labelsTs -o bench_502

Re-running the same command resumes: finished cells are skipped. Outputs: ``results.csv``, ``report.md``,
``boxplots/``, ``manifest.json`` in the output folder. ``--seeds 0 1 2`` trains every cell per seed; ``--checkpoint
best`` predicts from ``checkpoint_best.pth`` of the same models.

Cluster mode: ``--emit slurm DIR`` writes a SLURM job array (one task per cell, each running this command with
``--cell INDEX``), a report job and ``submit.sh`` into DIR, and runs nothing; ``--cell INDEX`` runs one cell,
``--report-only`` writes the report from the finished cells. User errors print ``nnunet-ext benchmark: error: ...``
and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nnunet_ext.benchmark.spec import CHECKPOINTS, DEVICES

# CLI destination -> spec key, for the flags that map one to one.
_FLAG_TO_SPEC = {
    "trainers": "trainers",
    "datasets": "datasets",
    "configurations": "configurations",
    "folds": "folds",
    "baseline": "baseline",
    "plans": "plans",
    "epochs": "num_epochs",
    "iterations_per_epoch": "num_iterations_per_epoch",
    "val_iterations_per_epoch": "num_val_iterations_per_epoch",
    "device": "device",
    "checkpoint": "checkpoint",
    "metrics": "metrics",
    "size_edges": "size_edges_cc",
    "tile_step_size": "tile_step_size",
    "num_processes": "num_processes",
    "results_dir": "results_dir",
}
_SWITCHES = {
    "skip_final_validation": "skip_final_validation",
    "brats_empty": "brats_empty",
    "disable_tta": "disable_tta",
}


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The short-budget and device flags shared with ``label-update``."""
    parser.add_argument("--epochs", type=int, default=None, help="num_epochs set on each trainer (default: its own)")
    parser.add_argument(
        "--iterations-per-epoch", type=int, default=None, help="num_iterations_per_epoch (default: its own, 250)"
    )
    parser.add_argument(
        "--val-iterations-per-epoch", type=int, default=None, help="num_val_iterations_per_epoch (default: 50)"
    )
    parser.add_argument(
        "--skip-final-validation",
        action="store_true",
        default=None,
        help="skip nnU-Net's final validation after training (it scores the noisy training labels anyway)",
    )
    parser.add_argument("-device", dest="device", choices=DEVICES, default=None, help="default: auto (CUDA if any)")
    parser.add_argument("--seed", type=int, default=None, help="seed of random/numpy/torch before each run (0)")
    parser.add_argument(
        "--disable_tta", action="store_true", default=None, help="predict without mirroring (faster; nnU-Net's flag)"
    )
    _add_deprecated_alias(parser, "--disable-tta", "disable_tta", action="store_true")
    parser.add_argument(
        "-np",
        dest="num_processes",
        type=int,
        default=None,
        help="worker processes for prediction and evaluation; 0 (default) runs them in this process",
    )
    parser.add_argument(
        "--results-dir", default=None, help="where models are trained (default: <output>/nnUNet_results)"
    )
    parser.add_argument("--overwrite", action="store_true", help="retrain, predict and evaluate again")
    parser.add_argument("--verbose", action="store_true", help="show nnU-Net's console output")


def _add_deprecated_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs) -> None:
    """A hidden old spelling (the shared helper of ``nnunet_ext.cli._common`` when present)."""
    try:
        from nnunet_ext.cli._common import add_deprecated_alias
    except ImportError:
        parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
    else:
        add_deprecated_alias(parser, flag, dest, **kwargs)


class _CheckpointFile(argparse.Action):
    """nnU-Net's ``-chk checkpoint_best.pth`` spelling of ``--checkpoint best``."""

    FILES = {f"checkpoint_{c}.pth": c for c in CHECKPOINTS}

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, self.FILES[values])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", default=None, metavar="JSON", help="JSON file with the spec (keys: spec fields)")
    parser.add_argument("-o", "--output", required=True, help="output folder (re-use it to resume)")
    parser.add_argument("-d", dest="datasets", nargs="+", default=None, help="dataset ids or names")
    parser.add_argument("-c", dest="configurations", nargs="+", default=None, help="configurations (default: 2d)")
    parser.add_argument("-f", dest="folds", nargs="+", default=None, help="folds (default: 0)")
    parser.add_argument("-tr", dest="trainers", nargs="+", default=None, help="trainers (the baseline is added)")
    parser.add_argument("--baseline", default=None, help="trainer the others are tested against (nnUNetTrainer)")
    parser.add_argument("-p", dest="plans", default=None, help="plans identifier (default: nnUNetPlans)")
    add_budget_arguments(parser)
    parser.add_argument(
        "--test-images",
        action="append",
        default=None,
        metavar="[DATASET=]FOLDER",
        help="test images of a dataset (default: its imagesTs); repeat per dataset",
    )
    parser.add_argument(
        "--ref",
        action="append",
        default=None,
        metavar="[DATASET=]FOLDER",
        help="CLEAN reference labels of the test images (default: the dataset's labelsTs); repeat per dataset",
    )
    parser.add_argument(
        "--trainer-override",
        action="append",
        default=None,
        metavar="TRAINER=JSON",
        help='plans "nnunet_ext" entries for one plugin trainer, e.g. '
        'NRDiceAdaptiveMTTrainer=\'{"mean_teacher": {"ema_late": 0.99}}\'; repeatable',
    )
    parser.add_argument("--metrics", nargs="+", default=None, help="report metrics (default: Dice HD95_mm RVE)")
    parser.add_argument("--size-edges", type=float, nargs="+", default=None, metavar="CC", help="default: 50 200")
    parser.add_argument("--brats-empty", action="store_true", default=None, help="HD95 373.13 mm when one mask empty")
    parser.add_argument("--tile-step-size", type=float, default=None, help="sliding-window step (default: 0.5)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="train every cell once per seed (e.g. --seeds 0 1 2); the report adds mean and seed-to-seed SD; "
        "--seed S is the one-seed form",
    )
    parser.add_argument(
        "--checkpoint",
        choices=CHECKPOINTS,
        default=None,
        help="checkpoint that predicts: final (default, checkpoint_final.pth) or best (checkpoint_best.pth, nnU-Net's "
        "best pseudo Dice on its validation split); both from the same trained models",
    )
    parser.add_argument(
        "-chk",
        dest="checkpoint",
        choices=tuple(_CheckpointFile.FILES),
        action=_CheckpointFile,
        default=argparse.SUPPRESS,
        help="nnU-Net's spelling of --checkpoint (checkpoint_final.pth or checkpoint_best.pth)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the cells and what is finished; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = parser.add_argument_group("cluster (SLURM job arrays; see README, 'Running on a cluster')")
    cluster.add_argument(
        "--emit",
        nargs=2,
        metavar=("slurm", "DIR"),
        default=None,
        help="write a SLURM job array (one task per cell), a report job and submit.sh into DIR; runs nothing",
    )
    cluster.add_argument(
        "--cell", type=int, default=None, metavar="INDEX", help="run only cell INDEX (0-based, see --dry-run)"
    )
    cluster.add_argument(
        "--report-only", action="store_true", help="write the report from the finished cells, naming missing ones"
    )
    cluster.add_argument("--partition", default=None, help="--emit: #SBATCH --partition")
    cluster.add_argument(
        "--gpus-per-task", type=int, default=None, help="--emit: GPUs per cell task (default: 1; 0 for -device cpu)"
    )
    cluster.add_argument("--time", default=None, help="--emit: time limit per cell task, e.g. 12:00:00")
    cluster.add_argument("--cpus-per-task", type=int, default=None, help="--emit: CPU cores per cell task")


def _folder_map(entries: list[str] | None, datasets: list[str], flag: str) -> dict[str, str] | None:
    if entries is None:
        return None
    out: dict[str, str] = {}
    for entry in entries:
        key, sep, folder = entry.partition("=")
        if not sep:
            if len(datasets) != 1:
                raise ValueError(f"{flag} {entry!r}: name the dataset (DATASET=FOLDER) when benchmarking several")
            key, folder = datasets[0], entry
        out[key] = folder
    return out


def spec_from_args(args: argparse.Namespace):
    """The :class:`BenchmarkSpec` of the flags, on top of ``--spec`` when given."""
    import json
    from pathlib import Path

    from nnunet_ext.benchmark.spec import BenchmarkSpec

    data: dict[str, Any] = {}
    if args.spec is not None:
        try:
            data = json.loads(Path(args.spec).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--spec {args.spec} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"--spec {args.spec} must hold a JSON object")
    for dest, key in _FLAG_TO_SPEC.items():
        value = getattr(args, dest)
        if value is not None:
            data[key] = value
    for dest, key in _SWITCHES.items():
        if getattr(args, dest, None):
            data[key] = True
    if args.seed is not None and args.seeds is not None:
        raise ValueError(f"--seed {args.seed} and --seeds {args.seeds} both given; pass one (--seed S = --seeds S)")
    seeds = [args.seed] if args.seed is not None else args.seeds
    if seeds is not None:
        data.pop("seed", None)
        data["seeds"] = seeds
    datasets = [str(d) for d in data.get("datasets", [])]
    for dest, key, flag in (("test_images", "test_images", "--test-images"), ("ref", "references", "--ref")):
        mapping = _folder_map(getattr(args, dest), datasets, flag)
        if mapping is not None:
            data[key] = {**data.get(key, {}), **mapping}
    for entry in args.trainer_override or []:
        trainer, sep, text = entry.partition("=")
        try:
            block = json.loads(text) if sep else None
        except json.JSONDecodeError as err:
            raise ValueError(f"--trainer-override {entry!r}: the part after '=' is not valid JSON ({err})") from None
        if not isinstance(block, dict):
            raise ValueError(f"--trainer-override {entry!r}: use TRAINER='{{...JSON object...}}'")
        data["trainer_overrides"] = {**data.get("trainer_overrides", {}), trainer: block}
    return BenchmarkSpec.from_dict(data)


def _user_error(err: BaseException) -> str | None:
    """The one-line message of a user error (None: a bug, keep the traceback), by the CLI's shared rule."""
    try:
        from nnunet_ext.cli._common import user_error_message
    except ImportError:
        return str(err) if isinstance(err, (ValueError, FileNotFoundError)) else None
    return user_error_message(err, "benchmark")


def run(args: argparse.Namespace) -> int:
    """The subcommand; user errors print ``nnunet-ext benchmark: error: <what>; <fix>`` and return 2."""
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        message = _user_error(err)
        if message is None:
            raise
        print(f"nnunet-ext benchmark: error: {message}", file=sys.stderr)
        return 2


def _check_modes(args: argparse.Namespace) -> None:
    modes = [
        flag
        for flag, on in (
            ("--emit", args.emit is not None),
            ("--cell", args.cell is not None),
            ("--report-only", args.report_only),
            ("--dry-run", args.dry_run),
        )
        if on
    ]
    if len(modes) > 1:
        raise ValueError(f"{' and '.join(modes)} exclude each other; pass one of them")
    if args.emit is not None:
        kind, _ = args.emit
        if kind != "slurm":
            raise ValueError(f"--emit {kind!r} is not supported; use --emit slurm DIR")
        if args.overwrite:
            raise ValueError(
                "--overwrite with --emit would make every (re-)queued task retrain its cell; emit without it and "
                "delete the cells to redo, or run --cell INDEX --overwrite yourself"
            )
    elif any(getattr(args, k) is not None for k in ("partition", "gpus_per_task", "time", "cpus_per_task")):
        raise ValueError(
            "--partition, --gpus-per-task, --time and --cpus-per-task only apply to --emit slurm DIR; drop them or "
            "add --emit slurm DIR"
        )
    if args.report_only and args.overwrite:
        raise ValueError("--report-only runs nothing, so --overwrite has no effect; drop one of them")


def _print_report(outcome, spec) -> None:
    from nnunet_ext.benchmark.report import console_table

    print()
    print(console_table(outcome.rows, spec.baseline, spec.metrics))
    print()
    report = outcome.report
    print(
        f"wrote {report.results_csv}, {report.report_md}, {len(report.box_plots)} box plot(s) in "
        f"{report.report_md.parent / 'boxplots'} and {outcome.manifest}"
    )


def _run(args: argparse.Namespace) -> int:
    from nnunet_ext.benchmark import runner

    _check_modes(args)
    spec = spec_from_args(args)
    if args.dry_run:
        all_paths = runner.check_spec(spec, args.output)
        for i, p in enumerate(all_paths):
            state = "finished" if runner.run_is_finished(p) else "to run"
            print(f"[{i}] {p.label:<70} {state}")
        print(f"{len(all_paths)} cells; budget {spec.budget.as_dict()}; output {args.output}")
        return 0
    if args.emit is not None:
        from nnunet_ext.benchmark.slurm import SlurmOptions, emit_slurm

        options = SlurmOptions(args.partition, args.gpus_per_task, args.time, args.cpus_per_task)
        scripts = emit_slurm(spec, args.output, args.emit[1], options, verbose=args.verbose)
        print(f"wrote {scripts.cells_script} ({scripts.num_cells} tasks, cells listed in {scripts.cells})")
        print(f"      {scripts.report_script} (report job), {scripts.spec} (frozen spec)")
        print(f"submit with: bash {scripts.submit_script}")
        return 0
    if args.cell is not None:
        cell = runner.run_cell(spec, args.output, args.cell, overwrite=args.overwrite, verbose=args.verbose)
        print(f"cell {args.cell}: {cell.paths.label} {cell.status}")
        return 0
    if args.report_only:
        outcome = runner.report_only(spec, args.output)
        for label, status in outcome.statuses.items():
            print(f"{label:<70} {status}")
        _print_report(outcome, spec)
        if outcome.missing:
            print(
                f"incomplete: {len(outcome.missing)} of {len(outcome.statuses)} cells missing and left out of the "
                "report (listed above); run them with --cell INDEX, then --report-only again",
                file=sys.stderr,
            )
        return 0
    outcome = runner.run_benchmark(
        spec, args.output, overwrite=args.overwrite, verbose=args.verbose, progress=not args.no_progress
    )
    for label, status in outcome.statuses.items():
        print(f"{label:<70} {status}")
    _print_report(outcome, spec)
    return 0
