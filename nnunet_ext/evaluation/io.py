"""Reading and writing label maps of nnU-Net raw datasets, and their label definitions.

Label files are read with SimpleITK. Arrays come in numpy axis order (z, y, x) and so does :attr:`Geometry.spacing`
(the reversed ITK spacing). 2-D natural images (``.png``, ``.bmp``; nnU-Net's ``NaturalImage2DIO``) have no physical
spacing: it is 1 on both axes, as nnU-Net treats them (so their areas are in pixels, reported as mm²).

Files are read as stored, not through nnU-Net's readers: a 2-D NIfTI/PNG gives an ``(H, W)`` array with two spacings
(nnU-Net's readers would add an axis and an out-of-plane spacing of 999 or 999 × the largest pixel size), a slice
stored as 3-D NIfTI (the JSRT example) gives ``(1, H, W)`` with the spacing written in the file (e.g. 999 mm).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import SimpleITK as sitk

from nnunet_ext.evaluation.metrics import LabelOrRegion

SITK_FILE_ENDINGS: Final[tuple[str, ...]] = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl")
NATURAL_2D_FILE_ENDINGS: Final[tuple[str, ...]] = (".png", ".bmp")

# Geometry tolerances: relative for spacing and direction, absolute (mm) for the origin; header round-off of
# float32 NIfTI fields stays far below them.
SPACING_RTOL: Final[float] = 1e-4
ORIGIN_ATOL_MM: Final[float] = 1e-3
DIRECTION_ATOL: Final[float] = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Image geometry; ``spacing`` and ``shape`` in numpy axis order, ``origin``/``direction`` as ITK gives them."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def mismatch(self, other: Geometry) -> str | None:
        """A description of the first difference beyond the tolerances, or None when compatible."""
        if self.shape != other.shape:
            return f"shape {self.shape} vs {other.shape}"
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_RTOL, atol=0.0):
            return f"spacing {self.spacing} vs {other.spacing} mm"
        if not np.allclose(self.origin, other.origin, rtol=0.0, atol=ORIGIN_ATOL_MM):
            return f"origin {self.origin} vs {other.origin} mm"
        if not np.allclose(self.direction, other.direction, rtol=0.0, atol=DIRECTION_ATOL):
            return f"direction {self.direction} vs {other.direction}"
        return None


def check_file_ending(file_ending: str) -> str:
    """Validate a label file ending.

    Raises:
        NotImplementedError: For endings SimpleITK cannot read as label maps here (e.g. nnU-Net's ``.tif`` readers,
            which take spacing from a JSON side file).
    """
    if file_ending not in SITK_FILE_ENDINGS + NATURAL_2D_FILE_ENDINGS:
        raise NotImplementedError(
            f"file ending {file_ending!r} is not supported; supported: {SITK_FILE_ENDINGS + NATURAL_2D_FILE_ENDINGS}."
        )
    return file_ending


def read_label_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a label map; returns the integer array (numpy order) and its geometry.

    Raises:
        ValueError: For multi-channel (e.g. RGB) or non-integer label files, naming the file.
    """
    path = str(path)
    image = sitk.ReadImage(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: label maps must have one channel, got {image.GetNumberOfComponentsPerPixel()}.")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{path}: label map has non-integer values (dtype {array.dtype}).")
        array = array.astype(np.int32)
    if path.lower().endswith(NATURAL_2D_FILE_ENDINGS):
        geometry = Geometry(array.shape, (1.0,) * array.ndim, (0.0,) * array.ndim, tuple(np.eye(array.ndim).ravel()))
    else:
        geometry = Geometry(
            shape=tuple(int(n) for n in array.shape),
            spacing=tuple(float(s) for s in reversed(image.GetSpacing())),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )
    return array, geometry


def read_label_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The array shape (numpy order) of a label file, from its header only (the pixels are not read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(int(n) for n in reversed(reader.GetSize()))


def write_label_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike) -> None:
    """Write a label map with the given geometry (compressed where the format allows it)."""
    path = str(path)
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match the geometry's {geometry.shape} for {path}.")
    image = sitk.GetImageFromArray(array)
    if not path.lower().endswith(NATURAL_2D_FILE_ENDINGS):
        image.SetSpacing(tuple(reversed(geometry.spacing)))
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
    sitk.WriteImage(image, path, useCompression=True)


def list_cases(folder: str | os.PathLike, file_ending: str) -> dict[str, Path]:
    """Case id → file for every ``{case}{file_ending}`` in ``folder`` (sorted by case id)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(file_ending))
    return {p.name[: -len(file_ending)]: p for p in files}


def load_dataset_json(dataset_json: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A ``dataset.json`` as a dict (given as a path or already loaded)."""
    if isinstance(dataset_json, Mapping):
        return dict(dataset_json)
    with open(dataset_json) as f:
        return json.load(f)


@dataclass(frozen=True)
class LabelDefinition:
    """Foreground labels or regions of a dataset, from nnU-Net's ``LabelManager``.

    Attributes:
        labels_or_regions: ``foreground_regions`` (tuples, dataset.json order) when the dataset has regions, else
            ``foreground_labels`` (ints).
        has_regions: Region-based dataset.
        regions_class_order: The label written for each region (regions only).
    """

    labels_or_regions: tuple[LabelOrRegion, ...]
    has_regions: bool
    regions_class_order: tuple[int, ...] | None


def label_definition(dataset_json: Mapping[str, Any]) -> LabelDefinition:
    """Labels/regions of a dataset.json via nnunetv2's ``LabelManager`` (same semantics as nnU-Net's evaluation).

    Raises:
        NotImplementedError: For an ignore label (masked metrics are not defined for surface distances).
    """
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    if lm.has_ignore_label:
        raise NotImplementedError(
            f"dataset.json declares an ignore label ({lm.ignore_label}); nnunet_ext evaluation and noise simulation "
            "do not support ignore labels."
        )
    if lm.has_regions:
        # a region given as a single int stays an int, so keys match nnU-Net's ("3", not "(3,)")
        regions = tuple(tuple(int(v) for v in r) if isinstance(r, Sequence) else int(r) for r in lm.foreground_regions)
        return LabelDefinition(regions, True, tuple(int(c) for c in lm.regions_class_order))
    return LabelDefinition(tuple(int(v) for v in lm.foreground_labels), False, None)
