"""A copy of a raw dataset without the training cases an audit flagged (BraTS "patients removal").

Target layout (``$nnUNet_raw/Dataset<out_id>_<name>``)::

    dataset.json          the source's, "numTraining" = kept cases, "name" = the new name
    imagesTr/ labelsTr/   the kept cases: symbolic links to the source files (copies where links fail)
    labelsTr_clean/       likewise, when the source has it (nnunet-ext simulate-noise keeps the clean labels there)
    imagesTs/ labelsTs/   linked unchanged when present
    prune_manifest.json   source, audit, rule, removed cases with their audit score and rank, link counts

The target is written into a temporary sibling folder and renamed at the end. An id already used in nnU-Net's
folders is refused (as ``nnUNetv2_plan_and_preprocess`` would otherwise mix two datasets). The kept trusted cases of
the source (``nnunet-ext trust``) are recorded for the new dataset. ``nnUNetv2_plan_and_preprocess -d <out_id>``
then runs on the copy unchanged.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nnunet_ext._io import write_json_atomic
from nnunet_ext.trusted import did_you_mean

MANIFEST_NAME = "prune_manifest.json"
SCHEMA_VERSION = 1
CLEAN_LABELS_DIR = "labelsTr_clean"
_UNCHANGED_DIRS = ("imagesTs", "labelsTs")


def read_audit_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of an ``audit.csv``: ``case``, ``rank`` (int or None), ``score`` (float or None), ``trusted``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an audit CSV (columns ``case``, ``rank``, ``score`` missing) or unreadable values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audit file {path} not found; write it with nnunet-ext audit -d D -c C -tr T")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"case", "rank", "score"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path} is not an audit.csv (missing columns {sorted(missing)}); give the audit.csv that "
                "nnunet-ext audit wrote"
            )
        rows = []
        for line, r in enumerate(reader, start=2):
            try:
                rank = int(r["rank"]) if r["rank"] else None
                score = float(r["score"]) if r["score"] else None
            except ValueError:
                raise ValueError(
                    f"{path}, line {line}: rank {r['rank']!r} / score {r['score']!r} are not numbers; give the "
                    "audit.csv that nnunet-ext audit wrote"
                ) from None
            rows.append({"case": r["case"], "rank": rank, "score": score, "trusted": r.get("trusted") == "1"})
    if not rows:
        raise ValueError(f"{path} holds no cases; run nnunet-ext audit again")
    return rows


def _audit_dataset(audit_csv: Path) -> str | None:
    settings_file = audit_csv.parent / "audit.json"
    if not settings_file.is_file():
        return None
    try:
        return json.loads(settings_file.read_text())["settings"]["dataset"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def select_removed(
    rows: Sequence[dict[str, Any]],
    training_cases: Sequence[str],
    *,
    top_fraction: float | None = None,
    cases: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The cases to remove and the rule, as recorded in the manifest.

    ``top_fraction`` F: the ⌈F · n⌉ best-ranked cases (rank 1 = most disagreement) of the n ranked cases; trusted
    cases are not ranked, so never removed this way. ``cases``: exactly these (each must be a training case).

    Raises:
        ValueError: Neither or both rules, F outside (0, 1), unknown case ids (with a did-you-mean hint).
    """
    if (top_fraction is None) == (cases is None):
        raise ValueError("give exactly one rule: --top-fraction F or --cases CASE ...")
    known = list(training_cases)
    if top_fraction is not None:
        f = float(top_fraction)
        if not 0 < f < 1:
            raise ValueError(f"--top-fraction must be in (0, 1), got {top_fraction}; e.g. 0.1 removes the top 10 %")
        ranked = sorted((r for r in rows if r["rank"] is not None), key=lambda r: r["rank"])
        if not ranked:
            raise ValueError("the audit ranks no case (all trusted?); give --cases instead")
        k = math.ceil(f * len(ranked) - 1e-9)
        removed = [r["case"] for r in ranked[:k]]
        rule = {"kind": "top_fraction", "fraction": f, "n_ranked": len(ranked), "n_removed": len(removed)}
    else:
        removed = sorted(set(cases))
        if not removed:
            raise ValueError("--cases is empty; give the case ids to remove")
        rule = {"kind": "cases", "n_removed": len(removed)}
    unknown = [c for c in removed if c not in set(known)]
    if unknown:
        hints = did_you_mean(unknown[:5], known)
        raise ValueError(
            f"{len(unknown)} case(s) to remove are not training cases of the dataset: {', '.join(hints)}; the audit "
            "must be of this dataset (-d) and --cases must name its training cases"
        )
    return removed, rule


def _link(src: Path, dst: Path, counts: dict[str, int]) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
        counts["symlink"] += 1
    except OSError:  # file systems without symbolic links
        shutil.copy2(src, dst)
        counts["copy"] += 1


def target_name(source: str, out_id: int, name: str | None) -> str:
    """``Dataset{out_id:03d}_{name}``; the default name is the source's plus ``Pruned``."""
    if not 1 <= int(out_id) <= 999:
        raise ValueError(f"--out-id must be in 1..999 (nnU-Net uses three digits), got {out_id}")
    if name is None:
        name = (source.split("_", 1)[1] if "_" in source else source) + "Pruned"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"--name {name!r} is not a dataset name; use letters, digits, '_', '-' and '.'")
    return f"Dataset{int(out_id):03d}_{name}"


def prune_dataset(
    dataset: str | int,
    audit_csv: str | os.PathLike,
    out_id: int,
    *,
    top_fraction: float | None = None,
    cases: Sequence[str] | None = None,
    name: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Write a copy of raw dataset ``dataset`` without the flagged training cases (module docstring).

    Args:
        dataset: Source dataset id or name (in ``$nnUNet_raw``).
        audit_csv: The ``audit.csv`` of ``nnunet-ext audit`` on this dataset.
        out_id: Id of the new dataset; must not be used in ``nnUNet_raw``, ``nnUNet_preprocessed`` or
            ``nnUNet_results``.
        top_fraction: Remove the top fraction of the ranked cases (:func:`select_removed`).
        cases: Remove these cases instead.
        name: Name of the new dataset (default: the source's plus ``Pruned``).
        dry_run: Decide and return the manifest, write nothing.

    Returns:
        The manifest (also ``prune_manifest.json`` of the new dataset unless ``dry_run``).

    Raises:
        FileNotFoundError: Missing source, dataset.json, labelsTr or audit file.
        FileExistsError: The id is in use or the target exists.
        ValueError: Bad rule, cases or names; an audit of another dataset; nothing left to keep.
        NotImplementedError: A dataset.json listing its files explicitly (``"dataset"`` key).
    """
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from nnunet_ext.benchmark.datasets import dataset_name

    raw_root = os.environ.get("nnUNet_raw")
    if not raw_root:
        raise ValueError("nnUNet_raw is not set; export nnUNet_raw=/path/to/nnUNet_raw (nnU-Net's folders)")
    source = dataset_name(dataset)
    src = Path(raw_root) / source
    if not (src / "dataset.json").is_file() or not (src / "labelsTr").is_dir():
        raise FileNotFoundError(f"{src} has no dataset.json or labelsTr; -d must name a raw dataset in {raw_root}")
    dataset_json = json.loads((src / "dataset.json").read_text())
    if "dataset" in dataset_json:
        raise NotImplementedError(
            f"{src / 'dataset.json'} lists its files explicitly (key 'dataset'); prune supports the imagesTr/labelsTr "
            "layout only"
        )
    audit_csv = Path(audit_csv)
    rows = read_audit_csv(audit_csv)
    audited = _audit_dataset(audit_csv)
    if audited is not None and audited != source:
        raise ValueError(f"{audit_csv} is an audit of {audited}, not of {source}; give -d {audited} or its audit.csv")
    target = target_name(source, out_id, name)
    taken = [str(c) for c in find_candidate_datasets(int(out_id))]
    if taken:
        raise FileExistsError(f"dataset id {out_id} is already used by {taken}; choose another --out-id")
    dst = Path(raw_root) / target
    if dst.exists():
        raise FileExistsError(f"{dst} exists; choose another --out-id or --name")

    files = {str(k): v for k, v in get_filenames_of_train_images_and_targets(str(src), dataset_json).items()}
    training_cases = sorted(files)
    removed, rule = select_removed(rows, training_cases, top_fraction=top_fraction, cases=cases)
    kept = [c for c in training_cases if c not in set(removed)]
    if not kept:
        raise ValueError(f"the rule removes all {len(training_cases)} training cases; remove fewer")
    by_case = {r["case"]: r for r in rows}
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"dataset": source, "folder": str(src), "n_training": len(training_cases)},
        "target": {"dataset": target, "folder": str(dst), "n_training": len(kept)},
        "audit": {"csv": str(audit_csv.resolve()), "dataset": audited},
        "rule": rule,
        "removed": [
            {
                "case": c,
                "rank": by_case.get(c, {}).get("rank"),
                "score": by_case.get(c, {}).get("score"),
                "in_audit": c in by_case,
            }
            for c in removed
        ],
        "kept": kept,
    }
    if dry_run:
        return manifest

    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    counts = {"symlink": 0, "copy": 0}
    ending = dataset_json.get("file_ending", ".nii.gz")
    try:
        for case in kept:
            for image in files[case]["images"]:
                _link(Path(image), tmp / "imagesTr" / Path(image).name, counts)
            label = Path(files[case]["label"])
            _link(label, tmp / "labelsTr" / label.name, counts)
            clean = src / CLEAN_LABELS_DIR / f"{case}{ending}"
            if clean.is_file():
                _link(clean, tmp / CLEAN_LABELS_DIR / clean.name, counts)
        for sub in _UNCHANGED_DIRS:
            if (src / sub).is_dir():
                for path in sorted((src / sub).rglob("*")):
                    if path.is_file():
                        _link(path, tmp / sub / path.relative_to(src / sub), counts)
        new_json = {**dataset_json, "numTraining": len(kept), "name": target.split("_", 1)[1]}
        (tmp / "dataset.json").write_text(json.dumps(new_json, indent=4))
        manifest["links"] = counts
        manifest["trusted_carried_over"] = _carry_trusted(source, target, kept)
        write_json_atomic(manifest, tmp / MANIFEST_NAME)
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def _carry_trusted(source: str, target: str, kept: Sequence[str]) -> list[str]:
    """Record the kept trusted cases of the source for the target (nothing without nnUNet_preprocessed)."""
    from nnunet_ext.trusted import load_trusted, save_trusted

    if not os.environ.get("nnUNet_preprocessed"):
        return []
    trusted = sorted(set(load_trusted(source)) & set(kept))
    if trusted:
        save_trusted(target, trusted)
    return trusted
