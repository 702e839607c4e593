"""ADELE early-learning label correction (issue 13): curve fit and trigger on synthetic curves with hand-checked
epochs, the relabelling rule, the multi-scale consistency term, and the add-on in a real nnU-Net trainer (IoU of the
training batches, a correction pass, trusted cases, checkpoint round trip, one label source shared with the spatial
correction)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import make_trainer, random_batch

from nnunet_ext.training import label_source
from nnunet_ext.training.early_learning import (
    EarlyLearningConfig,
    epoch_iou,
    fit_iou_curve,
    iou_curve,
    iou_curve_derivative,
    multiscale_consistency,
    relabel_label_map,
    relabel_regions,
    scaled_size,
    should_trigger,
    update_epoch,
)

# --- curve fit and trigger ---------------------------------------------------------------------------------------


def _first_trigger(iou, r=0.9, horizon=100, min_epochs=3):
    """The first epoch t (1-based) at which the history up to t triggers, or None."""
    return next((t for t in range(1, len(iou) + 1) if should_trigger(iou[:t], r, horizon, min_epochs)), None)


def test_derivative_is_that_of_the_curve():
    x = np.array([1.0, 2.5, 7.0])
    for params in [(0.8, 1.0, 5.0), (0.9, 0.5, 2.0)]:
        h = 1e-6
        numeric = (iou_curve(x + h, *params) - iou_curve(x - h, *params)) / (2 * h)
        np.testing.assert_allclose(iou_curve_derivative(x, *params), numeric, rtol=1e-4)


@pytest.mark.parametrize("params", [(0.8, 1.0, 5.0), (0.9, 0.5, 2.0), (0.6, 0.7, 3.0)])
def test_fit_recovers_noise_free_curves(params):
    y = iou_curve(np.arange(1, 9, dtype=float), *params)
    np.testing.assert_allclose(fit_iou_curve(y), params, rtol=1e-3)


def test_update_epoch_closed_form_for_b_1():
    # b = 1: f'(e) / f'(1) = exp(-(e - 1) / c), so rel(e) = 1 - exp(-(e - 1) / c) > r  <=>  e > 1 + c ln(1 / (1 - r))
    for c, r in [(5.0, 0.9), (2.0, 0.9), (5.0, 0.5), (10.0, 0.95)]:
        expected = math.floor(1 + c * math.log(1 / (1 - r))) + 1
        assert update_epoch((0.8, 1.0, c), r, horizon=1000) == expected
    assert update_epoch((0.8, 1.0, 5.0), 0.9, horizon=1000) == 13  # 1 + 5 ln 10 = 12.51
    assert update_epoch((0.8, 1.0, 5.0), 0.9, horizon=10) == 10  # never within the horizon: capped by it
    assert update_epoch((0.0, 1.0, 5.0), 0.9, horizon=100) is None  # f'(1) = 0: no trigger [D]


def test_trigger_epochs_of_synthetic_curves_are_the_hand_checked_ones():
    # f(.; 0.8, 1, 5): rel(12) = 1 - exp(-11/5) = 0.889 <= 0.9 < rel(13) = 1 - exp(-12/5) = 0.909
    assert _first_trigger(iou_curve(np.arange(1, 31, dtype=float), 0.8, 1.0, 5.0)) == 13
    # f(.; 0.9, 0.5, 2): rel(e) = 1 - exp(-(sqrt(e) - 1) / 2) / sqrt(e): rel(10) = 0.893, rel(11) = 0.905
    assert _first_trigger(iou_curve(np.arange(1, 31, dtype=float), 0.9, 0.5, 2.0)) == 11
    # a larger r waits longer: rel(e) > 0.95 <=> e > 1 + 5 ln 20 = 15.98
    assert _first_trigger(iou_curve(np.arange(1, 31, dtype=float), 0.8, 1.0, 5.0), r=0.95) == 16
    # min_epochs holds the fit back even when the curve is already flat
    flat_early = iou_curve(np.arange(1, 31, dtype=float), 0.8, 1.0, 0.5)  # 1 + 0.5 ln 10 = 2.15 -> epoch 3
    assert _first_trigger(flat_early, min_epochs=3) == 3
    assert _first_trigger(flat_early, min_epochs=6) == 6


def test_noisy_curve_triggers_near_the_noise_free_epoch():
    rng = np.random.default_rng(0)
    y = iou_curve(np.arange(1, 31, dtype=float), 0.8, 1.0, 5.0) + rng.normal(0, 0.005, 30)
    assert 11 <= _first_trigger(y) <= 15


def test_no_trigger_on_linear_or_empty_curves():
    assert _first_trigger(0.01 * np.arange(1, 21, dtype=float), horizon=1000) is None  # still rising steadily
    assert _first_trigger(np.zeros(20)) is None  # the class is never predicted
    assert fit_iou_curve([0.1, float("nan"), 0.3]) is None


def test_epoch_iou():
    np.testing.assert_allclose(epoch_iou([3, 0, 0], [4, 0, 2], [5, 0, 1]), [3 / 6, 0.0, 0.0])


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="tau must be in"):
        EarlyLearningConfig(tau=0.3)
    with pytest.raises(ValueError, match="r must be in"):
        EarlyLearningConfig(r=1.0)
    with pytest.raises(ValueError, match="min_epochs must be an integer >= 2"):
        EarlyLearningConfig(min_epochs=1)
    with pytest.raises(ValueError, match="force_trigger_epoch"):
        EarlyLearningConfig(force_trigger_epoch=0)
    assert EarlyLearningConfig(multiscale_scales=[0.5, 2]).multiscale_scales == (0.5, 2.0)  # JSON list -> tuple


# --- relabelling ---------------------------------------------------------------------------------------------------

# voxels v0..v5, classes 0, 1, 2 (columns are voxels)
PROBS = np.array(
    [
        [0.10, 0.15, 0.90, 0.05, 0.05, 0.05],
        [0.80, 0.70, 0.05, 0.05, 0.90, 0.90],
        [0.10, 0.15, 0.05, 0.90, 0.05, 0.05],
    ]
)


def test_relabel_label_map_only_confident_voxels_of_due_classes():
    label = np.array([0, 0, 1, 0, 2, -1], dtype=np.int16)
    # v0 -> 1 (p 0.8 > 0.7); v1 stays (p 0.7 is not above tau); v2 -> 0; v3 stays (class 2 not due); v4 stays (its
    # label 2 is not due); v5 stays (outside nnU-Net's mask)
    got = relabel_label_map(PROBS, label, due=[1], tau=0.7)
    np.testing.assert_array_equal(got, [1, 0, 0, 0, 2, -1])
    assert got.dtype == label.dtype
    np.testing.assert_array_equal(relabel_label_map(PROBS, label, due=[1, 2], tau=0.7), [1, 0, 0, 2, 1, -1])
    np.testing.assert_array_equal(relabel_label_map(PROBS, label, due=[1], tau=0.85), [0, 0, 0, 0, 2, -1])
    np.testing.assert_array_equal(relabel_label_map(PROBS, label, due=[], tau=0.7), label)


def test_relabel_class_constraint_does_not_add_absent_classes():
    label = np.array([0, 0, 0, 0, 2, -1], dtype=np.int16)  # no class 1 in this case
    np.testing.assert_array_equal(relabel_label_map(PROBS, label, [1, 2], 0.7), [0, 0, 0, 2, 2, -1])
    np.testing.assert_array_equal(
        relabel_label_map(PROBS, label, [1, 2], 0.7, class_constraint=False), [1, 0, 0, 2, 1, -1]
    )


def test_relabel_regions():
    regions, order = [(1, 2), (2,)], [1, 2]
    label = np.array([0, 1, 2, 2, 0, -1], dtype=np.int16)
    probs = np.array([[0.8, 0.2, 0.5, 0.9, 0.6, 0.9], [0.9, 0.1, 0.1, 0.5, 0.9, 0.9]])
    # region 0 ({1, 2}): v0 added (0.8 > 0.7), v1 removed (0.2 < 0.3), the rest uncertain or unchanged
    np.testing.assert_array_equal(relabel_regions(probs, label, regions, order, [0], 0.7), [1, 0, 2, 2, 0, -1])
    # region 1 ({2}): v0 and v4 added (-> label 2), v2 removed (-> label 1: still in region 0)
    np.testing.assert_array_equal(relabel_regions(probs, label, regions, order, [1], 0.7), [2, 1, 1, 2, 2, -1])
    no_region_1 = np.array([0, 1, 1, 0, 0, -1], dtype=np.int16)
    np.testing.assert_array_equal(relabel_regions(probs, no_region_1, regions, order, [1], 0.7), no_region_1)


# --- multi-scale consistency ---------------------------------------------------------------------------------------


def _kl(p, m):
    return sum(a * math.log(a / b) for a, b in zip(p, m))


def test_multiscale_consistency_hand_computed():
    # two voxels, two scales; voxel 0: (0.95, 0.05) and (0.85, 0.15), mixture (0.9, 0.1) >= rho 0.8 counts;
    # voxel 1: (0.5, 0.5) and (0.6, 0.4), mixture (0.55, 0.45) < 0.8 is masked out; the mean runs over both voxels
    p = [torch.tensor([[0.95, 0.5], [0.05, 0.5]]), torch.tensor([[0.85, 0.6], [0.15, 0.4]])]
    logits = [q.log().view(1, 2, 2, 1).double() for q in p]
    expected = (_kl((0.95, 0.05), (0.9, 0.1)) + _kl((0.85, 0.15), (0.9, 0.1))) / 2
    assert multiscale_consistency(logits, regions=False, threshold=0.8).item() == pytest.approx(expected, rel=1e-5)
    # the same two-class distributions as one sigmoid channel
    sig = [torch.logit(q[0]).view(1, 1, 2, 1) for q in p]
    assert multiscale_consistency(sig, regions=True, threshold=0.8).item() == pytest.approx(expected, rel=1e-5)
    same = torch.randn(2, 3, 4, 4)
    assert multiscale_consistency([same, same.clone(), same.clone()], False, 0.0).item() == pytest.approx(0, abs=1e-7)


def test_scaled_size_is_a_multiple_of_the_stride():
    assert scaled_size([64, 96], 0.7, [32, 16]) == [32, 64]  # 44.8 -> 32, 67.2 -> 64
    assert scaled_size([64, 96], 1.5, [32, 16]) == [96, 144]
    assert scaled_size([20], 0.1, [16]) == [16]


# --- in a real trainer ---------------------------------------------------------------------------------------------

SHORT = {"num_epochs": 3, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1, "save_every": 1}


def _early_learning(trainer):
    return next(a for a in trainer.ext_addons if a.config_key == "early_learning")


def _fresh_output(trainer) -> None:
    shutil.rmtree(label_source.corrected_root(trainer), ignore_errors=True)  # folders of earlier tests


def _seg(folder: Path, case: str) -> np.ndarray:
    import blosc2

    return np.asarray(blosc2.open(urlpath=str(Path(folder) / f"{case}_seg.b2nd"), mode="r"))


def test_batch_iou_counts_and_log_keys(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "EarlyLearningTrainer")
    el = _early_learning(trainer)
    assert [c.name for c in el.classes] == ["lesion"]
    assert set(el.log_keys) == {"ext_early_learning_triggered", "ext_iou_lesion"}
    # argmax: [[1, 0], [1, 1]] against labels [[1, 1], [0, 1]] -> TP 2, P 3, T 3
    out = torch.tensor([[[[0.0, 2.0], [0.0, -1.0]], [[1.0, 0.0], [3.0, 0.0]]]])
    tgt = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    counts = el._batch_counts(trainer, out, tgt)
    assert counts.tolist() == [[2.0], [3.0], [3.0]]
    el.on_train_epoch_start(trainer)
    el.extra_loss(trainer, None, [out, out[:, :, :1, :1]], [tgt, tgt[:, :, :1, :1]], None)  # full resolution only
    el.extra_loss(trainer, None, out, tgt, None)
    el.on_train_epoch_end(trainer)
    assert el.history["lesion"] == [pytest.approx(4 / (6 + 6 - 4))]
    assert trainer.logger.get_value("ext_iou_lesion", step=0) == pytest.approx(0.5)


def test_trigger_in_the_trainer_at_the_hand_checked_epoch(tiny_lesion_2d):
    trainer = make_trainer(tiny_lesion_2d, "EarlyLearningTrainer", num_epochs=100)
    el = _early_learning(trainer)
    curve = iou_curve(np.arange(1, 14, dtype=float), 0.8, 1.0, 5.0).tolist()
    el.history["lesion"] = curve[:12]
    trainer.current_epoch = 11
    assert el._decide_triggers(trainer) == [] and el.triggered == {}
    el.history["lesion"] = curve
    trainer.current_epoch = 12
    assert el._decide_triggers(trainer) == ["lesion"] and el.triggered == {"lesion": 12}
    np.testing.assert_allclose(el.fits["lesion"], [0.8, 1.0, 5.0], rtol=1e-3)
    # corrected at the trigger and every correct_every (10) epochs after it
    assert [e for e in range(12, 40) if el.due_classes(e)] == [12, 22, 32]


def test_correction_pass_relabels_training_cases_and_keeps_trusted_ones_then_round_trips(tiny_lesion_2d, tmp_path):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_ext.trusted import clear_trusted, save_trusted

    ds = tiny_lesion_2d
    probe = make_trainer(ds, "EarlyLearningTrainer")
    tr_keys, val_keys = (sorted(k) for k in probe.do_split())
    trusted = tr_keys[0]
    save_trusted(ds.name, [trusted])
    try:
        trainer = make_trainer(ds, "EarlyLearningTrainer", **SHORT)
    finally:
        clear_trusted(ds.name)
    _fresh_output(trainer)
    el = _early_learning(trainer)
    assert el.trusted_in_training == [trusted]
    source = Path(trainer.preprocessed_dataset_folder)
    trainer.on_train_start()
    el.on_train_epoch_start(trainer)
    for _ in range(3):
        trainer.train_step(next(trainer.dataloader_train))
    el.on_train_epoch_end(trainer)
    assert len(el.history["lesion"]) == 1 and 0 <= el.history["lesion"][0] <= 1

    # what the pass must produce: nnU-Net's un-mirrored sliding-window softmax, relabelled above tau
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_mirroring=False,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        trainer.network, trainer.plans_manager, trainer.configuration_manager, None, trainer.dataset_json,
        "EarlyLearningTrainer", None,
    )  # fmt: skip
    dataset = trainer.dataset_class(str(source), None)
    expected = {}
    for case in tr_keys[1:]:
        data, seg, _, _ = dataset.load_case(case)
        logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.asarray(data)))
        probabilities = torch.softmax(logits.float(), 0).numpy()
        expected[case] = relabel_label_map(probabilities, np.asarray(seg)[0], [1], 0.7)
    trainer.set_deep_supervision_enabled(True)
    trainer.network.train()

    el.triggered = {"lesion": 0}
    el.run_correction(trainer, ["lesion"])
    folder = label_source.corrected_root(trainer) / "early_learning_epoch0000"
    assert trainer.preprocessed_dataset_folder == str(folder) and el.folder == str(folder)
    manifest = json.loads((folder / label_source.MANIFEST).read_text())
    assert manifest["generation"] == 1 and manifest["parent"] == str(source)
    assert manifest["rewritten_cases"] == tr_keys[1:] and manifest["trusted_kept"] == [trusted]
    changed = 0
    for case in tr_keys[1:]:
        np.testing.assert_array_equal(_seg(folder, case)[0], expected[case])
        changed += int((expected[case] != _seg(source, case)[0]).sum())
        pkl = folder / f"{case}.pkl"
        assert pkl.is_file() and not (source / f"{case}.pkl").samefile(pkl)  # new foreground locations
    assert changed > 0  # the pass did change labels
    for case in [trusted, *val_keys]:  # the trusted training case and the validation cases: linked unchanged
        assert (folder / f"{case}_seg.b2nd").samefile(source / f"{case}_seg.b2nd")
    loader = trainer.dataloader_train
    loader = getattr(loader, "data_loader", None) or loader.generator
    assert loader._data.source_folder == str(folder)

    # checkpoint round trip: history, triggers, corrections and the label source come back
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    fresh = make_trainer(ds, "EarlyLearningTrainer", **SHORT)
    fresh.load_checkpoint(str(path))
    restored = _early_learning(fresh)
    assert restored.state_dict() == el.state_dict()
    assert fresh.preprocessed_dataset_folder == str(folder)
    # a later correction repeated after a kill reuses the finished folder derived from the same source
    assert label_source.reusable(fresh, folder) is False  # fresh trains on it: it is not derived from itself
    assert label_source.reusable(probe, folder) is True
    # the label set is part of the state: a checkpoint without it cannot be continued
    folder.rename(folder.with_name("moved"))
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        make_trainer(ds, "EarlyLearningTrainer", **SHORT).load_checkpoint(str(path))
    folder.with_name("moved").rename(folder)


def test_multiscale_consistency_in_the_training_step(tiny_lesion_2d):
    # rho 0.5: with two classes every voxel enters the term (an untrained network is rarely 0.8-confident)
    block = {"multiscale_weight": 0.5, "multiscale_threshold": 0.5}
    trainer = make_trainer(tiny_lesion_2d, "EarlyLearningTrainer", early_learning=block)
    el = _early_learning(trainer)
    batch = random_batch(trainer)
    output = trainer.network(batch["data"])
    term = el.extra_loss(trainer, batch["data"], output, batch["target"], None)
    assert term.ndim == 0 and torch.isfinite(term) and term.item() > 0 and term.requires_grad
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.network.parameters())
    assert np.isfinite(trainer.train_step(random_batch(trainer, seed=1))["loss"]).all()
    off = make_trainer(tiny_lesion_2d, "EarlyLearningTrainer")
    assert _early_learning(off).extra_loss(off, batch["data"], output, batch["target"], None) is None


def test_the_teacher_predicts_the_correction_pass(tiny_lesion_2d, monkeypatch):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTEarlyLearningTrainer", **SHORT)
    _fresh_output(trainer)
    mt = next(a for a in trainer.ext_addons if a.config_key == "mean_teacher")
    el = _early_learning(trainer)
    trainer.on_train_start()
    used = []
    original = label_source.sliding_window_predictor

    def spy(trainer_, network, tile_step_size):
        used.append(network)
        return original(trainer_, network, tile_step_size)

    monkeypatch.setattr(label_source, "sliding_window_predictor", spy)
    el.run_correction(trainer, ["lesion"])
    assert used == [mt.exported_module()] and used[0] is not trainer.network
    assert trainer.preprocessed_dataset_folder == el.folder


@pytest.mark.slow
def test_composition_with_spatial_correction_uses_one_label_source(tiny_lesion_2d, tmp_path):
    """EarlyLearning corrects after epoch 0; the spatial correction round after epoch 1 starts from those labels (not
    from the preprocessed ones) and re-initialises, which restarts the early-learning history; --c restores the last
    label set whichever add-on restores first."""
    from nnunet_ext.training.base import ExtTrainerBase
    from nnunet_ext.training.correction import SpatialCorrectionConfig

    class EarlyLearningSpatialCorrection(ExtTrainerBase):
        early_learning = EarlyLearningConfig(force_trigger_epoch=1, correct_every=0)
        spatial_correction = SpatialCorrectionConfig(offset_mm=0.0, png_cases=0)

    pre = Path(tiny_lesion_2d.dirs.preprocessed) / tiny_lesion_2d.name
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["configurations"]["2d"]["nnunet_ext"] = SHORT

    def build():
        trainer = EarlyLearningSpatialCorrection(
            plans={**plans, "continue_training": False},  # nnU-Net pops the key
            configuration="2d",
            fold=0,
            dataset_json=json.loads((pre / "dataset.json").read_text()),
            device=torch.device("cpu"),
        )
        trainer.initialize()
        return trainer

    trainer = build()
    _fresh_output(trainer)
    source = trainer.preprocessed_dataset_folder
    trainer.run_training()
    el = _early_learning(trainer)
    sc = next(a for a in trainer.ext_addons if a.config_key == "spatial_correction")
    root = label_source.corrected_root(trainer)
    first, second = root / "early_learning_epoch0000", root / "round_0"
    assert [c["folder"] for c in el.corrections] == [str(first)] and sc.folder == str(second)
    assert label_source.read_manifest(first)["parent"] == source
    assert label_source.read_manifest(second)["parent"] == str(first)  # the round corrected ADELE's labels
    assert [label_source.generation(f) for f in (source, first, second)] == [0, 1, 2]
    assert trainer.preprocessed_dataset_folder == str(second)
    assert el.history_start == 2 and el.triggered == {"lesion": 2}  # restarted by the re-initialisation

    final = Path(trainer.output_folder) / "checkpoint_final.pth"
    resumed = build()
    resumed.load_checkpoint(str(final))
    assert resumed.preprocessed_dataset_folder == str(second)
    label_source.restore(resumed, str(first))  # an earlier label set restored later does not win
    assert resumed.preprocessed_dataset_folder == str(second)
