"""Report of the JSRT budget study (``budget_sweep.sh``): test Dice per trainer, budget, checkpoint and label setting.

Reads every ``<setting>_<steps>/{final,best}/results.csv`` and ``oracle<id>_<steps>/{final,best}/results.csv`` under
the work folder (the ``nnunet-ext benchmark`` outputs the sweep writes, one per checkpoint) and writes:

- a markdown table: per setting, budget, checkpoint (``final`` / ``best``) and trainer, the mean clean-test Dice
  (mean over seeds of the per-seed mean; ``sd seeds``: the seed-to-seed sd of the mean Dice), the paired t-test and
  Wilcoxon p against stock ``nnUNetTrainer`` with the same checkpoint and budget (per-case Dice averaged over
  seeds), and the fraction of the oracle-stock gap recovered at that budget;
- ``budget_dice_vs_steps.png``: test Dice against steps, one panel per setting, solid = checkpoint_final, dashed =
  checkpoint_best;
- ``budget_curves.png``: per-epoch training loss and nnU-Net's validation pseudo-Dice (on the fold's validation
  labels: clean in ``j3`` and ``j1``, noisy in ``j3_nv``) of the seed-0 runs at the largest budget.

Usage: ``python examples/jsrt/report_budget.py WORK_DIR [-o WORK_DIR/budget_report.md]``.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from nnunet_ext.evaluation.stats import paired_tests

STOCK = "nnUNetTrainer"
RUN_DIR = re.compile(r"^(?P<setting>j3_nv|j3|j1|oracle\d+)_(?P<steps>\d+)$")
ORACLE_OF = {"j3": "oracle832", "j3_nv": "oracle832", "j1": "oracle836"}


def read_cells(work: Path) -> dict:
    """``{(setting, steps, checkpoint, trainer): {seed: {case: Dice}}}`` from every results.csv under ``work``."""
    cells: dict = defaultdict(lambda: defaultdict(dict))
    for results in sorted(work.glob("*/*/results.csv")):
        match = RUN_DIR.match(results.parent.parent.name)
        if not match or results.parent.name not in ("final", "best"):
            continue
        with open(results, newline="") as f:
            for row in csv.DictReader(f):
                key = (
                    match["setting"],
                    int(match["steps"]),
                    row.get("checkpoint") or results.parent.name,
                    row["trainer"],
                )
                cells[key][int(row.get("seed") or 0)][row["case"]] = float(row["Dice"])
    return cells


def seed_summary(per_seed: dict[int, dict[str, float]]) -> tuple[float, float, dict[str, float], int]:
    """Mean over seeds of the mean Dice, seed-to-seed sd, per-case Dice averaged over seeds, number of seeds."""
    means = [float(np.nanmean(list(cases.values()))) for cases in per_seed.values()]
    common = set.intersection(*(set(c) for c in per_seed.values()))
    averaged = {case: float(np.mean([per_seed[s][case] for s in per_seed])) for case in sorted(common)}
    sd = float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")
    return float(np.mean(means)), sd, averaged, len(means)


def fmt_p(p: float) -> str:
    return "n/a" if np.isnan(p) else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def build_table(cells: dict) -> str:
    lines = [
        "| setting | steps | checkpoint | trainer | seeds | test Dice | sd seeds | Δ vs stock | p (t / Wilcoxon) "
        "| gap recovered |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    settings = sorted({k[0] for k in cells if not k[0].startswith("oracle")})
    for setting in settings:
        for steps in sorted({k[1] for k in cells if k[0] == setting}):
            for checkpoint in ("final", "best"):
                trainers = sorted(
                    {k[3] for k in cells if k[:3] == (setting, steps, checkpoint)}, key=lambda t: (t != STOCK, t)
                )
                if not trainers:
                    continue
                stock = cells.get((setting, steps, checkpoint, STOCK))
                stock_mean, _, stock_cases, _ = seed_summary(stock) if stock else (np.nan, np.nan, {}, 0)
                oracle = cells.get((ORACLE_OF.get(setting, ""), steps, "final", STOCK))
                oracle_mean = seed_summary(oracle)[0] if oracle else np.nan
                for trainer in trainers:
                    mean, sd, cases, n = seed_summary(cells[(setting, steps, checkpoint, trainer)])
                    if trainer == STOCK or not stock_cases:
                        delta, p, recovered = "(baseline)" if trainer == STOCK else "n/a", "", ""
                    else:
                        test = paired_tests(cases, stock_cases, missing="drop")
                        delta = f"{mean - stock_mean:+.4f}"
                        p = f"{fmt_p(test.t_pvalue)} / {fmt_p(test.wilcoxon_pvalue)}"
                        gap = oracle_mean - stock_mean
                        recovered = f"{100 * (mean - stock_mean) / gap:.0f} %" if gap > 0 else "n/a"
                    sd_text = "n/a" if np.isnan(sd) else f"{sd:.4f}"
                    lines.append(
                        f"| {setting} | {steps} | {checkpoint} | {trainer} | {n} | {mean:.4f} | {sd_text} | {delta} "
                        f"| {p} | {recovered} |"
                    )
    for key in sorted(k for k in cells if k[0].startswith("oracle") and k[2] == "final"):
        mean, sd, _, n = seed_summary(cells[key])
        lines.append(f"| {key[0]} (clean labels) | {key[1]} | final | {key[3]} | {n} | {mean:.4f} | | | | |")
    return "\n".join(lines) + "\n"


def plot_dice_vs_steps(cells: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({k[0] for k in cells if not k[0].startswith("oracle")})
    if not settings:
        return
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False, constrained_layout=True)
    for ax, setting in zip(axes[0], settings):
        trainers = sorted({k[3] for k in cells if k[0] == setting}, key=lambda t: (t != STOCK, t))
        for i, trainer in enumerate(trainers):
            for checkpoint, style in (("final", "-"), ("best", "--")):
                points = sorted(
                    (k[1], seed_summary(v)[0])
                    for k, v in cells.items()
                    if k[0] == setting and k[2] == checkpoint and k[3] == trainer
                )
                if points:
                    x, y = zip(*points)
                    label = trainer if checkpoint == "final" else None
                    ax.plot(x, y, style, marker="o", color=f"C{i}", label=label)
        oracle = sorted(
            (k[1], seed_summary(v)[0]) for k, v in cells.items() if k[0] == ORACLE_OF.get(setting) and k[2] == "final"
        )
        if oracle:
            x, y = zip(*oracle)
            ax.plot(x, y, ":", color="black", marker="s", label="oracle (clean labels)")
        ax.set_title(f"{setting} (solid: final, dashed: best)", fontsize=11)
        ax.set_xlabel("training steps", fontsize=10)
        ax.set_ylabel("clean test Dice", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_curves(work: Path, path: Path) -> None:
    """Training loss and validation pseudo-Dice per epoch of the seed-0 runs at the largest budget per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    runs = {}
    for folder in work.iterdir():
        match = RUN_DIR.match(folder.name)
        if match and not match["setting"].startswith("oracle"):
            steps = int(match["steps"])
            if steps >= runs.get(match["setting"], (0, None))[0]:
                runs[match["setting"]] = (steps, folder)
    if not runs:
        return
    fig, axes = plt.subplots(2, len(runs), figsize=(5 * len(runs), 6.5), squeeze=False, constrained_layout=True)
    for col, (setting, (steps, folder)) in enumerate(sorted(runs.items())):
        for i, checkpoint in enumerate(sorted(folder.glob("nnUNet_results/*/*/fold_0/checkpoint_final.pth"))):
            if "seed_" in str(checkpoint.parent.parent.name) and "seed_0" not in str(checkpoint):
                continue
            log = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
            trainer = checkpoint.parent.parent.name.split("__")[0]
            epochs = np.arange(1, len(log["train_losses"]) + 1)
            axes[0][col].plot(epochs, log["train_losses"], color=f"C{i}", label=trainer, lw=1)
            axes[1][col].plot(epochs, log["ema_fg_dice"], color=f"C{i}", label=trainer, lw=1)
        axes[0][col].set_title(f"{setting}, {steps} steps: training loss", fontsize=11)
        axes[1][col].set_title("validation pseudo-Dice (EMA, fold's labels)", fontsize=11)
        for ax in axes[:, col]:
            ax.set_xlabel("epoch", fontsize=10)
            ax.tick_params(labelsize=9)
            ax.grid(alpha=0.3)
    axes[1][0].legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the budget_sweep.sh work folder")
    parser.add_argument("-o", "--output", type=Path, help="markdown file (default: WORK/budget_report.md)")
    args = parser.parse_args(argv)
    cells = read_cells(args.work)
    if not cells:
        parser.error(f"no <setting>_<steps>/results.csv under {args.work}; run examples/jsrt/budget_sweep.sh first")
    table = build_table(cells)
    out = args.output or args.work / "budget_report.md"
    out.write_text(table)
    plot_dice_vs_steps(cells, out.parent / "budget_dice_vs_steps.png")
    plot_curves(args.work, out.parent / "budget_curves.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
