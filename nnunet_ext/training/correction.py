"""Trusted-case spatial label correction (Yao et al., "Learning to Segment from Noisy Annotations: A Spatial
Correction Approach", ICLR 2023; official code GitHub michaelofsbu/SpatialCorrection; METHODS.md §9.3).

At ``start_fraction`` of the main epochs (then evenly over the rest for ``rounds`` > 1) one correction round runs:

1. nnU-Net's sliding-window predictor (Gaussian weighting, no mirroring) predicts every training case of the fold and
   the trusted cases the fold does not train on, in preprocessed space, with the exported network (the teacher when
   a mean teacher runs, else the trained network);
2. per class (label maps) or region (region datasets) the signed boundary offset b in mm of the predictions against
   the trusted references (:func:`nnunet_ext.correction.boundary.estimate_offsets`, + = predictions too large; each
   class normalised by its own count, where the official code divides by a count over all classes), times the
   official σ factor ``sigma_factor``; ``offset_mm`` in the plans skips the estimation (a known protocol bias);
3. every training label of the fold except trusted cases becomes: the thresholded prediction where |b| < one voxel,
   else the prediction after the official Gaussian-bump logit shift that moves the boundary by the offset
   (:func:`~nnunet_ext.correction.boundary.correct_label_map`; region channels one by one). The noisy label is
   discarded, as in the official code. Trusted cases the fold trains on keep their expert labels;
4. the corrected labels are written as a new segmentation source in the trainer's output folder (data linked, seg
   and nnU-Net's per-class foreground locations new; the preprocessed dataset is never modified), the data loaders
   are rebuilt on it, and (``reinitialize``, official) network weights, optimizer, learning-rate schedule (restarted
   over the remaining epochs) and the other add-ons' state (teacher, gate history) are re-initialised. The folder is
   a link of the fold's one label-source chain (:mod:`nnunet_ext.training.label_source`, shared with the
   early-learning correction): it is derived from the labels the trainer currently reads.

State (rounds done, offsets, folder) is in the checkpoint; a round's folder is written to a temporary name and
renamed when complete, and a checkpoint is written right after the round, so ``--c`` after a kill at any point either
reuses the finished folder or redoes the round. Logged per round: offsets per class in mm, Dice of corrected vs
original training labels, and ``spatial_correction_round<k>.png`` (six training cases: image, original label,
corrected label).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from nnunet_ext._nnunet import set_optimizer, unwrap
from nnunet_ext.correction.boundary import correct_label, correct_label_map, estimate_offsets
from nnunet_ext.training import label_source
from nnunet_ext.training.addon import TrainerAddon
from nnunet_ext.training.label_source import CORRECTED_DIR

__all__ = ["CORRECTED_DIR", "ROUND_SUMMARY", "SpatialCorrection", "SpatialCorrectionConfig", "trigger_epochs"]

ROUND_SUMMARY = "round_summary.json"


@dataclass(frozen=True)
class SpatialCorrectionConfig:
    """Attributes:
    start_fraction: the first round runs after this fraction of the main epochs (official: epoch 50 of 100).
    rounds: number of correction rounds, evenly spaced over the remaining epochs (official default 1 on JSRT).
    reinitialize: re-initialise network, optimizer, schedule and add-on state after a round (official); False
        continues training on the corrected labels.
    offset_mm: a known boundary bias in mm (+ = labels too large) for every class, or ``{"label": mm}``; skips the
        estimation, so no trusted cases are needed.
    sigma_factor: the official γ: the estimated offset is multiplied by it.
    tile_step_size: sliding-window step of the prediction pass.
    png_cases: training cases shown in the round's PNG.
    """

    start_fraction: float = 0.5
    rounds: int = 1
    reinitialize: bool = True
    offset_mm: float | Mapping[str, float] | None = None
    sigma_factor: float = 1.0
    tile_step_size: float = 0.5
    png_cases: int = 6

    def __post_init__(self) -> None:
        if not 0.0 < self.start_fraction < 1.0:
            raise ValueError(f"start_fraction must be in (0, 1), got {self.start_fraction}")
        if self.rounds < 1 or self.png_cases < 0:
            raise ValueError(f"rounds >= 1 and png_cases >= 0 required, got {self.rounds}, {self.png_cases}")
        if not isinstance(self.reinitialize, bool):
            raise ValueError(f"reinitialize must be true or false, got {self.reinitialize!r}")
        if self.sigma_factor <= 0 or not 0 < self.tile_step_size <= 1:
            raise ValueError(
                f"sigma_factor > 0 and tile_step_size in (0, 1] required, got {self.sigma_factor}, "
                f"{self.tile_step_size}"
            )
        values = self.offset_mm.values() if isinstance(self.offset_mm, Mapping) else [self.offset_mm]
        for v in values:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"offset_mm must be a number of mm or {{label: mm}}, got {self.offset_mm!r}")


def trigger_epochs(main_epochs: int, config: SpatialCorrectionConfig) -> list[int]:
    """Epoch indices after which round k runs: s·E + k·(1 − s)·E / R (rounded), strictly increasing."""
    s, rounds = config.start_fraction, config.rounds
    epochs = [int(round(main_epochs * (s + k * (1 - s) / rounds))) - 1 for k in range(rounds)]
    epochs = [min(max(e, 0), main_epochs - 1) for e in epochs]
    if len(set(epochs)) != len(epochs):
        raise ValueError(
            f"{rounds} correction rounds do not fit into {main_epochs} main epochs from start_fraction {s}; use "
            "fewer rounds or more epochs"
        )
    return epochs


class _RestartedSchedule:
    """The trainer's own schedule restarted at ``start_epoch`` over the remaining epochs."""

    def __init__(self, inner: Any, start_epoch: int, remaining: int) -> None:
        self.inner, self.start_epoch = inner, start_epoch
        for attribute in ("max_steps", "num_epochs"):  # nnU-Net's PolyLRScheduler, the plugin's EpochLR
            if hasattr(inner, attribute):
                setattr(inner, attribute, max(remaining, 1))
        self.optimizer = getattr(inner, "optimizer", None)

    def step(self, current_epoch: int | None = None) -> None:
        self.inner.step(max((current_epoch or self.start_epoch) - self.start_epoch, 0))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denominator = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / denominator) if denominator else 1.0


def _class_mask(seg: np.ndarray, label) -> np.ndarray:
    return np.isin(seg, label) if isinstance(label, tuple) else seg == label


class SpatialCorrection(TrainerAddon):
    """Corrects the training labels from the trusted cases' boundary offset, then retrains on them."""

    config_key: ClassVar[str] = "spatial_correction"
    log_keys: ClassVar[tuple[str, ...]] = ("ext_correction_rounds",)

    def __init__(self, config: SpatialCorrectionConfig) -> None:
        super().__init__(config)
        self.rounds_done = 0
        self.offsets: list[dict[str, float | None]] = []
        self.folder: str | None = None
        self.trusted_held_out: list[str] = []
        self.trusted_in_training: list[str] = []

    # set-up ---------------------------------------------------------------------------------------------------
    def _classes(self, trainer) -> list:
        lm = trainer.label_manager
        return (
            [tuple(r) if isinstance(r, (list, tuple)) else r for r in lm.foreground_regions]
            if lm.has_regions
            else (list(lm.foreground_labels))
        )

    def setup(self, trainer) -> None:
        # refused at start-up (end of initialize, when nnU-Net's split can be read) without held-out trusted cases
        from nnunet_ext.trusted import load_trusted, require_held_out_trusted

        name = trainer.plans_manager.dataset_name
        tr_keys, val_keys = trainer.do_split()
        splits = [{"train": list(tr_keys), "val": list(val_keys)}]
        if self.config.offset_mm is None:
            self.trusted_held_out = require_held_out_trusted(name, 0, splits)
        trusted = set(load_trusted(name))
        self.trusted_in_training = sorted(trusted & set(tr_keys))

    def _fixed_offsets(self, trainer) -> dict:
        offset = self.config.offset_mm
        classes = self._classes(trainer)
        if isinstance(offset, Mapping):
            known = {str(c): c for c in classes}
            unknown = sorted(set(offset) - set(known))
            if unknown:
                raise ValueError(
                    f"spatial_correction.offset_mm names unknown classes {unknown}; classes: {sorted(known)}"
                )
            return {c: (float(offset[str(c)]) if str(c) in offset else None) for c in classes}
        return {c: float(offset) for c in classes}

    # rounds ---------------------------------------------------------------------------------------------------
    def on_epoch_end(self, trainer) -> None:
        epochs = trigger_epochs(trainer.ext_main_epochs, self.config)
        if self.rounds_done < len(epochs) and trainer.current_epoch == epochs[self.rounds_done]:
            self.run_round(trainer)
        trainer.ext_log("ext_correction_rounds", self.rounds_done)

    def _predictor(self, trainer, network):
        return label_source.sliding_window_predictor(trainer, network, self.config.tile_step_size)

    def run_round(self, trainer) -> None:
        k = self.rounds_done
        final = label_source.corrected_root(trainer) / f"round_{k}"
        if label_source.reusable(trainer, final, ROUND_SUMMARY):  # finished before a kill: reuse
            trainer.print_to_log_file(f"spatial correction round {k + 1}: reusing {final}")
        elif trainer.local_rank == 0:  # under DDP one rank predicts and writes, the others wait for the folder
            self._correct(trainer, k, final.name)
        label_source.synchronize(trainer)
        summary = json.loads((final / ROUND_SUMMARY).read_text())
        self.offsets.append(summary["offsets_mm"])
        self.folder = str(final)
        self.rounds_done += 1
        label_source.activate(trainer, final)
        if self.config.reinitialize:
            self._reinitialize(trainer)
        trainer.print_to_log_file(
            f"spatial correction round {k + 1}: offsets (mm, + = labels too large) {summary['offsets_mm']}; Dice of "
            f"corrected vs original training labels {summary['dice_corrected_vs_original']}"
            + ("; network, optimizer and schedule re-initialised" if self.config.reinitialize else "")
        )
        # the round is in the checkpoint at once: --c after a kill from here on continues on the corrected labels
        trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_latest.pth"))

    @torch.no_grad()
    def _correct(self, trainer, k: int, name: str) -> dict:
        lm = trainer.label_manager
        classes = self._classes(trainer)
        spacing = [float(s) for s in trainer.configuration_manager.spacing]
        tr_keys, _ = trainer.do_split()
        writer = label_source.LabelSetWriter(trainer, name, written_by=self.config_key)
        trainer._ext_swap_in_export()  # predict with the exported model (teacher / average) when there is one
        try:
            trainer.set_deep_supervision_enabled(False)
            network = unwrap(trainer.network)  # no DDP forward (it would synchronise with ranks that do not predict)
            network.eval()
            predictor = self._predictor(trainer, network)

            def logits_of(case: str) -> tuple[np.ndarray, np.ndarray, Any, dict]:
                data, seg, properties = writer.load_case(case)
                logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.asarray(data)))
                return logits.float().cpu().numpy(), seg, data, properties

            if self.config.offset_mm is not None:
                offsets = self._fixed_offsets(trainer)
            else:
                pairs, spacings = [], []
                for case in self.trusted_held_out:
                    logits, seg, _, _ = logits_of(case)
                    prediction = np.asarray(lm.convert_logits_to_segmentation(torch.from_numpy(logits)).numpy())
                    reference = np.maximum(seg[0], 0)
                    if self._per_slice(spacing, reference):  # a 2d configuration sees single slices
                        pairs += [(prediction[z], reference[z]) for z in range(reference.shape[0])]
                        spacings += [spacing] * reference.shape[0]
                    else:
                        pairs.append((prediction, reference))
                        spacings.append(spacing)
                estimated = estimate_offsets(pairs, spacings, classes)
                offsets = {c: (None if b is None else b * self.config.sigma_factor) for c, b in estimated.items()}

            corrected_keys = sorted(set(tr_keys) - set(self.trusted_in_training))
            dice: dict[str, list[float]] = {str(c): [] for c in classes}
            shown = []
            for case in writer.cases:
                if case not in corrected_keys:
                    writer.link(case)
                    continue
                logits, seg, data, properties = logits_of(case)
                new = self._corrected_seg(trainer, logits, seg, offsets, spacing)
                for c in classes:
                    dice[str(c)].append(_dice(_class_mask(new[0], c), _class_mask(np.maximum(seg[0], 0), c)))
                writer.write(case, new, properties, classes)
                if len(shown) < self.config.png_cases:
                    shown.append((case, np.asarray(data)[0], np.maximum(seg[0], 0), new[0]))
        finally:
            trainer.set_deep_supervision_enabled(True)
            trainer._ext_swap_back()
            trainer.network.train()
        summary = {
            "round": k,
            "offsets_mm": {str(c): b for c, b in offsets.items()},
            "estimated_on": [] if self.config.offset_mm is not None else self.trusted_held_out,
            "trusted_kept": self.trusted_in_training,
            "corrected_cases": len(corrected_keys),
            "dice_corrected_vs_original": {c: (float(np.mean(v)) if v else None) for c, v in dice.items()},
        }
        if trainer.local_rank == 0 and shown:  # before the folder is final: a kill after it must not lose the PNG
            self._plot(trainer, k, shown)
        writer.finish({ROUND_SUMMARY: summary}, round=k)
        return summary

    @staticmethod
    def _per_slice(spacing, volume: np.ndarray) -> bool:
        return len(spacing) == volume.ndim - 1

    def _corrected_seg(self, trainer, logits, seg, offsets, spacing) -> np.ndarray:
        if self._per_slice(spacing, seg[0]):  # 2d configuration: slice by slice with the in-plane spacing
            slices = [self._corrected_labels(trainer, logits[:, z], offsets, spacing) for z in range(logits.shape[1])]
            label_map = np.stack(slices)
        else:
            label_map = self._corrected_labels(trainer, logits, offsets, spacing)
        label_map = label_map[None]
        label_map[seg < 0] = -1  # nnU-Net's outside-the-mask marker stays
        return label_map.astype(seg.dtype)

    def _corrected_labels(self, trainer, logits, offsets, spacing) -> np.ndarray:
        lm = trainer.label_manager
        if lm.has_regions:
            masks = [correct_label(logits[i], offsets[c], spacing) for i, c in enumerate(self._classes(trainer))]
            label_map = np.zeros(logits.shape[1:], dtype=np.int16)
            for order, mask in zip(lm.regions_class_order, masks):  # later regions overwrite earlier ones
                label_map[mask] = order
        else:
            label_map = correct_label_map(logits, {int(c): b for c, b in offsets.items()}, spacing).astype(np.int16)
        return label_map

    def _plot(self, trainer, k: int, shown) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(shown), 3, figsize=(7.5, 2.5 * len(shown)), squeeze=False)
        for row, (case, image, original, corrected) in zip(axes, shown):
            middle = image.shape[0] // 2 if image.ndim == 3 else None
            pick = (lambda a, m=middle: a[m]) if middle is not None else (lambda a: a)
            for ax, panel, title in zip(
                row, (pick(image), pick(original), pick(corrected)), ("image", "original label", "corrected label")
            ):
                ax.imshow(panel, cmap="gray" if title == "image" else "viridis", interpolation="nearest")
                ax.set_title(f"{case}: {title}" if title == "image" else title, fontsize=9)
                ax.axis("off")
        fig.tight_layout()
        fig.savefig(os.path.join(trainer.output_folder, f"spatial_correction_round{k + 1}.png"), dpi=80)
        plt.close(fig)

    def _reinitialize(self, trainer) -> None:
        fresh = trainer.build_network_architecture(
            trainer.plans_manager,
            trainer.configuration_manager,
            trainer.num_input_channels,
            trainer.label_manager.num_segmentation_heads,
            trainer.enable_deep_supervision,
        )
        unwrap(trainer.network).load_state_dict(fresh.state_dict())
        optimizer, scheduler = trainer.configure_optimizers()
        start = trainer.current_epoch + 1
        set_optimizer(trainer, optimizer, _RestartedSchedule(scheduler, start, trainer.num_epochs - start))
        for addon in trainer.ext_addons:
            if addon is not self:
                addon.reset(trainer)

    # state ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "rounds_done": self.rounds_done,
            "offsets": self.offsets,
            "folder": self.folder,
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state, trainer, exported_weights) -> None:
        if state is None:
            return
        self.rounds_done = int(state["rounds_done"])
        self.offsets = list(state["offsets"])
        self.folder = state["folder"]
        if self.rounds_done:
            label_source.restore(trainer, self.folder, ROUND_SUMMARY)
            if self.config.reinitialize:
                start = trigger_epochs(trainer.ext_main_epochs, self.config)[self.rounds_done - 1] + 1
                scheduler = trainer.lr_scheduler
                if not isinstance(scheduler, _RestartedSchedule):
                    set_optimizer(
                        trainer, trainer.optimizer, _RestartedSchedule(scheduler, start, trainer.num_epochs - start)
                    )
