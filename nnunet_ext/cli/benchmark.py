"""``nnunet-ext benchmark``: train, predict and evaluate trainers against a baseline, with paired tests.

Thin wrapper over :func:`nnunet_ext.benchmark.runner.run_benchmark`. The run matrix comes from flags or a JSON spec
(``--spec``; flags given as well override its entries)::

    nnunet-ext benchmark -d 502 -c 2d -f 0 -tr NRDiceTrainer NRDiceAdaptiveMTTrainer \\
        --epochs 50 --iterations-per-epoch 100 --ref /data/Dataset501_Clean/labelsTs -o bench_502

Re-running the same command resumes: finished runs are skipped. Outputs: ``results.csv``, ``report.md``,
``boxplots/``, ``manifest.json`` in the output folder.
"""

from __future__ import annotations

import argparse
from typing import Any

from nnunet_ext.benchmark.spec import DEVICES

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
    "seed": "seed",
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
    parser.add_argument("--disable-tta", action="store_true", default=None, help="predict without mirroring (faster)")
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
    parser.add_argument("--dry-run", action="store_true", help="print the run matrix and what is finished; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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
        if getattr(args, dest):
            data[key] = True
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


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.benchmark.report import console_table
    from nnunet_ext.benchmark.runner import check_spec, run_benchmark, run_is_finished

    spec = spec_from_args(args)
    if args.dry_run:
        all_paths = check_spec(spec, args.output)
        for p in all_paths:
            state = "finished" if run_is_finished(p) else "to run"
            print(f"{p.label:<70} {state}")
        print(f"{len(all_paths)} runs; budget {spec.budget.as_dict()}; output {args.output}")
        return 0
    outcome = run_benchmark(
        spec, args.output, overwrite=args.overwrite, verbose=args.verbose, progress=not args.no_progress
    )
    for label, status in outcome.statuses.items():
        print(f"{label:<70} {status}")
    print()
    print(console_table(outcome.rows, spec.baseline, spec.metrics))
    print()
    report = outcome.report
    print(
        f"wrote {report.results_csv}, {report.report_md}, {len(report.box_plots)} box plot(s) in "
        f"{report.report_md.parent / 'boxplots'} and {outcome.manifest}"
    )
    return 0
