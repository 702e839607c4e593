import pytest
import torch
from torch import nn

from nnunet_ext.training.weight_average import ema_update_, make_ema, make_swa


def _scalar_net(value: float) -> nn.Module:
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(value)
    return net


def test_ema_update_matches_closed_form():
    student = _scalar_net(5.0)
    ema = make_ema(_scalar_net(1.0))
    ema.n_averaged.fill_(1)  # past the initial copy
    for _ in range(3):
        ema_update_(ema, student, decay=0.9)
    # 5 - 4 * 0.9^3 = 2.084; a non-in-place add (PyMIC bug) would leave 0.729
    assert ema.module.weight.item() == pytest.approx(5 - 4 * 0.9**3)


def test_first_update_copies_and_teacher_is_frozen_eval():
    ema = make_ema(_scalar_net(1.0))
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    ema_update_(ema, _scalar_net(3.0), decay=0.99)
    assert ema.module.weight.item() == 3.0


def test_buffers_are_averaged_and_integer_buffers_copied():
    student = nn.BatchNorm1d(2)
    ema = make_ema(student)
    ema_update_(ema, student, 0.0)
    with torch.no_grad():
        student.running_mean.fill_(10.0)
        student.num_batches_tracked.fill_(7)
    ema_update_(ema, student, decay=0.75)
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 2.5))
    assert ema.module.num_batches_tracked.item() == 7


def test_decay_one_is_no_update_and_bad_decay_rejected():
    ema = make_ema(_scalar_net(1.0))
    ema.n_averaged.fill_(1)
    ema_update_(ema, _scalar_net(9.0), decay=1.0)
    assert ema.module.weight.item() == 1.0
    with pytest.raises(ValueError, match="decay must be in"):
        ema_update_(ema, _scalar_net(9.0), decay=1.5)


def test_swa_is_equal_weight_mean():
    swa = make_swa(_scalar_net(0.0))
    for v in (1.0, 2.0, 6.0):
        swa.update_parameters(_scalar_net(v))
    assert swa.module.weight.item() == pytest.approx(3.0)
    assert int(swa.n_averaged) == 3
