"""``nnunet-ext evaluate``: Dice, HD95, ASSD, RVE, sensitivity, specificity of predictions against references, in mm.

Thin wrapper over :func:`nnunet_ext.evaluation.evaluate.evaluate_folders`; writes ``metrics.csv`` and
``summary.json`` (nnU-Net's schema plus the new metrics and lesion-size groups) and prints the means. Use the
**clean** labels as references (``labelsTr_clean`` of a simulated noisy dataset).

2-D datasets (every reference a single slice: PNG, 2-D NIfTI, or ``(1, H, W)`` NIfTI such as nnU-Net's 999-spacing
slices) get areas in mm² and size groups by reference area (``--size-edges-mm2``, default 1600 4000); 3-D datasets
volumes and groups by reference volume (``--size-edges``, cc, default 50 200). The rule is documented in
:mod:`nnunet_ext.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from nnunet_ext.evaluation.lesions import DEFAULT_SIZE_EDGES_CC, DEFAULT_SIZE_EDGES_MM2

TABLE_METRICS: tuple[str, ...] = ("Dice", "HD95_mm", "ASSD_mm", "RVE", "Sensitivity", "Specificity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-ref", required=True, help="folder of reference label maps (use the clean labels)")
    parser.add_argument("-pred", required=True, help="folder of predicted label maps")
    parser.add_argument(
        "-djfile", default=None, help="dataset.json: labels/regions and file ending (default: labels found, .nii.gz)"
    )
    parser.add_argument(
        "--brats-empty",
        action="store_true",
        help="HD95/ASSD = 373.12866 mm instead of NaN when exactly one mask is empty (BraTS convention)",
    )
    parser.add_argument("-o", dest="output_dir", default=None, help="output folder (default: the -pred folder)")
    parser.add_argument(
        "--size-edges",
        type=float,
        nargs="+",
        default=list(DEFAULT_SIZE_EDGES_CC),
        metavar="CC",
        help="3-D data: lesion-size group edges in cc; groups are [0, e1), [e1, e2), ... (default: 50 200)",
    )
    parser.add_argument(
        "--size-edges-mm2",
        type=float,
        nargs="+",
        default=list(DEFAULT_SIZE_EDGES_MM2),
        metavar="MM2",
        help="2-D data (every reference a single slice): size group edges by reference area in mm² (default: 1600 "
        "4000, the central cross-sections of 50 cc and 200 cc spheres, rounded down)",
    )
    parser.add_argument("--file-ending", default=None, help="overrides dataset.json's file_ending (e.g. .png)")
    parser.add_argument(
        "-np", dest="num_processes", type=int, default=None, help="worker processes (default: $nnUNet_def_n_proc or 8)"
    )
    parser.add_argument("--chill", action="store_true", help="allow references without a prediction")


def format_means(summary: dict[str, Any]) -> str:
    """A small table: one row per label/region and the foreground mean, columns :data:`TABLE_METRICS`."""

    def fmt(v: float) -> str:
        return "nan" if math.isnan(v) else f"{v:.4f}"

    rows = [(k, summary["mean"][k]) for k in summary["mean"]] + [("foreground", summary["foreground_mean"])]
    width = max(len("label/region"), *(len(k) for k, _ in rows))
    lines = ["  ".join(["label/region".ljust(width), *(m.rjust(11) for m in TABLE_METRICS)])]
    for key, means in rows:
        lines.append("  ".join([key.ljust(width), *(fmt(means[m]).rjust(11) for m in TABLE_METRICS)]))
    return "\n".join(lines)


def describe_sizes(summary: dict[str, Any]) -> str:
    """One line: 2-D or 3-D data, the size unit and the size groups."""
    groups = ", ".join(f"{g} {iv}" for g, iv in summary["size_groups"]["intervals"].items())
    if summary["settings"]["spatial_dims"] == 2:
        return f"2-D data (every reference a single slice): areas in mm², size groups by reference area: {groups}"
    return f"3-D data: volumes in mm³, size groups by reference volume: {groups}"


def check_inputs(args: argparse.Namespace) -> None:
    """Refuse missing folders and files before any work, naming the flag (user errors: FileNotFoundError)."""
    import os

    for flag, folder, what in (
        ("-ref", args.ref, "the folder of reference label maps (the clean labels, e.g. labelsTs)"),
        ("-pred", args.pred, "the folder of predicted label maps (nnunet-ext predict -o)"),
    ):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{flag} {folder} is not a folder; give {what}")
    if args.djfile is not None and not os.path.isfile(args.djfile):
        raise FileNotFoundError(f"-djfile {args.djfile} is not a file; give the dataset's dataset.json or omit -djfile")
    if args.num_processes is not None and args.num_processes < 0:
        raise ValueError(f"-np must be >= 0, got {args.num_processes}; 0 or 1 evaluate in this process")


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.evaluation.evaluate import evaluate_folders

    check_inputs(args)
    summary = evaluate_folders(
        args.ref,
        args.pred,
        dataset_json=args.djfile,
        brats_empty=args.brats_empty,
        size_edges_cc=args.size_edges,
        num_processes=args.num_processes,
        output_dir=args.output_dir,
        file_ending=args.file_ending,
        chill=args.chill,
        size_edges_mm2=args.size_edges_mm2,
    )
    n_cases = len(summary["metric_per_case"])
    out = args.output_dir if args.output_dir is not None else args.pred
    print(describe_sizes(summary))
    print(f"{n_cases} cases; means (NaN ignored, counts in summary.json 'nan_count'):")
    print(format_means(summary))
    print(f"wrote {out}/metrics.csv and {out}/summary.json")
    return 0
