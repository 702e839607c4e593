"""Demo: training on noisy labels, evaluated against clean ones (COPLE-Net paper setting on synthetic CT lesions).

Steps (each skipped when its output exists, so re-running resumes):

1. a clean 3D CT-like lesion dataset (anisotropic spacing) with ``nnunet_ext.synthetic.make_lesion_dataset``;
2. a copy with **moderately** noisy training labels (``nnunet-ext simulate-noise``; test labels stay clean);
3. nnU-Net planning and 2d preprocessing of the noisy copy, then a CPU-sized network (narrow, small batch);
4. a short CPU benchmark through the benchmark runner: stock ``nnUNetTrainer``, ``NRDiceTrainer`` and
   ``NRDiceAdaptiveMTTrainer`` trained on the noisy labels, test images predicted, scored against the **clean**
   test labels, paired tests against stock nnU-Net; table printed, report and box plot written;
5. a training check per trainer (:func:`check_training`): a model whose per-epoch pseudo Dice never rose above 0.1
   ("collapsed"), or rose only in the last third of the epochs ("late start"), is marked in the table as not a
   result. The NR-Dice trainers are often in that state after this budget (README, "NR-Dice on short budgets").

The budget is far from the paper's (1000 epochs x 250 iterations; here 30 x 25 with a narrow network): the numbers
show the pipeline, not the methods' merit. With ``--quick`` everything is smaller still (a smoke run, ~2 minutes);
``--epochs`` / ``--iterations`` override the budget of either setting.

The console shows stage lines, the benchmark's progress bar, the table and the paths of the outputs (under 60 lines);
nnU-Net's own output (planner dictionaries, preprocessing, training logs, warnings) goes to one log file,
``<work dir>/nnunet_output.log`` unless ``--log-file`` names another, whose path is printed first.

Usage::

    python examples/demo.py --work-dir demo_work [--quick] [--seed 0] [--epochs N] [--iterations N]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CLEAN_ID, NOISY_ID = 991, 992
TRAINERS = ("nnUNetTrainer", "NRDiceTrainer", "NRDiceAdaptiveMTTrainer")
# Synthetic lesions are 0.1-10 cc; the paper's 50/200 cc edges would put every case into group A.
SIZE_EDGES_CC = (1.0, 3.0)
# Plans "nnunet_ext" override for this short budget (printed, and recorded in report.md and plans.json): the late EMA
# decay 0.999 averages over ~1000 steps, the whole of this training (750 steps), which would export a near-uniform
# average of the trajectory; 0.99 keeps the teacher's horizon at ~100 steps. (NR-Dice trainers use the linear
# denominator of the authors' code by default: Eq. 3's squared form collapses to "everything is lesion" here.)
OVERRIDES = {"NRDiceAdaptiveMTTrainer": {"mean_teacher": {"ema_late": 0.99}}}
SETTINGS = {
    # shape (z, y, x), training cases, test cases, epochs, iterations per epoch, validation iterations per epoch
    "full": {"shape": (16, 80, 80), "num_train": 10, "num_test": 8, "epochs": 30, "iterations": 25, "val": 2},
    "quick": {"shape": (8, 64, 64), "num_train": 6, "num_test": 4, "epochs": 2, "iterations": 5, "val": 1},
}
# Training check (docs/benchmarks.md, "NR-Dice on short budgets"): nnU-Net's per-epoch pseudo Dice (validation Dice
# against the noisy labels, ``mean_fg_dice``) at or below this level means the network predicts (almost) no lesion.
# Measured over seeds 0-2: stock nnU-Net stays there for its first 8-13 of the 30 demo epochs; NRDiceTrainer for 25,
# 27 and all 30 (and for 21-35 of 60 epochs when trained twice as long).
LEARNT_PSEUDO_DICE = 0.1
# A rise above LEARNT_PSEUDO_DICE only in the last third of the epochs leaves too few epochs to converge: the score
# then depends on when the rise came (0.69 and 0.88 Dice for NR-Dice rising at epochs 27 and 25 of 30).
LATE_START_FRACTION = 2 / 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, help="folder for the nnU-Net folders and all outputs")
    parser.add_argument("--quick", action="store_true", help="smaller data and budget (smoke run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the noise and the training (0)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs per trainer (default: 30, or 2 with --quick)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="training iterations per epoch (default: 25, or 5 with --quick)"
    )
    parser.add_argument(
        "--log-file", default=None, help="where nnU-Net's output goes (default: <work dir>/nnunet_output.log)"
    )
    args = parser.parse_args(argv)
    for flag in ("epochs", "iterations"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return args


def setup_environment(work: Path) -> None:
    """Self-contained nnU-Net folders under the work dir; reproducible in-process CPU training."""
    for key in ("raw", "preprocessed", "results"):
        (work / f"nnUNet_{key}").mkdir(parents=True, exist_ok=True)
        os.environ[f"nnUNet_{key}"] = str(work / f"nnUNet_{key}")
    os.environ.setdefault("nnUNet_compile", "f")
    os.environ.setdefault("nnUNet_n_proc_DA", "0")  # in-process augmentation: seeded, no worker start-up on 2 cores
    os.environ.setdefault("nnUNet_def_n_proc", "1")


@dataclass(frozen=True)
class TrainingCheck:
    """Did a trained model learn anything within the budget? (see :func:`check_training`)."""

    verdict: Literal["ok", "late start", "collapsed"]
    first_epoch: int | None  # from this epoch (nnU-Net's numbering, from 0) on, pseudo Dice > LEARNT_PSEUDO_DICE
    final_pseudo_dice: float
    empty_cases: int
    num_cases: int
    num_epochs: int

    @property
    def is_result(self) -> bool:
        return self.verdict == "ok"

    def note(self) -> str:
        empty = f"{self.empty_cases}/{self.num_cases} test predictions empty"
        if self.verdict == "collapsed":
            return (
                f"COLLAPSED (final pseudo Dice {self.final_pseudo_dice:.2f}; {empty}): not a result, needs a longer "
                "budget, see README"
            )
        if self.verdict == "late start":
            return (
                f"LATE START (pseudo Dice > {LEARNT_PSEUDO_DICE} only from epoch {self.first_epoch} of "
                f"{self.num_epochs}, counted from 0): undertrained, its Dice depends on the seed; needs a longer "
                "budget, see README"
            )
        return f"ok (pseudo Dice > {LEARNT_PSEUDO_DICE} from epoch {self.first_epoch})"


def check_training(fold_dir: Path, rows: Sequence[dict[str, Any]], trainer: str) -> TrainingCheck:
    """Collapse / late-start check of one trained fold from its checkpoint's log and its test predictions.

    The pseudo Dice is nnU-Net's per-epoch validation Dice (``mean_fg_dice``, noisy labels). ``first_epoch`` is the
    epoch from which it stays above ``LEARNT_PSEUDO_DICE`` to the end (epoch 0 often scores ~0.1 by chance: the
    untrained network marks much of the image as lesion, before the first updates push every voxel to background).
    ``collapsed``: no such epoch (the last epoch is at or below the level) or most test predictions are empty.
    ``late start``: ``first_epoch`` lies in the last ``1 - LATE_START_FRACTION`` of the epochs. Otherwise ``ok``.
    """
    import torch

    logged = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    pseudo = [float(v) for v in logged["mean_fg_dice"]]
    above = [v > LEARNT_PSEUDO_DICE for v in pseudo]
    first = next((epoch for epoch in range(len(above)) if all(above[epoch:])), None)
    own = [r for r in rows if r["trainer"] == trainer]
    empty = sum(1 for r in own if r["n_pred"] == 0)
    if first is None or 2 * empty > len(own):
        verdict = "collapsed"
    elif first >= LATE_START_FRACTION * len(pseudo):
        verdict = "late start"
    else:
        verdict = "ok"
    return TrainingCheck(verdict, first, pseudo[-1] if pseudo else math.nan, empty, len(own), len(pseudo))


def annotate_table(table: str, checks: dict[str, TrainingCheck]) -> str:
    """Append a "training check" column to :func:`~nnunet_ext.benchmark.report.console_table` output."""
    lines = table.splitlines()
    width = max(len(line) for line in lines[1:])
    out = []
    for line in lines:
        trainer = line.split("  ")[0].removesuffix(" (baseline)")
        if line.startswith("trainer  "):
            out.append(f"{line.ljust(width)}  training check")
        elif trainer in checks:
            out.append(f"{line.ljust(width)}  {checks[trainer].note()}")
        else:
            out.append(line)
    return "\n".join(out)


def step(message: str) -> float:
    print(f"\n== {message}", flush=True)
    return time.perf_counter()


@contextlib.contextmanager
def output_to(log_file: Path, stderr: bool = True) -> Iterator[None]:
    """Send this process's stdout (and stderr unless ``stderr=False``) to ``log_file``, at the file-descriptor level
    too, so that nnU-Net's worker processes and C extensions land there as well; warnings (``warnings`` and handler-less
    ``logging``) always go to the log.

    ``stderr=False`` keeps the console's stderr for the benchmark's progress bar.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_file, "a", buffering=1) as log:
        fds = (1, 2) if stderr else (1,)
        saved = {fd: os.dup(fd) for fd in fds}
        show, last_resort = warnings.showwarning, logging.lastResort

        def to_log(message, category, filename, lineno, file=None, line=None):
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

        try:
            for fd in fds:
                os.dup2(log.fileno(), fd)
            warnings.showwarning = to_log
            logging.lastResort = logging.StreamHandler(log)  # logging without handlers: warnings and errors
            with contextlib.ExitStack() as stack:
                stack.enter_context(contextlib.redirect_stdout(log))
                if stderr:
                    stack.enter_context(contextlib.redirect_stderr(log))
                yield
        finally:
            warnings.showwarning, logging.lastResort = show, last_resort
            sys.stdout.flush()
            sys.stderr.flush()
            log.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = dict(SETTINGS["quick" if args.quick else "full"])
    cfg.update({k: v for k, v in (("epochs", args.epochs), ("iterations", args.iterations)) if v is not None})
    work = Path(args.work_dir).resolve()
    setup_environment(work)
    log_file = Path(args.log_file).resolve() if args.log_file else work / "nnunet_output.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"nnU-Net's output (planning, preprocessing, training logs, warnings) goes to {log_file}", flush=True)
    start_all = time.perf_counter()

    from nnunet_ext.benchmark.datasets import plan_and_preprocess, shrink_plans
    from nnunet_ext.benchmark.report import console_table
    from nnunet_ext.benchmark.runner import run_benchmark, run_paths
    from nnunet_ext.benchmark.spec import BenchmarkSpec
    from nnunet_ext.noise.simulate import simulate_noisy_dataset
    from nnunet_ext.synthetic import make_lesion_dataset

    raw = work / "nnUNet_raw"
    clean = raw / f"Dataset{CLEAN_ID}_DemoClean"
    noisy = raw / f"Dataset{NOISY_ID}_DemoNoisy"
    t = step(
        f"1/4 clean dataset {clean.name}: {cfg['num_train']} training + {cfg['num_test']} test volumes {cfg['shape']}"
    )
    if not (clean / "dataset.json").is_file():
        with output_to(log_file):
            make_lesion_dataset(
                raw,
                CLEAN_ID,
                "DemoClean",
                num_train=cfg["num_train"],
                num_test=cfg["num_test"],
                shape=cfg["shape"],
                spacing=(2.5, 0.8, 0.8),
                seed=args.seed,
            )
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(f"2/4 moderate label noise -> {noisy.name}")
    if not (noisy / "dataset.json").is_file():
        with output_to(log_file):
            manifest = simulate_noisy_dataset(clean, noisy, "moderate", args.seed)
        print(f"   mean Dice of the noisy vs clean training labels: {manifest['mean_dice']:.3f}")
    else:
        print("   exists, reused")
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step("3/4 nnU-Net planning and 2d preprocessing of the noisy dataset (CPU-sized network)")
    marker = work / "nnUNet_preprocessed" / noisy.name / ".demo_plans_ready"
    if not marker.is_file():
        with output_to(log_file):  # the planner prints its dictionaries; preprocessing workers print per case
            plan_and_preprocess(NOISY_ID, ("2d",))
            shrink_plans(NOISY_ID, "2d", batch_size=8, feature_divisor=4, max_features=32)
        marker.write_text("planned, preprocessed and shrunk by examples/demo.py\n")
    else:
        print("   exists, reused")
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(
        f"4/4 benchmark: {', '.join(TRAINERS)}; {cfg['epochs']} epochs x {cfg['iterations']} iterations on CPU, "
        "evaluated against the clean test labels"
    )
    spec = BenchmarkSpec(
        trainers=TRAINERS,
        datasets=(str(NOISY_ID),),
        configurations=("2d",),
        folds=(0,),
        num_epochs=cfg["epochs"],
        num_iterations_per_epoch=cfg["iterations"],
        num_val_iterations_per_epoch=cfg["val"],
        skip_final_validation=True,  # it would score the noisy training labels; the test set is scored instead
        device="cpu",
        seed=args.seed,
        references={str(NOISY_ID): str(clean / "labelsTs")},
        test_images={str(NOISY_ID): str(clean / "imagesTs")},
        size_edges_cc=SIZE_EDGES_CC,
        trainer_overrides=OVERRIDES,
    )
    for trainer, block in OVERRIDES.items():
        print(f"   {trainer}: plans nnunet_ext overrides {block}")
    bench = work / "benchmark"
    with output_to(log_file, stderr=False):  # the progress bar stays on the console's stderr
        outcome = run_benchmark(spec, bench, verbose=True)
    for label, status in outcome.statuses.items():
        print(f"   {label}: {status}")
    print(f"   {time.perf_counter() - t:.0f} s")

    checks = {p.key.trainer: check_training(p.fold_dir, outcome.rows, p.key.trainer) for p in run_paths(spec, bench)}
    print()
    print(annotate_table(console_table(outcome.rows, spec.baseline, ("Dice", "HD95_mm")), checks))
    print("\n(mean ± SD over test cases; p: paired t-test / Wilcoxon vs nnUNetTrainer, * p < 0.05)")
    not_results = [t for t, c in checks.items() if not c.is_result]
    if not_results:
        print(
            f"Not results: {', '.join(not_results)} started to predict lesions late or never within "
            f"{cfg['epochs']} epochs x {cfg['iterations']} iterations (training check); their Dice and p-values "
            "describe an unfinished training. README, 'NR-Dice on short budgets', gives the budget NR-Dice needs."
        )
    report = outcome.report
    with open(report.report_md, "a") as f:
        f.write("\n## Training check (examples/demo.py)\n\n| trainer | check |\n|---|---|\n")
        f.writelines(f"| {t} | {c.note()} |\n" for t, c in checks.items())
    print(f"\nreport:    {report.report_md}")
    print(f"per case:  {report.results_csv}")
    print(f"box plot:  {', '.join(str(p) for p in report.box_plots)}")
    print(f"manifest:  {outcome.manifest}")
    print(f"models:    {work / 'benchmark' / 'nnUNet_results' / noisy.name} (progress.png per fold)")
    print(f"nnU-Net:   {log_file}")
    print(f"total time {time.perf_counter() - start_all:.0f} s")
    return 0


if __name__ == "__main__":  # nnU-Net's spawned worker processes re-import this file
    sys.exit(main())
