"""Where the flagship's training step spends its time, next to stock nnU-Net's, on the same batches (CPU or CUDA).

Builds stock ``nnUNetTrainer`` and a mean-teacher trainer (default ``NRDiceAdaptiveMTTrainer``) with the protocol of
``nnunet-ext speed`` (:func:`nnunet_ext.benchmark.speed.prepared_trainers`: same batches, in-process data loading),
then runs interleaved ``train_step`` calls while timers wrap the step's pieces in place: the network's forward, the
loss (student and teacher calls told apart by grad mode), the backward pass, gradient clipping, the optimizer step,
and the mean teacher's pieces (noise draws, teacher forward, consistency term, AdaS decision, the add-on's
after-step hook with its EMA update). ``rest`` is the step minus the timed pieces. Each piece's median over the timed
steps is printed in ms and as a share of the stock step; ``f`` is the teacher forward's share and ``1 + f`` the
floor of the method (see ``nnunet-ext speed``).

On CUDA every timer synchronises the device, which serialises the step: read the pieces, not the total, there. On a
CPU shared with other jobs, ``--clock cpu`` times with the process's CPU time (waiting for a core not counted).

Usage (nnU-Net folders set; a planned and preprocessed dataset)::

    OMP_NUM_THREADS=1 nnUNet_compile=f python examples/profile_mean_teacher.py -d 992 -c 2d --iterations 60 --clock cpu
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import torch

STOCK = "nnUNetTrainer"
# display order; indented pieces run inside the unindented one above them
ORDER = (
    "student input (noise)",
    "student forward",
    "student loss",
    "extra_loss",
    "  noise draws (both)",
    "  teacher forward",
    "  teacher loss (no grad)",
    "  consistency term",
    "  AdaS weight",
    "backward",
    "clip grad norm",
    "optimizer step",
    "after-step hook",
    "  EMA update",
    "rest",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", dest="dataset", required=True, help="preprocessed dataset id or name")
    parser.add_argument("-c", dest="configuration", default="2d", help="configuration (default: 2d)")
    parser.add_argument("-tr", dest="trainer", default="NRDiceAdaptiveMTTrainer", help="mean-teacher trainer")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("--iterations", type=int, default=30, help="timed steps per trainer (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per trainer first (default: 3)")
    parser.add_argument("-device", dest="device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: time.perf_counter; cpu: this process's CPU time (CPU device only: on a machine shared with other "
        "jobs it does not count the time the process waits for a core)",
    )
    return parser.parse_args(argv)


class Timers:
    """Accumulates wall-clock milliseconds per piece for the step in flight (``timed`` contexts may nest)."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self.current: dict[str, float] = defaultdict(float)
        self.steps: dict[str, list[float]] = defaultdict(list)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        self.sync()
        start = self.clock()
        try:
            yield
        finally:
            self.sync()
            self.current[key] += 1000.0 * (self.clock() - start)

    def wrap(self, key: str | Callable[..., str], fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.timed(key() if callable(key) else key):
                return fn(*args, **kwargs)

        return wrapper

    def end_step(self, prefix: str, total_ms: float) -> None:
        """Record the step: its pieces, and ``rest`` = the step minus its top-level (unindented) pieces."""
        for key, value in self.current.items():
            self.steps[f"{prefix}{key}"].append(value)
        top = sum(v for k, v in self.current.items() if not k.startswith(" "))
        self.steps[f"{prefix}rest"].append(total_ms - top)
        self.steps[f"{prefix}step"].append(total_ms)
        self.current = defaultdict(float)


@contextlib.contextmanager
def patched(obj, name: str, value) -> Iterator[None]:
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


def instrument(trainer, timers: Timers, stack: contextlib.ExitStack) -> None:
    """Wrap the step's pieces of ``trainer`` (instance attributes and the mean teacher's module functions)."""
    from nnunet_ext.training import consistency

    stack.enter_context(patched(trainer, "network", _TimedModule(trainer.network, timers, "student forward")))
    loss_key = lambda: "student loss" if torch.is_grad_enabled() else "  teacher loss (no grad)"  # noqa: E731
    stack.enter_context(patched(trainer, "loss", timers.wrap(loss_key, trainer.loss)))
    stack.enter_context(patched(trainer.optimizer, "step", timers.wrap("optimizer step", trainer.optimizer.step)))
    mt = next((a for a in getattr(trainer, "ext_addons", ()) if isinstance(a, consistency.MeanTeacher)), None)
    if mt is None:
        return
    # top-level pieces, then (indented keys) pieces inside them
    for name, key in (
        ("student_input", "student input (noise)"),
        ("extra_loss", "extra_loss"),
        ("after_optimizer_step", "after-step hook"),
        ("_teacher_forward", "  teacher forward"),
        ("consistency_weight", "  AdaS weight"),
    ):
        stack.enter_context(patched(mt, name, timers.wrap(key, getattr(mt, name))))
    for name, key in (
        ("clamped_noise", "  noise draws (both)"),
        ("mae_consistency", "  consistency term"),
        ("global_mean_tensor", "  AdaS weight"),
        ("ema_update_", "  EMA update"),
    ):
        if hasattr(consistency, name):
            stack.enter_context(patched(consistency, name, timers.wrap(key, getattr(consistency, name))))


class _TimedModule:
    """Stands in for ``trainer.network``: times calls, forwards everything else (parameters, train/eval, ...)."""

    def __init__(self, module, timers: Timers, key: str) -> None:
        self._module, self._timers, self._key = module, timers, key

    def __call__(self, *args, **kwargs):
        with self._timers.timed(self._key):
            return self._module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nnunet_ext.benchmark.runner import resolve_device
    from nnunet_ext.benchmark.speed import TrainerConfig, prepared_trainers, time_forward

    device = resolve_device(args.device)
    pairs = [TrainerConfig(STOCK, args.configuration), TrainerConfig(args.trainer, args.configuration)]
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu needs -device cpu")
    timers = Timers(device, time.process_time if args.clock == "cpu" else time.perf_counter)
    backward = torch.Tensor.backward
    clip = torch.nn.utils.clip_grad_norm_
    log = tempfile.NamedTemporaryFile(prefix="nnunet_ext_profile_", suffix=".log", delete=False).name
    with prepared_trainers(
        args.dataset,
        pairs,
        plans=args.plans,
        num_batches=args.warmup + args.iterations,
        device=device,
        seed=args.seed,
        log_file=log,
    ) as (trainers, batches):
        for pair, trainer in trainers.items():
            for b in batches[pair][: args.warmup]:
                trainer.train_step(b)
                time_forward(trainer, b["data"])
        forwards = []
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(torch.Tensor, "backward", timers.wrap("backward", backward)))
            stack.enter_context(patched(torch.nn.utils, "clip_grad_norm_", timers.wrap("clip grad norm", clip)))
            for trainer in trainers.values():
                instrument(trainer, timers, stack)
            for i in range(args.iterations):
                order = pairs if i % 2 == 0 else pairs[::-1]
                for pair in order:
                    batch = batches[pair][args.warmup + i]
                    timers.sync()
                    start = timers.clock()
                    trainers[pair].train_step(batch)
                    timers.end_step(f"{pair.trainer}: ", 1000.0 * (timers.clock() - start))
                start = timers.clock()
                time_forward(trainers[pairs[0]], batches[pairs[0]][args.warmup + i]["data"])
                forwards.append(1000.0 * (timers.clock() - start))
                timers.current.clear()  # that forward went through the timed network: not part of a step

    med = {key: float(np.median(v)) for key, v in timers.steps.items()}
    stock_ms = med[f"{STOCK}: step"]
    for pair in pairs:
        prefix = f"{pair.trainer}: "
        step = med[f"{prefix}step"]
        print(
            f"\n{pair}: step {step:.2f} ms ({step / stock_ms:.3f} x stock step); medians per piece, ms and x stock step"
        )
        keys = [k for k in timers.steps if k.startswith(prefix) and k != f"{prefix}step"]
        order = {k: i for i, k in enumerate(ORDER)}
        for key in sorted(keys, key=lambda k: order.get(k.removeprefix(prefix), len(order))):
            print(f"  {key.removeprefix(prefix):30s} {med[key]:7.2f}  {med[key] / stock_ms:6.3f}")
    f = float(np.median(forwards)) / stock_ms
    ratio = med[f"{args.trainer}: step"] / stock_ms
    print(f"\nnnU-Net's console output: {log}")
    print(f"\nf = {f:.3f} (no-grad eval forward / stock step), floor 1 + f = {1 + f:.3f}, ratio {ratio:.3f}, ")
    print(f"ratio - floor = {ratio - 1 - f:+.3f} of a stock step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
