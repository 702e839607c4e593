"""Adaptive early-learning label correction (ADELE: S. Liu, K. Liu, W. Zhu, Y. Shen, C. Fernandez-Granda, "Adaptive
Early-Learning Correction for Segmentation from Noisy Annotations", CVPR 2022, doi:10.1109/CVPR52688.2022.00263;
official code GitHub Kangningthu/ADELE, ``train.py`` and ``SegThor/brat/label_correction.py``; METHODS.md §9.4).

A network trained on noisy labels first fits the correct part of the labels ("early learning"), then memorises the
noise. ADELE watches, per class, the IoU of the training predictions against the current training labels; once its
rise flattens, it replaces the labels of that class by the network's confident predictions.

1. Every epoch, per class (label maps: foreground labels; region datasets: regions), the IoU
   TP / (T + P − TP + 1e-10) of the training batches' full-resolution predictions (argmax, or sigmoid > 0.5 per
   region) against their targets, accumulated over the epoch (no extra forward; under DDP summed over ranks);
2. the IoU history y_1 … y_t (x = 1 … t, epochs since the start or since a re-initialisation) is fitted by
   :func:`fit_iou_curve`, f(x) = a (1 − exp(−x^b / c)), with the official settings (``scipy.optimize.curve_fit``,
   trust region, p0 (1, 1, 1), bounds a, b ∈ [0, 1], c ≥ 0, σ = geomspace(1, 0.1, t) so that late epochs weigh
   more);
3. the class triggers at epoch t when t ≥ :func:`update_epoch`: one plus the number of epochs e = 1 … E − 1 whose
   relative derivative change | |f'(e)| − |f'(1)| | / |f'(1)| is at most r (values above 1 count as 0, as in the
   official code; E = the main epochs since the start of the history). Since f' falls monotonically for b ≤ 1, this
   is the first epoch at which the fitted derivative has fallen below (1 − r) of its epoch-1 value (r = 0.9: 10 %).
   A class stays triggered;
4. at its trigger epoch and every ``correct_every`` epochs after it (official SegThor default 10), the due classes
   are corrected: nnU-Net's sliding-window predictor (Gaussian, no mirroring) predicts every training case of the
   fold in preprocessed space with the exported network (the teacher when a mean teacher runs, else the trained
   network), and a voxel takes the predicted class where the predicted probability exceeds τ = 0.7, the prediction
   is background or a due class, and the current label is background or a due class (official
   ``merge_labels_with_skip``); with ``class_constraint`` (official) only classes the case's label already contains
   are added. Region datasets: per due region, probability > τ adds the voxel, < 1 − τ removes it. Every other voxel
   keeps its current label; trusted cases (``nnunet-ext trust``) the fold trains on keep their expert labels;
5. the corrected labels become the fold's label source (:mod:`nnunet_ext.training.label_source`: shared with the
   spatial correction, so either corrects what the other produced) and the data loaders are rebuilt. Training goes
   on (no re-initialisation, as in ADELE).

Optional (off by default): ADELE's multi-scale consistency, a Jensen–Shannon term between the student's predictions
of the batch at scales 0.7, 1 and 1.5 (:func:`multiscale_consistency`).

Deviations [D]: x starts at 1 at the first epoch (official: the evaluation points spread over [0, t]); a class whose
fitted f'(1) is 0 or not finite never triggers (the official formula divides by it and would trigger at once); the
correction predicts an un-augmented sliding-window pass (official SegThor: the epoch's training predictions); the
consistency mask is per voxel (official: the maximum over the whole image, so nearly always 1); corrections are
due every ``correct_every`` epochs counted from each class's trigger (official: epochs that are multiples of it).

State (IoU histories, trigger epochs, fitted parameters, corrections, label-source folder) is in the checkpoint;
``--c`` restores it and trains on the restored label source. Logged per epoch: ``ext_iou_<class>`` and
``ext_early_learning_triggered`` (number of triggered classes); each trigger and correction in the training log.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_ext._nnunet import unwrap
from nnunet_ext.training import label_source
from nnunet_ext.training.addon import TrainerAddon

SUMMARY = "early_learning_summary.json"
IOU_EPS = 1e-10  # official denominator guard; an epoch with neither labels nor predictions of a class gives IoU 0
DERIVATIVE_SHIFT = 1e-6  # official: f' is evaluated at x + 1e-6 (x^(b-1) is infinite at 0 for b < 1)
MIXTURE_CLAMP = 1e-3  # official: the mixture of the multi-scale probabilities is clamped to [1e-3, 1 - 1e-3]


# --- the IoU curve -------------------------------------------------------------------------------------------------


def iou_curve(x: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray | float:
    """ADELE's model of the training IoU: f(x) = a (1 − exp(−x^b / c))."""
    return a * (1 - np.exp(-(x**b) / c))


def iou_curve_derivative(x: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray | float:
    """f'(x) = a b / c · exp(−x^b / c) · x^(b − 1), at x + 1e-6 as in the official code."""
    x = np.asarray(x, dtype=float) + DERIVATIVE_SHIFT
    return a * b / c * np.exp(-(x**b) / c) * x ** (b - 1)


def fit_iou_curve(iou: Sequence[float]) -> tuple[float, float, float] | None:
    """Fit f to the IoU history (x = 1 … t) with the official ``curve_fit`` settings; None if the fit fails.

    Identities pinned by tests: a noise-free history of f(·; 0.8, 1, 5) or f(·; 0.9, 0.5, 2) gives its parameters
    back from 3 epochs on.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    y = np.asarray(iou, dtype=float)
    if y.size < 2 or not np.isfinite(y).all():
        return None
    x = np.arange(1, y.size + 1, dtype=float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(
                iou_curve,
                x,
                y,
                p0=(1.0, 1.0, 1.0),
                method="trf",
                sigma=np.geomspace(1, 0.1, y.size),
                absolute_sigma=True,
                bounds=([0, 0, 0], [1, 1, np.inf]),
            )
    except (RuntimeError, ValueError):
        return None
    return tuple(float(p) for p in params)


def update_epoch(params: tuple[float, float, float], r: float, horizon: int) -> int | None:
    """The official ``label_update_epoch``: 1 + #{e = 1 … horizon − 1 : rel(e) ≤ r}, with
    rel(e) = | |f'(e)| − |f'(1)| | / |f'(1)| and rel > 1 counted as 0. None when f'(1) is 0 or not finite [D].

    Identities pinned by tests: b = 1 gives rel(e) = 1 − exp(−(e − 1) / c), so the epoch is the first
    e > 1 + c ln(1 / (1 − r)) (13 for c = 5, r = 0.9); the result never exceeds ``horizon``.
    """
    first = abs(float(iou_curve_derivative(1.0, *params)))
    if not (math.isfinite(first) and first > 0):
        return None
    epochs = np.arange(1, max(horizon, 1), dtype=float)
    relative = np.abs(np.abs(iou_curve_derivative(epochs, *params)) - first) / first
    relative[relative > 1] = 0
    return int(np.sum(relative <= r)) + 1


def should_trigger(iou: Sequence[float], r: float, horizon: int, min_epochs: int) -> bool:
    """Whether a class with IoU history ``iou`` (one value per epoch, the last one the current epoch t) triggers
    now: t ≥ ``min_epochs`` and t ≥ :func:`update_epoch` of the fitted curve (the official ``if_update``)."""
    t = len(iou)
    if t < min_epochs:
        return False
    params = fit_iou_curve(iou)
    if params is None:
        return False
    epoch = update_epoch(params, r, horizon)
    return epoch is not None and t >= epoch


def epoch_iou(tp: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per class TP / (T + P − TP + 1e-10) from voxel counts accumulated over an epoch (official ``compute_iou``)."""
    tp, p, t = (np.asarray(v, dtype=np.float64) for v in (tp, p, t))
    return tp / (t + p - tp + IOU_EPS)


# --- relabelling -----------------------------------------------------------------------------------------------------


def relabel_label_map(
    probabilities: np.ndarray, label_map: np.ndarray, due: Sequence[int], tau: float, class_constraint: bool = True
) -> np.ndarray:
    """ADELE's label update for a softmax label map (official ``merge_labels_with_skip``).

    A voxel takes the predicted class k = argmax p where max p > τ, k ∈ {0} ∪ due and its current label ∈ {0} ∪ due;
    with ``class_constraint`` k must also be background or a class the case's label contains. Voxels below τ, of
    other classes, or outside nnU-Net's mask (label −1) keep their label.

    Args:
        probabilities: softmax probabilities, (C, *spatial).
        label_map: current labels, (*spatial).
        due: foreground labels being corrected.
        tau: confidence threshold (≥ 0.5, so that max p > τ is the official "foreground or background above τ").
        class_constraint: do not add classes absent from the case's label.
    """
    allowed = np.asarray([0, *due])
    prediction = probabilities.argmax(0)
    replace = (probabilities.max(0) > tau) & np.isin(label_map, allowed) & np.isin(prediction, allowed)
    if class_constraint:
        present = np.unique(label_map[label_map > 0])
        replace &= np.isin(prediction, np.concatenate([[0], present]))
    return np.where(replace, prediction, label_map).astype(label_map.dtype)


def relabel_regions(
    probabilities: np.ndarray,
    label_map: np.ndarray,
    regions: Sequence[int | Sequence[int]],
    regions_class_order: Sequence[int],
    due: Sequence[int],
    tau: float,
    class_constraint: bool = True,
) -> np.ndarray:
    """The label update for a region dataset: per due region i, sigmoid p_i > τ adds a voxel to the region and
    p_i < 1 − τ removes it; the label map is rebuilt from the region masks in ``regions_class_order`` (later regions
    overwrite earlier ones) where a due region changed, and kept elsewhere.

    Args:
        probabilities: sigmoid probabilities, (R, *spatial), in the order of ``regions``.
        label_map: current labels, (*spatial).
        regions: the labels of each region.
        regions_class_order: the label written for each region.
        due: indices of the regions being corrected.
        tau: confidence threshold.
        class_constraint: a region absent from the case's label is not added (only removed from, i.e. nothing).
    """
    masks = [np.isin(label_map, np.atleast_1d(r)) for r in regions]
    new = list(masks)
    changed = np.zeros(label_map.shape, dtype=bool)
    for i in due:
        add = probabilities[i] > tau
        if class_constraint and not masks[i].any():
            add = np.zeros_like(add)
        mask = (masks[i] | add) & ~(probabilities[i] < 1 - tau)
        changed |= mask != masks[i]
        new[i] = mask
    rebuilt = np.zeros_like(label_map)
    for order, mask in zip(regions_class_order, new):
        rebuilt[mask] = order
    return np.where(changed & (label_map >= 0), rebuilt, label_map).astype(label_map.dtype)


# --- multi-scale consistency -----------------------------------------------------------------------------------------


def multiscale_consistency(logits: Sequence[torch.Tensor], regions: bool, threshold: float) -> torch.Tensor:
    """ADELE's multi-scale consistency: Σ_s KL(p_s ‖ m) with m the mean of the scales' probabilities (clamped to
    [1e-3, 1 − 1e-3]), i.e. 3 × the generalised Jensen–Shannon divergence, on voxels whose mixture confidence
    max_k m_k ≥ ``threshold`` (official ρ 0.8), averaged over all voxels.

    .. math::
        L = \\frac{1}{N}\\sum_v \\mathbb{1}[\\max_k m_{vk} \\ge \\rho] \\sum_s \\sum_k p_{svk}
            (\\log p_{svk} - \\log m_{vk}), \\quad m = \\mathrm{clamp}(\\tfrac{1}{S}\\sum_s p_s)

    Args:
        logits: (B, C, *spatial) per scale, all at the same resolution.
        regions: sigmoid per channel (each channel a two-class distribution) instead of a softmax over channels.
        threshold: ρ.

    Identities pinned by tests: identical logits give 0; the value equals the hand-computed sum for two voxels.
    """
    if regions:
        probs = [torch.stack([torch.sigmoid(z.float()), 1 - torch.sigmoid(z.float())], dim=1) for z in logits]
    else:
        probs = [torch.softmax(z.float(), dim=1) for z in logits]
    mixture = torch.stack(probs).mean(0).clamp(MIXTURE_CLAMP, 1 - MIXTURE_CLAMP)
    mask = (mixture.amax(dim=1) >= threshold).float()
    log_mixture = mixture.log()
    divergence = sum(F.kl_div(log_mixture, p, reduction="none").sum(dim=1) for p in probs)
    return (divergence * mask).mean()


def scaled_size(size: Sequence[int], scale: float, stride: Sequence[int]) -> list[int]:
    """``size`` × ``scale`` rounded to a multiple of the network's total stride per axis (at least one stride)."""
    return [max(int(k), int(round(s * scale / k)) * int(k)) for s, k in zip(size, stride)]


# --- the add-on ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyLearningConfig:
    """Attributes:
    r: trigger when the fitted IoU derivative has fallen by more than this fraction of its epoch-1 value (official
        0.9).
    tau: a voxel is relabelled where the predicted probability exceeds it (official 0.7).
    correct_every: after its trigger a class is corrected again every this many epochs (official SegThor 10; the
        PASCAL VOC code corrects every epoch); 0 corrects once.
    min_epochs: epochs of IoU history before the curve is fitted.
    class_constraint: do not add classes absent from a case's current label (official).
    force_trigger_epoch: every class triggers once this many epochs are done, without the fit (tests, ablations).
    multiscale_weight: weight of the multi-scale consistency term; 0 (default) is off. The official SegThor loss
        (λ 1, the total divided by the 3 scales) corresponds to about 1/3.
    multiscale_scales: the extra input scales of the consistency term (official 0.7 and 1.5).
    multiscale_threshold: ρ, the mixture confidence above which a voxel enters the consistency term (official 0.8).
    tile_step_size: sliding-window step of the prediction pass.
    """

    r: float = 0.9
    tau: float = 0.7
    correct_every: int = 10
    min_epochs: int = 3
    class_constraint: bool = True
    force_trigger_epoch: int | None = None
    multiscale_weight: float = 0.0
    multiscale_scales: tuple[float, ...] = (0.7, 1.5)
    multiscale_threshold: float = 0.8
    tile_step_size: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "multiscale_scales", tuple(float(s) for s in self.multiscale_scales))
        if not 0.0 < self.r < 1.0:
            raise ValueError(f"early_learning.r must be in (0, 1), got {self.r}; the official value is 0.9")
        if not 0.5 <= self.tau < 1.0:
            raise ValueError(f"early_learning.tau must be in [0.5, 1), got {self.tau}; the official value is 0.7")
        for key in ("correct_every", "min_epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "correct_every" else 2):
                raise ValueError(
                    f"early_learning.{key} must be an integer >= {0 if key == 'correct_every' else 2}, got {value!r}"
                )
        if self.force_trigger_epoch is not None and (
            isinstance(self.force_trigger_epoch, bool)
            or not isinstance(self.force_trigger_epoch, int)
            or self.force_trigger_epoch < 1
        ):
            raise ValueError(
                f"early_learning.force_trigger_epoch must be null or an integer >= 1, got {self.force_trigger_epoch!r}"
            )
        if not isinstance(self.class_constraint, bool):
            raise ValueError(f"early_learning.class_constraint must be true or false, got {self.class_constraint!r}")
        if self.multiscale_weight < 0 or not all(s > 0 for s in self.multiscale_scales):
            raise ValueError(
                f"early_learning.multiscale_weight >= 0 and positive multiscale_scales required, got "
                f"{self.multiscale_weight}, {list(self.multiscale_scales)}"
            )
        if not 0 < self.multiscale_threshold < 1 or not 0 < self.tile_step_size <= 1:
            raise ValueError(
                "early_learning.multiscale_threshold in (0, 1) and tile_step_size in (0, 1] required, got "
                f"{self.multiscale_threshold}, {self.tile_step_size}"
            )


def _labels_key(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


@dataclass(frozen=True)
class _Class:
    name: str
    value: int | tuple[int, ...]  # label, or the labels of a region
    channel: int  # output channel: the label for label maps, the region index for regions


class EarlyLearning(TrainerAddon):
    """ADELE: per-class early-learning detection on the training IoU curve, then confident-prediction relabelling."""

    config_key: ClassVar[str] = "early_learning"
    log_keys: tuple[str, ...] = ("ext_early_learning_triggered",)  # + one IoU key per class, set in check()

    def __init__(self, config: EarlyLearningConfig) -> None:
        super().__init__(config)
        self.classes: list[_Class] = []
        self.history: dict[str, list[float]] = {}
        self.history_start = 0  # epoch index of the first history entry (0, or after a re-initialisation)
        self.triggered: dict[str, int] = {}  # class name -> epoch index (0-based) at which it triggered
        self.fits: dict[str, list[float] | None] = {}
        self.corrections: list[dict] = []  # one record per correction pass: epoch, classes, folder
        self.folder: str | None = None
        self.trusted_in_training: list[str] = []
        self._counts: torch.Tensor | None = None  # (3, K): TP, P, T of the current epoch, on the device
        self._label_values: dict[torch.device, torch.Tensor] = {}

    # set-up ---------------------------------------------------------------------------------------------------------
    def check(self, trainer) -> None:
        lm = trainer.label_manager
        names = {_labels_key(value): name for name, value in trainer.dataset_json["labels"].items()}
        if lm.has_regions:
            regions = [tuple(r) if isinstance(r, (list, tuple)) else int(r) for r in lm.foreground_regions]
            self.classes = [_Class(str(names.get(_labels_key(r), r)), r, i) for i, r in enumerate(regions)]
        else:
            self.classes = [_Class(str(names.get((int(c),), c)), int(c), int(c)) for c in lm.foreground_labels]
        self.log_keys = ("ext_early_learning_triggered", *(f"ext_iou_{c.name}" for c in self.classes))
        trainer._ext_register_log_keys()
        if self.config.multiscale_weight > 0:
            if trainer.is_ddp:
                raise NotImplementedError(
                    "early_learning.multiscale_weight > 0 is not supported under DDP (-num_gpus > 1): the extra "
                    "forwards bypass DDP's gradient synchronisation; set it to 0 or train on one GPU"
                )
            if "strides" not in trainer.configuration_manager.network_arch_init_kwargs:
                raise ValueError(
                    "early_learning.multiscale_weight > 0 needs the network's 'strides' in the plans' arch_kwargs "
                    "(to round the rescaled patches); set multiscale_weight to 0 for this architecture"
                )

    def setup(self, trainer) -> None:
        from nnunet_ext.trusted import load_trusted

        tr_keys, _ = trainer.do_split()
        self.trusted_in_training = sorted(set(load_trusted(trainer.plans_manager.dataset_name)) & set(tr_keys))
        if not self.history:
            self.history = {c.name: [] for c in self.classes}

    # IoU of the training predictions ----------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer) -> None:
        self._counts = None

    def extra_loss(self, trainer, data, output, target, seg_loss):
        out = output[0] if isinstance(output, (list, tuple)) else output
        tgt = target[0] if isinstance(target, (list, tuple)) else target
        with torch.no_grad():
            counts = self._batch_counts(trainer, out.detach(), tgt)
            self._counts = counts if self._counts is None else self._counts + counts
        if self.config.multiscale_weight > 0:
            return self.config.multiscale_weight * self._consistency(trainer, data, out)
        return None

    def _batch_counts(self, trainer, out: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """(3, K) int64 tensor of TP, P, T per class over the batch, on the device (no host synchronisation)."""
        if trainer.label_manager.has_regions:
            channels = [c.channel for c in self.classes]
            pred = out[:, channels] > 0  # sigmoid > 0.5
            ref = tgt[:, channels] > 0.5
        else:
            values = self._label_values.get(out.device)
            if values is None:  # built once per device: no host-to-device copy per step
                values = torch.tensor([c.value for c in self.classes], device=out.device)
                self._label_values[out.device] = values
            values = values.view(1, -1, *([1] * (out.ndim - 2)))
            pred = out.argmax(1, keepdim=True) == values  # (B, K, *spatial)
            ref = tgt[:, :1].long() == values
        dims = [0, *range(2, pred.ndim)]
        return torch.stack([(pred & ref).sum(dims), pred.sum(dims), ref.sum(dims)])

    def _consistency(self, trainer, data: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        strides = trainer.configuration_manager.network_arch_init_kwargs["strides"]
        spatial = list(data.shape[2:])
        total = [1] * len(spatial)
        for s in strides:
            s = [s] * len(spatial) if isinstance(s, int) else list(s)
            total = [t * int(k) for t, k in zip(total, s)]
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        logits = [out]
        for scale in self.config.multiscale_scales:
            x = F.interpolate(data, size=scaled_size(spatial, scale, total), mode=mode, align_corners=False)
            y = trainer.network(x)
            y = y[0] if isinstance(y, (list, tuple)) else y
            logits.append(F.interpolate(y, size=spatial, mode=mode, align_corners=False))
        return multiscale_consistency(logits, trainer.label_manager.has_regions, self.config.multiscale_threshold)

    def on_train_epoch_end(self, trainer) -> None:
        counts = self._counts
        if counts is None:
            counts = torch.zeros(3, len(self.classes), dtype=torch.int64, device=trainer.device)
        if trainer.is_ddp:
            import torch.distributed as dist

            dist.all_reduce(counts)
        tp, p, t = counts.cpu().numpy()
        iou = epoch_iou(tp, p, t)
        for c, value in zip(self.classes, iou):
            self.history[c.name].append(float(value))
            trainer.ext_log(f"ext_iou_{c.name}", float(value))
        self._counts = None

    # triggers and corrections ---------------------------------------------------------------------------------------
    def _decide_triggers(self, trainer) -> list[str]:
        epoch = trainer.current_epoch
        done = epoch + 1 - self.history_start
        horizon = trainer.ext_main_epochs - self.history_start
        new = []
        for c in self.classes:
            if c.name in self.triggered:
                continue
            iou = self.history[c.name]
            params = fit_iou_curve(iou) if len(iou) >= self.config.min_epochs else None
            self.fits[c.name] = None if params is None else list(params)
            if self.config.force_trigger_epoch is not None:
                fire = done >= self.config.force_trigger_epoch
            else:
                predicted = None if params is None else update_epoch(params, self.config.r, horizon)
                fire = predicted is not None and done >= predicted
            if fire:
                self.triggered[c.name] = epoch
                new.append(c.name)
        return new

    def due_classes(self, epoch: int) -> list[str]:
        """Triggered classes corrected after epoch ``epoch`` (0-based): at the trigger and every ``correct_every``
        epochs after it."""
        every = self.config.correct_every
        due = []
        for c in self.classes:
            start = self.triggered.get(c.name)
            if start is not None and (epoch == start or (every > 0 and epoch > start and (epoch - start) % every == 0)):
                due.append(c.name)
        return due

    def on_epoch_end(self, trainer) -> None:
        epoch = trainer.current_epoch
        for name in self._decide_triggers(trainer):
            fit = self.fits.get(name)
            trainer.print_to_log_file(
                f"early learning: class {name} triggered after epoch {epoch} (IoU {self.history[name][-1]:.4f}"
                + (f", fit a={fit[0]:.4f} b={fit[1]:.4f} c={fit[2]:.4f}" if fit else ", forced")
                + ")"
            )
        trainer.ext_log("ext_early_learning_triggered", len(self.triggered))
        # no correction after the last epoch (nothing would train on it) or after the main schedule (SWA phase)
        if epoch >= min(trainer.ext_main_epochs, trainer.num_epochs - 1):
            return
        due = self.due_classes(epoch)
        if due:
            self.run_correction(trainer, due)

    def run_correction(self, trainer, due: Sequence[str]) -> None:
        epoch = trainer.current_epoch
        final = label_source.corrected_root(trainer) / f"early_learning_epoch{epoch:04d}"
        if label_source.reusable(trainer, final):  # finished before a kill: reuse
            trainer.print_to_log_file(f"early learning: reusing {final}")
        elif trainer.local_rank == 0:  # under DDP one rank predicts and writes, the others wait for the folder
            self._correct(trainer, due, final.name)
        label_source.synchronize(trainer)
        summary = label_source.read_manifest(final) or {}
        self.corrections.append({"epoch": epoch, "classes": list(due), "folder": str(final)})
        self.folder = str(final)
        label_source.activate(trainer, final)
        trainer.print_to_log_file(
            f"early learning: corrected {', '.join(due)} after epoch {epoch} (fraction of training voxels changed "
            f"{summary.get('changed_fraction')}); training continues on {final}"
        )

    @torch.no_grad()
    def _correct(self, trainer, due: Sequence[str], name: str) -> None:
        lm = trainer.label_manager
        due_classes = [c for c in self.classes if c.name in due]
        tr_keys, _ = trainer.do_split()
        corrected_keys = set(tr_keys) - set(self.trusted_in_training)
        writer = label_source.LabelSetWriter(trainer, name, written_by=self.config_key)
        classes = [c.value for c in self.classes]
        changed = total = 0
        trainer._ext_swap_in_export()  # predict with the exported model (teacher / average) when there is one
        try:
            trainer.set_deep_supervision_enabled(False)
            network = unwrap(trainer.network)  # no DDP forward (it would synchronise with ranks that do not predict)
            network.eval()
            predictor = label_source.sliding_window_predictor(trainer, network, self.config.tile_step_size)
            for case in writer.cases:
                if case not in corrected_keys:
                    writer.link(case)
                    continue
                data, seg, properties = writer.load_case(case)
                logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.asarray(data)))
                probabilities = lm.apply_inference_nonlin(logits.float()).cpu().numpy()
                new = self.relabel(trainer, probabilities, seg[0], due_classes)
                changed += int((new != seg[0]).sum())
                total += int((seg[0] >= 0).sum())
                writer.write(case, new[None].astype(seg.dtype), properties, classes)
        finally:
            trainer.set_deep_supervision_enabled(True)
            trainer._ext_swap_back()
            trainer.network.train()
        writer.finish(
            epoch=trainer.current_epoch,
            classes=[c.name for c in due_classes],
            tau=self.config.tau,
            trusted_kept=self.trusted_in_training,
            changed_fraction=changed / total if total else 0.0,
        )

    def relabel(self, trainer, probabilities: np.ndarray, label_map: np.ndarray, due: Sequence[_Class]) -> np.ndarray:
        lm = trainer.label_manager
        if lm.has_regions:
            return relabel_regions(
                probabilities,
                label_map,
                [c.value for c in self.classes],
                lm.regions_class_order,
                [c.channel for c in due],
                self.config.tau,
                self.config.class_constraint,
            )
        return relabel_label_map(
            probabilities, label_map, [c.value for c in due], self.config.tau, self.config.class_constraint
        )

    def reset(self, trainer) -> None:
        # a re-initialised network (spatial correction) starts a new early-learning phase on the current labels
        self.history = {c.name: [] for c in self.classes}
        self.history_start = trainer.current_epoch + 1
        self.triggered, self.fits = {}, {}

    # state ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "history": {k: list(v) for k, v in self.history.items()},
            "history_start": self.history_start,
            "triggered": dict(self.triggered),
            "fits": dict(self.fits),
            "corrections": list(self.corrections),
            "folder": self.folder,
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state, trainer, exported_weights) -> None:
        if state is None:
            return
        self.history = {k: [float(x) for x in v] for k, v in state["history"].items()}
        self.history_start = int(state["history_start"])
        self.triggered = {k: int(v) for k, v in state["triggered"].items()}
        self.fits = dict(state.get("fits", {}))
        self.corrections = list(state["corrections"])
        self.folder = state["folder"]
        if self.folder is not None:
            label_source.restore(trainer, self.folder)
