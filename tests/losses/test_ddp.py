"""DDP: batch-pooled losses sum their per-class sums over the ranks, so every rank computes the global-batch loss.

Two spawned CPU processes (gloo, file store) each take half of a fixed float64 batch (``_ddp_worker.py``) and are
compared with one process on the whole batch.

Gradient factor: nnU-Net's ``AllGatherGrad`` all-reduces (sums) the incoming gradient in its backward, and every rank
back-propagates the same global loss, so the gradient a rank gets for its own images is world_size times the
gradient of the global-batch loss. DDP averages parameter gradients over the ranks (applied explicitly in the worker:
all-reduce, then divide by world_size), dividing by world_size again:
DDP training then takes exactly the steps of single-process training on the global batch. The voxel-wise part of a
compound loss is a local mean, whose gradient is also world_size times its share of the global mean, so the same
rule holds for every loss, pooled or not. nnU-Net's ``MemoryEfficientSoftDiceLoss(ddp=True)`` is the reference: it
shows the same factor, and the plugin's Sørensen Dice with ε = 1 (the same coefficient) has the same gradients.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.distributed as dist

from nnunet_ext.losses import LOSSES, CELoss, SorensenDiceLoss, build_loss

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def worker() -> ModuleType:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).parent))  # spawned children inherit sys.path and import it by name
        return importlib.import_module("_ddp_worker")


@pytest.fixture(scope="module")
def ranks(worker, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).parent))
        context = torch.multiprocessing.start_processes(
            worker.run, args=(str(out),), nprocs=worker.WORLD_SIZE, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=1):  # raises with the child's traceback if a rank fails
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"DDP workers did not finish within {TIMEOUT_S} s")
    return [torch.load(out / f"rank{r}.pt") for r in range(worker.WORLD_SIZE)]


def _tolerance(worker: ModuleType, case: str) -> dict[str, float]:
    # nnU-Net sums in float32 whatever the input dtype; the plugin keeps float64.
    return {"rtol": 1e-5, "atol": 1e-7} if case == worker.NNUNET else {"rtol": 1e-10, "atol": 1e-12}


def _single_process(worker: ModuleType, case: str) -> dict:
    features, logits, target = worker.global_batch(case)
    value, grad = worker.value_and_input_grad(worker.build(case, ddp=False), logits, target)
    grads = worker.param_grads(worker.build(case, ddp=False), features, target, distributed=False)
    return {"value": value, "input_grad": grad, "param_grads": grads}


POOLED = ["nr_dice_linear", "nr_dice_squared", "nr_dice_regions", "region_dice", "dice", "focal_dice"]
POOLED += ["sorensen_dice_eps1", "nnunet_memory_efficient_soft_dice"]
ALL = [*POOLED, "nr_dice_per_image", "nr_dice_reduction_none", "ce_dice"]


def test_case_lists_match_the_worker(worker):
    assert set(POOLED) == {*worker.POOLED_CASES, worker.NNUNET}
    assert set(ALL) == {*worker.CASES, worker.NNUNET}


@pytest.mark.parametrize("case", POOLED)
def test_pooled_loss_on_every_rank_equals_the_global_batch_loss(worker, ranks, case):
    reference = _single_process(worker, case)["value"]
    for rank, results in enumerate(ranks):
        torch.testing.assert_close(results[case]["value"], reference, **_tolerance(worker, case))
        # the gather matters: the loss of the local half alone is different
        _, logits, target = (t[worker.local_slice(rank)] for t in worker.global_batch(case))
        local_only = worker.build(case, ddp=False)(logits, target)
        assert abs(local_only.item() - reference.item()) > 1e-3


@pytest.mark.parametrize("case", ["nr_dice_per_image", "nr_dice_reduction_none"])
def test_per_image_sums_are_not_gathered(worker, ranks, case):
    for rank, results in enumerate(ranks):
        _, logits, target = (t[worker.local_slice(rank)] for t in worker.global_batch(case))
        torch.testing.assert_close(results[case]["value"], worker.build(case, ddp=False)(logits, target))


def test_compound_loss_is_local_ce_plus_global_dice(worker, ranks):
    _, logits, target = worker.global_batch("ce_dice")
    global_dice = SorensenDiceLoss()(logits, target)
    for rank, results in enumerate(ranks):
        local = worker.local_slice(rank)
        expected = CELoss()(logits[local], target[local]) + global_dice
        torch.testing.assert_close(results["ce_dice"]["value"], expected)
    mean_over_ranks = torch.stack([r["ce_dice"]["value"] for r in ranks]).mean()
    torch.testing.assert_close(mean_over_ranks, _single_process(worker, "ce_dice")["value"])


@pytest.mark.parametrize("case", ALL)
def test_rank_input_gradient_is_world_size_times_the_global_gradient(worker, ranks, case):
    reference = _single_process(worker, case)["input_grad"]
    for rank, results in enumerate(ranks):
        expected = worker.WORLD_SIZE * reference[worker.local_slice(rank)]
        torch.testing.assert_close(results[case]["input_grad"], expected, **_tolerance(worker, case))


@pytest.mark.parametrize("case", ALL)
def test_ddp_averaged_parameter_gradients_equal_single_process_on_the_global_batch(worker, ranks, case):
    reference = _single_process(worker, case)["param_grads"]
    for results in ranks:
        for got, expected in zip(results[case]["param_grads"], reference, strict=True):
            torch.testing.assert_close(got, expected, **_tolerance(worker, case))


def test_plugin_dice_scales_gradients_exactly_like_nnunets_dice(worker, ranks):
    # nnU-Net returns -mean_c D_c, the plugin 1 - mean_c D_c with the same D_c (smooth = eps = 1, background dropped)
    for results in ranks:
        plugin, nnunet = results["sorensen_dice_eps1"], results[worker.NNUNET]
        torch.testing.assert_close(plugin["value"], 1.0 + nnunet["value"].double(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(plugin["input_grad"], nnunet["input_grad"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ddp_is_a_no_op_without_a_process_group(name):
    assert not dist.is_initialized()
    nonlin = "softmax" if LOSSES[name].supports_label_maps else "sigmoid"
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 1, 4, 4), generator=gen) if nonlin == "softmax" else (logits > 0.3).double()
    outputs = []
    for ddp in (False, True):
        x = logits.clone().requires_grad_(True)
        value = build_loss(name, apply_nonlin=nonlin, ddp=ddp)(x, target)
        value.backward()
        outputs.append((value.detach(), x.grad))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
