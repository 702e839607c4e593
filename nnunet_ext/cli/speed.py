"""``nnunet-ext speed``: time training iterations (and inference) of trainers against stock ``nnUNetTrainer``.

All trainers run in one process on the same batches drawn once from nnU-Net's data loader (protocol:
:mod:`nnunet_ext.benchmark.speed`). A configuration per trainer compares networks, e.g.::

    nnunet-ext speed -d 502 -c 2d -tr NRDiceAdaptiveMTTrainer nnUNetTrainer:2d NRDiceTrainer:2d_coplenet \\
        --iterations 30 --warmup 3 -device cpu --inference

Beside each ratio the table prints ``f``, the share of a stock step taken by one forward pass of the row's network as
a mean teacher runs it (no gradients, eval mode, same batch), and ``floor (1+f)``, the least a method with one such
extra forward per step can cost: a mean-teacher trainer's ratio minus its floor is the cost of everything else it
does. On a shared machine prefix ``OMP_NUM_THREADS=1`` for stable CPU numbers.
"""

from __future__ import annotations

import argparse

from nnunet_ext.cli._common import add_deprecated_alias, add_device_argument, dataset_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="preprocessed dataset id or name")
    parser.add_argument("-c", dest="configuration", default="2d", help="default configuration (default: 2d)")
    parser.add_argument(
        "-tr",
        dest="trainers",
        nargs="+",
        required=True,
        metavar="TRAINER[:CONFIG]",
        help="trainers, optionally with their configuration; the reference, nnUNetTrainer on -c, is added if absent",
    )
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per trainer (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per trainer first (default: 3)")
    add_device_argument(parser, old_spelling=True)
    parser.add_argument("--seed", type=int, default=0, help="seed before each trainer and the batches (default: 0)")
    parser.add_argument("-f", dest="fold", type=int, default=0, help="fold feeding the data loader (default: 0)")
    parser.add_argument("--inference", action="store_true", help="also time prediction of the test images per case")
    parser.add_argument("--test-images", default=None, help="test images (default: the dataset's imagesTs)")
    parser.add_argument("--disable_tta", action="store_true", help="time inference without mirroring")
    add_deprecated_alias(parser, "--disable-tta", "disable_tta", action="store_true")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall clock (default), or this process's CPU time (-device cpu only): steadier on a machine shared with "
        "other jobs, as waiting for a core is not counted",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the timings and settings as JSON")
    parser.add_argument("--verbose", action="store_true", help="show nnU-Net's console output")


def check_inputs(args: argparse.Namespace) -> None:
    """Refuse bad flags before torch and the trainers load (user errors: ValueError / FileNotFoundError)."""
    import os

    if args.iterations < 1 or args.warmup < 0:
        raise ValueError(
            f"--iterations must be >= 1 and --warmup >= 0, got {args.iterations}, {args.warmup}; e.g. --iterations 20 "
            "--warmup 3"
        )
    dataset_name(args.dataset, "-d", need="preprocessed")
    if args.test_images is not None and not os.path.isdir(args.test_images):
        raise FileNotFoundError(f"--test-images {args.test_images} is not a folder; give the folder of test images")
    if args.clock == "cpu" and args.device not in ("cpu", "auto"):
        raise ValueError(f"--clock cpu times CPU work only; use -device cpu or --clock wall (-device {args.device})")


def run(args: argparse.Namespace) -> int:
    check_inputs(args)
    import json
    import os
    import tempfile

    import torch

    from nnunet_ext.benchmark.runner import hardware, versions
    from nnunet_ext.benchmark.speed import floors, format_speed_table, parse_pairs, time_trainers
    from nnunet_ext.cli._common import resolve_device

    pairs = parse_pairs(args.trainers, args.configuration)
    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        raise ValueError(f"--clock cpu times CPU work only; use -device cpu or --clock wall (device {device})")
    with tempfile.TemporaryDirectory(prefix="nnunet_ext_speed_log_") as tmp:
        log_file = None if args.verbose else os.path.join(tmp, "nnunet_console.log")
        results = time_trainers(
            args.dataset,
            pairs,
            plans=args.plans,
            iterations=args.iterations,
            warmup=args.warmup,
            device=args.device,
            seed=args.seed,
            fold=args.fold,
            inference=args.inference,
            test_images=args.test_images,
            disable_tta=args.disable_tta,
            log_file=log_file,
            clock=args.clock,
        )
    print(
        f"dataset {args.dataset}; {args.iterations} timed + {args.warmup} warm-up iterations per trainer on the same "
        f"batches; device {device}; torch threads {torch.get_num_threads()}; {args.clock} clock"
    )
    print(format_speed_table(results))
    row_floors = floors(results)
    print(
        "f: one no-grad eval forward of the row's network (the teacher's forward) / the stock nnUNetTrainer step on "
        "the row's configuration (the reference when that configuration has no stock row); floor (1+f): (that "
        "stock step + the forward) / the reference step"
    )
    if args.json is not None:
        payload = {
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "versions": versions(),
            "hardware": hardware(device),
            "results": [
                {
                    "trainer": r.pair.trainer,
                    "configuration": r.pair.configuration,
                    "iteration_ms": list(r.iteration_ms),
                    "median_ms": r.median_ms,
                    "ratio": r.median_ms / results[0].median_ms,
                    "forward_ms": list(r.forward_ms) if r.forward_ms is not None else None,
                    "forward_median_ms": r.forward_median_ms,
                    "f": fl.f if fl is not None else None,
                    "floor": fl.floor if fl is not None else None,
                    "floor_base": str(fl.base) if fl is not None else None,
                    "inference_ms": list(r.inference_ms) if r.inference_ms is not None else None,
                }
                for r, fl in zip(results, row_floors)
            ],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json}")
    return 0
