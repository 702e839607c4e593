"""Inference for the BraTS 2020 pipeline: rotational test-time augmentation, BraTS label maps, two-pass merge.

Paper: T. Henry, A. Carré, M. Lerousseau et al., "Brain tumor segmentation with self-ensembled, deeply-supervised 3D
U-net neural networks: a BraTS 2020 challenge solution", arXiv:2011.01045 (doi:10.48550/arXiv.2011.01045);
METHODS.md §5.7-5.8.

Rotational TTA (:class:`Rot90Predictor`, ``tta="rot90"``): every sliding-window patch ``x`` goes through the
transforms ``t = (a, k)`` of :func:`tta_transforms`, flip axis ``a`` then ``k`` quarter turns in the in-plane axes
(the last two spatial axes after nnU-Net's ``transpose_forward``; for isotropic data such as BraTS
``transpose_forward`` is the identity and the last two axes of SimpleITK's (z, y, x) array are the axial plane):

.. math:: x'_t = \\operatorname{rot90}_k(\\operatorname{flip}_a(x)),\\qquad
          \\hat y = \\frac{1}{|T|}\\sum_{t \\in T} \\operatorname{flip}_a(\\operatorname{rot90}_{-k}(f(x'_t)))

- 3-D: ``a`` in {none, Z, Y, X} x ``k`` in {0, 1, 2, 3} = 16 transforms (the paper's 16). Because
  ``flip_X = rot90_2 . flip_Y`` in the plane, the in-plane reflections appear twice each: 12 distinct transforms,
  the 4 in-plane reflections with weight 2/16, as in the paper.
- 2-D patches (``2d`` configurations): no Z axis, ``a`` in {none, Y, X} x 4 rotations = 12 transforms (same
  duplication: 8 distinct).
- Non-square in-plane patches: odd ``k`` would transpose the patch shape, so only ``k`` in {0, 2} is used (8 or 6
  transforms) and a warning is logged once.
- Logits are averaged (as nnU-Net's mirroring does; open_brats averages sigmoid probabilities); the sigmoid or softmax
  follows in nnU-Net's export. The average is accumulated in float32.
- The inverse undoes the rotation first, then the flip. open_brats wrote ``rot90_{-k}(flip_a(y'))``, which returns
  (flip Y or X, odd k) rotated by 180 degrees.

Identities pinned by tests: ``invert_transform(apply_transform(x, t), t) == x`` for every transform of a
non-symmetric tensor; the open_brats inverse fails exactly for flip in {Y, X} with odd ``k``; with an identity
network the rot90 predictor returns its input; ``tta="mirror"``/``"none"`` reproduce ``nnUNetPredictor``.

Label maps (Dataset137 convention, METHODS.md §5.8): BraTS 1 NCR/NET, 2 edema, 4 ET become nnU-Net 2, 1, 3; regions
WT = {1, 2, 3}, TC = {2, 3}, ET = {3}, ``regions_class_order`` (1, 2, 3). :func:`merge_two_pass` is the paper's second
pass: A's ET and NCR/NET are kept, background/edema decisions come from B where both are background or edema.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

logger = logging.getLogger(__name__)

TTAMode = Literal["mirror", "rot90", "none"]
TTA_MODES: Final[tuple[str, ...]] = ("mirror", "rot90", "none")
Convention = Literal["nnunet", "brats"]
CONVENTIONS: Final[tuple[str, ...]] = ("nnunet", "brats")
DecodeMethod = Literal["nnunet", "open_brats"]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

AXIS_NAMES: Final[dict[int | None, str]] = {None: "none", -3: "Z", -2: "Y", -1: "X"}
IN_PLANE: Final[tuple[int, int]] = (-2, -1)

# BraTS label -> nnU-Net label (Dataset137): 2 edema -> 1, 1 NCR/NET -> 2, 4 ET -> 3.
BRATS_TO_NNUNET: Final[dict[int, int]] = {0: 0, 2: 1, 1: 2, 4: 3}
NNUNET_TO_BRATS: Final[dict[int, int]] = {v: k for k, v in BRATS_TO_NNUNET.items()}
# The "labels" and "regions_class_order" entries of a BraTS region dataset.json (key order is region order).
BRATS_REGION_LABELS: Final[dict[str, Any]] = {
    "background": 0,
    "whole_tumor": [1, 2, 3],
    "tumor_core": [2, 3],
    "enhancing_tumor": [3],
}
BRATS_REGIONS_CLASS_ORDER: Final[list[int]] = [1, 2, 3]
# Label values of background and edema per convention (the only values the second pass may change).
_BACKGROUND_EDEMA: Final[dict[str, tuple[int, int]]] = {"nnunet": (0, 1), "brats": (0, 2)}
_VALID_LABELS: Final[dict[str, tuple[int, ...]]] = {"nnunet": (0, 1, 2, 3), "brats": (0, 1, 2, 4)}


# -------------------------------------------------------------------------------------------------------------------
# rotational TTA: pure transforms
@dataclass(frozen=True)
class TTATransform:
    """One test-time transform: flip ``flip`` (a spatial axis counted from the end, None = no flip), then ``k``
    quarter turns in the in-plane axes (-2, -1)."""

    flip: int | None
    k: int

    def __post_init__(self) -> None:
        if self.flip not in AXIS_NAMES:
            raise ValueError(f"flip must be None, -3 (Z), -2 (Y) or -1 (X), got {self.flip!r}")
        if self.k not in (0, 1, 2, 3):
            raise ValueError(f"k must be 0, 1, 2 or 3 quarter turns, got {self.k!r}")

    @property
    def name(self) -> str:
        return f"flip{AXIS_NAMES[self.flip]}_rot{90 * self.k}"


def tta_transforms(ndim: int, square: bool = True) -> tuple[TTATransform, ...]:
    """The rotational TTA transforms for patches with ``ndim`` spatial axes.

    Args:
        ndim: spatial dimensions of the patch, 2 or 3.
        square: whether the two in-plane patch sizes are equal; if not, odd quarter turns are left out.

    Returns:
        Flip axes (none, Z, Y, X in 3-D; none, Y, X in 2-D) times quarter turns (0-3, or 0 and 2), flip-major order,
        the identity first: 16 / 12 transforms for square patches, 8 / 6 otherwise.

    Raises:
        ValueError: ``ndim`` is not 2 or 3.
    """
    if ndim not in (2, 3):
        raise ValueError(f"rotational TTA needs 2 or 3 spatial dimensions, got {ndim}")
    flips: tuple[int | None, ...] = (None, -3, -2, -1) if ndim == 3 else (None, -2, -1)
    quarter_turns = (0, 1, 2, 3) if square else (0, 2)
    return tuple(TTATransform(a, k) for a in flips for k in quarter_turns)


def _flip(x: ArrayT, axis: int) -> ArrayT:
    return torch.flip(x, (axis,)) if isinstance(x, torch.Tensor) else np.flip(x, axis)


def _rot90(x: ArrayT, k: int) -> ArrayT:
    if isinstance(x, torch.Tensor):
        return torch.rot90(x, k, dims=IN_PLANE)
    return np.rot90(x, k, axes=IN_PLANE)


def apply_transform(x: ArrayT, t: TTATransform) -> ArrayT:
    """Forward transform ``rot90_k(flip_a(x))`` of a tensor or array whose last axes are spatial."""
    if t.flip is not None:
        x = _flip(x, t.flip)
    return _rot90(x, t.k) if t.k else x


def invert_transform(y: ArrayT, t: TTATransform) -> ArrayT:
    """Inverse transform ``flip_a(rot90_{-k}(y))``: the rotation is undone first, then the flip."""
    if t.k:
        y = _rot90(y, -t.k)
    return _flip(y, t.flip) if t.flip is not None else y


# -------------------------------------------------------------------------------------------------------------------
# predictor
class Rot90Predictor(nnUNetPredictor):
    """``nnUNetPredictor`` with a choice of test-time augmentation.

    Only ``_internal_maybe_mirror_and_predict`` (one sliding-window patch ``(1, C, *patch)``) changes; everything
    else (model loading, sliding window, Gaussian weighting, fold averaging, export) is nnU-Net's. Optionally
    (:meth:`set_boundary_offsets`) the fold-averaged logits of each case are shifted by per-class boundary offsets
    (``predict_logits_from_preprocessed_data``, trusted-case calibration, :mod:`nnunet_ext.correction.calibrate`).

    Args:
        tta: ``"rot90"`` (the module docstring's flips x quarter turns, logits averaged; the checkpoint's allowed
            mirroring axes are not consulted), ``"mirror"`` (nnU-Net's mirroring over those axes) or ``"none"``.
        **kwargs: ``nnUNetPredictor`` arguments except ``use_mirroring``, which ``tta`` sets.

    Raises:
        ValueError: unknown ``tta`` or ``use_mirroring`` given.
    """

    def __init__(self, tta: TTAMode = "rot90", **kwargs: Any) -> None:
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
        if "use_mirroring" in kwargs:
            raise ValueError("Rot90Predictor sets use_mirroring from tta; pass tta='mirror' or tta='none' instead")
        super().__init__(use_mirroring=tta == "mirror", **kwargs)
        self.tta: TTAMode = tta
        self.boundary_offsets_mm: dict[str, float | None] | None = None
        self._warned: set[str] = set()

    def set_boundary_offsets(self, offsets_mm: dict[str, float | None] | None) -> None:
        """Shift every case's fold-averaged logits by these per-class offsets in mm (> 0 moves the boundary
        inward; keys as ``label_or_region_to_key``), see :func:`nnunet_ext.correction.calibrate.
        apply_boundary_offsets`. None or all-zero: no shift."""
        self.boundary_offsets_mm = None if offsets_mm is None else dict(offsets_mm)

    @torch.inference_mode()
    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        """nnU-Net's fold-averaged logits in preprocessed space, then the boundary shift if offsets are set.

        This is the last point where the logits of a case are seen before nnU-Net resamples and exports them (in
        every prediction path: ``predict_from_files``, the sequential one and ``predict_single_npy_array``), so the
        exported segmentation and ``--save_probabilities`` files (softmax/sigmoid of these logits) both show the
        shifted boundary.
        """
        logits = super().predict_logits_from_preprocessed_data(data)
        if not self.boundary_offsets_mm or not any(self.boundary_offsets_mm.values()):
            return logits
        from nnunet_ext.correction.calibrate import apply_boundary_offsets

        cm = self.configuration_manager
        shifted = apply_boundary_offsets(
            logits.float().cpu().numpy(),
            self.boundary_offsets_mm,
            self.label_manager,
            cm.spacing,
            two_d=len(cm.patch_size) == 2,
        )
        return torch.from_numpy(shifted).to(logits.dtype)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def rot90_transforms(self, patch_shape: tuple[int, ...]) -> tuple[TTATransform, ...]:
        """The transforms used for a patch of spatial shape ``patch_shape`` (warns once about non-square patches
        and anisotropic in-plane spacing)."""
        square = patch_shape[-1] == patch_shape[-2]
        if not square:
            self._warn_once(
                "square",
                f"rot90 TTA: in-plane patch size {tuple(patch_shape[-2:])} is not square, so 90 and 270 degree "
                "rotations are skipped (flips x rotations by 0 and 180 degrees only)",
            )
        spacing = getattr(self.configuration_manager, "spacing", None)
        if spacing is not None and len(spacing) >= 2 and not np.isclose(spacing[-1], spacing[-2], rtol=0.01):
            self._warn_once(
                "spacing",
                f"rot90 TTA: in-plane spacing {tuple(spacing[-2:])} is anisotropic; 90 degree rotations show the "
                "network images with swapped resolutions (the method assumes isotropic in-plane spacing, as in BraTS)",
            )
        return tta_transforms(len(patch_shape), square)

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.tta != "rot90":
            return super()._internal_maybe_mirror_and_predict(x)
        transforms = self.rot90_transforms(tuple(x.shape[2:]))
        prediction = None
        for t in transforms:
            y = invert_transform(self.network(apply_transform(x, t).contiguous()), t).float()
            prediction = y if prediction is None else prediction.add_(y)
        return prediction.div_(len(transforms))


# -------------------------------------------------------------------------------------------------------------------
# BraTS label maps
def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def _check_labels(labels: np.ndarray, convention: str, what: str) -> None:
    found = np.unique(labels)
    bad = np.setdiff1d(found, _VALID_LABELS[convention])
    if bad.size:
        other = "brats" if convention == "nnunet" else "nnunet"
        raise ValueError(
            f"{what} has label values {bad.tolist()} outside the {convention!r} convention "
            f"{list(_VALID_LABELS[convention])}; is it in the {other!r} convention (labels "
            f"{list(_VALID_LABELS[other])})?"
        )


def _relabel(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[np.asarray(labels).astype(np.int64)]


def brats_to_nnunet_labels(labels: np.ndarray) -> np.ndarray:
    """BraTS labels (1 NCR/NET, 2 edema, 4 ET) to nnU-Net's (2, 1, 3), as ``uint8``.

    Raises:
        ValueError: a value outside {0, 1, 2, 4}.
    """
    _check_labels(labels, "brats", "the BraTS label map")
    return _relabel(labels, BRATS_TO_NNUNET)


def nnunet_to_brats_labels(labels: np.ndarray) -> np.ndarray:
    """nnU-Net labels (1 edema, 2 NCR/NET, 3 ET) back to BraTS (2, 1, 4), as ``uint8``.

    Raises:
        ValueError: a value outside {0, 1, 2, 3}.
    """
    _check_labels(labels, "nnunet", "the nnU-Net label map")
    return _relabel(labels, NNUNET_TO_BRATS)


def encode_brats_regions(labels: np.ndarray, convention: Convention = "nnunet") -> np.ndarray:
    """Boolean region masks ``(3, *shape)`` in nnU-Net's region order: whole tumour, tumour core, enhancing tumour.

    Raises:
        ValueError: unknown convention or label values outside it.
    """
    _check_convention(convention)
    _check_labels(labels, convention, "the label map")
    if convention == "brats":
        labels = _relabel(labels, BRATS_TO_NNUNET)
    return np.stack([labels >= 1, labels >= 2, labels == 3])


def decode_brats_regions(
    regions: np.ndarray,
    threshold: float = 0.5,
    method: DecodeMethod = "nnunet",
    convention: Convention = "nnunet",
) -> np.ndarray:
    """Label map from region probabilities (or masks) ``(3, *shape)`` ordered whole tumour, tumour core, enhancing.

    ``method="nnunet"`` is nnU-Net's decoding (later regions overwrite earlier ones: 1 where WT, 2 where TC, 3 where
    ET). ``method="open_brats"`` reproduces open_brats: ET; NCR/NET = TC and not ET; edema = WT and not TC, written in
    that order, so it differs from nnU-Net only where ET and WT hold but TC does not (edema instead of ET).

    Args:
        regions: probabilities compared with ``> threshold``, or boolean masks.
        threshold: binarisation threshold.
        method: ``"nnunet"`` or ``"open_brats"``.
        convention: label values of the result, ``"nnunet"`` (1 edema, 2 NCR/NET, 3 ET) or ``"brats"`` (2, 1, 4).

    Returns:
        ``uint8`` label map of shape ``regions.shape[1:]``.

    Raises:
        ValueError: ``regions`` does not have 3 channels, or an unknown method/convention.
    """
    _check_convention(convention)
    if method not in ("nnunet", "open_brats"):
        raise ValueError(f"method must be 'nnunet' or 'open_brats', got {method!r}")
    regions = np.asarray(regions)
    if regions.ndim < 2 or regions.shape[0] != 3:
        raise ValueError(f"regions must have shape (3, ...) (WT, TC, ET), got {regions.shape}")
    wt, tc, et = (regions > threshold) if regions.dtype != bool else regions
    labels = np.zeros(regions.shape[1:], dtype=np.uint8)
    if method == "nnunet":
        labels[wt] = 1
        labels[tc] = 2
        labels[et] = 3
    else:
        labels[et] = 3
        labels[tc & ~et] = 2
        labels[wt & ~tc] = 1
    return _relabel(labels, NNUNET_TO_BRATS) if convention == "brats" else labels


def merge_two_pass(a: np.ndarray, b: np.ndarray, convention: Convention = "nnunet") -> np.ndarray:
    """The paper's second pass: A, except that where A and B are both background or edema, B's label is taken.

    A's enhancing tumour and NCR/NET are never changed, and B's tumour-core labels never enter; only the
    background/edema decision comes from B (the pipeline with the better whole-tumour Dice).

    .. math:: \\text{out} = \\begin{cases} B & A \\in \\{bg, ed\\} \\wedge B \\in \\{bg, ed\\} \\\\
              A & \\text{otherwise} \\end{cases}

    Args:
        a: label map of the first model (kept for ET and NCR/NET).
        b: label map of the second model, same shape.
        convention: ``"nnunet"`` (0 background, 1 edema, 2 NCR/NET, 3 ET) or ``"brats"`` (0, 2 edema, 1, 4).

    Returns:
        The merged map, dtype of ``a``.

    Identities pinned by tests: merge(A, A) = A; ET/NCR voxels of A unchanged; hand-made 3 x 4 table.

    Raises:
        ValueError: shapes differ, unknown convention, or label values outside the convention.
    """
    _check_convention(convention)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps must have the same shape, got {a.shape} and {b.shape}")
    _check_labels(a, convention, "label map A")
    _check_labels(b, convention, "label map B")
    soft = _BACKGROUND_EDEMA[convention]
    take_b = np.isin(a, soft) & np.isin(b, soft)
    out = a.copy()
    out[take_b] = b[take_b]
    return out
