"""``nnunet-ext audit``: rank a dataset's training labels by their disagreement with nnU-Net's out-of-fold predictions.

Reads the validation predictions nnU-Net's cross-validation writes (``fold_k/validation``; ``--npz`` probabilities
are used for the loss column when present) and the training labels, and writes ``audit.csv``, ``audit.md``,
``audit.json`` and ``worst_cases.png`` to ``-o`` (default ``<model folder>/audit``)::

    nnUNetv2_train 502 2d FOLD --npz                     # FOLD = 0 1 2 3 4 (any -tr)
    nnunet-ext audit -d 502 -c 2d                        # -tr, -p, -f as for nnU-Net
    nnunet-ext prune -d 502 --audit .../audit/audit.csv --top-fraction 0.1 --out-id 503

Thin wrapper over :func:`nnunet_ext.audit.audit.run_audit`.
"""

from __future__ import annotations

import argparse
import math

from nnunet_ext.audit.scores import DEFAULT_SCORE, SCORE_DEFINITIONS, SCORES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or ID")
    parser.add_argument("-c", dest="configuration", required=True, help="trained configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer (default: nnUNetTrainer)")
    parser.add_argument(
        "-f", dest="folds", nargs="+", default=["0", "1", "2", "3", "4"], help="folds to read (default: 0 1 2 3 4)"
    )
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-o", dest="output_dir", default=None, help="output folder (default: <model folder>/audit)")
    parser.add_argument(
        "--trusted",
        nargs="+",
        default=[],
        metavar="CASE",
        help="trusted (expert-checked) cases, added to those recorded with nnunet-ext trust: not ranked, they "
        "estimate the systematic boundary offset",
    )
    parser.add_argument("--top", type=int, default=10, help="cases in the summary and the montage (default: 10)")
    parser.add_argument(
        "--score",
        choices=SCORES,
        default=DEFAULT_SCORE,
        help="disagreement score: " + "; ".join(f"{k}: {v}" for k, v in SCORE_DEFINITIONS.items()),
    )
    parser.add_argument("--no-loss", action="store_true", help="skip the trainer's loss per case (no trainer built)")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.audit.audit import run_audit
    from nnunet_ext.audit.folds import parse_folds

    result = run_audit(
        args.dataset,
        args.configuration,
        args.trainer,
        parse_folds(args.folds),
        args.plans,
        output_dir=args.output_dir,
        trusted=args.trusted,
        top=args.top,
        score=args.score,
        compute_loss=not args.no_loss,
    )
    s = result.settings
    print(
        f"{s['dataset']}: audited {s['n_cases']} of {s['n_training_cases']} training cases (folds "
        f"{' '.join(map(str, s['folds']))}; {s['n_trusted']} trusted, not ranked), score {s['score']}"
    )
    ranked = [r for r in result.rows if r["rank"] is not None][: args.top]
    print(f"{'rank':>4}  {'case':<24} {'score':>6} {'Dice':>6} {'HD95_mm':>8} {'offset_mm':>9} {'vol_ratio':>9}")
    for r in ranked:
        print(
            f"{r['rank']:>4}  {r['case']:<24} {_fmt(r['score']):>6} {_fmt(r['Dice']):>6} {_fmt(r['HD95_mm'], 2):>8} "
            f"{_fmt(r['offset_mm'], 2):>9} {_fmt(r['volume_ratio'], 2):>9}"
        )
    if result.systematic is not None:
        offsets = ", ".join(
            f"{s['classes'].get(k, k)}: {_fmt(v['offset_mm'], 2)} mm" for k, v in result.systematic["per_class"].items()
        )
        print(f"systematic offset on {result.systematic['n_cases']} trusted cases (label vs model): {offsets}")
    if s["loss"] is None:
        print(f"loss: {s['loss_note']}")
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0
