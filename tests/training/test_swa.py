import math

import pytest
import torch
from torch import nn

from nnunet_ext.training.swa import CycleCosineLR, SWAConfig, SWAPhase, cycle_lr, update_bn_from_loader


def test_cycle_lr_matches_open_brats_values():
    # lr0 = 1e-4 / 2, T_max = 40: 5e-5 -> 4.27e-5 (e = 10) -> 2.5e-5 (e = 20) -> 8.76e-6 (e = 29)
    assert cycle_lr(5e-5, 0, 40) == pytest.approx(5e-5)
    assert cycle_lr(5e-5, 10, 40) == pytest.approx(4.2678e-5, rel=1e-4)
    assert cycle_lr(5e-5, 20, 40) == pytest.approx(2.5e-5)
    assert cycle_lr(5e-5, 29, 40) == pytest.approx(5e-5 * 0.5 * (1 + math.cos(math.pi * 29 / 40)))


def test_cycle_scheduler_follows_nnunet_step_interface():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CycleCosineLR(opt, base_lr=0.5, start_epoch=100, t_max=40)
    sched.step(120)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)


def test_swa_defaults_give_51_snapshots_over_150_epochs():
    cfg = SWAConfig()
    phase = SWAPhase(cfg)
    assert phase.extra_epochs == 150
    per_cycle = sum((e + 1) % cfg.snapshot_every == 0 for e in range(cfg.cycle_epochs))
    assert 1 + cfg.cycles * per_cycle == 51
    with pytest.raises(ValueError, match="cycles must be >= 1"):
        SWAConfig(cycles=0)


def test_update_bn_recomputes_running_statistics_as_cumulative_mean():
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    batches = iter([{"data": torch.full((2, 1, 4, 4), v)} for v in (1.0, 3.0, 8.0)])
    net.eval()
    update_bn_from_loader(net, batches, torch.device("cpu"), num_batches=3)
    assert net[1].running_mean.item() == pytest.approx(4.0)  # mean of the three batch means
    assert net[1].momentum == 0.1 and not net.training  # restored
