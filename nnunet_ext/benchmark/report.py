"""Benchmark tables, paired tests, ``results.csv``, ``report.md`` and box plots, from per-case result rows.

A row is one (dataset, configuration, trainer, fold, [seed,] case, label/region) with the case's metrics (the columns of
``nnunet_ext.evaluation.evaluate``'s ``metrics.csv``), the reference's lesion-size group and volume (3-D data) or area
(2-D data: ``volume_ref_cc`` NaN, ``area_ref_mm2``/``area_pred_mm2`` set; 3-D rows have NaN there).

Conventions (pinned by tests):

- Per case, a metric is the mean over the folds of the run matrix (a plain mean: NaN when one fold is NaN), and with
  several seeds the mean of those per-seed means, so every test case counts once however many folds and seeds were
  trained.
- Rows of a benchmark with several seeds carry a ``seed`` (a ``results.csv`` column after ``fold``); one-seed rows do
  not, so their files are those of a benchmark without seeds. Over seeds, a trainer's metric is summarised as the mean
  and the seed-to-seed SD (``ddof=1``) of its per-seed means over cases (:func:`seed_summary`).
- Groups: ``all`` plus the lesion-size groups (A, B, C, ...) of the case's reference volume (3-D) or area (2-D) for
  that label/region; a panel is 2-D when its rows carry areas.
- Mean ± SD over cases ignore NaN (SD with ``ddof=1``, NaN below two values); the table says how many were NaN.
- Paired tests: every trainer against the baseline, per dataset, configuration, label/region, group and metric,
  paired by case id with :func:`nnunet_ext.evaluation.stats.paired_tests` (two-sided paired t-test and Wilcoxon
  signed-rank; pairs with a NaN dropped and counted; cases missing on one side dropped and counted).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ext.evaluation.lesions import DEFAULT_SIZE_EDGES_MM2, group_intervals
from nnunet_ext.evaluation.metrics import AREA_KEYS, METRIC_KEYS
from nnunet_ext.evaluation.stats import PairedTestResult, paired_tests

ROW_KEYS: tuple[str, ...] = (
    "dataset",
    "configuration",
    "trainer",
    "fold",
    "case",
    "label_or_region",
    "size_group",
    "volume_ref_cc",
)
CSV_COLUMNS: tuple[str, ...] = (*ROW_KEYS, *METRIC_KEYS, *AREA_KEYS)
"""``results.csv`` columns: volumes (3-D rows) and areas (2-D rows) both, NaN where they do not apply; rows of
several seeds add a ``seed`` column after ``fold`` (:func:`csv_columns`)."""
SEED_KEY = "seed"
ALL_CASES = "all"
SIGNIFICANCE = 0.05

Row = dict[str, Any]
Panel = tuple[str, str, str]  # dataset, configuration, label/region


def rows_from_summary(
    summary: Mapping[str, Any], dataset: str, configuration: str, trainer: str, fold, seed: int | None = None
) -> list[Row]:
    """Result rows of one run from the ``summary.json`` written by ``evaluate_folders`` (``seed``: benchmarks with
    several seeds only)."""
    rows = []
    for case in summary["metric_per_case"]:
        for key, metrics in case["metrics"].items():
            row: Row = {
                "dataset": dataset,
                "configuration": configuration,
                "trainer": trainer,
                "fold": str(fold),
                "case": case["case"],
                "label_or_region": key,
                "size_group": case["size_group"][key],
                "volume_ref_cc": float(metrics.get("volume_ref_mm3", math.nan)) / 1000.0,
            }
            if seed is not None:
                row[SEED_KEY] = int(seed)
            row.update({m: float(metrics.get(m, math.nan)) for m in (*METRIC_KEYS, *AREA_KEYS)})
            rows.append(row)
    return rows


def csv_columns(rows: Sequence[Row]) -> list[str]:
    """:data:`CSV_COLUMNS`, with ``seed`` after ``fold`` when a row carries a seed."""
    columns = list(CSV_COLUMNS)
    if any(SEED_KEY in r for r in rows):
        columns.insert(columns.index("fold") + 1, SEED_KEY)
    return columns


def write_results_csv(rows: Iterable[Row], path: str | Path) -> Path:
    path = Path(path)
    rows = list(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns(rows), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def read_results_csv(path: str | Path) -> list[Row]:
    """Rows of a ``results.csv``; metric columns and ``volume_ref_cc`` as floats ('nan' -> NaN, areas NaN if absent)."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ROW_KEYS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a benchmark results.csv: columns {missing} missing")
        for raw in reader:
            row: Row = {k: raw[k] for k in ROW_KEYS}
            if raw.get(SEED_KEY) not in (None, ""):
                row[SEED_KEY] = int(raw[SEED_KEY])
            row["volume_ref_cc"] = float(raw["volume_ref_cc"])
            row.update({m: float(raw[m]) for m in METRIC_KEYS if m in raw})
            row.update({m: float(raw.get(m) or math.nan) for m in AREA_KEYS})  # files written before areas: NaN
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# aggregation
def _ordered(values: Iterable[str], first: str | None = None) -> list[str]:
    seen = list(dict.fromkeys(values))
    if first is not None and first in seen:
        seen.remove(first)
        seen.insert(0, first)
    return seen


def panels(rows: Sequence[Row]) -> list[Panel]:
    return _ordered((r["dataset"], r["configuration"], r["label_or_region"]) for r in rows)


def trainers_of(rows: Sequence[Row], baseline: str | None = None) -> list[str]:
    return _ordered((r["trainer"] for r in rows), baseline)


def case_values(rows: Sequence[Row], panel: Panel, trainer: str, metric: str) -> dict[str, float]:
    """Case id -> metric of one trainer in one panel: the mean over folds, then (several seeds) the mean of those
    over seeds, so every seed weighs the same even when one lacks a fold; NaN if any value is NaN."""
    per_case: dict[str, dict[int | None, list[float]]] = {}
    for r in rows:
        if (r["dataset"], r["configuration"], r["label_or_region"]) == panel and r["trainer"] == trainer:
            per_case.setdefault(r["case"], {}).setdefault(r.get(SEED_KEY), []).append(float(r[metric]))
    out = {}
    for case, by_seed in per_case.items():
        means = [float(np.mean(v)) for v in by_seed.values()]
        out[case] = means[0] if len(means) == 1 else float(np.mean(means))
    return out


def case_groups(rows: Sequence[Row], panel: Panel) -> dict[str, str]:
    """Case id -> lesion-size group (from the reference, the same for every trainer)."""
    groups: dict[str, str] = {}
    for r in rows:
        if (r["dataset"], r["configuration"], r["label_or_region"]) == panel:
            previous = groups.setdefault(r["case"], r["size_group"])
            if previous != r["size_group"]:
                raise ValueError(
                    f"case {r['case']!r} of {panel} has size groups {previous!r} and {r['size_group']!r}: the runs "
                    "were evaluated against different references"
                )
    return groups


def is_2d_panel(rows: Sequence[Row], panel: Panel) -> bool:
    """A panel of 2-D data: its rows carry reference areas (size groups by area in mm², not volume in cc)."""
    return any(
        not math.isnan(float(r.get("area_ref_mm2", math.nan)))
        for r in rows
        if (r["dataset"], r["configuration"], r["label_or_region"]) == panel
    )


def group_names_of(rows: Sequence[Row], panel: Panel) -> list[str]:
    return [ALL_CASES, *sorted(set(case_groups(rows, panel).values()))]


def _in_group(values: Mapping[str, float], groups: Mapping[str, str], group: str) -> dict[str, float]:
    if group == ALL_CASES:
        return dict(values)
    return {c: v for c, v in values.items() if groups.get(c) == group}


@dataclass(frozen=True)
class Description:
    """Mean ± SD of one metric over cases (NaN ignored)."""

    n: int
    n_nan: int
    mean: float
    sd: float


def describe(values: Iterable[float]) -> Description:
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    mean = float(finite.mean()) if finite.size else math.nan
    sd = float(finite.std(ddof=1)) if finite.size >= 2 else math.nan
    return Description(n=int(arr.size), n_nan=int(arr.size - finite.size), mean=mean, sd=sd)


def seeds_of(rows: Sequence[Row]) -> list[int]:
    """The seeds the rows carry (empty for one-seed benchmarks)."""
    return sorted({int(r[SEED_KEY]) for r in rows if SEED_KEY in r})


def seed_summary(rows: Sequence[Row], panel: Panel, trainer: str, metric: str) -> Description:
    """Over seeds: per seed, the mean over cases (NaN ignored) of the fold-averaged case values; then their mean and
    seed-to-seed SD (``ddof=1``; NaN below two seeds). ``n`` counts seeds, ``n_nan`` seeds without a finite mean."""
    per_seed = []
    mine = [
        r for r in rows if r["trainer"] == trainer and (r["dataset"], r["configuration"], r["label_or_region"]) == panel
    ]
    for seed in seeds_of(mine):
        seed_rows = [r for r in mine if r[SEED_KEY] == seed]
        per_seed.append(describe(case_values(seed_rows, panel, trainer, metric).values()).mean)
    return describe(per_seed)


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a trainer against the baseline."""

    dataset: str
    configuration: str
    label_or_region: str
    group: str
    trainer: str
    baseline: str
    metric: str
    result: PairedTestResult


def compare(rows: Sequence[Row], baseline: str, metrics: Sequence[str]) -> list[Comparison]:
    """Paired tests of every trainer against ``baseline`` per panel, size group (``all`` first) and metric."""
    out = []
    for panel in panels(rows):
        trainers = trainers_of([r for r in rows if (r["dataset"], r["configuration"], r["label_or_region"]) == panel])
        if baseline not in trainers:
            continue
        groups = case_groups(rows, panel)
        for group in group_names_of(rows, panel):
            for trainer in trainers:
                if trainer == baseline:
                    continue
                for metric in metrics:
                    a = _in_group(case_values(rows, panel, trainer, metric), groups, group)
                    b = _in_group(case_values(rows, panel, baseline, metric), groups, group)
                    out.append(Comparison(*panel, group, trainer, baseline, metric, paired_tests(a, b, missing="drop")))
    return out


# ---------------------------------------------------------------------------------------------------------------
# formatting
def _fmt_value(metric: str, v: float) -> str:
    if math.isnan(v):
        return "nan"
    return f"{v:.2f}" if metric.endswith(("_mm", "_mm2", "_mm3")) else f"{v:.4f}"


def fmt_description(metric: str, d: Description) -> str:
    text = f"{_fmt_value(metric, d.mean)} ± {_fmt_value(metric, d.sd)}"
    return text + (f" ({d.n_nan} NaN)" if d.n_nan else "")


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "nan"
    return f"{p:.3g}" + ("*" if p < SIGNIFICANCE else "")


def _panel_title(panel: Panel) -> str:
    dataset, configuration, label = panel
    return f"{dataset} · {configuration} · label/region {label}"


def render_markdown(
    rows: Sequence[Row],
    baseline: str,
    metrics: Sequence[str],
    size_edges_cc: Sequence[float],
    header_lines: Sequence[str] = (),
    *,
    size_edges_mm2: Sequence[float] = DEFAULT_SIZE_EDGES_MM2,
) -> str:
    """``report.md``: per panel, mean ± SD per size group and trainer, then the paired tests.

    ``size_edges_cc`` label the groups of 3-D panels, ``size_edges_mm2`` those of 2-D panels (:func:`is_2d_panel`);
    both must be the edges the runs were evaluated with.
    """
    intervals_3d, intervals_2d = group_intervals(size_edges_cc, "cc"), group_intervals(size_edges_mm2, "mm²")
    two_d = {panel: is_2d_panel(rows, panel) for panel in panels(rows)}
    size_lines = []
    if not all(two_d.values()):
        size_lines.append(
            "- Size groups by reference volume: " + ", ".join(f"{g} {iv}" for g, iv in intervals_3d.items()) + "."
        )
    if any(two_d.values()):
        size_lines.append(
            "- Size groups of 2-D data (single slices) by reference area: "
            + ", ".join(f"{g} {iv}" for g, iv in intervals_2d.items())
            + "."
        )
    comparisons = compare(rows, baseline, metrics)
    seeds = seeds_of(rows)
    averaged = "the folds and seeds" if seeds else "the folds"
    lines = ["# Benchmark report", ""]
    lines += list(header_lines)
    lines += [
        f"- Baseline: `{baseline}`; per case, metrics are averaged over {averaged}. Mean ± SD over cases (NaN "
        "ignored, counted in brackets).",
        "- Paired tests per case id: two-sided paired t-test and Wilcoxon signed-rank; `*` marks p < "
        f"{SIGNIFICANCE}; pairs with a NaN are dropped and counted.",
        *size_lines,
        "",
    ]
    for panel in panels(rows):
        panel_rows = [r for r in rows if (r["dataset"], r["configuration"], r["label_or_region"]) == panel]
        trainers = trainers_of(panel_rows, baseline)
        groups = case_groups(rows, panel)
        intervals = intervals_2d if two_d[panel] else intervals_3d
        lines += [f"## {_panel_title(panel)}", ""]
        lines += ["| group | trainer | n | " + " | ".join(metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
        for group in group_names_of(rows, panel):
            for trainer in trainers:
                cells = []
                n = 0
                for metric in metrics:
                    values = _in_group(case_values(rows, panel, trainer, metric), groups, group)
                    d = describe(values.values())
                    n = d.n
                    cells.append(fmt_description(metric, d))
                name = f"{trainer} (baseline)" if trainer == baseline else trainer
                label = group if group == ALL_CASES else f"{group} {intervals.get(group, '')}".strip()
                lines.append(f"| {label} | {name} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
        if seeds:
            lines += _seed_table(rows, panel, trainers, baseline, metrics)
        panel_cmp = [c for c in comparisons if (c.dataset, c.configuration, c.label_or_region) == panel]
        if panel_cmp:
            lines += [
                f"Paired tests vs `{baseline}`:",
                "",
                "| group | trainer | metric | n pairs | NaN pairs dropped | unpaired | mean diff | t-test p | "
                "Wilcoxon p |",
                "|---" * 9 + "|",
            ]
            for c in panel_cmp:
                r = c.result
                lines.append(
                    f"| {c.group} | {c.trainer} | {c.metric} | {r.n_pairs} | {r.n_dropped_nan} | {r.n_unpaired} | "
                    f"{_fmt_value(c.metric, r.mean_difference)} | {fmt_p(r.t_pvalue)} | {fmt_p(r.wilcoxon_pvalue)} |"
                )
            lines.append("")
    return "\n".join(lines)


def _seed_table(
    rows: Sequence[Row], panel: Panel, trainers: Sequence[str], baseline: str, metrics: Sequence[str]
) -> list[str]:
    seeds = seeds_of([r for r in rows if (r["dataset"], r["configuration"], r["label_or_region"]) == panel])
    lines = [
        f"Over seeds {', '.join(map(str, seeds))} (all cases): mean ± seed-to-seed SD of the per-seed mean over cases:",
        "",
        "| trainer | seeds | " + " | ".join(metrics) + " |",
        "|---" * (2 + len(metrics)) + "|",
    ]
    for trainer in trainers:
        cells = []
        n = 0
        for metric in metrics:
            d = seed_summary(rows, panel, trainer, metric)
            n = d.n
            cells.append(fmt_description(metric, d))
        name = f"{trainer} (baseline)" if trainer == baseline else trainer
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def console_table(rows: Sequence[Row], baseline: str, metrics: Sequence[str]) -> str:
    """Compact text table over all cases: mean ± SD per metric and the t-test / Wilcoxon p-values vs baseline; with
    several seeds also the mean ± seed-to-seed SD of the per-seed means."""
    with_seeds = bool(seeds_of(rows))
    comparisons = {
        (c.dataset, c.configuration, c.label_or_region, c.trainer, c.metric): c.result
        for c in compare(rows, baseline, metrics)
        if c.group == ALL_CASES
    }
    blocks = []
    for panel in panels(rows):
        panel_rows = [r for r in rows if (r["dataset"], r["configuration"], r["label_or_region"]) == panel]
        trainers = trainers_of(panel_rows, baseline)
        header = ["trainer", *metrics, *(f"p {m} (t / W)" for m in metrics)]
        if with_seeds:
            header += [f"{m} over seeds" for m in metrics]
        table = []
        n_cases = 0
        for trainer in trainers:
            cells = [f"{trainer} (baseline)" if trainer == baseline else trainer]
            for metric in metrics:
                d = describe(case_values(rows, panel, trainer, metric).values())
                n_cases = max(n_cases, d.n)
                cells.append(fmt_description(metric, d))
            for metric in metrics:
                r = comparisons.get((*panel, trainer, metric))
                cells.append("-" if r is None else f"{fmt_p(r.t_pvalue)} / {fmt_p(r.wilcoxon_pvalue)}")
            if with_seeds:
                cells += [fmt_description(m, seed_summary(rows, panel, trainer, m)) for m in metrics]
            table.append(cells)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
        lines = [f"{_panel_title(panel)} (all cases, n = {n_cases})"]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in table]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


BOX_PLOT_DPI = 150
BOX_PLOT_FONT_SIZES = {"font.size": 10, "axes.titlesize": 11, "figure.titlesize": 12, "ytick.labelsize": 10}
"""Balanced sizes at the saved size (pt): trainer names and values 10, metric titles 11, the panel title 12."""


def box_plot_figure(rows: Sequence[Row], panel: Panel, baseline: str, metrics: Sequence[str]):
    """The box-plot figure of one panel: one axis per metric, one horizontal box per trainer (baseline on top).

    Horizontal boxes keep long trainer names readable without rotation; the names are the shared y tick labels of
    the first axis. Constrained layout sizes the margins to the labels, and :func:`box_plots` saves with
    ``bbox_inches="tight"``, so nothing is cut. Values: per case, averaged over folds (and seeds); NaN dropped.
    """
    import inspect

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_rows = [r for r in rows if (r["dataset"], r["configuration"], r["label_or_region"]) == panel]
    trainers = trainers_of(panel_rows, baseline)
    names = [f"{t} (baseline)" if t == baseline else t for t in trainers]
    horizontal = (
        {"orientation": "horizontal"}
        if "orientation" in inspect.signature(matplotlib.axes.Axes.boxplot).parameters
        else {"vert": False}
    )
    with plt.rc_context(BOX_PLOT_FONT_SIZES):
        fig, axes = plt.subplots(
            1,
            len(metrics),
            figsize=(1.5 + 3.2 * len(metrics), 1.6 + 0.55 * len(trainers)),
            sharey=True,
            squeeze=False,
            layout="constrained",
        )
        positions = list(range(1, len(trainers) + 1))
        for ax, metric in zip(axes[0], metrics):
            data = []
            for trainer in trainers:
                values = np.asarray(list(case_values(rows, panel, trainer, metric).values()), dtype=np.float64)
                data.append(values[~np.isnan(values)])
            ax.boxplot(data, positions=positions, widths=0.6, showmeans=True, **horizontal)
            ax.set_title(metric)
            ax.grid(axis="x", alpha=0.3)
            ax.tick_params(axis="x", labelsize=9)
        axes[0][0].set_yticks(positions)
        axes[0][0].set_yticklabels(names)
        axes[0][0].invert_yaxis()  # shared: the baseline is the top box in every axis
        fig.suptitle(_panel_title(panel))
    return fig


def box_plots(rows: Sequence[Row], baseline: str, metrics: Sequence[str], out_dir: str | Path) -> list[Path]:
    """One PNG per panel (:func:`box_plot_figure`), saved at :data:`BOX_PLOT_DPI` with a tight bounding box."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for panel in panels(rows):
        fig = box_plot_figure(rows, panel, baseline, metrics)
        path = out_dir / f"boxplot_{_slug(panel[0])}_{_slug(panel[1])}_{_slug(panel[2])}.png"
        fig.savefig(path, dpi=BOX_PLOT_DPI, bbox_inches="tight", pad_inches=0.1)
        plt.close(fig)
        files.append(path)
    return files


@dataclass(frozen=True)
class ReportFiles:
    results_csv: Path
    report_md: Path
    box_plots: tuple[Path, ...]


def write_report(
    rows: Sequence[Row],
    output_dir: str | Path,
    baseline: str,
    metrics: Sequence[str],
    size_edges_cc: Sequence[float],
    header_lines: Sequence[str] = (),
    *,
    size_edges_mm2: Sequence[float] = DEFAULT_SIZE_EDGES_MM2,
) -> ReportFiles:
    """Write ``results.csv``, ``report.md`` and ``boxplots/*.png`` into ``output_dir``."""
    if not rows:
        raise ValueError("no result rows to report: no run has finished yet")
    known = (*METRIC_KEYS, *AREA_KEYS)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(known)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_results_csv(rows, output_dir / "results.csv")
    md_path = output_dir / "report.md"
    md_path.write_text(
        render_markdown(rows, baseline, metrics, size_edges_cc, header_lines, size_edges_mm2=size_edges_mm2)
    )
    plots = box_plots(rows, baseline, metrics, output_dir / "boxplots")
    return ReportFiles(csv_path, md_path, tuple(plots))
