"""The one deep-supervision weighting: exact values, DDP rule, output count rule, nnU-Net wrapper combination."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from nnunet_ext.losses import (
    NoiseRobustDiceLoss,
    deep_supervision_weights,
    num_deep_supervision_outputs,
    wrap_deep_supervision,
)


def test_five_outputs_exact_values():
    np.testing.assert_allclose(deep_supervision_weights(5), [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(deep_supervision_weights(5)[:4], [0.5333333, 0.2666667, 0.1333333, 0.0666667], atol=1e-7)


def test_ddp_gives_last_output_1e_minus_6_before_normalisation():
    raw = np.array([1.0, 0.5, 0.25, 0.125, 1e-6])
    np.testing.assert_allclose(deep_supervision_weights(5, ddp=True), raw / raw.sum(), rtol=1e-15)
    assert deep_supervision_weights(5, ddp=True)[-1] > 0
    assert deep_supervision_weights(3, ddp=True).sum() == pytest.approx(1.0)


def test_small_counts_and_spec_examples():
    np.testing.assert_array_equal(deep_supervision_weights(1), [1.0])
    np.testing.assert_array_equal(deep_supervision_weights(1, ddp=True), [1.0])
    np.testing.assert_allclose(deep_supervision_weights(3), [2 / 3, 1 / 3, 0.0])  # METHODS.md §5.5
    np.testing.assert_allclose(deep_supervision_weights(4), [4 / 7, 2 / 7, 1 / 7, 0.0])


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3"])
def test_bad_counts_raise(bad):
    with pytest.raises(ValueError, match=f"num_outputs must be a positive integer, got {bad!r}"):
        deep_supervision_weights(bad)


@pytest.mark.parametrize(
    "strides",
    [
        [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
        [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 1]],
        [1, 2, 2],
    ],
)
def test_output_count_follows_nnunet_scales(strides):
    # nnU-Net: scales = 1 / cumprod(strides), last dropped.
    nnunet_scales = list(1 / np.cumprod(np.vstack(strides), axis=0))[:-1]
    assert num_deep_supervision_outputs(strides) == len(nnunet_scales) == len(strides) - 1


def test_single_stage_strides_raise():
    with pytest.raises(ValueError, match=r"at least 2 stages in strides, got \[\[1, 1\]\]"):
        num_deep_supervision_outputs([[1, 1]])


@pytest.mark.parametrize("ddp", [False, True])
def test_wrapper_is_nnunets_and_combines_outputs_by_hand(ddp):
    gen = torch.Generator().manual_seed(0)
    sizes = (16, 8, 4)
    outputs = [torch.randn(2, 3, s, s, generator=gen) for s in sizes]
    targets = [torch.randint(0, 3, (2, 1, s, s), generator=gen) for s in sizes]
    loss = NoiseRobustDiceLoss()
    wrapped = wrap_deep_supervision(loss, num_outputs=3, ddp=ddp)
    assert isinstance(wrapped, DeepSupervisionWrapper)
    weights = deep_supervision_weights(3, ddp=ddp)
    by_hand = sum(float(w) * loss(o, t) for w, o, t in zip(weights, outputs, targets))
    got = wrapped(outputs, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, by_hand)
    if not ddp:
        torch.testing.assert_close(got, 2 / 3 * loss(outputs[0], targets[0]) + 1 / 3 * loss(outputs[1], targets[1]))
