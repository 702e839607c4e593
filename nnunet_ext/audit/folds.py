"""nnU-Net's cross-validation output of a trained model: which folds exist, which cases they validated on.

Layout read (nnU-Net's, ``nnUNetv2_train D C FOLD -tr T [-p P] [--npz]`` writes it)::

    $nnUNet_results/<DatasetXXX_Name>/<T>__<P>__<C>/
        dataset.json  plans.json
        fold_k/checkpoint_final.pth
        fold_k/validation/<case><file_ending>     out-of-fold segmentation of every validation case of fold k
        fold_k/validation/<case>.npz               its probabilities ("probabilities"), with --npz only

A fold's validation cases are those of ``splits_final.json`` in the dataset's preprocessed folder (nnU-Net's split,
written at the first training); without that file, the segmentations found in its ``validation`` folder. A fold is
*missing* when it has neither a finished training (``checkpoint_final.pth``) nor any validation prediction (the
refusal names ``nnUNetv2_train D C FOLD -tr T``, with ``--c`` when an unfinished training can resume); a trained fold
with incomplete validation predictions needs ``nnUNetv2_train D C FOLD -tr T --val``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_ext.evaluation.io import check_file_ending

DEFAULT_FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)
DEFAULT_PLANS = "nnUNetPlans"
CHECKPOINT = "checkpoint_final.pth"


@dataclass(frozen=True)
class FoldPredictions:
    """Out-of-fold predictions of one fold: case → segmentation file, case → probabilities file (``.npz``)."""

    fold: int
    folder: Path
    segmentations: dict[str, Path]
    probabilities: dict[str, Path]


@dataclass(frozen=True)
class CrossValidation:
    """The trained model folder of an audit and its folds' validation predictions."""

    dataset: str
    dataset_id: int
    trainer: str
    plans: str
    configuration: str
    model_dir: Path
    folds: tuple[FoldPredictions, ...]
    dataset_json: dict[str, Any]
    plans_json: dict[str, Any]
    file_ending: str
    splits: list[dict] | None

    def case_folds(self) -> dict[str, list[int]]:
        """Case → the folds that validated on it (several when a case is in several validation sets), sorted."""
        out: dict[str, list[int]] = {}
        for f in self.folds:
            for case in f.segmentations:
                out.setdefault(case, []).append(f.fold)
        return dict(sorted(out.items()))


def train_command(dataset_id: int, configuration: str, fold: int, trainer: str, plans: str, *extra: str) -> str:
    """``nnUNetv2_train D C FOLD -tr T`` (``-p P`` unless nnU-Net's default plans) plus ``extra`` flags."""
    parts = ["nnUNetv2_train", str(dataset_id), configuration, str(fold), "-tr", trainer]
    if plans != DEFAULT_PLANS:
        parts += ["-p", plans]
    return " ".join([*parts, *extra])


def parse_folds(values: Sequence[str | int]) -> tuple[int, ...]:
    """Fold numbers from ``-f`` values (sorted, unique); ``all`` has no out-of-fold predictions and is refused."""
    folds = []
    for v in values:
        text = str(v)
        if text == "all":
            raise ValueError(
                "fold 'all' trains on every case, so it has no out-of-fold predictions to audit; give the "
                "cross-validation folds, e.g. -f 0 1 2 3 4"
            )
        try:
            fold = int(text)
        except ValueError:
            raise ValueError(f"-f takes fold numbers, got {text!r}; e.g. -f 0 1 2 3 4") from None
        if fold < 0:
            raise ValueError(f"fold numbers are >= 0, got {fold}; e.g. -f 0 1 2 3 4")
        folds.append(fold)
    if not folds:
        raise ValueError("no folds given; e.g. -f 0 1 2 3 4")
    return tuple(sorted(set(folds)))


def _load_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def _splits(dataset: str) -> list[dict] | None:
    from nnunet_ext.trusted import load_splits

    if not os.environ.get("nnUNet_preprocessed"):
        return None
    return load_splits(dataset)


def _list_validation(folder: Path, file_ending: str) -> tuple[dict[str, Path], dict[str, Path]]:
    if not folder.is_dir():
        return {}, {}
    segs, probs = {}, {}
    for p in sorted(folder.iterdir()):
        if p.name.endswith(file_ending):
            segs[p.name[: -len(file_ending)]] = p
        elif p.name.endswith(".npz"):
            probs[p.name[: -len(".npz")]] = p
    return segs, probs


def locate_cross_validation(
    dataset: str | int,
    configuration: str,
    trainer: str = "nnUNetTrainer",
    folds: Sequence[int] = DEFAULT_FOLDS,
    plans: str = DEFAULT_PLANS,
    results_dir: str | os.PathLike | None = None,
) -> CrossValidation:
    """Find the model folder and every requested fold's validation predictions; refuse with the fix when missing.

    Args:
        dataset: Dataset id or ``DatasetXXX_Name``.
        configuration: nnU-Net configuration (``2d``, ``3d_fullres``, ...).
        trainer: Trainer class name.
        folds: Cross-validation folds to read.
        plans: Plans identifier.
        results_dir: ``nnUNet_results`` (default: the environment's).

    Raises:
        FileNotFoundError: No model folder, missing folds (message: ``nnUNetv2_train D C FOLD -tr T`` per fold) or
            missing validation predictions (``nnUNetv2_train D C FOLD -tr T --val``).
        ValueError: ``nnUNet_results`` unset, unknown dataset, a fold beyond ``splits_final.json``.
    """
    from nnunet_ext.benchmark.datasets import dataset_name

    name = dataset_name(dataset)
    did = int(name[len("Dataset") :][:3])
    root = results_dir if results_dir is not None else os.environ.get("nnUNet_results")
    if not root:
        raise ValueError("nnUNet_results is not set; export nnUNet_results=/path/to/nnUNet_results (nnU-Net's folders)")
    model_dir = Path(root) / name / f"{trainer}__{plans}__{configuration}"
    fold_list = ", ".join(str(f) for f in folds)
    if not model_dir.is_dir():
        commands = "; ".join(train_command(did, configuration, f, trainer, plans) for f in folds)
        raise FileNotFoundError(
            f"no trained model {model_dir} (folds {fold_list} of {trainer} / {plans} / {configuration} are missing); "
            f"train the cross-validation first: {commands}"
        )
    dataset_json_file = model_dir / "dataset.json"
    plans_file = model_dir / "plans.json"
    for path in (dataset_json_file, plans_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing (nnUNetv2_train writes it when the first fold starts); train a fold with "
                f"{train_command(did, configuration, folds[0], trainer, plans)}"
            )
    dataset_json, plans_json = _load_json(dataset_json_file), _load_json(plans_file)
    file_ending = check_file_ending(dataset_json.get("file_ending", ".nii.gz"))
    splits = _splits(name)

    found, untrained, unvalidated = [], [], []
    for fold in folds:
        fold_dir = model_dir / f"fold_{fold}"
        segs, probs = _list_validation(fold_dir / "validation", file_ending)
        if splits is not None:
            if fold >= len(splits):
                raise ValueError(
                    f"fold {fold} is not in the {len(splits)}-fold split of {name} (splits_final.json); audit folds "
                    f"0..{len(splits) - 1}"
                )
            expected = sorted(str(c) for c in splits[fold]["val"])
        else:
            expected = sorted(segs)
        missing = [c for c in expected if c not in segs]
        if expected and not missing:
            found.append(
                FoldPredictions(
                    fold,
                    fold_dir / "validation",
                    {c: segs[c] for c in expected},
                    {c: probs[c] for c in expected if c in probs},
                )
            )
        elif not (fold_dir / CHECKPOINT).is_file() and not segs:
            resumable = (fold_dir / "checkpoint_latest.pth").is_file()
            untrained.append((fold, resumable))
        else:
            unvalidated.append((fold, missing if segs else None))

    problems = []
    if untrained:
        commands = "; ".join(
            train_command(did, configuration, f, trainer, plans, *(["--c"] if resumable else []))
            for f, resumable in untrained
        )
        problems.append(
            f"fold(s) {', '.join(str(f) for f, _ in untrained)} of {model_dir} are not trained (no {CHECKPOINT} and "
            f"no validation predictions); train them with: {commands}"
        )
    if unvalidated:
        commands = "; ".join(
            train_command(did, configuration, f, trainer, plans, "--val", "--npz") for f, _ in unvalidated
        )
        details = ", ".join(
            f"fold {f}: " + ("no validation folder or predictions" if m is None else f"{len(m)} missing, e.g. {m[:3]}")
            for f, m in unvalidated
        )
        problems.append(
            f"fold(s) {', '.join(str(f) for f, _ in unvalidated)} are trained but lack validation predictions "
            f"({details}); write them with: {commands} (--npz also saves the probabilities the loss column uses)"
        )
    if problems:
        raise FileNotFoundError("; ".join(problems))
    return CrossValidation(
        dataset=name,
        dataset_id=did,
        trainer=trainer,
        plans=plans,
        configuration=configuration,
        model_dir=model_dir,
        folds=tuple(found),
        dataset_json=dataset_json,
        plans_json=plans_json,
        file_ending=file_ending,
        splits=splits,
    )


def training_files(cv: CrossValidation, cases: Sequence[str]) -> tuple[dict[str, Path], dict[str, Path | None]]:
    """The given label and first image channel of each case.

    Labels: ``$nnUNet_raw/<dataset>/labelsTr`` (the labels nnU-Net trained on), else nnU-Net's copy in
    ``$nnUNet_preprocessed/<dataset>/gt_segmentations``. Images: ``imagesTr/<case>_0000<ending>`` of the raw dataset,
    None where absent (the montage then shows labels only).

    Raises:
        FileNotFoundError: A case without a label in either folder.
    """
    folders: list[Path] = []
    raw = os.environ.get("nnUNet_raw")
    pre = os.environ.get("nnUNet_preprocessed")
    if raw:
        folders.append(Path(raw) / cv.dataset / "labelsTr")
    if pre:
        folders.append(Path(pre) / cv.dataset / "gt_segmentations")
    labels: dict[str, Path] = {}
    missing = []
    for case in cases:
        path = next((f / f"{case}{cv.file_ending}" for f in folders if (f / f"{case}{cv.file_ending}").is_file()), None)
        if path is None:
            missing.append(case)
        else:
            labels[case] = path
    if missing:
        looked = ", ".join(str(f) for f in folders) or "nowhere (nnUNet_raw and nnUNet_preprocessed are unset)"
        raise FileNotFoundError(
            f"no training label for {len(missing)} case(s), e.g. {missing[:3]} (looked in {looked}); set nnUNet_raw to "
            f"the folder holding {cv.dataset}/labelsTr"
        )
    images: dict[str, Path | None] = {}
    for case in cases:
        path = Path(raw) / cv.dataset / "imagesTr" / f"{case}_0000{cv.file_ending}" if raw else None
        images[case] = path if path is not None and path.is_file() else None
    return labels, images


def dataset_classes(dataset_json: Mapping[str, Any]) -> tuple[tuple[Any, ...], bool, dict[str, str]]:
    """(labels or regions, has_regions, class key → its dataset.json name) of a dataset (nnU-Net's ``LabelManager``).

    Keys are nnU-Net's (``"1"``, ``"(1, 2, 3)"``); the names are dataset.json's label names (the key where none).
    """
    from nnunet_ext.evaluation.io import label_definition
    from nnunet_ext.evaluation.metrics import label_or_region_to_key

    label_def = label_definition(dataset_json)
    names: dict[str, str] = {}
    for name, value in dataset_json["labels"].items():
        if name == "background":
            continue
        key = label_or_region_to_key(tuple(value) if isinstance(value, (list, tuple)) else value)
        names.setdefault(key, str(name))
    keys = [label_or_region_to_key(c) for c in label_def.labels_or_regions]
    return tuple(label_def.labels_or_regions), label_def.has_regions, {k: names.get(k, k) for k in keys}
