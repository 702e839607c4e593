"""Preparing datasets for benchmarks: nnU-Net's planning and preprocessing in-process, CPU-sized plans, plan transfer.

Thin wrappers over ``nnunetv2.experiment_planning.plan_and_preprocess_api`` (the Python side of
``nnUNetv2_plan_and_preprocess``) with the one workaround they need here: nnU-Net's planner calls
``torch.set_num_threads(nnUNet_n_proc_DA)``, which fails for ``nnUNet_n_proc_DA=0`` (in-process augmentation, used for
reproducible CPU runs), so planning runs with a positive value and the variable is restored afterwards.
nnU-Net's workers are spawned: scripts calling these functions need an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def _positive_n_proc_da() -> Iterator[None]:
    saved = os.environ.get("nnUNet_n_proc_DA")
    if saved is not None and int(saved) < 1:
        os.environ["nnUNet_n_proc_DA"] = str(max(1, os.cpu_count() or 1))
    try:
        yield
    finally:
        if saved is not None:
            os.environ["nnUNet_n_proc_DA"] = saved


def dataset_name(dataset: str | int) -> str:
    """``DatasetXXX_Name`` for an id or a name (nnU-Net's lookup through ``nnUNet_raw`` / ``nnUNet_preprocessed``)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    text = str(dataset)
    try:
        return maybe_convert_to_dataset_name(text if text.startswith("Dataset") else int(text))
    except ValueError:
        raise ValueError(
            f"dataset {dataset!r} is neither an id nor a dataset name; pass -d as an id (e.g. 502) or a name like "
            "'Dataset502_X'"
        ) from None
    except RuntimeError as err:
        if "More than one" in str(err):
            raise ValueError(
                f"dataset id {dataset!r} names several datasets in nnU-Net's folders; remove or renumber all but one, "
                "or pass the full name (DatasetXXX_Name)"
            ) from None
        roots = ", ".join(f"{k}={os.environ.get(k)}" for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
        raise ValueError(
            f"dataset {dataset!r} not found in {roots}; check -d, or point those variables at the folders that hold it"
        ) from None


def dataset_id(dataset: str | int) -> int:
    """The numeric id of a dataset given by id or name."""
    return int(dataset_name(dataset)[len("Dataset") :][:3])


def plan_and_preprocess(
    dataset: str | int,
    configurations: Sequence[str] = ("2d",),
    num_processes: int = 1,
    verify_integrity: bool = True,
) -> Path:
    """Fingerprint, plan (``nnUNetPlans``) and preprocess ``configurations`` of a raw dataset, in this process.

    Returns:
        The dataset's folder in ``nnUNet_preprocessed``.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.paths import nnUNet_preprocessed

    did = dataset_id(dataset)
    with _positive_n_proc_da():
        extract_fingerprints([did], check_dataset_integrity=verify_integrity, num_processes=num_processes)
        plan_experiments([did])
        preprocess([did], configurations=tuple(configurations), num_processes=[num_processes] * len(configurations))
    return Path(nnUNet_preprocessed.require()) / dataset_name(did)


def transfer_plans_and_preprocess(
    source: str | int,
    target: str | int,
    configurations: Sequence[str],
    plans: str = "nnUNetPlans",
    num_processes: int = 1,
) -> Path:
    """Preprocess raw dataset ``target`` with the plans of ``source`` (same network, patch size, normalisation).

    nnU-Net's ``nnUNetv2_move_plans_between_datasets`` route: fingerprint ``target`` (nnU-Net copies it next to
    every trained model), copy the plans (plugin configurations such as ``2d_coplenet`` included) and the
    ``dataset.json``, preprocess.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets,
    )
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    did = dataset_id(target)
    name = dataset_name(did)
    with _positive_n_proc_da():
        extract_fingerprints([did], check_dataset_integrity=True, num_processes=num_processes)
        move_plans_between_datasets(dataset_id(source), did, plans, plans)
        # nnU-Net's planner copies dataset.json next to the plans; the preprocessor reads it from there
        shutil.copy(Path(nnUNet_raw.require()) / name / "dataset.json", Path(nnUNet_preprocessed.require()) / name)
        preprocess([did], plans_identifier=plans, configurations=tuple(configurations), num_processes=[num_processes])
    return Path(nnUNet_preprocessed.require()) / name


def shrink_plans(
    dataset: str | int,
    configuration: str = "2d",
    plans: str = "nnUNetPlans",
    batch_size: int = 4,
    feature_divisor: int = 4,
    max_features: int = 32,
) -> Path:
    """Make one configuration CPU-sized in place: smaller batch, ``features_per_stage`` divided and capped.

    For smoke benchmarks, the demo and tests only: the network keeps its depth, strides and patch size, so
    deep supervision and inference work unchanged. Preprocessed data is not affected.

    Returns:
        The plans file.
    """
    from nnunetv2.paths import nnUNet_preprocessed

    if batch_size < 1 or feature_divisor < 1 or max_features < 1:
        raise ValueError(
            f"batch_size, feature_divisor and max_features must be >= 1, got {batch_size}, {feature_divisor}, "
            f"{max_features}"
        )
    plans_file = Path(nnUNet_preprocessed.require()) / dataset_name(dataset) / f"{plans}.json"
    data = json.loads(plans_file.read_text())
    if configuration not in data["configurations"]:
        raise ValueError(f"configuration {configuration!r} not in {plans_file}: {sorted(data['configurations'])}")
    cfg = data["configurations"][configuration]
    if "architecture" not in cfg:
        raise ValueError(
            f"configuration {configuration!r} inherits its architecture from {cfg.get('inherits_from')!r}; "
            "shrink that configuration instead"
        )
    cfg["batch_size"] = batch_size
    arch = cfg["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [max(1, min(f // feature_divisor, max_features)) for f in arch["features_per_stage"]]
    plans_file.write_text(json.dumps(data, indent=2))
    return plans_file
