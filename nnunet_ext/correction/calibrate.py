"""Post-hoc boundary calibration of any trained nnU-Net model on held-out trusted cases (issue #12 item 5).

A model trained on labels with a consistent boundary bias reproduces the bias. :func:`calibrate_fold` measures it
per class (or region) on the trusted cases that the fold did not train on (:func:`nnunet_ext.trusted.
require_held_out_trusted`) and stores it as ``<model folder>/fold_F/boundary_offset.json``;
:func:`apply_boundary_offsets` moves the boundary of predicted logits back by that amount with the Gaussian logit
shift of :mod:`nnunet_ext.correction.boundary` (METHODS.md §9.3). Works for every trainer, stock ``nnUNetTrainer``
included: only the checkpoint, ``plans.json`` and ``dataset.json`` of the model folder are read.

Where it is measured and applied: in nnU-Net's **preprocessed** space (after cropping, transposition and
resampling to the configuration's spacing), where the network's logits live. Calibration reads the preprocessed
trusted cases with the trainer's dataset class (no re-preprocessing, no resampling of the prediction) and predicts
them with ``nnUNetPredictor`` without test-time augmentation (step 0.5); the reference is the preprocessed
segmentation (its −1 outside the nonzero mask counts as background). Distances are in mm with
``configuration_manager.spacing``. At inference the shift is applied to the fold-averaged logits before nnU-Net
resamples and exports them, so ``--save_probabilities`` files are the softmax/sigmoid of the shifted logits and
agree with the exported segmentation.

- Label maps (softmax): the prediction is the argmax; offsets per foreground label; the correction is
  :func:`~nnunet_ext.correction.boundary.shift_class_logits` (each class's margin shifted by its own offset).
- Region datasets (sigmoid): region r is ``logit_r > 0`` (sigmoid > 0.5), compared with the union of the region's
  labels in the reference; the correction is :func:`~nnunet_ext.correction.boundary.shift_logits` per region channel.
- 2-D configurations: the network sees one slice at a time, so offsets are measured in-plane per slice (mean over
  the slices where one is defined), then averaged over cases, and the shift is applied slice by slice; 3-D
  configurations use 3-D distances.

Offsets follow :mod:`nnunet_ext.correction.boundary`'s sign: > 0 = the prediction is larger than the trusted
reference; the correction moves the boundary inward by about 0.75·b (the official Gaussian shift). An offset
below half a voxel changes nothing (the shift band is empty). No threshold is applied here (the training-label rule
of :func:`~nnunet_ext.correction.boundary.correct_label_map` keeps predictions below one voxel unchanged).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import numpy as np

from nnunet_ext.correction.boundary import estimate_offsets, shift_class_logits, shift_logits
from nnunet_ext.evaluation.metrics import LabelOrRegion, label_or_region_to_key, region_mask

OFFSET_FILE: Final[str] = "boundary_offset.json"
SCHEMA_VERSION: Final[int] = 1


def class_keys(label_manager: Any) -> list[LabelOrRegion]:
    """Foreground labels (ints) or, for region datasets, foreground regions (tuples), in channel order."""
    if label_manager.has_regions:
        return [tuple(int(v) for v in np.atleast_1d(r)) for r in label_manager.foreground_regions]
    return [int(c) for c in label_manager.foreground_labels]


def _check_supported(label_manager: Any, configuration_manager: Any) -> None:
    if label_manager.has_ignore_label:
        raise NotImplementedError(
            f"datasets with an ignore label ({label_manager.ignore_label}) are not supported by boundary calibration"
        )
    if getattr(configuration_manager, "previous_stage_name", None) is not None:
        raise NotImplementedError("cascaded configurations are not supported by boundary calibration")


def _is_2d(configuration_manager: Any) -> bool:
    return len(configuration_manager.patch_size) == 2


def _images(array: np.ndarray, two_d: bool) -> list[np.ndarray]:
    """The network's images of a spatial array: its slices for a 2-D configuration, else the array itself."""
    return list(array) if two_d else [array]


def case_offsets(
    logits: np.ndarray,
    reference: np.ndarray,
    label_manager: Any,
    spacing: Sequence[float],
    two_d: bool,
) -> dict[str, float | None]:
    """Boundary offset per class/region of one case in preprocessed space.

    Args:
        logits: Network logits ``(C, *spatial)`` (fold-averaged or of one fold).
        reference: Trusted label map of the spatial shape (values < 0, nnU-Net's outside-the-mask marker, are
            background).
        label_manager: nnU-Net's ``LabelManager`` of the dataset.
        spacing: ``configuration_manager.spacing`` (2 values for a 2-D configuration, applied per slice).
        two_d: Measure slice by slice (2-D configuration).

    Returns:
        ``{key: offset in mm or None}``, keys as :func:`~nnunet_ext.evaluation.metrics.label_or_region_to_key`;
        for 2-D configurations the mean over the slices where the offset is defined.
    """
    logits = np.asarray(logits, dtype=np.float32)
    ref = np.where(np.asarray(reference) < 0, 0, np.asarray(reference)).astype(np.int16)
    spacing = [float(s) for s in spacing]
    keys = class_keys(label_manager)
    if label_manager.has_regions:
        out: dict[str, float | None] = {}
        for i, region in enumerate(keys):
            pred = (logits[i] > 0).astype(np.uint8)
            refm = region_mask(ref, region).astype(np.uint8)
            pairs = list(zip(_images(pred, two_d), _images(refm, two_d)))
            out[label_or_region_to_key(region)] = estimate_offsets(pairs, [spacing] * len(pairs), [1])[1]
        return out
    pred = np.argmax(logits, axis=0).astype(np.int16)
    pairs = list(zip(_images(pred, two_d), _images(ref, two_d)))
    offsets = estimate_offsets(pairs, [spacing] * len(pairs), keys)
    return {label_or_region_to_key(k): v for k, v in offsets.items()}


def pool_offsets(per_case: Mapping[str, Mapping[str, float | None]], keys: Sequence[str]) -> dict[str, float | None]:
    """Mean over cases of the defined per-case offsets (each case counts once), None where no case defines one."""
    pooled: dict[str, float | None] = {}
    for k in keys:
        values = [v[k] for v in per_case.values() if v.get(k) is not None]
        pooled[k] = float(np.mean(values)) if values else None
    return pooled


def offset_file(model_folder: str | os.PathLike, fold: int | str) -> Path:
    """``<model folder>/fold_<fold>/boundary_offset.json``."""
    return Path(model_folder) / f"fold_{fold}" / OFFSET_FILE


def calibrate_fold(
    dataset: str | int,
    configuration: str,
    trainer: str = "nnUNetTrainer",
    fold: int | str = 0,
    plans: str = "nnUNetPlans",
    checkpoint: str = "checkpoint_final.pth",
    device: str = "cpu",
    write: bool = True,
) -> dict[str, Any]:
    """Estimate a trained fold's per-class boundary offset on its held-out trusted cases and store it.

    Args:
        dataset: Dataset id or name.
        configuration: nnU-Net configuration, e.g. ``2d``.
        trainer: Trainer class name of the model (any trainer, stock ``nnUNetTrainer`` included).
        fold: Fold of the model; its validation set must hold trusted cases.
        plans: Plans identifier.
        checkpoint: Checkpoint file name in ``fold_F``.
        device: ``cpu``, ``cuda`` or ``mps``.
        write: Write ``fold_F/boundary_offset.json`` (atomically).

    Returns:
        The file's content: ``schema_version``, ``offsets_mm`` (``{key: mm or None}``), ``per_case``, ``cases``,
        ``checkpoint``, ``spacing``, ``configuration``, ``trainer`` and provenance.

    Raises:
        FileNotFoundError: No model folder or checkpoint, or a trusted case is not preprocessed.
        ValueError: No trusted cases, or none held out by this fold (the message names the fix).
        NotImplementedError: Ignore labels, cascades.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from nnunet_ext import __version__
    from nnunet_ext._io import write_json_atomic
    from nnunet_ext.trusted import require_held_out_trusted

    fold = fold if str(fold) == "all" else int(fold)
    name = maybe_convert_to_dataset_name(dataset)
    model_folder = get_output_folder(name, trainer, plans, configuration)
    chk_path = Path(model_folder) / f"fold_{fold}" / checkpoint
    if not chk_path.is_file():
        raise FileNotFoundError(
            f"no checkpoint {chk_path}; train the model first (nnUNetv2_train {name} {configuration} {fold} -tr "
            f"{trainer} -p {plans}) or check -tr, -p, -c, -chk and $nnUNet_results"
        )
    cases = require_held_out_trusted(name, fold)

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=device != "cpu",
        device=torch.device(device),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(model_folder, (fold,), checkpoint_name=checkpoint)
    cm, lm = predictor.configuration_manager, predictor.label_manager
    _check_supported(lm, cm)
    two_d = _is_2d(cm)
    spacing = [float(s) for s in cm.spacing]

    data_folder = Path(nnUNet_preprocessed) / name / cm.data_identifier
    missing = [c for c in cases if not (data_folder / f"{c}.pkl").is_file()]
    if missing:
        raise FileNotFoundError(
            f"trusted cases {missing} are not preprocessed in {data_folder}; run nnUNetv2_preprocess -d {name} "
            f"-c {configuration} -plans_name {plans}"
        )
    dataset_class = infer_dataset_class(str(data_folder))
    ds = dataset_class(str(data_folder), identifiers=cases)
    keys = [label_or_region_to_key(k) for k in class_keys(lm)]
    per_case: dict[str, dict[str, float | None]] = {}
    for case in cases:
        data, seg, _seg_prev, _properties = ds.load_case(case)
        data = np.ascontiguousarray(np.asarray(data[:], dtype=np.float32))
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).float().numpy()
        per_case[case] = case_offsets(logits, np.asarray(seg[:])[0], lm, spacing, two_d)

    label_names = {str(v): k for k, v in predictor.dataset_json["labels"].items() if isinstance(v, int)}
    content = {
        "schema_version": SCHEMA_VERSION,
        "offsets_mm": pool_offsets(per_case, keys),
        "per_case": per_case,
        "cases": cases,
        "checkpoint": checkpoint,
        "spacing": spacing,
        "per_slice": two_d,
        "configuration": configuration,
        "trainer": trainer,
        "plans": plans,
        "dataset": name,
        "fold": fold,
        "regions": bool(lm.has_regions),
        "class_names": {
            k: (label_names.get(k) if not lm.has_regions else _region_name(predictor.dataset_json, k)) for k in keys
        },
        "tta": "none",
        "sign": "offset > 0: prediction larger than the trusted reference; the correction moves the boundary inward",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nnunet_ext_version": __version__,
    }
    if write:
        write_json_atomic(content, offset_file(model_folder, fold))
    return content


def _region_name(dataset_json: Mapping[str, Any], key: str) -> str | None:
    for name, value in dataset_json["labels"].items():
        if isinstance(value, (list, tuple)) and label_or_region_to_key(value) == key:
            return name
        if isinstance(value, int) and label_or_region_to_key((value,)) == key:
            return name
    return None


def load_fold_offsets(model_folder: str | os.PathLike, fold: int | str) -> dict[str, Any]:
    """The stored calibration of one fold.

    Raises:
        FileNotFoundError: Not calibrated (the message gives the ``nnunet-ext calibrate`` command line).
        ValueError: Not a calibration file of this schema version.
    """
    path = offset_file(model_folder, fold)
    if not path.is_file():
        raise FileNotFoundError(f"fold {fold} of {model_folder} is not calibrated ({path} is missing)")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and calibrate again") from None
    if not isinstance(content, dict) or content.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path} is not a boundary_offset.json of schema_version {SCHEMA_VERSION}; calibrate again")
    return content


def load_calibrated_offsets(
    model_folder: str | os.PathLike, folds: Sequence[int | str], checkpoint: str
) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """Per-class offsets averaged over the folds' calibrations (folds with None for a class do not count).

    Returns:
        ``(offsets, per_fold)``: ``{key: mm or None}`` and ``{fold: offsets_mm of that fold}``.

    Raises:
        FileNotFoundError: A fold is not calibrated.
        ValueError: A fold was calibrated with another checkpoint, or the files disagree on the classes.
    """
    per_fold: dict[str, dict[str, float | None]] = {}
    for fold in folds:
        content = load_fold_offsets(model_folder, fold)
        if content.get("checkpoint") != checkpoint:
            raise ValueError(
                f"fold {fold} was calibrated with {content.get('checkpoint')}, not {checkpoint}; calibrate it again "
                f"with -chk {checkpoint}"
            )
        per_fold[str(fold)] = dict(content["offsets_mm"])
    keys = list(next(iter(per_fold.values())))
    if any(list(v) != keys for v in per_fold.values()):
        raise ValueError(f"the calibrations of folds {list(per_fold)} name different classes; calibrate them again")
    return pool_offsets(per_fold, keys), per_fold


def uniform_offsets(label_manager: Any, offset_mm: float) -> dict[str, float]:
    """The same offset for every foreground class or region."""
    if not math.isfinite(offset_mm):
        raise ValueError(f"the boundary offset must be a finite number of mm, got {offset_mm}")
    return {label_or_region_to_key(k): float(offset_mm) for k in class_keys(label_manager)}


def apply_boundary_offsets(
    logits: np.ndarray,
    offsets_mm: Mapping[str, float | None],
    label_manager: Any,
    spacing: Sequence[float],
    two_d: bool,
) -> np.ndarray:
    """Shift the boundaries of predicted logits by per-class offsets (> 0 moves them inward).

    Label maps: :func:`~nnunet_ext.correction.boundary.shift_class_logits` with ``{label: offset}``; regions:
    :func:`~nnunet_ext.correction.boundary.shift_logits` per region channel. 2-D configurations are shifted slice
    by slice with the in-plane spacing. Classes with None or 0 are unchanged.

    Args:
        logits: ``(C, *spatial)`` in preprocessed space.
        offsets_mm: ``{key: mm or None}`` with :func:`~nnunet_ext.evaluation.metrics.label_or_region_to_key` keys.
        label_manager: nnU-Net's ``LabelManager``.
        spacing: ``configuration_manager.spacing``.
        two_d: 2-D configuration (shift per slice).

    Returns:
        Shifted logits, float32, same shape.

    Raises:
        ValueError: A key is not a foreground class/region of the dataset.
    """
    z = np.asarray(logits, dtype=np.float32)
    keys = [label_or_region_to_key(k) for k in class_keys(label_manager)]
    unknown = sorted(set(offsets_mm) - set(keys))
    if unknown:
        raise ValueError(f"boundary offsets for {unknown}, which are not foreground classes/regions {keys}")
    active = {keys.index(k): float(b) for k, b in offsets_mm.items() if b is not None and b != 0}
    out = z.copy()
    if not active:
        return out
    spacing = [float(s) for s in spacing]
    n_spatial = z.ndim - 1
    index_sets = [(slice(None), i) for i in range(z.shape[1])] if two_d and n_spatial == 3 else [(slice(None),)]
    for idx in index_sets:
        part = z[idx]
        if label_manager.has_regions:
            for channel, b in active.items():
                out[idx][channel] = shift_logits(part[channel], b, spacing)
        else:
            # channel i of a softmax output is label i (nnU-Net requires consecutive labels)
            labels = {int(keys[c]): b for c, b in active.items()}
            out[idx] = shift_class_logits(part, labels, spacing)
    return out
