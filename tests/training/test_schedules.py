import math

import numpy as np
import pytest
import torch

from nnunet_ext.training.schedules import (
    PercentileGate,
    adaptive_consistency_weight,
    constant_then_cosine,
    ema_decay,
    sigmoid_rampup,
)


def test_ema_decay_warmup_and_switch():
    assert ema_decay(0, 0, 100) == 0.0  # teacher becomes a copy
    assert ema_decay(1, 0, 100) == 0.5
    assert ema_decay(9, 0, 100) == pytest.approx(0.9)
    assert ema_decay(10_000, 9, 100) == 0.99  # e < 0.1 E
    assert ema_decay(10_000, 10, 100) == 0.999  # switch exactly at e = 0.1 E
    assert ema_decay(500, 50, 100) == pytest.approx(1 - 1 / 501)  # warm-up still binding below alpha'
    with pytest.raises(ValueError, match="step must be >= 0"):
        ema_decay(-1, 0, 10)


def test_gate_no_gating_before_window_and_current_excluded():
    gate = PercentileGate(window=100, q=90.0)
    for i in range(99):
        assert gate.allows_update(1e6 + i)  # huge losses pass while fewer than 100 are collected
    assert not gate.warmed_up
    assert gate.allows_update(5e6)  # the 100th value: history had 99 values, still no gating
    assert gate.warmed_up and len(gate.history) == 100


def test_gate_threshold_is_numpy_percentile_of_previous_values():
    gate = PercentileGate(window=100, q=90.0)
    gate.extend(range(100))  # 0..99
    beta = np.percentile(np.arange(100), 90)  # 89.1, linear interpolation
    assert gate.threshold() == pytest.approx(89.1) == pytest.approx(beta)
    assert gate.allows_update(89.0)  # below beta: update; 89.0 joins, 0 drops out
    assert gate.history[0] == 1 and gate.history[-1] == 89.0
    new_beta = np.percentile(np.array(list(range(1, 100)) + [89.0]), 90)
    assert gate.threshold() == pytest.approx(new_beta)
    assert not gate.allows_update(new_beta)  # L_S >= beta: skip (ties are outliers)
    assert not gate.allows_update(1e9)


def test_gate_state_round_trip_and_window_mismatch():
    gate = PercentileGate(window=5)
    gate.extend([1, 2, 3])
    other = PercentileGate(window=5)
    other.load_state_dict(gate.state_dict())
    assert list(other.history) == [1, 2, 3]
    with pytest.raises(ValueError, match="window"):
        PercentileGate(window=6).load_state_dict(gate.state_dict())
    with pytest.raises(ValueError, match="window must be >= 1"):
        PercentileGate(window=0)


@pytest.mark.parametrize(
    ("l_s", "l_t", "rule", "expected"),
    [
        (0.5, 0.4, "prose", 0.1),
        (0.4, 0.5, "prose", 0.01),
        (0.5, 0.5, "prose", 0.01),
        (0.5, 0.4, "eq7", 0.01),
        (0.4, 0.5, "eq7", 0.1),
        (0.5, 0.5, "eq7", 0.01),
    ],
)
def test_adaptive_consistency_weight(l_s, l_t, rule, expected):
    assert adaptive_consistency_weight(l_s, l_t, 0.1, 0.01, rule) == expected
    # the same decision on scalar tensors (the trainer decides on the device, without a host sync)
    lam = adaptive_consistency_weight(torch.tensor(l_s, dtype=torch.float64), torch.tensor(l_t), 0.1, 0.01, rule)
    assert isinstance(lam, torch.Tensor) and lam.ndim == 0 and float(lam) == pytest.approx(expected)


def test_adaptive_consistency_weight_rejects_unknown_rule():
    with pytest.raises(ValueError, match="'prose' or 'eq7'"):
        adaptive_consistency_weight(1, 0, rule="paper")


def test_sigmoid_rampup_closed_form():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 == sigmoid_rampup(500, 100) == sigmoid_rampup(3, 0)


def test_constant_then_cosine():
    assert constant_then_cosine(1e-4, 0, 100) == 1e-4 == constant_then_cosine(1e-4, 49, 100)
    assert constant_then_cosine(1e-4, 50, 100) == pytest.approx(1e-4)
    assert constant_then_cosine(1e-4, 75, 100) == pytest.approx(0.5e-4)
    assert constant_then_cosine(1e-4, 100, 100) == pytest.approx(0.0, abs=1e-12)
