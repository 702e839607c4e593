"""Speed protocol pieces: trainer:configuration parsing, per-trainer targets from one batch, the table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nnunet_ext.benchmark.speed import (
    SpeedResult,
    TrainerConfig,
    format_speed_table,
    full_resolution_target,
    parse_pairs,
    target_for,
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
