"""The trainer's own loss on a saved prediction: nnU-Net's Dice + CE and a plugin loss against hand-computed values,
the probability-to-logit transforms, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.audit.loss import PROBABILITY_EPS, TrainerLoss, build_trainer_loss, case_loss, loss_inputs

P1 = np.array([[0.9, 0.2, 0.6], [0.1, 0.7, 0.3]], dtype=np.float32)  # foreground probability of a 2 x 3 image
LABEL = np.array([[1, 0, 1], [0, 0, 1]], dtype=np.uint8)
PROBS = np.stack([1 - P1, P1])


@pytest.fixture(scope="module")
def plans_2d(tiny_lesion_2d):
    from nnunetv2.paths import nnUNet_preprocessed

    pre = Path(nnUNet_preprocessed.require()) / tiny_lesion_2d.name
    return json.loads((pre / "nnUNetPlans.json").read_text()), json.loads((pre / "dataset.json").read_text())


def _ce(p1: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean(-np.log(np.where(label == 1, p1, 1 - p1))))


def test_stock_loss_is_ce_minus_nnunet_soft_dice(plans_2d):
    plans, dataset_json = plans_2d
    loss = build_trainer_loss("nnUNetTrainer", plans, dataset_json, "2d")
    assert loss.nonlin == "softmax" and loss.num_channels == 2 and loss.classes == (1,)
    assert "DC_and_CE_loss" in loss.description and "no deep supervision" in loss.description
    value, source = case_loss(loss, LABEL, (P1 > 0.5).astype(np.uint8), PROBS)
    g = LABEL == 1
    soft_dice = (2 * np.sum(P1 * g) + 1e-5) / (np.sum(P1) + np.sum(g) + 1e-5)  # nnU-Net: smooth 1e-5, no background
    assert source == "probabilities"
    assert value == pytest.approx(_ce(P1, LABEL) - soft_dice, rel=1e-5)

    prediction = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.uint8)  # 2 of 6 voxels contradict the label
    value, source = case_loss(loss, LABEL, prediction, None)
    p_hard = np.where(prediction == 1, 1.0, PROBABILITY_EPS) / (1 + PROBABILITY_EPS)
    hard_dice = (2 * np.sum(p_hard * g) + 1e-5) / (np.sum(p_hard) + np.sum(g) + 1e-5)
    assert source == "one_hot"
    assert value == pytest.approx(_ce(p_hard, LABEL) - hard_dice, rel=1e-5)
    assert _ce(p_hard, LABEL) == pytest.approx(2 / 6 * -math.log(PROBABILITY_EPS), rel=1e-4)


def test_plugin_loss_is_built_without_initialize(plans_2d):
    plans, dataset_json = plans_2d
    loss = build_trainer_loss("NRDiceTrainer", plans, dataset_json, "2d")
    assert "'noise_robust_dice'" in loss.description and "'gamma': 1.5" in loss.description
    value, source = case_loss(loss, LABEL, LABEL, PROBS)
    g = (LABEL == 1).astype(np.float64)
    expected = np.sum(np.abs(P1 - g) ** 1.5) / (np.sum(P1) + np.sum(g) + 1e-5)  # linear denominator, foreground
    assert source == "probabilities" and value == pytest.approx(expected, rel=1e-5)


def test_probabilities_become_logits_that_give_them_back():
    softmax = TrainerLoss(None, "softmax", 2, (1,), "")
    logits, target, source = loss_inputs(softmax, LABEL, LABEL, PROBS[:, None])  # (C, 1, H, W) as nnU-Net's npz
    assert logits.shape == (1, 2, 2, 3) and target.shape == (1, 1, 2, 3) and source == "probabilities"
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy()[0], PROBS, rtol=1e-6)

    regions = TrainerLoss(None, "sigmoid", 2, ((1, 2), 2), "")
    seg = np.array([[0, 1, 2], [2, 0, 1]], dtype=np.uint8)
    p = np.stack([P1, np.full_like(P1, 0.0)])  # an exact 0 is clipped to eps
    logits, target, _ = loss_inputs(regions, seg, seg, p)
    np.testing.assert_allclose(
        torch.sigmoid(torch.from_numpy(logits)).numpy()[0], np.clip(p, 1e-6, 1 - 1e-6), rtol=1e-4
    )
    np.testing.assert_array_equal(target[0], np.stack([seg > 0, seg == 2]).astype(np.float32))
    logits, _, source = loss_inputs(regions, seg, seg, None)  # one-hot regions of the prediction
    assert source == "one_hot"
    np.testing.assert_array_equal(logits[0] > 0, np.stack([seg > 0, seg == 2]))

    with pytest.raises(ValueError, match="do not fit 2 channels"):
        loss_inputs(softmax, LABEL, LABEL, np.zeros((3, 2, 3), np.float32))


def test_unknown_trainer_is_refused(plans_2d):
    plans, dataset_json = plans_2d
    with pytest.raises(ValueError, match="trainer 'NoSuchTrainer' not found"):
        build_trainer_loss("NoSuchTrainer", plans, dataset_json, "2d")
