"""``nnunet-ext prune``: a copy of a raw dataset without the cases an audit flagged (BraTS "patients removal").

Writes ``$nnUNet_raw/Dataset<out-id>_<name>`` (kept cases linked, test folders carried over, ``numTraining``
updated, ``prune_manifest.json``); plan, preprocess and train it as any dataset::

    nnunet-ext audit -d 502 -c 2d
    nnunet-ext prune -d 502 --audit $nnUNet_results/Dataset502_X/nnUNetTrainer__nnUNetPlans__2d/audit/audit.csv \
        --top-fraction 0.1 --out-id 503
    nnUNetv2_plan_and_preprocess -d 503 -c 2d

Thin wrapper over :func:`nnunet_ext.audit.prune.prune_dataset`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="source dataset name or ID (in $nnUNet_raw)")
    parser.add_argument("--audit", required=True, metavar="CSV", help="the audit.csv of nnunet-ext audit on -d")
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument(
        "--top-fraction",
        type=float,
        default=None,
        metavar="F",
        help="remove the ceil(F x n) top-ranked of the n ranked cases (0 < F < 1; trusted cases are not ranked)",
    )
    rule.add_argument("--cases", nargs="+", default=None, metavar="CASE", help="remove exactly these training cases")
    parser.add_argument("--out-id", type=int, required=True, help="id of the new dataset (must not be in use)")
    parser.add_argument("--name", default=None, help="name of the new dataset (default: <source name>Pruned)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be removed, write nothing")


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.audit.prune import MANIFEST_NAME, prune_dataset

    manifest = prune_dataset(
        args.dataset,
        args.audit,
        args.out_id,
        top_fraction=args.top_fraction,
        cases=args.cases,
        name=args.name,
        dry_run=args.dry_run,
    )
    removed = manifest["removed"]
    shown = ", ".join(f"{r['case']} (rank {r['rank'] if r['rank'] is not None else '-'})" for r in removed[:10]) + (
        ", ..." if len(removed) > 10 else ""
    )
    src, dst = manifest["source"], manifest["target"]
    action = "would write" if args.dry_run else "wrote"
    print(
        f"{action} {dst['folder']}: {dst['n_training']} of {src['n_training']} training cases of {src['dataset']}, "
        f"{len(removed)} removed: {shown}"
    )
    if not args.dry_run:
        links = manifest["links"]
        print(f"{links['symlink']} symbolic links, {links['copy']} copies; manifest {dst['folder']}/{MANIFEST_NAME}")
        print(f"next: nnUNetv2_plan_and_preprocess -d {args.out_id}")
    return 0
