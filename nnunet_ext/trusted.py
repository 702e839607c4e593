"""Trusted (expert-labelled) training cases of a dataset, and splits that keep them out of training.

Noisy-label methods that estimate the label bias need a few cases whose labels an expert checked. They are recorded
per dataset in ``$nnUNet_preprocessed/<DatasetXXX_Name>/trusted_cases.json`` (next to nnU-Net's
``splits_final.json``), written by ``nnunet-ext trust``::

    {"schema_version": 1, "dataset": "Dataset801_JSRTLungNoisy", "updated": "2025-01-01T12:00:00+00:00",
     "cases": ["JPCLN001", "JPCLN002"]}

Bias may be estimated only on trusted cases the current fold does not train on (:func:`held_out_trusted`). nnU-Net's
default 5-fold split puts about a fifth of them in each fold's validation set; :func:`trusted_split` writes a split
whose validation sets hold *all* trusted cases (they are then never trained on), or, with ``spread=True``, spreads
them over the folds like the other cases.

Case ids are nnU-Net's training identifiers: the ``imagesTr`` file names without the ``_0000`` channel suffix and
the file ending (``labelsTr`` names without the file ending), or the keys of the ``"dataset"`` block of
``dataset.json``; without a raw dataset, the case files of the preprocessed folder.

Every function takes the dataset as an id or a ``DatasetXXX_Name`` (an id is resolved through nnU-Net's folders), and
optionally the ``raw`` / ``preprocessed`` roots (default: ``nnUNet_raw`` / ``nnUNet_preprocessed``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from nnunet_ext._io import write_json_atomic

SCHEMA_VERSION = 1
TRUSTED_FILE = "trusted_cases.json"
SPLITS_FILE = "splits_final.json"
NNUNET_SPLIT_SEED = 12345  # nnUNetTrainer.do_split
NNUNET_N_FOLDS = 5

PathLike = str | os.PathLike


def dataset_name(dataset: str | int) -> str:
    """``DatasetXXX_Name`` for a name (returned as is, as nnU-Net does) or an id (looked up in nnU-Net's folders).

    Raises:
        ValueError: the id is unknown or ambiguous, or the text is neither an id nor a dataset name.
    """
    text = str(dataset)
    if text.startswith("Dataset"):
        return text
    from nnunet_ext.benchmark.datasets import dataset_name as lookup

    return lookup(text)


def _root(value: PathLike | None, variable: str) -> Path:
    if value is not None:
        return Path(value)
    env = os.environ.get(variable)
    if not env:
        raise ValueError(f"{variable} is not set; export {variable}=/path/to/{variable} (nnU-Net's data folders)")
    return Path(env)


def preprocessed_folder(dataset: str | int, preprocessed: PathLike | None = None) -> Path:
    """``$nnUNet_preprocessed/<DatasetXXX_Name>`` (it need not exist)."""
    return _root(preprocessed, "nnUNet_preprocessed") / dataset_name(dataset)


def trusted_cases_file(dataset_name: str | int, preprocessed: PathLike | None = None) -> Path:
    """``$nnUNet_preprocessed/<DatasetXXX_Name>/trusted_cases.json`` (it need not exist)."""
    return preprocessed_folder(dataset_name, preprocessed) / TRUSTED_FILE


def splits_file(dataset: str | int, preprocessed: PathLike | None = None) -> Path:
    """nnU-Net's ``$nnUNet_preprocessed/<DatasetXXX_Name>/splits_final.json`` (it need not exist)."""
    return preprocessed_folder(dataset, preprocessed) / SPLITS_FILE


def load_trusted(dataset: str | int, preprocessed: PathLike | None = None) -> list[str]:
    """The recorded trusted cases, sorted; empty when no file was written.

    Raises:
        ValueError: the file is not a trusted-cases file of this schema version.
    """
    path = trusted_cases_file(dataset, preprocessed)
    if not path.is_file():
        return []
    fix = f"fix or delete it (nnunet-ext trust -d {dataset_name(dataset)} --clear)"
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(content, dict) or "cases" not in content:
        raise ValueError(
            f'{path} is not a trusted-cases file (expected {{"schema_version": 1, "cases": [...]}}); {fix}'
        )
    version = content.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {version!r}, this nnunet_ext reads {SCHEMA_VERSION}; {fix}")
    cases = content["cases"]
    if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases):
        raise ValueError(f'{path}: "cases" must be a list of case id strings; {fix}')
    return sorted(set(cases))


def save_trusted(dataset: str | int, cases: Iterable[str], preprocessed: PathLike | None = None) -> Path:
    """Write the trusted-cases file (sorted, de-duplicated ids; replaces the previous list) atomically.

    The dataset's preprocessed folder is created if needed: nnU-Net's fingerprint extraction and preprocessing keep
    files they do not own there (``splits_final.json`` is one). The ids are not checked here; see
    :func:`validate_case_ids`.

    Returns:
        The file written.
    """
    name = dataset_name(dataset)
    path = trusted_cases_file(name, preprocessed)
    content = {
        "schema_version": SCHEMA_VERSION,
        "dataset": name,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cases": sorted(set(cases)),
    }
    write_json_atomic(content, path)
    return path


def clear_trusted(dataset: str | int, preprocessed: PathLike | None = None) -> bool:
    """Delete the trusted-cases file; ``True`` if there was one."""
    path = trusted_cases_file(dataset, preprocessed)
    if path.is_file():
        path.unlink()
        return True
    return False


def training_case_ids(
    dataset: str | int, raw: PathLike | None = None, preprocessed: PathLike | None = None
) -> list[str]:
    """nnU-Net's training case ids of a dataset, sorted.

    From the raw dataset when it exists (nnU-Net's own listing: ``imagesTr`` with ``dataset.json``'s file ending, or
    its ``"dataset"`` block), else from the case files (``<id>.pkl``) of the preprocessed configuration folders.

    Raises:
        ValueError: neither folder is there, or neither holds training cases.
    """
    name = dataset_name(dataset)
    raw_root = raw if raw is not None else os.environ.get("nnUNet_raw")
    pre_root = preprocessed if preprocessed is not None else os.environ.get("nnUNet_preprocessed")
    raw_folder = Path(raw_root) / name if raw_root else None
    if raw_folder is not None and (raw_folder / "dataset.json").is_file():
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

        dataset_json = json.loads((raw_folder / "dataset.json").read_text())
        ids = sorted(str(k) for k in get_filenames_of_train_images_and_targets(str(raw_folder), dataset_json))
        if ids:
            return ids
    pre_folder = Path(pre_root) / name if pre_root else None
    if pre_folder is not None and pre_folder.is_dir():
        ids = {p.stem for sub in pre_folder.iterdir() if sub.is_dir() for p in sub.glob("*.pkl")}
        if ids:
            return sorted(ids)
    looked = ", ".join(str(f) for f in (raw_folder, pre_folder) if f is not None) or "nowhere"
    raise ValueError(
        f"no training cases of {name} found (looked in {looked}); set nnUNet_raw to the folder holding {name} "
        f"(with dataset.json and imagesTr), or preprocess it with nnUNetv2_plan_and_preprocess -d {name}"
    )


def did_you_mean(ids: Sequence[str], known: Sequence[str]) -> list[str]:
    """``ids`` quoted, each followed by its closest id in ``known`` (difflib) as a hint where there is one."""
    hints = []
    for case in ids:
        close = difflib.get_close_matches(case, known, n=1)
        hints.append(f"{case!r} (did you mean {close[0]!r}?)" if close else repr(case))
    return hints


def validate_case_ids(
    dataset: str | int,
    cases: Iterable[str],
    raw: PathLike | None = None,
    preprocessed: PathLike | None = None,
) -> list[str]:
    """Check that every id is a training case of the dataset.

    Returns:
        The ids, sorted and de-duplicated.

    Raises:
        ValueError: names the unknown ids, each with the closest training case ids (difflib) as a hint.
    """
    cases = sorted(set(cases))
    known = training_case_ids(dataset, raw, preprocessed)
    known_set = set(known)
    unknown = [c for c in cases if c not in known_set]
    if unknown:
        shown = did_you_mean(unknown[:10], known)
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ValueError(
            f"{len(unknown)} of {len(cases)} case ids are not training cases of {dataset_name(dataset)}: "
            f"{', '.join(shown)}{more}; give nnU-Net case ids (imagesTr names without _0000 and the file ending, "
            f"e.g. {known[0]!r}; {len(known)} training cases)"
        )
    return cases


def read_case_file(path: PathLike) -> list[str]:
    """Case ids from a text file: one per line; blank lines and ``#`` comments (whole-line or trailing) ignored."""
    cases = []
    for line in Path(path).read_text().splitlines():
        case = line.split("#", 1)[0].strip()
        if case:
            cases.append(case)
    return cases


def nnunet_split(cases: Sequence[str], n_folds: int = NNUNET_N_FOLDS, seed: int = NNUNET_SPLIT_SEED) -> list[dict]:
    """nnU-Net's own k-fold split (``generate_crossval_split`` on the sorted ids, as ``do_split`` does)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    keys = sorted(set(cases))
    if len(keys) < n_folds:
        raise ValueError(f"{len(keys)} cases cannot be split into {n_folds} folds; need at least {n_folds}")
    return [
        {"train": sorted(str(k) for k in s["train"]), "val": sorted(str(k) for k in s["val"])}
        for s in generate_crossval_split(keys, seed=seed, n_splits=n_folds)
    ]


def trusted_split(
    cases_all: Sequence[str],
    trusted: Sequence[str],
    n_folds: int = NNUNET_N_FOLDS,
    seed: int = NNUNET_SPLIT_SEED,
    spread: bool = False,
) -> list[dict]:
    """A ``splits_final.json`` whose validation sets hold the trusted cases.

    The untrusted cases are split exactly as nnU-Net would split them (:func:`nnunet_split`). By default every fold's
    validation set is its share of the untrusted cases plus *all* trusted cases, so no fold ever trains on a trusted
    case (every fold can estimate the bias on all of them). With ``spread=True`` the trusted cases are split the same
    way and fold ``k`` validates on its share of each: folds train on the trusted cases of the other folds and hold
    out about ``1/n_folds`` of them.

    Returns:
        ``[{"train": [...], "val": [...]}, ...]``, one entry per fold, ids sorted (nnU-Net's format).

    Raises:
        ValueError: a trusted case is not in ``cases_all``, or too few cases for ``n_folds`` folds.
    """
    everything = set(cases_all)
    trusted_set = set(trusted)
    missing = sorted(trusted_set - everything)
    if missing:
        raise ValueError(f"trusted cases not among the dataset's cases: {missing}")
    if not trusted_set:
        raise ValueError("no trusted cases to put into the validation sets")
    untrusted = sorted(everything - trusted_set)
    if len(untrusted) < n_folds:
        raise ValueError(
            f"only {len(untrusted)} untrusted cases, fewer than the {n_folds} folds; trust fewer cases or use a "
            f"splits_final.json of your own"
        )
    folds = nnunet_split(untrusted, n_folds, seed)
    if spread:
        if len(trusted_set) < n_folds:
            raise ValueError(
                f"spreading {len(trusted_set)} trusted cases over {n_folds} folds leaves a fold without one; "
                f"trust at least {n_folds} cases or put all of them in every validation set (no spread)"
            )
        for fold, part in zip(folds, nnunet_split(sorted(trusted_set), n_folds, seed)):
            fold["train"] = sorted(fold["train"] + part["train"])
            fold["val"] = sorted(fold["val"] + part["val"])
    else:
        for fold in folds:
            fold["val"] = sorted(fold["val"] + sorted(trusted_set))
    return folds


def load_splits(dataset: str | int, preprocessed: PathLike | None = None) -> list[dict] | None:
    """The dataset's ``splits_final.json``, or ``None`` when there is none (nnU-Net then creates its default)."""
    path = splits_file(dataset, preprocessed)
    if not path.is_file():
        return None
    try:
        splits = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it") from None
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
        raise ValueError(f'{path} is not an nnU-Net split file (a list of {{"train": [...], "val": [...]}})')
    return splits


def same_splits(a: Sequence[dict], b: Sequence[dict]) -> bool:
    """Equal fold by fold, ignoring the order of the ids inside a fold."""
    return len(a) == len(b) and all(
        sorted(x["train"]) == sorted(y["train"]) and sorted(x["val"]) == sorted(y["val"]) for x, y in zip(a, b)
    )


def held_out_trusted(
    dataset: str | int,
    fold: int | str,
    splits: Sequence[dict] | None = None,
    raw: PathLike | None = None,
    preprocessed: PathLike | None = None,
) -> list[str]:
    """Trusted cases that fold ``fold`` validates on and does not train on, sorted.

    Args:
        dataset: id or name.
        fold: nnU-Net fold; ``"all"`` trains on every case, so it holds out none.
        splits: the fold list; default the dataset's ``splits_final.json``, or, without one, nnU-Net's default
            5-fold split of the training cases (what ``do_split`` will create).

    Raises:
        ValueError: ``fold`` is beyond the split file (nnU-Net would use a random 80:20 split).
    """
    trusted = load_trusted(dataset, preprocessed)
    if str(fold) == "all" or not trusted:
        return []
    if splits is None:
        splits = load_splits(dataset, preprocessed)
        if splits is None:
            splits = nnunet_split(training_case_ids(dataset, raw, preprocessed))
    fold = int(fold)
    if not 0 <= fold < len(splits):
        raise ValueError(
            f"fold {fold} is not in the {len(splits)}-fold split of {dataset_name(dataset)} (nnU-Net would train "
            f"on a random 80:20 split); train folds 0..{len(splits) - 1} or write a split file with "
            f"nnunet-ext trust -d {dataset_name(dataset)} --as-validation --overwrite"
        )
    train, val = set(splits[fold]["train"]), set(splits[fold]["val"])
    return sorted(c for c in trusted if c in val and c not in train)


def require_held_out_trusted(
    dataset: str | int,
    fold: int | str,
    splits: Sequence[dict] | None = None,
    raw: PathLike | None = None,
    preprocessed: PathLike | None = None,
) -> list[str]:
    """:func:`held_out_trusted`, refusing with the fix when there are none (for trainers that estimate bias).

    Raises:
        ValueError: no trusted cases recorded, or none held out by this fold; the message says what to run.
    """
    name = dataset_name(dataset)
    trusted = load_trusted(name, preprocessed)
    if not trusted:
        raise ValueError(
            f"no trusted cases recorded for {name} ({trusted_cases_file(name, preprocessed)} is missing); record "
            f"expert-labelled training cases with nnunet-ext trust -d {name} CASE ... (or --from-file FILE) and "
            f"keep them out of training with nnunet-ext trust -d {name} --as-validation"
        )
    held_out = held_out_trusted(name, fold, splits, raw, preprocessed)
    if not held_out and str(fold) == "all":
        raise ValueError(
            f"fold 'all' trains on every case, so none of the {len(trusted)} trusted cases of {name} is held out for "
            f"estimating the bias; train a numbered fold of a split whose validation sets hold them "
            f"(nnunet-ext trust -d {name} --as-validation)"
        )
    if not held_out:
        raise ValueError(
            f"bias is estimated only on trusted cases the fold does not train on, and fold {fold} holds out none "
            f"of the {len(trusted)} trusted cases of {name}; write a splits_final.json whose validation sets hold "
            f"them with nnunet-ext trust -d {name} --as-validation (add --overwrite to replace the existing split) "
            f"and start the training again"
        )
    return held_out


def write_splits(
    dataset: str | int,
    splits: Sequence[dict],
    preprocessed: PathLike | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> bool:
    """Write ``splits_final.json`` atomically.

    Args:
        dry_run: only check; write nothing.

    Returns:
        ``False`` if the file already holds these folds (nothing to write), ``True`` otherwise.

    Raises:
        FileExistsError: a different split file exists and ``overwrite`` is false.
    """
    path = splits_file(dataset, preprocessed)
    existing = load_splits(dataset, preprocessed)
    if existing is not None and same_splits(existing, splits):
        return False
    if existing is not None and not overwrite:
        raise FileExistsError(
            f"{path} exists with a different {len(existing)}-fold split; pass --overwrite to replace it (models "
            f"already trained on its folds then no longer match the folds' validation sets)"
        )
    if not dry_run:
        write_json_atomic([{"train": list(s["train"]), "val": list(s["val"])} for s in splits], path)
    return True
