"""Adaptive self-ensembling: EMA teacher with an adaptive teacher gate (AdaT) and adaptive student weight (AdaS).

G. Wang et al., "A Noise-Robust Framework for Automatic Segmentation of COVID-19 Pneumonia Lesions from CT Images",
IEEE TMI 2020, doi:10.1109/TMI.2020.3000314, Sec. II-C; defaults and decisions: METHODS.md §3.

Per training step (student S, teacher T = EMA of S, batch x, y):

.. math::
    L = L_{seg}(S(x + n_S), y) + \\lambda \\cdot \\tfrac{1}{N}\\sum |\\sigma(S(x + n_S)) - \\sigma(T(x + n_T))|,
    \\quad n \\sim \\mathrm{clamp}(\\mathcal{N}(0, 0.1^2), -0.2, 0.2)

- AdaS: lambda = 0.1 if L_T < L_S (teacher better on the batch) else 0.01; without AdaS lambda = 0.1.
- AdaT: after the optimizer step, no teacher update if L_S >= 90th percentile of the previous 100 student losses.
- EMA decay min(1 - 1/(t+1), alpha'), alpha' 0.99 for the first 10 % of the epochs, then 0.999; buffers averaged.

Under DDP the losses entering both decisions are all-reduced, so every rank takes the same gate decision and the
teachers stay identical.

Cost of a step (issue #11 item 11). The floor is the teacher's one forward without gradients: ``f`` in
``nnunet-ext speed``, about 0.32 of a stock nnU-Net step on the demo data (2d, 80 x 80, batch 8, narrowed U-Net,
CPU, one thread). The rest, as shares of that stock step (``examples/profile_mean_teacher.py`` and per-piece timing
on the step's own tensors), and what was decided:

- Noise: two independent draws (n_S, n_T) are the method. Each is one buffer, ``randn_like().mul_().clamp_()``,
  and the teacher's input is added to it in place: the same draws, 0.0042 -> 0.0025 per draw. One call for both
  draws was no faster.
- Teacher loss L_T: 0.021, kept whole. AdaS compares it with the student's loss L_S, which is weighted over the
  deep-supervision outputs, so L_T runs over the same outputs with the same weights, under ``no_grad``; nnU-Net's
  ``DeepSupervisionWrapper`` already skips the weight-0 (lowest-resolution) output for both. L_T at full
  resolution only would halve it (0.010) but compare a full-resolution loss with a weighted one: rejected. Most of
  its cost is the NR-Dice loss itself (``|e|^1.5`` as a general ``pow``, 0.006 of it; ``nnunet_ext.losses``).
- Consistency term: 0.013 -> 0.009 (forward and backward). With two softmax channels,
  ``|p_0 - q_0| = |p_1 - q_1|``, so the mean over the channels is the mean of ``|sigmoid(s_1 - s_0) -
  sigmoid(t_1 - t_0)|`` over one channel: the same value and gradient, from half the elements. Sharing the
  student's softmax with NR-Dice (which computes it inside the loss and drops the background) would need a loss API
  for about 0.001: not done.
- AdaS tensors (two float64 means, the weight): 0.0015, and no host synchronisation (the one per step is in
  ``after_optimizer_step``): kept.
- The EMA update cost 0.018 through ``AveragedModel.update_parameters``; ``ema_update_`` now interpolates cached
  tensor lists with one ``_foreach_lerp_`` (0.004 in the step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.distributed as dist
from torch import nn

from nnunet_ext._nnunet import compiles, unwrap
from nnunet_ext.training.addon import TrainerAddon
from nnunet_ext.training.schedules import PercentileGate, adaptive_consistency_weight, ema_decay, sigmoid_rampup
from nnunet_ext.training.weight_average import ema_update_, invalidate_ema_cache, make_ema

if TYPE_CHECKING:
    from nnunet_ext.training.base import ExtTrainerBase


@dataclass(frozen=True)
class MeanTeacherConfig:
    """Hyper-parameters of the (adaptive) mean teacher; defaults follow METHODS.md §3.1.

    Attributes:
        adaptive_teacher: AdaT gate on the teacher update.
        adaptive_student: AdaS switch of the consistency weight.
        ema_early: alpha' during the first ``ema_switch_fraction`` of the main epochs.
        ema_late: alpha' afterwards.
        ema_switch_fraction: fraction of the main epochs after which ``ema_late`` applies.
        gate_window: K, number of previous student losses the AdaT threshold is computed from.
        gate_percentile: percentile of those losses that defines beta.
        consistency_high: lambda' (teacher better, or always without AdaS).
        consistency_low: lambda'' (student better, AdaS only).
        adas_rule: "prose" (lambda' when L_T < L_S, default) or "eq7" (the comparison as printed in Eq. 7).
        rampup_steps: length of the optional sigmoid ramp-up of lambda in optimizer steps; 0 disables it.
        input_noise_std: standard deviation of the Gaussian noise added to student and teacher inputs.
        input_noise_clip: the noise is clamped to [-clip, clip].
    """

    adaptive_teacher: bool = True
    adaptive_student: bool = True
    ema_early: float = 0.99
    ema_late: float = 0.999
    ema_switch_fraction: float = 0.1
    gate_window: int = 100
    gate_percentile: float = 90.0
    consistency_high: float = 0.1
    consistency_low: float = 0.01
    adas_rule: Literal["prose", "eq7"] = "prose"
    rampup_steps: int = 0
    input_noise_std: float = 0.1
    input_noise_clip: float = 0.2

    def __post_init__(self) -> None:
        for name in ("ema_early", "ema_late", "ema_switch_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.gate_window < 1 or not 0 < self.gate_percentile <= 100:
            raise ValueError(
                f"gate_window >= 1 and gate_percentile in (0, 100] required, got "
                f"{self.gate_window}, {self.gate_percentile}"
            )
        if self.consistency_high < 0 or self.consistency_low < 0:
            raise ValueError(f"consistency weights must be >= 0, got {self.consistency_high}, {self.consistency_low}")
        if self.adas_rule not in ("prose", "eq7"):
            raise ValueError(f"adas_rule must be 'prose' or 'eq7', got {self.adas_rule!r}")
        if self.input_noise_std < 0 or self.input_noise_clip < 0 or self.rampup_steps < 0:
            raise ValueError("input_noise_std, input_noise_clip and rampup_steps must be >= 0")


def clamped_noise(like: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """``clamp(N(0, std^2), -clip, clip)`` shaped like ``like``, in one buffer (the same values as
    ``(randn * std).clamp(-clip, clip)``, without the temporary)."""
    if std == 0:
        return torch.zeros_like(like)
    return torch.randn_like(like).mul_(std).clamp_(-clip, clip)


def global_mean_tensor(value: torch.Tensor) -> torch.Tensor:
    """Mean of a scalar tensor over DDP ranks, in float64 on the tensor's device, without a host synchronisation."""
    t = value.detach().to(torch.float64)
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        t = t / dist.get_world_size()
    return t


def full_resolution(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (list, tuple)) else output


def mae_consistency(student_logits: torch.Tensor, teacher_logits: torch.Tensor, regions: bool) -> torch.Tensor:
    """Mean absolute difference of probabilities (softmax over channels, sigmoid for regions), in float32.

    Two softmax channels (background + one class): ``p_0 = 1 - p_1`` gives ``|p_0 - q_0| = |p_1 - q_1|``, so the
    mean over both channels is the mean of ``|sigmoid(s_1 - s_0) - sigmoid(t_1 - t_0)|`` over one: the same value and
    gradient (to float rounding) from half the elements and no softmax.
    """
    s, t = student_logits.float(), teacher_logits.float()
    if regions:
        p, q = torch.sigmoid(s), torch.sigmoid(t)
    elif s.shape[1] == 2:
        p, q = torch.sigmoid(s[:, 1] - s[:, 0]), torch.sigmoid(t[:, 1] - t[:, 0])
    else:
        p, q = torch.softmax(s, 1), torch.softmax(t, 1)
    return (p - q.detach()).abs().mean()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


class MeanTeacher(TrainerAddon):
    """EMA teacher with optional AdaT gate and AdaS weight; the teacher is the exported model."""

    config_key: ClassVar[str] = "mean_teacher"
    log_keys: ClassVar[tuple[str, ...]] = (
        "ext_teacher_update_fraction",
        "ext_mean_lambda",
        "ext_student_seg_loss",
        "ext_teacher_seg_loss",
        "ext_consistency_loss",
    )

    def __init__(self, config: MeanTeacherConfig) -> None:
        super().__init__(config)
        self.teacher: nn.Module | None = None
        self.gate = PercentileGate(config.gate_window, config.gate_percentile)
        self.step = 0
        self._teacher_forward: nn.Module | None = None
        self._pending: tuple[torch.Tensor, ...] | None = None  # L_S, L_T, lambda, L_C of the step in flight
        self._epoch_stats: dict[str, list[float]] = self._empty_stats()

    @staticmethod
    def _empty_stats() -> dict[str, list[float]]:
        return {"update": [], "lambda": [], "student": [], "teacher": [], "consistency": []}

    # decisions (pure given the reduced losses; exercised under gloo DDP in tests)
    def consistency_weight(
        self, student_loss: float | torch.Tensor, teacher_loss: float | torch.Tensor
    ) -> float | torch.Tensor:
        cfg = self.config
        if cfg.adaptive_student:
            lam = adaptive_consistency_weight(
                student_loss, teacher_loss, cfg.consistency_high, cfg.consistency_low, cfg.adas_rule
            )
        else:
            lam = cfg.consistency_high
        if cfg.rampup_steps:
            lam *= sigmoid_rampup(self.step, cfg.rampup_steps)
        return lam

    def teacher_update_decay(self, student_loss: float, epoch: int, main_epochs: int) -> float | None:
        """Decay of this step's teacher update, or None when AdaT skips it; records the loss in the history.

        The gate is evaluated before the warm-up ``min`` (METHODS §3.2), so a skip stays a skip.
        """
        if self.config.adaptive_teacher:
            allowed = self.gate.allows_update(student_loss)
        else:
            allowed = True
            self.gate.extend([student_loss])
        if not allowed:
            return None
        cfg = self.config
        return ema_decay(self.step, epoch, main_epochs, cfg.ema_early, cfg.ema_late, cfg.ema_switch_fraction)

    # hooks
    def setup(self, trainer: ExtTrainerBase) -> None:
        self.teacher = make_ema(unwrap(trainer.network)).to(trainer.device)
        # the teacher's forward is compiled whenever nnU-Net compiles the student (nnUNet_compile, CUDA default)
        self._teacher_forward = torch.compile(self.teacher.module) if compiles(trainer) else self.teacher.module

    def on_train_start(self, trainer: ExtTrainerBase) -> None:
        if self.step == 0:  # fresh start: the teacher copies the student as it is now (e.g. pretrained weights)
            self.teacher.module.load_state_dict(unwrap(trainer.network).state_dict())
        self.teacher.eval()

    def student_input(self, trainer: ExtTrainerBase, data: torch.Tensor) -> torch.Tensor:
        return data + clamped_noise(data, self.config.input_noise_std, self.config.input_noise_clip)

    def extra_loss(self, trainer, data, output, target, seg_loss):
        # in place on the fresh noise buffer: the same sum as data + noise, one allocation less
        teacher_in = clamped_noise(data, self.config.input_noise_std, self.config.input_noise_clip).add_(data)
        with torch.no_grad():
            teacher_out = self._teacher_forward(teacher_in)
            teacher_loss = trainer.loss(teacher_out, target)
        consistency = mae_consistency(
            full_resolution(output), full_resolution(teacher_out), trainer.label_manager.has_regions
        )
        # decided on the device: reading the losses here would stall the GPU queue before the backward pass
        l_s, l_t = global_mean_tensor(seg_loss), global_mean_tensor(teacher_loss)
        lam = self.consistency_weight(l_s, l_t)  # float64 like the reduced losses: exact 0.1 / 0.01 in the logs
        self._pending = (l_s, l_t, torch.as_tensor(lam, dtype=torch.float64), consistency.detach())
        return (lam.to(consistency.dtype) if isinstance(lam, torch.Tensor) else lam) * consistency

    def after_optimizer_step(self, trainer: ExtTrainerBase, seg_loss: torch.Tensor) -> None:
        assert self._pending is not None, "extra_loss must run before after_optimizer_step"
        # one host synchronisation per step, after the optimizer step was queued (stock nnU-Net syncs there too)
        device = self._pending[0].device
        student_loss, teacher_loss, lam, consistency = torch.stack(
            [v.to(device=device, dtype=torch.float64) for v in self._pending]
        ).tolist()
        self._pending = None
        stats = self._epoch_stats
        stats["lambda"].append(lam)
        stats["student"].append(student_loss)
        stats["teacher"].append(teacher_loss)
        stats["consistency"].append(consistency)
        decay = self.teacher_update_decay(student_loss, trainer.current_epoch, trainer.ext_main_epochs)
        if decay is not None:
            ema_update_(self.teacher, unwrap(trainer.network), decay)
        self._epoch_stats["update"].append(float(decay is not None))
        self.step += 1

    def reset(self, trainer: ExtTrainerBase) -> None:
        # a correction round re-initialised the student: the teacher restarts as its copy, with an empty gate
        self.teacher.module.load_state_dict(unwrap(trainer.network).state_dict())
        self.teacher.n_averaged.zero_()
        invalidate_ema_cache(self.teacher)
        self.gate.history.clear()
        self.step = 0
        self._pending = None

    def on_skipped_step(self, trainer: ExtTrainerBase) -> None:
        # no teacher update, no gate history entry, no step count for a step without an optimizer step
        self._pending = None

    def on_train_epoch_end(self, trainer: ExtTrainerBase) -> None:
        s = self._epoch_stats
        trainer.ext_log("ext_teacher_update_fraction", _mean(s["update"]))
        trainer.ext_log("ext_mean_lambda", _mean(s["lambda"]))
        trainer.ext_log("ext_student_seg_loss", _mean(s["student"]))
        trainer.ext_log("ext_teacher_seg_loss", _mean(s["teacher"]))
        trainer.ext_log("ext_consistency_loss", _mean(s["consistency"]))
        trainer.print_to_log_file(
            f"mean teacher: update fraction {_mean(s['update']):.3f}, mean lambda {_mean(s['lambda']):.4f}, "
            f"L_S {_mean(s['student']):.4f}, L_T {_mean(s['teacher']):.4f}, L_C {_mean(s['consistency']):.4f}"
        )
        self._epoch_stats = self._empty_stats()

    def exported_module(self) -> nn.Module | None:
        return self.teacher.module if self.teacher is not None else None

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "gate": self.gate.state_dict(),
            "n_averaged": int(self.teacher.n_averaged),
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state, trainer, exported_weights) -> None:
        self.teacher.module.load_state_dict(exported_weights)
        invalidate_ema_cache(self.teacher)
        if state is None:  # checkpoint of a trainer without a teacher: start the teacher from its weights
            self.step = 0
            return
        self.step = int(state["step"])
        self.gate.load_state_dict(state["gate"])
        self.teacher.n_averaged.fill_(int(state["n_averaged"]))
        invalidate_ema_cache(self.teacher)
