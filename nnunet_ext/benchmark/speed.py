"""Per-iteration training time (and optional inference time) of trainers on the same batches, in one process.

Protocol:

- Every trainer is built through the Python API (seeded identically), then runs nnU-Net's own ``on_train_start`` and
  ``on_train_epoch_start`` (so plugin add-ons such as the mean teacher are set up as in training), with in-process
  data loading (``nnUNet_n_proc_DA=0`` during set-up) and models written to a temporary ``nnUNet_results``.
- ``warmup + iterations`` batches are drawn **once** from the reference trainer's nnU-Net data loader; each trainer
  gets the same images and full-resolution targets, re-packed for its own deep-supervision scales (nearest-exact
  down-sampling, as nnU-Net's ``DownsampleSegForDSTransform``) or as one tensor when it has no deep supervision.
- Warm-up steps run per trainer; timed steps are interleaved (iteration ``i`` runs every trainer, the starting
  trainer rotating) so background load on a shared machine hits all trainers alike. The statistic is the median.
- The reference is stock ``nnUNetTrainer`` (added with the default configuration when not listed).
- Floor of a mean teacher: after each timed step, one forward pass of the same trainer's network on the same batch
  is timed as the teacher runs it (eval mode, ``torch.no_grad``, autocast on CUDA as in training, the compiled
  module when nnU-Net compiles; CUDA synchronised before each timer is read), and the network is put back in
  training mode. ``f`` = that forward's median / the median step of stock ``nnUNetTrainer`` on the row's
  configuration (the reference, or ``nnUNetTrainer:<configuration>`` when it is timed too; else the reference);
  ``floor`` = (that stock step + the forward) / the reference step, which is ``1 + f`` on the reference's
  configuration: the least a method with one extra no-grad forward per step can cost. A mean teacher's ratio minus
  its floor is what the rest of its step (teacher loss, noise, consistency term, EMA update) costs.
- Inference: each test image is preprocessed once per configuration; the time per case is the median of
  ``nnUNetPredictor.predict_logits_from_preprocessed_data`` (sliding window, nnU-Net's default mirroring unless
  disabled) with the network nnU-Net's predictor would build (no deep supervision). nnU-Net caps the threads of this
  call at ``nnUNet_def_n_proc``.
- On a machine shared with other jobs, run with ``OMP_NUM_THREADS=1``: multi-threaded CPU kernels then wait for
  descheduled threads and single operations slow down several-fold, erratically. ``clock="cpu"`` (CPU device only)
  times steps and forwards with this process's CPU time (``time.process_time``) instead of the wall clock: time spent
  waiting for a core is not counted, which steadies the ratios on a loaded machine (with several threads it sums
  their CPU time, i.e. it measures work, not latency).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn.functional import interpolate

from nnunet_ext._nnunet import deep_supervision_scales
from nnunet_ext.benchmark.datasets import dataset_name
from nnunet_ext.benchmark.predict import list_test_cases
from nnunet_ext.benchmark.provenance import console_to, nnunet_results, resolve_device, seed_everything, temporary_env
from nnunet_ext.benchmark.train import build_trainer

REFERENCE_TRAINER = "nnUNetTrainer"
CLOCKS: tuple[str, ...] = ("wall", "cpu")


@dataclass(frozen=True)
class TrainerConfig:
    trainer: str
    configuration: str

    def __str__(self) -> str:
        return f"{self.trainer}:{self.configuration}"


def parse_pairs(entries: Sequence[str], default_configuration: str) -> list[TrainerConfig]:
    """``TRAINER`` or ``TRAINER:CONFIG`` entries; the reference, stock ``nnUNetTrainer`` on the default configuration,
    is put first (added if absent). ``nnUNetTrainer`` on another configuration is timed like any other entry."""
    pairs = []
    for entry in entries:
        trainer, _, configuration = entry.partition(":")
        if not trainer or (":" in entry and not configuration):
            raise ValueError(f"bad trainer entry {entry!r}; use TRAINER or TRAINER:CONFIGURATION")
        pair = TrainerConfig(trainer, configuration or default_configuration)
        if pair in pairs:
            raise ValueError(f"{pair} is listed twice")
        pairs.append(pair)
    reference = TrainerConfig(REFERENCE_TRAINER, default_configuration)
    if reference in pairs:
        pairs.remove(reference)
    return [reference, *pairs]


@dataclass(frozen=True)
class SpeedResult:
    """Timings of one trainer:configuration (milliseconds)."""

    pair: TrainerConfig
    iteration_ms: tuple[float, ...]
    inference_ms: tuple[float, ...] | None
    forward_ms: tuple[float, ...] | None = None  # no-grad eval forward of the network (the teacher's forward)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.iteration_ms))

    @property
    def forward_median_ms(self) -> float | None:
        return float(np.median(self.forward_ms)) if self.forward_ms else None

    @property
    def iqr_ms(self) -> float:
        q75, q25 = np.percentile(self.iteration_ms, [75, 25])
        return float(q75 - q25)

    @property
    def inference_median_ms(self) -> float | None:
        return float(np.median(self.inference_ms)) if self.inference_ms else None


def full_resolution_target(target: Any) -> torch.Tensor:
    """The full-resolution target of a batch (deep-supervision lists hold it first)."""
    return target[0] if isinstance(target, (list, tuple)) else target


def target_for(trainer, full: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    """The target structure ``trainer.train_step`` expects, from a full-resolution target ``(B, C, *spatial)``."""
    if not trainer.enable_deep_supervision:
        return full
    out = []
    for scale in deep_supervision_scales(trainer):
        scale = list(scale) if isinstance(scale, (list, tuple)) else [scale] * (full.ndim - 2)
        if all(s == 1 for s in scale):
            out.append(full)
        else:
            size = [round(i * s) for i, s in zip(full.shape[2:], scale)]
            out.append(interpolate(full.float(), size, mode="nearest-exact").to(full.dtype))
    return out


def _check_compatible(reference, trainer, pair: TrainerConfig, ref_pair: TrainerConfig) -> None:
    ref_cm, cm = reference.configuration_manager, trainer.configuration_manager
    problems = []
    if list(cm.patch_size) != list(ref_cm.patch_size):
        problems.append(f"patch size {cm.patch_size} vs {ref_cm.patch_size}")
    if trainer.batch_size != reference.batch_size:
        problems.append(f"batch size {trainer.batch_size} vs {reference.batch_size}")
    if cm.data_identifier != ref_cm.data_identifier:
        problems.append(f"data {cm.data_identifier!r} vs {ref_cm.data_identifier!r}")
    if problems:
        raise ValueError(
            f"{pair} cannot be timed on the batches of {ref_pair}: {'; '.join(problems)}. Time configurations with "
            "different data or patch sizes in separate runs (each with its own nnUNetTrainer reference)."
        )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(trainer, data: torch.Tensor, clock: Callable[[], float] = time.perf_counter) -> float:
    """Milliseconds of one forward pass of ``trainer.network`` as a mean teacher runs it, on ``data``.

    Eval mode, ``torch.no_grad``, autocast on CUDA (as in ``train_step``); the compiled module when nnU-Net compiled
    the network. CUDA is synchronised before each timer is read; the network's training mode is restored.
    """
    from nnunetv2.utilities.helpers import dummy_context

    device = trainer.device
    data = data.to(device, non_blocking=True)
    network = trainer.network
    was_training = network.training
    network.eval()
    try:
        amp = torch.autocast(device.type, enabled=True) if device.type == "cuda" else dummy_context()
        _synchronize(device)
        start = clock()
        with torch.no_grad(), amp:
            network(data)
        _synchronize(device)
        return 1000.0 * (clock() - start)
    finally:
        network.train(was_training)


def _time_inference(trainers: dict[TrainerConfig, Any], images_dir: Path, device: torch.device, tta: bool):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    from nnunet_ext._nnunet import unwrap

    out: dict[TrainerConfig, list[float]] = {}
    preprocessed: dict[str, list[torch.Tensor]] = {}
    for pair, trainer in trainers.items():
        cm, pm, dataset_json = trainer.configuration_manager, trainer.plans_manager, trainer.dataset_json
        if cm.data_identifier not in preprocessed:
            list_test_cases(images_dir, dataset_json["file_ending"])  # clear error for an empty/missing folder
            files = create_lists_from_splitted_dataset_folder(str(images_dir), dataset_json["file_ending"])
            preprocessor = cm.preprocessor_class(verbose=False)
            preprocessed[cm.data_identifier] = [
                torch.from_numpy(preprocessor.run_case(f, None, pm, cm, dataset_json)[0]) for f in files
            ]
        network = (
            type(trainer)
            .build_network_architecture(
                pm, cm, trainer.num_input_channels, trainer.label_manager.num_segmentation_heads, False
            )
            .to(device)
        )
        weights = unwrap(trainer.network).state_dict()
        predictor = nnUNetPredictor(
            use_mirroring=tta, perform_everything_on_device=device.type == "cuda", device=device, allow_tqdm=False
        )
        predictor.manual_initialization(
            network, pm, cm, [weights], dataset_json, pair.trainer, trainer.inference_allowed_mirroring_axes
        )
        cases = preprocessed[cm.data_identifier]
        predictor.predict_logits_from_preprocessed_data(cases[0])  # warm-up
        times = []
        for data in cases:
            start = time.perf_counter()
            predictor.predict_logits_from_preprocessed_data(data)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(1000.0 * (time.perf_counter() - start))
        out[pair] = times
    return out


@contextlib.contextmanager
def prepared_trainers(
    dataset: str | int,
    pairs: Sequence[TrainerConfig],
    *,
    plans: str = "nnUNetPlans",
    num_batches: int = 23,
    device: str | torch.device = "auto",
    seed: int = 0,
    fold: int = 0,
    log_file: str | os.PathLike | None = None,
) -> Iterator[tuple[dict[TrainerConfig, Any], dict[TrainerConfig, list[dict]]]]:
    """Trainers ready for ``train_step`` and ``num_batches`` shared batches per trainer (the protocol's set-up).

    Yields ``(trainers, batches)``: the trainers by pair (first: the reference) and, per pair, the same images and
    targets re-packed for its deep supervision. Inside a temporary ``nnUNet_results``; data loaders are shut down on
    exit. Used by :func:`time_trainers` and by ``examples/profile_mean_teacher.py``.
    """
    if not pairs:
        raise ValueError("no trainers to time")
    dev = resolve_device(device)
    name = dataset_name(dataset)
    with tempfile.TemporaryDirectory(prefix="nnunet_ext_speed_") as tmp:
        with nnunet_results(tmp), console_to(log_file), temporary_env("nnUNet_n_proc_DA", "0"):
            trainers: dict[TrainerConfig, Any] = {}
            try:
                for pair in pairs:
                    seed_everything(seed)
                    trainer = build_trainer(pair.trainer, name, pair.configuration, fold, plans=plans, device=dev)
                    trainers[pair] = trainer
                    trainer.on_train_start()
                    trainer.on_train_epoch_start()
                ref_pair = pairs[0]
                reference = trainers[ref_pair]
                for pair, trainer in trainers.items():
                    _check_compatible(reference, trainer, pair, ref_pair)
                seed_everything(seed)
                raw = [next(reference.dataloader_train) for _ in range(num_batches)]
                batches = {
                    pair: [
                        {"data": b["data"], "target": target_for(t, full_resolution_target(b["target"]))} for b in raw
                    ]
                    for pair, t in trainers.items()
                }
                yield trainers, batches
            finally:
                for trainer in trainers.values():
                    for loader in (
                        getattr(trainer, "dataloader_train", None),
                        getattr(trainer, "dataloader_val", None),
                    ):
                        if hasattr(loader, "_finish"):
                            loader._finish()


def time_trainers(
    dataset: str | int,
    pairs: Sequence[TrainerConfig],
    *,
    plans: str = "nnUNetPlans",
    iterations: int = 20,
    warmup: int = 3,
    device: str | torch.device = "auto",
    seed: int = 0,
    fold: int = 0,
    inference: bool = False,
    test_images: str | os.PathLike | None = None,
    disable_tta: bool = False,
    log_file: str | os.PathLike | None = None,
    clock: Literal["wall", "cpu"] = "wall",
) -> list[SpeedResult]:
    """Time ``train_step`` and the teacher-like forward of every trainer on the same batches (module docstring).

    Args:
        dataset: Preprocessed dataset (id or name).
        pairs: Trainer/configuration pairs; the first is the reference (see :func:`parse_pairs`).
        plans: Plans identifier.
        iterations: Timed iterations per trainer.
        warmup: Untimed iterations (steps and forwards) per trainer first.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        seed: Seed before each trainer is built and before the batches are drawn.
        fold: Fold whose training split feeds the data loader.
        inference: Also time prediction of the test images.
        test_images: Test image folder (default ``$nnUNet_raw/<dataset>/imagesTs``).
        disable_tta: Time inference without mirroring.
        log_file: Where nnU-Net's console output goes (None: the console).
        clock: ``wall`` (``time.perf_counter``) or ``cpu`` (this process's CPU time; CPU device only) for the steps
            and forwards; inference is always timed by the wall clock.

    Returns:
        One :class:`SpeedResult` per pair, in order.

    Raises:
        ValueError: bad ``iterations``/``warmup``, no pairs, an unknown ``clock`` or ``clock="cpu"`` on an
            accelerator.
    """
    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0, got {iterations}, {warmup}")
    if not pairs:
        raise ValueError("no trainers to time")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    dev = resolve_device(device)
    if clock == "cpu" and dev.type != "cpu":
        raise ValueError(f"clock='cpu' times CPU work only; use clock='wall' on {dev.type}")
    timer = time.process_time if clock == "cpu" else time.perf_counter
    images_dir = None
    if inference:
        from nnunetv2.paths import nnUNet_raw

        name = dataset_name(dataset)
        images_dir = Path(test_images) if test_images is not None else Path(nnUNet_raw.require()) / name / "imagesTs"
    prepared = prepared_trainers(
        dataset,
        pairs,
        plans=plans,
        num_batches=warmup + iterations,
        device=dev,
        seed=seed,
        fold=fold,
        log_file=log_file,
    )
    with prepared as (trainers, batches):
        for pair, trainer in trainers.items():
            for b in batches[pair][:warmup]:
                trainer.train_step(b)
                time_forward(trainer, b["data"], timer)
        times: dict[TrainerConfig, list[float]] = {pair: [] for pair in pairs}
        forward: dict[TrainerConfig, list[float]] = {pair: [] for pair in pairs}
        order = list(pairs)
        for i in range(iterations):
            rotated = order[i % len(order) :] + order[: i % len(order)]
            for pair in rotated:
                batch = batches[pair][warmup + i]
                _synchronize(dev)
                start = timer()
                trainers[pair].train_step(batch)  # returns the loss via .cpu(): synchronises CUDA
                times[pair].append(1000.0 * (timer() - start))
                forward[pair].append(time_forward(trainers[pair], batch["data"], timer))
        inference_times = _time_inference(trainers, images_dir, dev, not disable_tta) if inference else {}
    return [
        SpeedResult(p, tuple(times[p]), tuple(inference_times[p]) if inference else None, tuple(forward[p]))
        for p in pairs
    ]


@dataclass(frozen=True)
class Floor:
    """A row's teacher-forward share ``f`` and the floor of a one-extra-forward method, both against a stock step.

    Attributes:
        f: forward median / median step of stock ``nnUNetTrainer`` on the row's configuration.
        floor: (that stock step + the forward) / the reference step (``1 + f`` on the reference's configuration).
        base: the stock row ``f`` is relative to.
    """

    f: float
    floor: float
    base: TrainerConfig


def floors(results: Sequence[SpeedResult]) -> list[Floor | None]:
    """:class:`Floor` of every row (None without forward timings); see the module docstring."""
    ref = results[0]
    stock = {r.pair.configuration: r for r in results if r.pair.trainer == REFERENCE_TRAINER}
    stock[ref.pair.configuration] = ref
    out: list[Floor | None] = []
    for r in results:
        forward = r.forward_median_ms
        if forward is None:
            out.append(None)
            continue
        base = stock.get(r.pair.configuration, ref)
        out.append(Floor(forward / base.median_ms, (base.median_ms + forward) / ref.median_ms, base.pair))
    return out


def format_speed_table(results: Sequence[SpeedResult]) -> str:
    """Trainer, median ms per iteration, IQR, ratio to the reference (first row), ``f`` and ``floor (1+f)`` when
    forwards were timed (see :func:`floors`; ``-`` for rows without), inference columns when timed."""
    ref = results[0]
    header = ["trainer:configuration", "ms/iteration (median)", "IQR ms", "ratio to " + ref.pair.trainer]
    row_floors = floors(results)
    with_floor = any(fl is not None for fl in row_floors)
    if with_floor:
        header += ["f", "floor (1+f)"]
    with_inference = ref.inference_ms is not None
    if with_inference:
        header += ["ms/case inference (median)", "inference ratio"]
    rows = []
    for r, fl in zip(results, row_floors):
        name = f"{r.pair} (reference)" if r is ref else str(r.pair)
        row = [name, f"{r.median_ms:.1f}", f"{r.iqr_ms:.1f}", f"{r.median_ms / ref.median_ms:.2f}"]
        if with_floor:
            row += [f"{fl.f:.3f}", f"{fl.floor:.2f}"] if fl is not None else ["-", "-"]
        if with_inference:
            row += [f"{r.inference_median_ms:.1f}", f"{r.inference_median_ms / ref.inference_median_ms:.2f}"]
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
