"""Predicting a folder of raw test images with nnU-Net's own predictor (``nnUNetPredictor``), in this process or
with nnU-Net's worker pools, from a chosen checkpoint (``checkpoint_final.pth`` or ``checkpoint_best.pth``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from nnunet_ext._registration import register_trainer_folder
from nnunet_ext.benchmark.provenance import resolve_device
from nnunet_ext.benchmark.train import CHECKPOINT


def list_test_cases(images_dir: str | os.PathLike, file_ending: str) -> list[str]:
    """Case ids of a folder of images ``{case}_{channel:04d}{file_ending}``."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"test image folder {images_dir} does not exist; set it with --test-images or the spec's 'test_images'"
        )
    suffix_len = len(file_ending) + 5
    cases = sorted({p.name[:-suffix_len] for p in images_dir.iterdir() if p.name.endswith(file_ending)})
    if not cases:
        raise ValueError(
            f"no images ending in {file_ending!r} in {images_dir}; name test images <case>_0000{file_ending} as "
            "nnU-Net's imagesTr"
        )
    return cases


def predict_folder(
    model_dir: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    folds: Sequence[int | str],
    *,
    device: str | torch.device = "auto",
    disable_tta: bool = False,
    tile_step_size: float = 0.5,
    num_processes: int = 0,
    checkpoint_name: str = CHECKPOINT,
    overwrite: bool = True,
    save_probabilities: bool = False,
) -> Path:
    """Predict a folder of raw images with nnU-Net's predictor; several folds are averaged (logits, nnU-Net).

    ``num_processes=0`` runs preprocessing and export in this process (``predict_from_files_sequential``); otherwise
    nnU-Net's spawned pools are used (the calling script needs a ``__main__`` guard).
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    for fold in folds:
        checkpoint = Path(model_dir) / f"fold_{fold}" / checkpoint_name
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"{checkpoint} does not exist; train fold {fold} first or predict from another checkpoint "
                "(nnU-Net writes checkpoint_best.pth during training, checkpoint_final.pth at its end)"
            )
    register_trainer_folder()  # the predictor looks the trainer up by the name stored in the checkpoint
    dev = resolve_device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictor = nnUNetPredictor(
        tile_step_size=tile_step_size,
        use_gaussian=True,
        use_mirroring=not disable_tta,
        perform_everything_on_device=dev.type == "cuda",
        device=dev,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(
        str(model_dir), use_folds=tuple(folds), checkpoint_name=checkpoint_name
    )
    if num_processes == 0:
        predictor.predict_from_files_sequential(
            str(input_dir), str(output_dir), save_probabilities=save_probabilities, overwrite=overwrite
        )
    else:
        predictor.predict_from_files(
            str(input_dir),
            str(output_dir),
            save_probabilities=save_probabilities,
            overwrite=overwrite,
            num_processes_preprocessing=num_processes,
            num_processes_segmentation_export=num_processes,
        )
    return output_dir
