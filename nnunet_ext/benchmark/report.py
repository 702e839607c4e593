"""Benchmark tables, paired tests, ``results.csv``, ``report.md`` and box plots, from per-case result rows.

A row is one (dataset, configuration, trainer, fold, case, label/region) with the case's metrics (the columns of
``nnunet_ext.evaluation.evaluate``'s ``metrics.csv``), the reference's lesion-size group and volume (3-D data) or area
(2-D data: ``volume_ref_cc`` NaN, ``area_ref_mm2``/``area_pred_mm2`` set; 3-D rows have NaN there).

Conventions (pinned by tests):

- Per case, a metric is the mean over the folds of the run matrix (a plain mean: NaN when one fold is NaN), so every
  test case counts once however many folds were trained.
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
"""``results.csv`` columns: volumes (3-D rows) and areas (2-D rows) both, NaN where they do not apply."""
ALL_CASES = "all"
SIGNIFICANCE = 0.05

Row = dict[str, Any]
Panel = tuple[str, str, str]  # dataset, configuration, label/region


def rows_from_summary(summary: Mapping[str, Any], dataset: str, configuration: str, trainer: str, fold) -> list[Row]:
    """Result rows of one run from the ``summary.json`` written by ``evaluate_folders``."""
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
            row.update({m: float(metrics.get(m, math.nan)) for m in (*METRIC_KEYS, *AREA_KEYS)})
            rows.append(row)
    return rows


def write_results_csv(rows: Iterable[Row], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
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
    """Case id -> metric of one trainer in one panel, averaged over folds (NaN if any fold is NaN)."""
    per_case: dict[str, list[float]] = {}
    for r in rows:
        if (r["dataset"], r["configuration"], r["label_or_region"]) == panel and r["trainer"] == trainer:
            per_case.setdefault(r["case"], []).append(float(r[metric]))
    return {case: float(np.mean(v)) for case, v in per_case.items()}


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
    lines = ["# Benchmark report", ""]
    lines += list(header_lines)
    lines += [
        f"- Baseline: `{baseline}`; per case, metrics are averaged over the folds. Mean ± SD over cases (NaN "
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


def console_table(rows: Sequence[Row], baseline: str, metrics: Sequence[str]) -> str:
    """Compact text table over all cases: mean ± SD per metric and the t-test / Wilcoxon p-values vs baseline."""
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
            table.append(cells)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
        lines = [f"{_panel_title(panel)} (all cases, n = {n_cases})"]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in table]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def box_plots(rows: Sequence[Row], baseline: str, metrics: Sequence[str], out_dir: str | Path) -> list[Path]:
    """One PNG per panel, one box-plot axis per metric, one box per trainer (all cases, NaN dropped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for panel in panels(rows):
        panel_rows = [r for r in rows if (r["dataset"], r["configuration"], r["label_or_region"]) == panel]
        trainers = trainers_of(panel_rows, baseline)
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(max(3.0, 1.2 + 1.6 * len(trainers)) * len(metrics), 4.5), squeeze=False
        )
        for ax, metric in zip(axes[0], metrics):
            data = []
            for trainer in trainers:
                values = np.asarray(list(case_values(rows, panel, trainer, metric).values()), dtype=np.float64)
                data.append(values[~np.isnan(values)])
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(trainers) + 1))
            ax.set_xticklabels(trainers, rotation=30, ha="right", fontsize=8)
            ax.set_title(metric)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(_panel_title(panel), fontsize=9)
        fig.tight_layout()
        path = out_dir / f"boxplot_{_slug(panel[0])}_{_slug(panel[1])}_{_slug(panel[2])}.png"
        fig.savefig(path, dpi=100)
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
