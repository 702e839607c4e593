"""``nnunet-ext trust``: record expert-labelled (trusted) training cases of a dataset.

The list lives in ``$nnUNet_preprocessed/<DatasetXXX_Name>/trusted_cases.json``; trainers that estimate the label
bias use the trusted cases their fold does not train on. ``--as-validation`` writes a ``splits_final.json`` whose
validation sets hold the trusted cases (so no fold trains on them)::

    nnunet-ext trust -d 502 case_003 case_017          # add (merges with the recorded list; ids are checked)
    nnunet-ext trust -d 502 --from-file trusted.txt    # one id per line, '#' comments
    nnunet-ext trust -d 502 --list
    nnunet-ext trust -d 502 --as-validation            # 5 folds: nnU-Net's split of the rest + all trusted in val
    nnunet-ext trust -d 502 --clear

The dataset's preprocessed folder is created when it is missing but the raw dataset exists: nnU-Net's planning and
preprocessing keep the files there. Thin wrapper over :mod:`nnunet_ext.trusted`.
"""

from __future__ import annotations

import argparse
import os
import sys

from nnunet_ext.cli._common import dataset_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset name or ID (as for nnUNetv2_train)")
    parser.add_argument("cases", nargs="*", metavar="CASE", help="training case ids to add (e.g. case_003)")
    parser.add_argument(
        "--from-file", default=None, metavar="FILE", help="add the case ids in FILE: one per line, '#' comments"
    )
    parser.add_argument("--list", action="store_true", help="print the trusted cases, one per line")
    parser.add_argument("--clear", action="store_true", help="forget the recorded cases (before adding new ones)")
    parser.add_argument(
        "--as-validation",
        action="store_true",
        help="write splits_final.json: nnU-Net's 5-fold split of the untrusted cases, every fold's validation set "
        "plus all trusted cases (they are then never trained on)",
    )
    parser.add_argument(
        "--spread",
        action="store_true",
        help="with --as-validation: split the trusted cases over the folds' validation sets too (each fold holds out "
        "about a fifth of them and trains on the others)",
    )
    parser.add_argument("--overwrite", action="store_true", help="with --as-validation: replace a different split")


def _per_fold_summary(name: str, trusted: list[str], splits: list[dict], from_file: bool) -> list[str]:
    held = [set(trusted) & set(s["val"]) - set(s["train"]) for s in splits]
    source = "splits_final.json" if from_file else "nnU-Net's default split, no splits_final.json yet"
    lines = [f"held-out trusted cases per fold ({source}): " + ", ".join(f"{k}: {len(h)}" for k, h in enumerate(held))]
    empty = [k for k, h in enumerate(held) if not h]
    fix = f"nnunet-ext trust -d {name} --as-validation{' --overwrite' if from_file else ''}"
    if empty:
        lines.append(
            f"note: fold(s) {', '.join(map(str, empty))} hold out no trusted case, so a trainer that estimates the "
            f"bias refuses them; {fix} writes a split whose validation sets hold the trusted cases"
        )
    never = sorted(set(trusted) - set().union(*held))
    if never and len(empty) < len(held):
        shown = ", ".join(never[:5]) + (", ..." if len(never) > 5 else "")
        lines.append(
            f"note: no fold holds out {len(never)} trusted case(s) ({shown}), so they never serve bias estimation; "
            f"{fix} writes a split that holds them out"
        )
    return lines


def _run(args: argparse.Namespace) -> int:
    from nnunet_ext import trusted as tr

    if args.spread and not args.as_validation:
        raise ValueError("--spread only applies to --as-validation; add --as-validation")
    new_cases = list(args.cases)
    if args.from_file is not None:
        try:
            new_cases += tr.read_case_file(args.from_file)
        except OSError as err:
            raise ValueError(f"cannot read --from-file {args.from_file} ({err.strerror}); give a text file") from None
        if not new_cases:
            raise ValueError(f"--from-file {args.from_file} holds no case id; write one id per line")
    if not (new_cases or args.list or args.clear or args.as_validation):
        raise ValueError("nothing to do; give case ids, --from-file FILE, --list, --clear or --as-validation")

    name = dataset_name(args.dataset, "-d")
    path = tr.trusted_cases_file(name)  # also checks that nnUNet_preprocessed is set
    raw = os.environ.get("nnUNet_raw")
    if not path.parent.is_dir() and not (raw and os.path.isdir(os.path.join(raw, name))):
        raise ValueError(
            f"dataset {name} is neither in nnUNet_preprocessed ({path.parent.parent}) nor in nnUNet_raw ({raw}); "
            f"check -d and the nnUNet_raw / nnUNet_preprocessed variables"
        )
    # Everything is checked before anything is written: a refused command leaves both files as they were.
    try:
        old: list[str] | None = tr.load_trusted(name)
    except ValueError:
        if not args.clear:
            raise
        old = None  # an unreadable file is what --clear is for
    trusted = [] if args.clear else list(old)
    added: list[str] = []
    if new_cases:
        valid = tr.validate_case_ids(name, new_cases)
        added = sorted(set(valid) - set(trusted))
        trusted = sorted(set(trusted) | set(valid))
    new_splits = None
    if args.as_validation:
        if not trusted:
            raise ValueError(f"no trusted cases recorded for {name}; add some first (nnunet-ext trust -d {name} CASE)")
        tr.validate_case_ids(name, trusted)  # recorded ids may be stale
        new_splits = tr.trusted_split(tr.training_case_ids(name), trusted, spread=args.spread)
        write_split = tr.write_splits(name, new_splits, overwrite=args.overwrite, dry_run=True)

    changed = trusted != old
    if changed and trusted:
        created = not path.parent.is_dir()
        tr.save_trusted(name, trusted)
        cleared = f", {len(old)} cleared" if args.clear and old else ""
        note = f" (created {path.parent})" if created else ""
        print(f"{len(trusted)} trusted cases of {name} ({len(added)} added{cleared}) in {path}{note}")
    elif changed:
        tr.clear_trusted(name)
        what = f"{len(old)} trusted cases" if old is not None else "the unreadable trusted-cases file"
        print(f"cleared {what} of {name} ({path} removed)")
    elif args.clear and not old:
        print(f"no trusted cases recorded for {name}; nothing to clear")
    elif new_cases:
        print(f"all {len(set(new_cases))} cases are already trusted for {name}; nothing to do")

    splits = tr.load_splits(name)
    if new_splits is not None:
        if write_split:
            tr.write_splits(name, new_splits, overwrite=args.overwrite)
            how = "spread over" if args.spread else "in every fold's"
            print(
                f"wrote {tr.splits_file(name)}: {len(new_splits)} folds, the {len(trusted)} trusted cases {how} "
                f"validation sets" + ("" if args.spread else " (never trained on)")
            )
        else:
            print(f"{tr.splits_file(name)} already holds this split; nothing to do")
        splits = new_splits
        changed = True

    if changed and trusted:
        if splits is not None:
            print("\n".join(_per_fold_summary(name, trusted, splits, True)))
        else:
            try:
                default = tr.nnunet_split(tr.training_case_ids(name))
            except ValueError:
                default = None
            if default is not None:
                print("\n".join(_per_fold_summary(name, trusted, default, False)))
    if args.list:
        if trusted:
            print("\n".join(trusted))
        else:
            print(f"no trusted cases recorded for {name}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return _run(args)  # user errors raise ValueError / OSError; main prints them (exit code 2)
