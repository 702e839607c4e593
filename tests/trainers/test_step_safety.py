"""The training step: non-finite steps are skipped as a whole, and the flagship step equals its equations exactly."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from trainer_helpers import make_trainer, random_batch

from nnunet_ext.training.base import MAX_NONFINITE_STEPS, NonFiniteLossError
from nnunet_ext.training.consistency import mae_consistency
from nnunet_ext.training.schedules import PercentileGate, adaptive_consistency_weight


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _nan_batch(trainer, seed=0) -> dict:
    batch = random_batch(trainer, seed)
    batch["data"][0, 0, 0, 0] = float("nan")
    return batch


def _optimizer_state(trainer) -> dict:
    return {k: {n: torch.as_tensor(v).clone() for n, v in s.items()} for k, s in trainer.optimizer.state.items()}


# --- non-finite steps ---------------------------------------------------------------------------------------------


def test_nan_batch_leaves_student_teacher_gate_and_optimizer_as_they_were(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"gate_window": 3})
    mt = trainer.ext_addons[0]
    for i in range(4):  # a warmed-up gate and a teacher that differs from the student
        trainer.train_step(random_batch(trainer, seed=i))
    student, teacher = _clone(trainer.network), _clone(mt.teacher.module)
    history, step, n_avg = list(mt.gate.history), mt.step, int(mt.teacher.n_averaged)
    optimizer = _optimizer_state(trainer)

    out = trainer.train_step(_nan_batch(trainer))

    assert not np.isfinite(out["loss"]).all()
    assert _equal(student, _clone(trainer.network))
    assert _equal(teacher, _clone(mt.teacher.module))
    assert list(mt.gate.history) == history and all(math.isfinite(v) for v in mt.gate.history)
    assert mt.step == step and int(mt.teacher.n_averaged) == n_avg
    after = _optimizer_state(trainer)
    assert after.keys() == optimizer.keys()
    assert all(torch.equal(optimizer[k][n], after[k][n]) for k in optimizer for n in optimizer[k])
    # training goes on: the next finite step updates student, teacher and gate
    out = trainer.train_step(random_batch(trainer, seed=7))
    assert np.isfinite(out["loss"]).all() and mt.step == step + 1
    assert not _equal(student, _clone(trainer.network))
    assert len(mt.gate.history) == 3 and all(math.isfinite(v) for v in mt.gate.history)


def test_reweight_history_is_not_poisoned_by_a_nan_step(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "DiceReweightTrainer", reweight={"window": 2})
    rw = trainer.ext_addons[0]
    for i in range(3):
        trainer.train_step(random_batch(trainer, seed=i))
    history = [h.copy() for h in rw.history]
    trainer.train_step(_nan_batch(trainer))
    assert len(rw.history) == len(history) and all(np.array_equal(a, b) for a, b in zip(history, rw.history))
    assert all(np.isfinite(h).all() for h in rw.history)
    trainer.train_step(random_batch(trainer, seed=5))
    assert all(np.isfinite(h).all() for h in rw.history)
    assert rw._kept[-1] > 0  # samples still get weight 1 after the NaN step


def test_plain_trainer_skips_the_optimizer_step_on_cpu(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceTrainer")
    trainer.train_step(random_batch(trainer))
    before, optimizer = _clone(trainer.network), _optimizer_state(trainer)
    trainer.train_step(_nan_batch(trainer))
    assert _equal(before, _clone(trainer.network))
    after = _optimizer_state(trainer)
    assert all(torch.equal(optimizer[k][n], after[k][n]) for k in optimizer for n in optimizer[k])


def test_ten_consecutive_nonfinite_steps_stop_training_with_a_message(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    for _ in range(MAX_NONFINITE_STEPS - 1):
        trainer.train_step(_nan_batch(trainer))
    trainer.train_step(random_batch(trainer))  # one finite step resets the count
    for _ in range(MAX_NONFINITE_STEPS - 1):
        trainer.train_step(_nan_batch(trainer))
    with pytest.raises(NonFiniteLossError, match="10 consecutive") as info:
        trainer.train_step(_nan_batch(trainer))
    message = str(info.value)
    assert "learning rate" in message and "verify_dataset_integrity" in message and "nnUNet_compile" in message


def test_epoch_training_loss_leaves_out_skipped_steps(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceTrainer")
    outputs = [trainer.train_step(random_batch(trainer, seed=i)) for i in range(2)]
    outputs.append(trainer.train_step(_nan_batch(trainer)))
    trainer.on_train_epoch_end(outputs)
    logged = trainer.logger.get_value("train_losses", step=-1)
    assert logged == pytest.approx(np.mean([o["loss"] for o in outputs[:2]]))


def test_gate_refuses_nonfinite_losses():
    gate = PercentileGate(window=2)
    with pytest.raises(ValueError, match="finite"):
        gate.allows_update(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        gate.extend([1.0, float("inf")])
    assert len(gate.history) == 0


class _ScalerStub:
    """Stands in for torch's GradScaler on CPU: same calls, the optimizer step skipped as on an fp16 overflow."""

    def __init__(self) -> None:
        self.updates = 0

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        return None  # GradScaler found inf/NaN gradients: optimizer.step() is not called

    def update(self):
        self.updates += 1


def test_step_skipped_by_the_grad_scaler_does_not_update_the_teacher(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    mt = trainer.ext_addons[0]
    trainer.train_step(random_batch(trainer))
    teacher, step = _clone(mt.teacher.module), mt.step
    trainer.grad_scaler = _ScalerStub()
    out = trainer.train_step(random_batch(trainer, seed=1))
    assert np.isfinite(out["loss"]).all()  # finite loss, but the scaler skipped the step
    assert _equal(teacher, _clone(mt.teacher.module)) and mt.step == step
    assert trainer._ext_nonfinite_streak == 0  # an overflow skip with a finite loss is not a failure


# --- the flagship step, exactly ------------------------------------------------------------------------------------


def _record_inputs(module: torch.nn.Module, into: list) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_pre_hook(lambda _m, args: into.append(args[0].detach().clone()))


@pytest.mark.parametrize("warm_steps", [0, 5])
def test_flagship_step_equals_its_equations(tiny_lesion_2d, warm_steps):
    """loss = L_S + lambda L_C (AdaS lambda); teacher' = alpha T + (1 - alpha) S'; alpha = min(1 - 1/(t+1), a')."""
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    mt = trainer.ext_addons[0]
    for i in range(warm_steps):
        trainer.train_step(random_batch(trainer, seed=100 + i))
    batch = random_batch(trainer, seed=3)
    student_before = _clone(trainer.network)
    teacher_before = _clone(mt.teacher.module)
    student_in, teacher_in = [], []
    handles = [_record_inputs(trainer.network, student_in), _record_inputs(mt.teacher.module, teacher_in)]
    torch.manual_seed(0)
    try:
        loss = float(trainer.train_step(batch)["loss"])
    finally:
        for h in handles:
            h.remove()

    # recompute the step from the recorded (noisy) inputs on copies of the pre-step networks, in float64
    s_net = copy.deepcopy(trainer.network).double()
    s_net.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in student_before.items()})
    t_net = copy.deepcopy(mt.teacher.module).double()
    t_net.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in teacher_before.items()})
    target = [t.double() for t in batch["target"]]
    with torch.no_grad():
        s_out = s_net(student_in[0].double())
        t_out = t_net.eval()(teacher_in[0].double())
        l_s = float(trainer.loss(s_out, target))
        l_t = float(trainer.loss(t_out, target))
        l_c = float(mae_consistency(s_out[0], t_out[0], regions=False))
    assert not torch.equal(student_in[0], teacher_in[0])  # independent noise draws
    assert (student_in[0] - batch["data"]).abs().max() <= mt.config.input_noise_clip + 1e-6
    lam = adaptive_consistency_weight(l_s, l_t, 0.1, 0.01)
    assert lam == (0.1 if l_t < l_s else 0.01)
    assert loss == pytest.approx(l_s + lam * l_c, rel=1e-5, abs=1e-6)

    t = warm_steps  # optimizer-step counter before this step
    alpha = min(1 - 1 / (t + 1), mt.config.ema_early)
    student_after = _clone(trainer.network)
    teacher_after = _clone(mt.teacher.module)
    for k, v in teacher_after.items():
        if v.is_floating_point():
            expected = alpha * teacher_before[k] + (1 - alpha) * student_after[k]
            torch.testing.assert_close(v, expected, rtol=1e-6, atol=1e-7, msg=k)
    assert mt.step == t + 1


def test_gated_flagship_step_leaves_the_teacher_bit_identical(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"gate_window": 2})
    mt = trainer.ext_addons[0]
    for i in range(3):
        trainer.train_step(random_batch(trainer, seed=i))
    mt.gate.history.clear()
    mt.gate.extend([0.0, 0.0])  # beta = 0: every loss is an outlier
    teacher, student = _clone(mt.teacher.module), _clone(trainer.network)
    trainer.train_step(random_batch(trainer, seed=11))
    assert _equal(teacher, _clone(mt.teacher.module))
    assert not _equal(student, _clone(trainer.network))  # the student did step
    assert mt._epoch_stats["update"][-1] == 0.0


def test_warmup_decay_is_capped_by_the_scheduled_alpha(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    mt = trainer.ext_addons[0]
    mt.step = 1000  # min(1 - 1/1001, 0.99) = 0.99 in the first 10 % of the epochs
    trainer.train_step(random_batch(trainer))
    teacher_before = _clone(mt.teacher.module)
    trainer.train_step(random_batch(trainer, seed=1))
    s = _clone(trainer.network)
    for k, v in _clone(mt.teacher.module).items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.99 * teacher_before[k] + 0.01 * s[k], rtol=1e-6, atol=1e-7, msg=k)
