"""Combine the JSRT benchmark runs into one table: every trainer against the noisy-label baseline and the oracle.

Reads the ``results.csv`` of two ``nnunet-ext benchmark`` output folders (noisy-label dataset, clean-label oracle
dataset; same 75 clean test references), and prints / writes a markdown table with mean ± sd of Dice, HD95 and RVE,
paired t-test and Wilcoxon p-values against the baseline (stock nnUNetTrainer on noisy labels, paired by case), and
the fraction of the oracle-baseline gap in mean Dice each trainer recovers:
``(Dice_trainer - Dice_baseline) / (Dice_oracle - Dice_baseline)``.

Usage:
    python examples/jsrt/report_jsrt.py --noisy OUT/bench_noisy --oracle OUT/bench_oracle \
        --baseline nnUNetTrainer:2d_cpu --oracle-run nnUNetTrainer:2d_cpu [-o table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nnunet_ext.benchmark.report import read_results_csv, rows_from_summary
from nnunet_ext.evaluation.stats import paired_tests

METRICS = (("Dice", "Dice", 1.0), ("HD95_mm", "HD95 (mm)", 1.0), ("RVE", "RVE", 1.0))


def per_case(rows, trainer: str, configuration: str, metric: str) -> dict[str, float]:
    return {r["case"]: r[metric] for r in rows if r["trainer"] == trainer and r["configuration"] == configuration}


def fmt(values) -> str:
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if v.size > 1 else "n/a"


def fmt_p(p: float) -> str:
    return "n/a" if np.isnan(p) else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def build_table(noisy_rows, oracle_rows, baseline: tuple[str, str], oracle: tuple[str, str]) -> str:
    runs = list(dict.fromkeys((r["trainer"], r["configuration"]) for r in noisy_rows))
    base = {m: per_case(noisy_rows, *baseline, m) for m, _, _ in METRICS}
    orc = {m: per_case(oracle_rows, *oracle, m) for m, _, _ in METRICS}
    gap = np.nanmean(list(orc["Dice"].values())) - np.nanmean(list(base["Dice"].values()))
    head = "| labels | trainer | configuration | " + " | ".join(f"{t} mean ± sd" for _, t, _ in METRICS)
    head += " | p Dice (t / Wilcoxon) | p HD95 (t / Wilcoxon) | gap recovered |\n"
    head += "|" + "---|" * (3 + len(METRICS) + 3) + "\n"
    lines = []

    def row(label: str, values: dict[str, dict[str, float]], name: tuple[str, str]) -> str:
        cells = [fmt(values[m].values()) for m, _, _ in METRICS]
        if values is base:
            tests = ["(baseline)", "(baseline)"]
            recovered = "0 %"
        else:
            tests = []
            for m in ("Dice", "HD95_mm"):
                r = paired_tests(values[m], base[m], missing="drop")
                tests.append(f"{fmt_p(r.t_pvalue)} / {fmt_p(r.wilcoxon_pvalue)}")
            d = np.nanmean(list(values["Dice"].values())) - np.nanmean(list(base["Dice"].values()))
            recovered = f"{100 * d / gap:.0f} %" if gap > 0 else "n/a"
        return f"| {label} | {name[0]} | {name[1]} | " + " | ".join(cells) + f" | {' | '.join(tests)} | {recovered} |"

    lines.append(row("clean (oracle)", orc, oracle))
    for run in runs:
        values = base if run == baseline else {m: per_case(noisy_rows, *run, m) for m, _, _ in METRICS}
        lines.append(row("noisy", values, run))
    n = len(base["Dice"])
    note = (
        f"\n{n} test cases; oracle-baseline gap in mean Dice: {gap:.4f}. p-values: paired two-sided t-test / "
        "Wilcoxon signed-rank against the noisy-label baseline, paired by case.\n"
    )
    return head + "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noisy", type=Path, required=True, help="benchmark output folder of the noisy dataset")
    parser.add_argument("--oracle", type=Path, required=True, help="benchmark output folder of the clean dataset")
    parser.add_argument("--baseline", default="nnUNetTrainer:2d_cpu", help="TRAINER:CONFIGURATION on noisy labels")
    parser.add_argument("--oracle-run", default="nnUNetTrainer:2d_cpu", help="TRAINER:CONFIGURATION on clean labels")
    parser.add_argument(
        "--extra-run",
        action="append",
        default=[],
        metavar="TRAINER_LABEL:CONFIGURATION=SUMMARY_JSON",
        help="add a noisy-label run from its summary.json (e.g. an ablation with other settings); repeatable",
    )
    parser.add_argument("-o", "--output", type=Path, help="write the markdown table here too")
    args = parser.parse_args(argv)
    noisy_rows = read_results_csv(args.noisy / "results.csv")
    for extra in args.extra_run:
        name, summary = extra.split("=", 1)
        trainer, configuration = name.split(":", 1)
        noisy_rows += rows_from_summary(json.loads(Path(summary).read_text()), "", configuration, trainer, 0)
    table = build_table(
        noisy_rows,
        read_results_csv(args.oracle / "results.csv"),
        tuple(args.baseline.split(":", 1)),
        tuple(args.oracle_run.split(":", 1)),
    )
    print(table)
    if args.output:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
