"""Writers of the audit: ``audit.csv`` (one row per case), ``audit.md`` (summary) and the montage of the worst cases."""

from __future__ import annotations

import csv
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ext.audit.measures import CASE_KEYS, CLASS_KEYS

LEADING_COLUMNS: tuple[str, ...] = ("case", "rank", "score", "trusted", "folds")
LOSS_COLUMNS: tuple[str, ...] = ("loss", "loss_on")

COLUMN_HELP: dict[str, str] = {
    "case": "nnU-Net case id (labelsTr name without the file ending)",
    "rank": "1 = the label that disagrees most with the model; empty for trusted cases (not ranked)",
    "score": "disagreement score (definition below); higher = more disagreement",
    "trusted": "1 for trusted (expert-checked) cases",
    "folds": "the cross-validation fold(s) whose validation set holds the case (values averaged over them)",
    "Dice": "Dice of label vs out-of-fold prediction (mean over the classes present in either)",
    "HD95_mm": "95th-percentile symmetric Hausdorff distance in mm (one empty mask: the image diagonal)",
    "ASSD_mm": "average symmetric surface distance in mm (one empty mask: the image diagonal)",
    "offset_mm": "signed boundary offset in mm, > 0 = the label's boundary lies outside the prediction's (label "
    "larger); mean over classes",
    "abs_offset_mm": "mean over classes of |offset_mm| (opposite offsets of two classes do not cancel)",
    "volume_ratio": "label volume / predicted volume (summed over classes); inf = empty prediction",
    "loss": "the trainer's own loss on the case (see 'Loss' below)",
    "loss_on": "what the loss was computed on: probabilities (.npz of --npz) or one_hot (the saved segmentation)",
}


def column_suffix(name: str) -> str:
    """A class name as a CSV column suffix (letters, digits and ``_``)."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "class"


def class_columns(class_names: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(column, class key, measure) of the per-class columns: ``Dice_<name>``, ``HD95_mm_<name>``, ..."""
    return [(f"{m}_{column_suffix(n)}", key, m) for key, n in class_names.items() for m in CLASS_KEYS]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def write_csv(rows: Sequence[Mapping[str, Any]], class_names: Mapping[str, str], path: Path) -> list[str]:
    """``audit.csv``: :data:`LEADING_COLUMNS`, the case aggregates, the loss, then the per-class columns.

    Returns:
        The header.
    """
    per_class = class_columns(class_names)
    header = [*LEADING_COLUMNS, *CASE_KEYS, *LOSS_COLUMNS, *(c for c, _, _ in per_class)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            values = [r.get(c) for c in (*LEADING_COLUMNS, *CASE_KEYS, *LOSS_COLUMNS)]
            values += [r["per_class"][key][m] for _, key, m in per_class]
            writer.writerow([_fmt(v) for v in values])
    return header


def _md(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}f}"
    return _fmt(value)


def write_markdown(
    path: Path,
    settings: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    class_names: Mapping[str, str],
    score_definition: str,
    loss_note: str,
    systematic: Mapping[str, Any] | None,
    top: int,
    montage: str | None,
) -> None:
    """``audit.md``: what was audited, the columns, the score, the top cases, the systematic offset."""
    ranked = [r for r in rows if r["rank"] is not None]
    lines = [
        f"# Label audit: {settings['dataset']}",
        "",
        f"Model `{settings['model_dir']}` ({settings['trainer']}, {settings['plans']}, {settings['configuration']}), "
        f"folds {', '.join(str(f) for f in settings['folds'])}: out-of-fold predictions of "
        f"{settings['n_cases']} of {settings['n_training_cases']} training cases "
        f"({settings['n_trusted']} trusted, not ranked); {settings['spatial_dims']}-D data, distances in mm.",
        "",
        f"**Score** (`{settings['score']}`): {score_definition}.",
        "",
        f"**Loss**: {loss_note}",
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{c}` | {COLUMN_HELP[c]} |" for c in (*LEADING_COLUMNS, *CASE_KEYS, *LOSS_COLUMNS)]
    names = ", ".join(f"`{column_suffix(n)}` ({k})" for k, n in class_names.items())
    lines += [
        f"| `<measure>_<class>` | {', '.join(CLASS_KEYS)} of one label/region: {names} |",
        "",
        f"## Top {min(top, len(ranked))} cases",
        "",
        "| rank | case | folds | score | Dice | HD95 mm | offset mm | volume ratio | loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ranked[:top]:
        lines.append(
            f"| {r['rank']} | {r['case']} | {_fmt(r['folds'])} | {_md(r['score'])} | {_md(r['Dice'])} | "
            f"{_md(r['HD95_mm'], 2)} | {_md(r['offset_mm'], 2)} | {_md(r['volume_ratio'], 2)} | {_md(r['loss'])} |"
        )
    if montage:
        lines += ["", f"![worst cases]({montage})"]
    lines += ["", "## Systematic offset (trusted cases)", ""]
    if systematic is None:
        lines.append(
            "No trusted cases among the audited ones (record expert-checked cases with `nnunet-ext trust` or pass "
            "`--trusted CASE ...`)."
        )
    else:
        lines += [
            f"Mean signed offset over the {systematic['n_cases']} trusted cases "
            f"({', '.join(systematic['cases'])}). On a trusted case the label is the expert's, so a negative value "
            "means the model (and so, most likely, the training labels it learnt from) draws the boundary outside "
            "the expert's by that many mm; an untrusted case's own drift against the expert is then about its "
            "`offset_mm` minus this value.",
            "",
            "| class | offset mm | cases |",
            "|---|---|---|",
        ]
        for key, entry in systematic["per_class"].items():
            lines.append(f"| {class_names.get(key, key)} ({key}) | {_md(entry['offset_mm'], 2)} | {entry['n']} |")
        lines.append(f"| case aggregate | {_md(systematic['aggregate_mm'], 2)} | {systematic['n_cases']} |")
    lines += [
        "",
        "Remove flagged cases from a copy of the raw dataset with `nnunet-ext prune -d "
        f"{settings['dataset_id']} --audit audit.csv --top-fraction 0.1 --out-id NNN` (or `--cases ...`).",
        "",
    ]
    path.write_text("\n".join(lines))


@dataclass(frozen=True)
class MontageEntry:
    """One row of the montage: 2-D slices of image (or None), given label and prediction."""

    case: str
    rank: int
    dice: float
    score: float
    image: np.ndarray | None
    label: np.ndarray
    prediction: np.ndarray
    aspect: float
    where: str


def _colours(n: int) -> np.ndarray:
    import matplotlib

    base = matplotlib.colormaps["tab10"].colors
    return np.array([base[(i - 1) % len(base)] for i in range(1, n + 1)])


def _overlay(ax, image: np.ndarray | None, seg: np.ndarray, colours: np.ndarray, aspect: float) -> None:
    if image is not None:
        lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect, interpolation="nearest")
    else:
        ax.imshow(np.zeros(seg.shape), cmap="gray", vmin=0, vmax=1, aspect=aspect)
    rgba = np.zeros((*seg.shape, 4))
    for value in range(1, len(colours) + 1):
        rgba[seg == value, :3] = colours[value - 1]
        rgba[seg == value, 3] = 0.55
    ax.imshow(rgba, aspect=aspect, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def write_montage(entries: Sequence[MontageEntry], value_names: Mapping[int, str], path: Path, title: str) -> None:
    """One PNG: a row per case (image | image + given label | image + prediction), case id, rank and Dice in titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n_values = max([1, *value_names]) if value_names else 1
    colours = _colours(n_values)
    rows = max(1, len(entries))
    title_lines = textwrap.wrap(title, 80, break_on_hyphens=False)
    header, footer = 0.25 + 0.25 * len(title_lines), 0.5  # inches for the title and the legend
    height = 3.4 * rows + header + footer
    fig, axes = plt.subplots(rows, 3, figsize=(10.5, height), squeeze=False)
    for row, e in zip(axes, entries):
        _overlay(row[0], e.image, np.zeros_like(e.label), colours, e.aspect)
        _overlay(row[1], e.image, e.label, colours, e.aspect)
        _overlay(row[2], e.image, e.prediction, colours, e.aspect)
        row[0].set_title(
            f"#{e.rank}  {e.case}\nimage, {e.where}"
            if e.image is not None
            else f"#{e.rank}  {e.case}\n(no image found), {e.where}",
            fontsize=11,
        )
        row[1].set_title(f"given label\nscore {e.score:.3f}", fontsize=11)
        row[2].set_title(f"out-of-fold prediction\nDice vs label {e.dice:.3f}", fontsize=11)
    for ax in axes.ravel()[3 * len(entries) :]:
        ax.axis("off")
    handles = [
        Patch(color=colours[v - 1], label=f"{v} {value_names.get(v, '')}".strip()) for v in range(1, n_values + 1)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=10, frameon=False)
    fig.suptitle("\n".join(title_lines), fontsize=13)
    fig.tight_layout(rect=(0, footer / height, 1, 1 - header / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)
