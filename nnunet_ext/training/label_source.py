"""The one corrected-label source of a fold, shared by the label-correction add-ons (spatial correction, ADELE).

nnU-Net reads a fold's training data from ``trainer.preprocessed_dataset_folder``. A label correction never modifies
the preprocessed dataset: it writes a new folder in nnU-Net's preprocessed format under
``<fold output folder>/nnunet_ext_corrected_labels/<name>/`` (images hard-linked, corrected segmentations and
nnU-Net's per-class foreground locations new, every other case linked unchanged), points the trainer at it and
rebuilds the data loaders (:func:`activate`).

A new folder is always derived from the *current* source, so when several add-ons correct labels the later one
corrects what the earlier one produced and the fold has one chain of label sets, never two diverging ones. Each
folder carries a manifest (``label_source.json``: generation = the parent's + 1, the parent folder, the writer); on
``--c`` every add-on hands its folder to :func:`restore`, which keeps the highest generation, i.e. the last one
written. A folder is written under ``<name>.part`` and renamed when complete, so a folder under its final name is
complete, and a correction repeated after a kill reuses it (:func:`reusable`) when it was derived from the same
parent.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ext._nnunet import rebuild_dataloaders, sample_foreground_locations

CORRECTED_DIR = "nnunet_ext_corrected_labels"
MANIFEST = "label_source.json"
_CASE_SUFFIXES = (".pkl", ".npz", ".npy", "_seg.npy", ".b2nd", "_seg.b2nd")


def corrected_root(trainer) -> Path:
    """The folder holding the fold's corrected label sets."""
    return Path(trainer.output_folder) / CORRECTED_DIR


def current_source(trainer) -> Path:
    return Path(trainer.preprocessed_dataset_folder)


def read_manifest(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def generation(folder: str | os.PathLike) -> int:
    """0 for nnU-Net's preprocessed dataset, the manifest's generation for a corrected set (1 for a corrected set
    written before manifests existed)."""
    manifest = read_manifest(folder)
    if manifest is not None:
        return int(manifest["generation"])
    return 1 if CORRECTED_DIR in Path(folder).parts else 0


def is_complete(folder: str | os.PathLike, summary_name: str | None = None) -> bool:
    """A label set under its final name: its manifest (or, for sets written before manifests, its summary) exists."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or (summary_name is not None and (folder / summary_name).is_file())


def reusable(trainer, folder: str | os.PathLike, summary_name: str | None = None) -> bool:
    """A complete label set derived from the trainer's current source (a correction repeated after a kill)."""
    if not is_complete(folder, summary_name):
        return False
    manifest = read_manifest(folder)
    return manifest is None or Path(manifest["parent"]).resolve() == current_source(trainer).resolve()


def _link(src: Path, dst: Path) -> None:
    from nnunet_ext.noise.simulate import link_or_copy

    link_or_copy(src, dst)


class LabelSetWriter:
    """Writes a new label set ``<corrected root>/<name>`` derived from the trainer's current source.

    Every case of the source goes through :meth:`link` (unchanged) or :meth:`write` (new segmentation); then
    :meth:`finish` writes the manifest and optional extra JSON files and renames the folder into place.
    """

    def __init__(self, trainer, name: str, written_by: str) -> None:
        self.trainer = trainer
        self.source = current_source(trainer)
        self.root = corrected_root(trainer)
        self.final = self.root / name
        self.tmp = self.root / f"{name}.part"
        self.written_by = written_by
        self.dataset = trainer.dataset_class(str(self.source), None)
        self.cases: list[str] = list(self.dataset.identifiers)
        self.written: list[str] = []
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)

    def load_case(self, case: str) -> tuple[Any, np.ndarray, dict]:
        """Data, current segmentation and properties of a case of the source."""
        data, seg, _, properties = self.dataset.load_case(case)
        return data, np.asarray(seg), properties

    def link(self, case: str) -> None:
        for f in self.source.glob(f"{case}*"):
            if f.name[len(case) :] in _CASE_SUFFIXES:
                _link(f, self.tmp / f.name)

    def write(self, case: str, seg: np.ndarray, properties: dict, classes: Sequence) -> None:
        """Store ``seg`` (nnU-Net's layout, (1, *spatial)) as the case's segmentation, with the foreground locations
        of ``classes`` (labels, or region tuples) that nnU-Net's patch sampler oversamples from."""
        from batchgenerators.utilities.file_and_folder_operations import write_pickle

        properties = dict(properties)
        properties["class_locations"] = sample_foreground_locations(seg, classes)
        source, target = self.source, self.tmp
        if (source / f"{case}.b2nd").is_file():
            import blosc2

            _link(source / f"{case}.b2nd", target / f"{case}.b2nd")
            original = blosc2.open(urlpath=str(source / f"{case}_seg.b2nd"), mode="r")
            blosc2.asarray(
                np.ascontiguousarray(seg),
                urlpath=str(target / f"{case}_seg.b2nd"),
                chunks=original.chunks,
                blocks=original.blocks,
            )
            write_pickle(properties, str(target / f"{case}.pkl"))
        else:  # nnU-Net's numpy format: data and seg share one npz
            data, _, _, _ = self.trainer.dataset_class(str(source), [case]).load_case(case)
            self.trainer.dataset_class.save_case(np.asarray(data), seg, properties, str(target / case))
        self.written.append(case)

    def finish(self, files: dict[str, Any] | None = None, **manifest: Any) -> Path:
        """Write ``files`` (name -> JSON content) and the manifest, then move the folder to its final name."""
        for name, content in (files or {}).items():
            (self.tmp / name).write_text(json.dumps(content, indent=2))
        record = {
            "generation": generation(self.source) + 1,
            "parent": str(self.source),
            "written_by": self.written_by,
            "rewritten_cases": sorted(self.written),
            **manifest,
        }
        (self.tmp / MANIFEST).write_text(json.dumps(record, indent=2))
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return self.final


def sliding_window_predictor(trainer, network, tile_step_size: float):
    """nnU-Net's sliding-window predictor for ``network`` in the trainer's preprocessed space: Gaussian weighting,
    no mirroring, on the trainer's device."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=tile_step_size,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=trainer.device.type == "cuda",
        device=trainer.device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network,
        trainer.plans_manager,
        trainer.configuration_manager,
        None,
        trainer.dataset_json,
        trainer.__class__.__name__,
        trainer.inference_allowed_mirroring_axes,
    )
    return predictor


def synchronize(trainer) -> None:
    """Under DDP one rank writes a label set and the others wait here for it."""
    if trainer.is_ddp:
        import torch.distributed as dist

        dist.barrier()


def activate(trainer, folder: str | os.PathLike) -> None:
    """Train on ``folder`` from now on: the trainer reads it and the data loaders are rebuilt on it."""
    trainer.preprocessed_dataset_folder = str(folder)
    rebuild_dataloaders(trainer)


def restore(trainer, folder: str | None, summary_name: str | None = None) -> None:
    """On ``--c``: train on ``folder`` (a label set a checkpoint trained on) unless a later one is already set.

    The data loaders are built afterwards by nnU-Net's ``on_train_start``.

    Raises:
        FileNotFoundError: the folder is missing or incomplete.
    """
    if not folder or not is_complete(folder, summary_name):
        raise FileNotFoundError(
            f"the checkpoint trained on corrected labels in {folder}, which is missing or incomplete; restore that "
            "folder (it sits in the fold's output folder) or start the training again"
        )
    if generation(folder) >= generation(current_source(trainer)):
        trainer.preprocessed_dataset_folder = str(folder)
