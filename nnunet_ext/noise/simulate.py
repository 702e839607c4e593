"""Write a copy of an nnU-Net raw dataset whose training labels carry simulated noise.

Target layout (``dst_raw_dir``)::

    dataset.json            copy with a new "name"
    imagesTr/               hard links to the source images (copies where linking fails)
    labelsTr/               noisy labels (same geometry and pixel type as the clean ones)
    labelsTr_clean/         the clean labels, unchanged: the reference for `nnunet-ext evaluate`
    imagesTs/, labelsTs/    linked/copied unchanged when present
    noise_manifest.json     seed, level and its parameters, per-case operations, noisy-vs-clean Dice and size
                            change (voxels, relative, median signed boundary shift in mm) per label/region

Case ``i`` (position in the sorted list of ``labelsTr`` case ids) uses ``np.random.default_rng([seed, i])``, so the
result is byte-identical for a seed and independent of the number of processes. The target is written into a
temporary sibling folder and renamed at the end: an interrupted run leaves no half-written dataset.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ext.evaluation.io import (
    LabelDefinition,
    check_file_ending,
    label_definition,
    list_cases,
    load_dataset_json,
    read_label_image,
    write_label_image,
)
from nnunet_ext.noise.levels import AnyLevel, corrupt_label_map, get_level, nested_region_order

logger = logging.getLogger(__name__)

MANIFEST_NAME = "noise_manifest.json"
CLEAN_LABELS_DIR = "labelsTr_clean"
_UNCHANGED_DIRS = ("imagesTr", "imagesTs", "labelsTs")


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst``, or copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:  # other file system, or links not permitted
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> int:
    """Mirror the files below ``src`` into ``dst`` with :func:`link_or_copy`; returns the number of files."""
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(path, target)
            n += 1
    return n


def _simulate_case(
    case: str,
    case_index: int,
    label_file: str,
    out_file: str | None,
    label_def: LabelDefinition,
    level: AnyLevel,
    seed: int,
) -> dict[str, Any]:
    seg, geometry = read_label_image(label_file)
    rng = np.random.default_rng([seed, case_index])
    noisy, record = corrupt_label_map(seg, geometry.spacing, label_def, level, rng)
    if out_file is not None:
        write_label_image(noisy.astype(seg.dtype, copy=False), geometry, out_file)
    return {"case": case, "case_index": case_index, **record}


def _dataset_name(dst: Path) -> str:
    match = re.match(r"Dataset\d{3}_(.+)$", dst.name)
    return match.group(1) if match else dst.name


def simulate_noisy_dataset(
    src_raw_dir: str | os.PathLike,
    dst_raw_dir: str | os.PathLike,
    level: str | AnyLevel,
    seed: int,
    *,
    name: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    num_processes: int = 1,
) -> dict[str, Any]:
    """Simulate label noise on the training labels of a raw dataset.

    Args:
        src_raw_dir: Source dataset folder (``$nnUNet_raw/DatasetXXX_Name``) with ``dataset.json`` and ``labelsTr``.
        dst_raw_dir: Target dataset folder; must not exist unless ``overwrite``.
        level: ``"mild"`` / ``"moderate"`` / ``"severe"`` (calibrated to a mean Dice ≈ 0.9 / 0.8 / 0.7),
            ``"j1"`` / ``"j2"`` / ``"j3"`` (Yao et al.'s published noise: outward / inward Markov drift, random
            dilation or erosion; see :mod:`nnunet_ext.noise.levels`), or a custom NoiseLevel, MarkovNoise or
            MorphologyNoise.
        seed: Seed of all randomness.
        name: ``"name"`` written into the target dataset.json (default: the target folder name without
            ``DatasetXXX_``).
        overwrite: Replace an existing target.
        dry_run: Compute the noisy labels and the manifest but write nothing.
        num_processes: Worker processes (spawned); results do not depend on it.

    Returns:
        The manifest (also written to ``noise_manifest.json`` unless ``dry_run``).

    Raises:
        FileNotFoundError: Missing source folder, dataset.json or labelsTr.
        FileExistsError: Existing target without ``overwrite``.
        ValueError: Target equal to or inside the source; no labels found.
        NotImplementedError: Ignore label, non-nested regions, an explicit "dataset" file list, unsupported ending.
    """
    src, dst = Path(src_raw_dir).resolve(), Path(dst_raw_dir).resolve()
    lvl = get_level(level)
    if not (src / "dataset.json").is_file():
        raise FileNotFoundError(f"no dataset.json in {src}.")
    if not (src / "labelsTr").is_dir():
        raise FileNotFoundError(f"no labelsTr folder in {src}.")
    if dst == src or src in dst.parents:
        raise ValueError(f"target {dst} must be a different folder outside the source {src}.")
    if dst.exists() and not overwrite and not dry_run:
        raise FileExistsError(f"target {dst} exists; pass overwrite=True (--overwrite) to replace it.")
    ds = load_dataset_json(src / "dataset.json")
    if "dataset" in ds:
        raise NotImplementedError(
            f"{src / 'dataset.json'} lists its files explicitly (key 'dataset'); only the imagesTr/labelsTr layout "
            "is supported."
        )
    file_ending = check_file_ending(ds.get("file_ending", ".nii.gz"))
    label_def = label_definition(ds)
    if label_def.has_regions:
        nested_region_order(label_def)  # fail early for non-nested regions
    cases = list_cases(src / "labelsTr", file_ending)
    if not cases:
        raise ValueError(f"no labels ending in {file_ending!r} in {src / 'labelsTr'}.")

    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    if not dry_run:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "labelsTr").mkdir(parents=True)
    try:
        tasks = [
            (
                case,
                index,
                str(path),
                None if dry_run else str(tmp / "labelsTr" / path.name),
                label_def,
                lvl,
                int(seed),
            )
            for index, (case, path) in enumerate(cases.items())
        ]
        n_proc = max(1, min(int(num_processes), len(tasks)))
        if n_proc == 1:
            records = [_simulate_case(*t) for t in tasks]
        else:
            with multiprocessing.get_context("spawn").Pool(n_proc) as pool:
                records = pool.starmap(_simulate_case, tasks)
        manifest = _manifest(src, dst, lvl, int(seed), label_def, records)
        if dry_run:
            return manifest
        link_tree(src / "labelsTr", tmp / CLEAN_LABELS_DIR)
        for sub in _UNCHANGED_DIRS:
            if (src / sub).is_dir():
                link_tree(src / sub, tmp / sub)
        new_ds = dict(ds)
        new_ds["name"] = name if name is not None else _dataset_name(dst)
        with open(tmp / "dataset.json", "w") as f:
            json.dump(new_ds, f, indent=4)
        with open(tmp / MANIFEST_NAME, "w") as f:
            json.dump(manifest, f, indent=2)
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("wrote %s (mean noisy-vs-clean Dice %.4f)", dst, manifest["mean_dice"])
    return manifest


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _manifest(
    src: Path, dst: Path, level: AnyLevel, seed: int, label_def: LabelDefinition, records: list[dict[str, Any]]
) -> dict[str, Any]:
    case_means = [r["foreground_mean_dice"] for r in records]
    keys = list(records[0]["dice"]) if records else []
    per_key, rel_change, shift = {}, {}, {}
    for k in keys:
        # Only cases whose clean mask of k is non-empty: an empty mask stays empty (Dice 1 by convention).
        present = [r for r in records if r["change"][k]["clean_voxels"] > 0]
        per_key[k] = _mean([r["dice"][k] for r in present])
        rel_change[k] = _mean([r["change"][k]["relative_change"] for r in present])
        shift[k] = _mean([r["change"][k]["boundary_shift_mm"] for r in present])
    return {
        "source": str(src),
        "target": str(dst),
        "seed": seed,
        "level": level.name,
        "parameters": level.as_dict(),
        "rng": "numpy.random.default_rng([seed, case_index]), case_index = position in the sorted labelsTr case ids",
        "labels_or_regions": [str(k) for k in keys],
        "has_regions": label_def.has_regions,
        "mean_dice": _mean(case_means),
        "mean_dice_per_label_or_region": per_key,
        "mean_relative_change_per_label_or_region": rel_change,
        "mean_boundary_shift_mm_per_label_or_region": shift,
        "n_cases": len(records),
        "cases": records,
    }
