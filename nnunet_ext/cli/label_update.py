"""``nnunet-ext label-update``: the label-update baseline (COPLE Table IV; METHODS.md §4.2).

Trains a fold ensemble on dataset ``-d`` (default 5 folds of ``DiceTrainer``), predicts its training images with the
ensemble (mean logits), writes the new raw dataset ``--out-id`` with these labels, and with ``--retrain`` preprocesses
it with the source's plans and trains (and, with test images, benchmarks) a model on it::

    nnunet-ext label-update -d 502 --out-id 512 -c 2d -o lu_502 --epochs 50 --retrain
"""

from __future__ import annotations

import argparse

from nnunet_ext.cli._common import add_deprecated_alias, dataset_name
from nnunet_ext.cli.benchmark import add_budget_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="source dataset id or name (preprocessed)")
    parser.add_argument("--out-id", type=int, required=True, help="id of the new raw dataset")
    parser.add_argument("--out-name", default=None, help="name of the new dataset (default: <source>LabelUpdate)")
    parser.add_argument("-o", "--output", required=True, help="work folder (models, predictions, comparisons)")
    parser.add_argument("-tr", dest="trainer", default="DiceTrainer", help="trainer of the ensemble (DiceTrainer)")
    parser.add_argument("-c", dest="configuration", default="2d", help="configuration (default: 2d)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument(
        "-f", dest="folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="ensemble folds (default: 0 1 2 3 4)"
    )
    add_deprecated_alias(parser, "--folds", "folds", type=int, nargs="+")  # before nnU-Net's -f spelling
    add_budget_arguments(parser)
    parser.add_argument("--retrain", action="store_true", help="preprocess the new dataset and train on it")
    parser.add_argument("--retrain-trainer", default=None, help="trainer of the retraining (default: -tr)")
    parser.add_argument("--retrain-folds", nargs="+", default=["0"], help="folds of the retraining (default: 0)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done; run nothing")


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.benchmark.label_update import label_update, target_folder
    from nnunet_ext.benchmark.spec import TrainingBudget, parse_fold

    source = dataset_name(args.dataset, "-d", need="preprocessed")
    budget = TrainingBudget(args.epochs, args.iterations_per_epoch, args.val_iterations_per_epoch)
    retrain_folds = [parse_fold(f) for f in args.retrain_folds]
    if args.dry_run:
        ensemble = f"{args.trainer} {args.configuration} folds {args.folds}"
        print(f"source {source}; ensemble: {ensemble}; budget {budget.as_dict()}")
        print(f"new dataset: {target_folder(args.out_id, source, args.out_name)}")
        if args.retrain:
            print(f"retrain: {args.retrain_trainer or args.trainer} folds {retrain_folds}")
        return 0
    manifest = label_update(
        args.dataset,
        args.out_id,
        args.output,
        out_name=args.out_name,
        trainer=args.trainer,
        configuration=args.configuration,
        plans=args.plans,
        folds=args.folds,
        budget=budget,
        device=args.device or "auto",
        seed=args.seed if args.seed is not None else 0,
        skip_final_validation=bool(args.skip_final_validation),
        disable_tta=bool(args.disable_tta),
        num_processes=args.num_processes or 0,
        results_dir=args.results_dir,
        retrain=args.retrain,
        retrain_trainer=args.retrain_trainer,
        retrain_folds=retrain_folds,
        overwrite=args.overwrite,
        verbose=args.verbose,
    )
    print(f"wrote {manifest['target']} ({manifest['n_cases']} relabelled training cases)")
    print(
        "mean Dice new vs old labels: "
        + ", ".join(f"{k}: {v:.4f}" for k, v in manifest["dice_new_vs_old"]["mean"].items())
    )
    clean = manifest.get("dice_vs_clean")
    if clean:
        for which in ("old", "new"):
            means = ", ".join(f"{k}: {v:.4f}" for k, v in clean[which]["mean"].items())
            print(f"mean Dice {which} labels vs clean: {means}")
    retrain = manifest.get("retrain")
    if retrain and retrain.get("benchmark"):
        print(f"retraining benchmark: {retrain['benchmark']}/report.md")
    return 0
