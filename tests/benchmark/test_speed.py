"""Speed protocol pieces: trainer:configuration parsing, per-trainer targets from one batch, the teacher-forward
floor, the table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nnunet_ext.benchmark.speed import (
    SpeedResult,
    TrainerConfig,
    floors,
    format_speed_table,
    full_resolution_target,
    parse_pairs,
    target_for,
    time_forward,
    time_trainers,
)


def test_reference_is_added_first():
    pairs = parse_pairs(["NRDiceAdaptiveMTTrainer:2d_coplenet", "NRDiceTrainer"], "2d")
    assert pairs == [
        TrainerConfig("nnUNetTrainer", "2d"),
        TrainerConfig("NRDiceAdaptiveMTTrainer", "2d_coplenet"),
        TrainerConfig("NRDiceTrainer", "2d"),
    ]


def test_listed_reference_moves_first():
    pairs = parse_pairs(["A", "nnUNetTrainer:3d_fullres"], "3d_fullres")
    assert pairs == [TrainerConfig("nnUNetTrainer", "3d_fullres"), TrainerConfig("A", "3d_fullres")]


def test_stock_trainer_on_another_configuration_is_not_the_reference():
    pairs = parse_pairs(["nnUNetTrainer:2d_coplenet", "A"], "2d")
    assert pairs == [
        TrainerConfig("nnUNetTrainer", "2d"),
        TrainerConfig("nnUNetTrainer", "2d_coplenet"),
        TrainerConfig("A", "2d"),
    ]


@pytest.mark.parametrize("entry", ["A:", ":2d"])
def test_bad_entries(entry):
    with pytest.raises(ValueError, match="bad trainer entry"):
        parse_pairs([entry], "2d")


def test_duplicate_entries():
    with pytest.raises(ValueError, match="listed twice"):
        parse_pairs(["A", "A:2d"], "2d")


def test_targets_follow_each_trainers_deep_supervision():
    full = (torch.rand(2, 1, 8, 8) > 0.5).to(torch.int16)
    assert full_resolution_target([full, full[..., ::2, ::2]]) is full
    no_ds = SimpleNamespace(enable_deep_supervision=False)
    assert target_for(no_ds, full) is full
    ds = SimpleNamespace(
        enable_deep_supervision=True, _get_deep_supervision_scales=lambda: [[1, 1], [0.5, 0.5], [0.25, 0.25]]
    )
    targets = target_for(ds, full)
    assert [tuple(t.shape) for t in targets] == [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    assert targets[0] is full and targets[1].dtype == torch.int16
    # nearest-exact picks the centre-most voxel of each 2x2 block: index 1 of 0..1 (as nnU-Net's DS transform)
    torch.testing.assert_close(targets[1], full[..., 1::2, 1::2])


def test_table_ratios_against_the_first_row():
    results = [
        SpeedResult(TrainerConfig("nnUNetTrainer", "2d"), (100.0, 110.0, 90.0), (50.0,)),
        SpeedResult(TrainerConfig("NRDiceAdaptiveMTTrainer", "2d"), (130.0, 120.0, 140.0), (55.0,)),
    ]
    lines = format_speed_table(results).splitlines()
    assert lines[0].split("  ")[0].strip() == "trainer:configuration"
    assert "ratio to nnUNetTrainer" in lines[0] and "inference ratio" in lines[0]
    assert lines[2].split()[:5] == ["nnUNetTrainer:2d", "(reference)", "100.0", "10.0", "1.00"]
    assert lines[3].split()[:4] == ["NRDiceAdaptiveMTTrainer:2d", "130.0", "10.0", "1.30"]
    assert lines[3].split()[-2:] == ["55.0", "1.10"]


def test_table_prints_f_and_floor_next_to_the_ratio():
    results = [
        SpeedResult(TrainerConfig("nnUNetTrainer", "2d"), (100.0, 110.0, 90.0), (50.0,), (30.0, 29.0, 31.0)),
        SpeedResult(TrainerConfig("NRDiceAdaptiveMTTrainer", "2d"), (130.0, 120.0, 140.0), (55.0,), (30.0,)),
    ]
    lines = format_speed_table(results).splitlines()
    header = lines[0]
    assert header.index("ratio to nnUNetTrainer") < header.index("f ") < header.index("floor (1+f)")
    assert header.index("floor (1+f)") < header.index("ms/case inference (median)")  # old columns kept, in order
    assert lines[3].split()[:6] == ["NRDiceAdaptiveMTTrainer:2d", "130.0", "10.0", "1.30", "0.300", "1.30"]
    assert lines[3].split()[-2:] == ["55.0", "1.10"]


def test_floor_is_relative_to_the_stock_step_of_the_rows_configuration():
    ref = SpeedResult(TrainerConfig("nnUNetTrainer", "2d"), (100.0,), None, (30.0,))
    mt = SpeedResult(TrainerConfig("NRDiceAdaptiveMTTrainer", "2d"), (135.0,), None, (31.0,))
    stock_c = SpeedResult(TrainerConfig("nnUNetTrainer", "2d_coplenet"), (200.0,), None, (50.0,))
    mt_c = SpeedResult(TrainerConfig("NRDiceAdaptiveMTTrainer", "2d_coplenet"), (260.0,), None, (50.0,))
    mt_other = SpeedResult(TrainerConfig("NRDiceAdaptiveMTTrainer", "2d_other"), (150.0,), None, (40.0,))
    untimed = SpeedResult(TrainerConfig("NRDiceTrainer", "2d"), (99.0,), None)
    got = floors([ref, mt, stock_c, mt_c, mt_other, untimed])
    assert (got[0].f, got[0].floor, got[0].base) == (pytest.approx(0.30), pytest.approx(1.30), ref.pair)
    assert (got[1].f, got[1].floor) == (pytest.approx(0.31), pytest.approx(1.31))
    # like for like: 2d_coplenet rows against stock 2d_coplenet (200 ms); floor (200 + 50) / 100
    assert (got[3].f, got[3].floor, got[3].base) == (pytest.approx(0.25), pytest.approx(2.5), stock_c.pair)
    # no stock row for 2d_other: the reference's step stands in
    assert (got[4].f, got[4].floor, got[4].base) == (pytest.approx(0.40), pytest.approx(1.40), ref.pair)
    assert got[5] is None
    row = format_speed_table([ref, untimed]).splitlines()[3].split()
    assert row[4:6] == ["-", "-"]


def test_table_without_forward_timings_keeps_the_old_columns():
    results = [SpeedResult(TrainerConfig("nnUNetTrainer", "2d"), (100.0,), None)]
    assert "floor" not in format_speed_table(results) and "f " not in format_speed_table(results).splitlines()[0]


class _Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.conv(x)


def test_time_forward_runs_the_network_as_the_teacher_and_restores_training_mode():
    probe = _Probe().train()
    trainer = SimpleNamespace(network=probe, device=torch.device("cpu"))
    ms = time_forward(trainer, torch.zeros(2, 1, 8, 8))
    assert ms > 0 and probe.seen == [(False, False)]  # eval mode, no gradients
    assert probe.training
    probe.eval()
    time_forward(trainer, torch.zeros(2, 1, 8, 8))
    assert not probe.training  # the mode it had is restored, whatever it was


def test_time_forward_reads_the_given_clock():
    ticks = iter([1.0, 1.25])
    trainer = SimpleNamespace(network=_Probe(), device=torch.device("cpu"))
    assert time_forward(trainer, torch.zeros(1, 1, 4, 4), clock=lambda: next(ticks)) == pytest.approx(250.0)


@pytest.mark.parametrize(
    ("clock", "device", "match"), [("gpu", "cpu", "clock must be one of"), ("cpu", "mps", "CPU work only")]
)
def test_bad_clocks_are_refused_before_any_work(clock, device, match):
    with pytest.raises(ValueError, match=match):
        time_trainers("Dataset999_Missing", [TrainerConfig("nnUNetTrainer", "2d")], device=device, clock=clock)
