"""BraTS pipeline A (issue 14): Ranger, its schedule, the Ranger trainers and the SWA phase with Adam.

Ranger is pinned against two hand-computed steps and an independent numpy transcription of lessw2020's Ranger
20.4.11 (the version open_brats2020 installs); the trainers run on a tiny 2D region dataset (``tiny_lesion_2d`` with
its lesion declared as a region).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from trainer_helpers import make_trainer

from nnunet_ext._nnunet import deep_supervision_scales
from nnunet_ext.training.base import OptimizerSpec
from nnunet_ext.training.ranger import RANGER_DEFAULTS, build_ranger
from nnunet_ext.training.schedules import constant_then_cosine, open_brats_ranger_lr
from nnunet_ext.training.swa import SWAConfig, SWAPhase, cycle_lr

DATASET_ID = 648


def _set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = torch.as_tensor(g, dtype=torch.float64).clone()


# --- the optimizer -----------------------------------------------------------------------------------------------


def test_ranger_two_hand_computed_steps():
    """lr 0.1, betas (0.95, 0.999), k 2, alpha 0.5: rho_1 = 1 and rho_2 = 2 < 5, so both steps are bias-corrected
    SGD with momentum, p -= lr m_t / (1 - 0.95^t); the fc weight's gradient is centred per row, the bias' is not;
    after step 2 the slow weights move half-way from the start to the fast weights and replace them."""
    w = torch.nn.Parameter(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))  # fc weight [out 1, in 3]
    b = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    opt = build_ranger([w, b], lr=0.1, k=2)

    # step 1: g_w = [1, 2, 6] -> centred [-2, -1, 3]; m = 0.05 g; p -= 0.1 / 0.05 * m = 0.1 g
    _set_grads([w, b], [[[1.0, 2.0, 6.0]], [1.0]])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([[1.2, 2.1, 2.7]], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(b.detach(), torch.tensor([0.4], dtype=torch.float64), rtol=0, atol=1e-15)

    # step 2: g_w = [0, 0, 3] -> centred [-1, -1, 2]; m = 0.95 m + 0.05 g = [-0.145, -0.0975, 0.2425];
    # fast p = p - 0.1 / 0.0975 * m = [1.2 + 29/195, 2.1 + 0.1, 2.7 - 97/390]; slow = (start + fast) / 2
    # bias: m = 0.95 * 0.05 - 0.05 = -0.0025; fast = 0.4 + 1/390
    _set_grads([w, b], [[[0.0, 0.0, 3.0]], [-1.0]])
    opt.step()
    fast_w = torch.tensor([[1.2 + 29 / 195, 2.2, 2.7 - 97 / 390]], dtype=torch.float64)
    want_w = (torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64) + fast_w) / 2  # [1.174359, 2.1, 2.725641]
    want_b = torch.tensor([(0.5 + 0.4 + 1 / 390) / 2], dtype=torch.float64)  # 0.451282
    torch.testing.assert_close(w.detach(), want_w, rtol=0, atol=1e-15)
    torch.testing.assert_close(b.detach(), want_b, rtol=0, atol=1e-15)
    assert torch.equal(opt.state[w]["slow_buffer"], w.detach())  # synchronised
    torch.testing.assert_close(  # Lookahead leaves the moments alone
        opt.state[w]["exp_avg"], torch.tensor([[-0.145, -0.0975, 0.2425]], dtype=torch.float64), rtol=0, atol=1e-15
    )


def _lessw2020_ranger(params, grad_steps, lr, betas=(0.95, 0.999), eps=1e-5, k=6, alpha=0.5, threshold=5):
    """numpy transcription of lessw2020 Ranger 20.4.11 ``step`` (per parameter, GC on tensors with > 1 dim)."""
    beta1, beta2 = betas
    p = [np.array(x, dtype=np.float64) for x in params]
    slow = [x.copy() for x in p]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    history = []
    for t, grads in enumerate(grad_steps, start=1):
        for i, g in enumerate(grads):
            g = np.array(g, dtype=np.float64)
            if g.ndim > 1:
                g = g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True)
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            beta2_t = beta2**t
            rho_inf = 2 / (1 - beta2) - 1
            rho = rho_inf - 2 * t * beta2_t / (1 - beta2_t)
            if rho > threshold:
                r = math.sqrt((1 - beta2_t) * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2))
                p[i] = p[i] - lr * r / (1 - beta1**t) * m[i] / (np.sqrt(v[i]) + eps)
            else:
                p[i] = p[i] - lr / (1 - beta1**t) * m[i]
            if t % k == 0:
                slow[i] = slow[i] + alpha * (p[i] - slow[i])
                p[i] = slow[i].copy()
        history.append([x.copy() for x in p])
    return history


def test_ranger_matches_lessw2020_algorithm_over_eight_steps():
    """Default betas/eps/alpha, k 3: SGD-momentum steps 1-5, rectified steps 6-8, synchronisations at 3 and 6; a
    conv weight and an fc weight are centralised, a bias is not."""
    rng = np.random.default_rng(0)
    shapes = [(3, 2, 3, 3), (3,), (4, 5)]
    start = [rng.normal(size=s) for s in shapes]
    grad_steps = [[rng.normal(size=s) * (1 + t) for s in shapes] for t in range(8)]
    params = [torch.nn.Parameter(torch.tensor(x)) for x in start]
    opt = build_ranger(params, lr=1e-2, k=3)
    want = _lessw2020_ranger(start, grad_steps, lr=1e-2, k=3)
    for t, grads in enumerate(grad_steps):
        _set_grads(params, grads)
        opt.step()
        for p, w in zip(params, want[t]):
            np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12, atol=1e-15, err_msg=f"step {t + 1}")
    assert opt.param_groups[0]["step"] == 8


def test_ranger_defaults_are_lessw2020s_and_options_are_checked():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = build_ranger([p], lr=1e-4)
    group = opt.param_groups[0]
    assert (group["betas"], group["eps"], group["k"], group["alpha"]) == ((0.95, 0.999), 1e-5, 6, 0.5)
    assert group["lr"] == 1e-4 and group["weight_decay"] == 0.0 and group["weight_decouple"]
    assert opt.degenerated_to_sgd and opt.use_gc and opt.gc_gradient_threshold == 1 and opt.n_sma_threshold == 5
    assert dict(RANGER_DEFAULTS)["k"] == 6
    with pytest.raises(ValueError, match="did you mean 'alpha'"):
        build_ranger([p], lr=1e-4, alpah=0.5)
    with pytest.raises(ValueError, match="lr > 0"):
        build_ranger([p], lr=0.0)
    with pytest.raises(ValueError, match="did you mean 'k'"):
        OptimizerSpec("ranger", lr=1e-4, options={"kk": 3})
    with pytest.raises(ValueError, match="unknown optimizer 'rangr'"):
        OptimizerSpec("rangr", lr=1e-4)
    with pytest.raises(ValueError, match="unknown schedule"):
        OptimizerSpec("ranger", lr=1e-4, schedule="cosine")


def test_ranger_under_a_grad_scaler_steps_and_fires_post_hooks():
    """The trainer's AMP path: GradScaler.step runs Ranger and the step post hook tells the trainer it ran."""
    p = torch.nn.Parameter(torch.tensor([[1.0, -2.0]]))
    opt = build_ranger([p], lr=0.1)
    fired = []
    opt.register_step_post_hook(lambda *_: fired.append(True))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    scaler.scale((p**2).sum()).backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    # g = [2, -4] centred -> [3, -3]; one SGD-momentum step: p -= 0.1 * g
    torch.testing.assert_close(p.detach(), torch.tensor([[0.7, -1.7]]))
    assert fired == [True]


# --- the schedule ------------------------------------------------------------------------------------------------


def test_open_brats_ranger_schedule_hand_values():
    lr = 1e-4
    assert open_brats_ranger_lr(lr, 0, 200) == lr == open_brats_ranger_lr(lr, 101, 200)  # epochs 0-101 constant
    assert open_brats_ranger_lr(lr, 102, 200) == pytest.approx(lr * (1 + math.cos(math.pi / 100)) / 2)  # 0.99975e-4
    assert open_brats_ranger_lr(lr, 151, 200) == pytest.approx(0.5e-4)  # 50 of 100 cosine steps
    assert open_brats_ranger_lr(lr, 199, 200) == pytest.approx(9.866357e-8, rel=1e-6)  # 98 steps, never 0
    assert open_brats_ranger_lr(lr, 0, 1) == lr  # one epoch: no cosine step
    # the paper's wording without open_brats' offset starts one epoch earlier
    assert constant_then_cosine(lr, 101, 200) < open_brats_ranger_lr(lr, 101, 200)
    with pytest.raises(ValueError, match="num_epochs >= 1"):
        open_brats_ranger_lr(lr, 0, 0)


@pytest.mark.parametrize("num_epochs", [1, 2, 3, 7, 10, 200, 201])
def test_open_brats_ranger_schedule_equals_torch_cosine_stepped_the_open_brats_way(num_epochs):
    """open_brats train.py: CosineAnnealingLR(T_max=round(0.5 E)), stepped after epoch j only if j / E > 0.5."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(round(num_epochs * 0.5), 1))
    for epoch in range(num_epochs):
        assert open_brats_ranger_lr(1e-4, epoch, num_epochs) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        if epoch / num_epochs > 0.5:
            scheduler.step()


# --- the trainers ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_regions_2d(tiny_lesion_2d) -> SimpleNamespace:
    """``tiny_lesion_2d`` declared as a region dataset (Dataset 648): one region, labels {1, 2} (2 never occurs;
    nnU-Net needs a region of two labels to train with regions), i.e. the lesion.

    nnU-Net keeps label maps in the preprocessed data of region datasets too (its data loader converts them to
    regions), so only dataset.json changes; the copy saves a second fingerprint/plan/preprocess run.
    """
    from nnunetv2.paths import nnUNet_preprocessed

    name = f"Dataset{DATASET_ID}_TinyLesionRegions"
    target = Path(nnUNet_preprocessed) / name
    if not target.exists():
        shutil.copytree(Path(nnUNet_preprocessed) / tiny_lesion_2d.name, target)
        dataset_json = json.loads((target / "dataset.json").read_text())
        dataset_json["labels"] = {"background": 0, "lesion": [1, 2]}
        dataset_json["regions_class_order"] = [1]
        (target / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        plans = json.loads((target / "nnUNetPlans.json").read_text())
        plans["dataset_name"] = name
        (target / "nnUNetPlans.json").write_text(json.dumps(plans, indent=2))
    return SimpleNamespace(name=name)


def _region_batch(trainer, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    patch = trainer.configuration_manager.patch_size
    channels = len(trainer.dataset_json["channel_names"])
    data = torch.randn(2, channels, *patch, generator=g)
    regions = (torch.rand(2, trainer.label_manager.num_segmentation_heads, *patch, generator=g) > 0.7).float()
    if not trainer.enable_deep_supervision:
        return {"data": data, "target": regions}
    targets = []
    for scale in deep_supervision_scales(trainer):
        size = [round(p * s) for p, s in zip(patch, scale)]
        targets.append(torch.nn.functional.interpolate(regions, size=size, mode="nearest-exact"))
    return {"data": data, "target": targets}


def _ranger_state(trainer) -> list[dict[str, torch.Tensor]]:
    """Per-parameter optimizer state, {} for parameters that never had a gradient (nnU-Net's lowest-resolution deep
    supervision head has weight 0 and gets none)."""
    return [trainer.optimizer.state.get(p, {}) for p in trainer.network.parameters()]


def test_ranger_trainer_optimizer_schedule_and_plans_override(tiny_regions_2d):
    from pytorch_optimizer import Ranger

    trainer = make_trainer(tiny_regions_2d, "RegionDiceRangerTrainer", num_epochs=200)
    assert type(trainer.optimizer) is Ranger and trainer.label_manager.has_regions
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["k"], group["alpha"]) == (1e-4, 0.0, 6, 0.5)
    assert trainer.optimizer.degenerated_to_sgd  # without it the first five steps ascend
    for epoch, want in [(0, 1e-4), (101, 1e-4), (151, 0.5e-4), (199, 9.866357e-8)]:
        trainer.lr_scheduler.step(epoch)
        assert group["lr"] == pytest.approx(want, rel=1e-6), epoch

    overridden = make_trainer(tiny_regions_2d, "RegionDiceRangerTrainer", num_epochs=10, initial_lr=3e-4)
    assert overridden.optimizer.param_groups[0]["lr"] == 3e-4
    overridden.lr_scheduler.step(9)  # n = 9 - 5 - 1 = 3 of T = 5
    assert overridden.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 * (1 + math.cos(3 * math.pi / 5)) / 2)

    swa = make_trainer(tiny_regions_2d, "RegionDiceRangerSWATrainer", num_epochs=200)
    assert type(swa.optimizer) is Ranger and swa.num_epochs == 350
    assert swa.lr_scheduler.num_epochs == 200  # the cosine spans the main epochs, not the SWA epochs


def test_ranger_state_survives_a_trainer_checkpoint_bit_identically(tiny_regions_2d, tmp_path):
    """4 steps, checkpoint, then steps 5-7 (Lookahead synchronisation and first rectified step at 6) in the running
    trainer and in a fresh one resumed from the checkpoint: identical weights, moments and slow weights."""
    a = make_trainer(tiny_regions_2d, "RegionDiceRangerTrainer")
    for i in range(4):
        assert np.isfinite(a.train_step(_region_batch(a, i))["loss"])
    assert any(not torch.equal(s["slow_buffer"], p) for s, p in zip(_ranger_state(a), a.network.parameters()) if s)
    path = str(tmp_path / "ranger.pth")
    a.save_checkpoint(path)

    b = make_trainer(tiny_regions_2d, "RegionDiceRangerTrainer")
    b.load_checkpoint(path)
    assert b.optimizer.param_groups[0]["step"] == 4
    assert sum(bool(s) for s in _ranger_state(a)) > len(_ranger_state(a)) - 3  # all but the unused head
    for sa, sb in zip(_ranger_state(a), _ranger_state(b)):
        assert sa.keys() == sb.keys() and set(sa) in (set(), {"exp_avg", "exp_avg_sq", "slow_buffer"})
        assert all(torch.equal(sa[key], sb[key]) for key in sa)
    for i in range(4, 7):
        a.train_step(_region_batch(a, i))
        b.train_step(_region_batch(b, i))
        if i == 5:  # after step 6: fast weights were replaced by the slow weights
            assert all(torch.equal(s["slow_buffer"], p) for s, p in zip(_ranger_state(b), b.network.parameters()) if s)
    for (name, pa), pb in zip(a.network.named_parameters(), b.network.parameters()):
        assert torch.equal(pa, pb), name
    for sa, sb in zip(_ranger_state(a), _ranger_state(b)):
        assert all(torch.equal(sa[key], sb[key]) for key in sa)
    assert a.optimizer.param_groups[0]["step"] == b.optimizer.param_groups[0]["step"] == 7


# --- the SWA phase with Adam -------------------------------------------------------------------------------------


def test_swa_phase_switches_from_ranger_to_adam_without_weight_decay(tiny_regions_2d):
    """Through run_training(): epoch 0 with Ranger at 1e-4, epoch 1 (one SWA cycle of one epoch) with a fresh Adam at
    5e-5 without weight decay; checkpoint_final holds the Adam state and loads into an Adam."""
    block = {
        "num_epochs": 1,
        "num_iterations_per_epoch": 2,
        "num_val_iterations_per_epoch": 1,
        "swa": {"cycles": 1, "cycle_epochs": 1, "snapshot_every": 1, "bn_update_batches": 1},
    }
    trainer = make_trainer(tiny_regions_2d, "RegionDiceRangerSWATrainer", **block)
    seen = []
    epoch_end = trainer.on_train_epoch_end

    def spy(outputs):
        group = trainer.optimizer.param_groups[0]
        seen.append((type(trainer.optimizer).__name__, group["lr"], group["weight_decay"]))
        epoch_end(outputs)

    trainer.on_train_epoch_end = spy
    trainer.run_training()
    assert seen == [("Ranger", 1e-4, 0.0), ("Adam", pytest.approx(5e-5), 0.0)]
    assert trainer.logger.get_value("lrs", step=None) == pytest.approx([1e-4, 5e-5])
    adam = trainer.optimizer
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["eps"] == 1e-8
    assert adam.param_groups[0]["initial_lr"] == pytest.approx(5e-5)
    assert trainer.ext_addon(SWAPhase).num_snapshots == 2  # final main-schedule weights + one cycle epoch

    final = str(Path(trainer.output_folder) / "checkpoint_final.pth")
    saved_group = torch.load(final, map_location="cpu", weights_only=False)["optimizer_state"]["param_groups"][0]
    assert "amsgrad" in saved_group and "k" not in saved_group  # Adam's state, not Ranger's
    fresh = make_trainer(tiny_regions_2d, "RegionDiceRangerSWATrainer", **block)
    fresh.load_checkpoint(final)
    assert type(fresh.optimizer) is torch.optim.Adam
    assert fresh.optimizer.state_dict()["param_groups"] == adam.state_dict()["param_groups"]


def test_swa_resume_in_the_adam_phase_restores_adam_and_continues_bit_identically(tiny_regions_2d, tmp_path):
    """``--c`` from checkpoints written (1) after the Ranger main epoch: Ranger continues; (2) after the first SWA
    epoch: a fresh Adam gets the saved Adam state (nnU-Net loads it into the trainer's Ranger, which is discarded),
    and two more steps equal those of the uninterrupted trainer."""
    from pytorch_optimizer import Ranger

    block = {"num_epochs": 1, "swa": {"cycles": 1, "cycle_epochs": 3, "snapshot_every": 1, "bn_update_batches": 1}}
    a = make_trainer(tiny_regions_2d, "RegionDiceRangerSWATrainer", **block)
    a.on_train_epoch_start()  # epoch 0: main schedule, Ranger
    a.train_step(_region_batch(a, 0))
    end_of_main = str(tmp_path / "end_of_main.pth")
    a.save_checkpoint(end_of_main)  # current_epoch 1 == main epochs: the next epoch starts the cycle
    a.current_epoch = 1
    a.on_train_epoch_start()  # cycle 1, epoch 0: fresh Adam
    assert type(a.optimizer) is torch.optim.Adam
    for i in (1, 2):
        a.train_step(_region_batch(a, i))
    mid_cycle = str(tmp_path / "mid_cycle.pth")
    a.save_checkpoint(mid_cycle)  # current_epoch 2: one SWA epoch done

    b0 = make_trainer(tiny_regions_2d, "RegionDiceRangerSWATrainer", **block)
    b0.load_checkpoint(end_of_main)
    assert type(b0.optimizer) is Ranger and b0.optimizer.param_groups[0]["step"] == 1

    b = make_trainer(tiny_regions_2d, "RegionDiceRangerSWATrainer", **block)
    b.load_checkpoint(mid_cycle)
    assert b.current_epoch == 2 and type(b.optimizer) is torch.optim.Adam
    saved, restored = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert restored["param_groups"] == saved["param_groups"]
    assert restored["param_groups"][0]["weight_decay"] == 0.0
    assert restored["param_groups"][0]["initial_lr"] == pytest.approx(5e-5)
    for key, state in saved["state"].items():
        assert state.keys() == restored["state"][key].keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(state[name], restored["state"][key][name]) for name in state)

    optimizers = (a.optimizer, b.optimizer)
    for trainer, optimizer in zip((a, b), optimizers):
        trainer.current_epoch = 2
        trainer.on_train_epoch_start()  # mid-cycle: the same Adam, cycle cosine (T = 3 + 10)
        assert trainer.optimizer is optimizer
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cycle_lr(5e-5, 1, 13))
    for i in (3, 4):
        a.train_step(_region_batch(a, i))
        b.train_step(_region_batch(b, i))
    for (name, pa), pb in zip(a.network.named_parameters(), b.network.parameters()):
        assert torch.equal(pa, pb), name


def test_swa_optimizer_option_default_and_plans_override(tiny_lesion_2d):
    """Existing SWA trainers keep a fresh instance of their own optimizer (nnU-Net's SGD); the plans may pick Adam."""
    from nnunet_ext.trainers.nnunet_ext_trainers import RegionDiceRangerSWATrainer, RegionDiceSWATrainer

    assert RegionDiceSWATrainer.swa.optimizer == "trainer" and RegionDiceRangerSWATrainer.swa.optimizer == "adam"
    trainer = make_trainer(tiny_lesion_2d, "NRDiceSWATrainer")
    swa = trainer.ext_addon(SWAPhase)
    sgd = swa.cycle_optimizer(trainer)
    assert type(sgd) is torch.optim.SGD and sgd is not trainer.optimizer
    assert (
        sgd.param_groups[0]["lr"] == pytest.approx(trainer.initial_lr * 0.5)
        and sgd.param_groups[0]["weight_decay"] == 0
    )

    trainer = make_trainer(tiny_lesion_2d, "NRDiceSWATrainer", swa={"optimizer": "adam", "weight_decay": 1e-5})
    adam = trainer.ext_addon(SWAPhase).cycle_optimizer(trainer)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 1e-5
    with pytest.raises(ValueError, match="'trainer' or 'adam'"):
        SWAConfig(optimizer="sgd")
