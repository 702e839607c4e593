"""Named trainers: declarations only, found by nnU-Net, no collisions, CPU step and checkpoint round trip."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import make_trainer, random_batch

import nnunet_ext
from nnunet_ext.trainers import nnunet_ext_trainers as declared
from nnunet_ext.training.base import STATE_KEY, STUDENT_KEY, ExtTrainerBase

EXPECTED = {
    # issue 2: one trainer per loss
    "NRDiceTrainer",
    "CETrainer",
    "FocalCETrainer",
    "FocalCE05Trainer",
    "MAETrainer",
    "GCETrainer",
    "DiceTrainer",
    "SorensenDiceTrainer",
    "FocalDiceTrainer",
    "CEDiceTrainer",
    "MAEDiceTrainer",
    # issue 3: self-ensembling ablation and re-weighting
    "DiceMTTrainer",
    "DiceMTAdaTTrainer",
    "DiceMTAdaSTrainer",
    "DiceAdaptiveMTTrainer",
    "NRDiceMTTrainer",
    "NRDiceAdaptiveMTTrainer",
    "DiceReweightTrainer",
    # issue 5: BraTS
    "RegionDiceTrainer",
    "RegionDiceAdamTrainer",
    "RegionDiceSWATrainer",
    "NRDiceSWATrainer",
    "NRDiceAdaptiveMTSWATrainer",
    # issue 14: BraTS pipeline A's Ranger optimizer
    "RegionDiceRangerTrainer",
    "RegionDiceRangerSWATrainer",
    # issue 12: trusted-case spatial label correction
    "SpatialCorrectionTrainer",
    "NRDiceAdaptiveMTSpatialCorrectionTrainer",
    # issue 13: ADELE early-learning label correction
    "EarlyLearningTrainer",
    "NRDiceAdaptiveMTEarlyLearningTrainer",
}
DECLARATION_KEYS = {
    "loss_spec",
    "optimizer_spec",
    "mean_teacher",
    "reweight",
    "spatial_correction",
    "early_learning",
    "swa",
}
PLUGIN_ATTRIBUTES = DECLARATION_KEYS | {"ext_addons", "ext_loss_spec", "_ext_validation_swap"}


def _named_trainers() -> dict[str, type]:
    return {
        n: c
        for n, c in vars(declared).items()
        if isinstance(c, type) and issubclass(c, ExtTrainerBase) and c is not ExtTrainerBase
    }


def _nnunet_trainer_sources() -> list[Path]:
    import nnunetv2

    return sorted((Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer").rglob("*.py"))


def test_exact_trainer_names():
    assert set(_named_trainers()) == EXPECTED


def test_trainers_are_declarations_only():
    for name, cls in _named_trainers().items():
        own = {k for k in vars(cls) if not (k.startswith("__") and k.endswith("__"))}
        assert own <= DECLARATION_KEYS, f"{name} defines {own - DECLARATION_KEYS}"
        assert "__init__" not in vars(cls)
        assert "__" not in name


def test_no_name_collides_with_nnunet_trainers():
    nnunet_classes = set()
    for path in _nnunet_trainer_sources():
        tree = ast.parse(path.read_text())
        nnunet_classes |= {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    assert "nnUNetTrainer" in nnunet_classes  # the scan works
    assert not (EXPECTED & nnunet_classes)


def test_upstream_never_assigns_plugin_attributes():
    import nnunetv2

    assigned = set()
    for path in Path(nnunetv2.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    assigned.add(node.attr)
    assert "loss" in assigned  # the scan works
    assert not (PLUGIN_ATTRIBUTES & assigned)


def test_found_by_nnunet_lookup(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", nnunet_ext.trainer_folder())
    cls = recursive_find_trainer_class_by_name("NRDiceAdaptiveMTTrainer")
    assert cls is not None and cls.__name__ == "NRDiceAdaptiveMTTrainer"
    assert cls.mean_teacher.adaptive_teacher and cls.mean_teacher.adaptive_student


# --- trainers on a real preprocessed dataset ---------------------------------------------------------------------


# the correction trainers need trusted cases (tests/trainers/test_spatial_correction.py)
LABEL_TRAINERS = sorted(
    EXPECTED
    - {"RegionDiceTrainer", "RegionDiceAdamTrainer", "RegionDiceSWATrainer"}
    - {"RegionDiceRangerTrainer", "RegionDiceRangerSWATrainer"}  # region trainers: tests/training/test_ranger.py
    - {"SpatialCorrectionTrainer", "NRDiceAdaptiveMTSpatialCorrectionTrainer"}
)


@pytest.mark.parametrize("name", LABEL_TRAINERS)
def test_cpu_train_step_changes_weights(tiny_lesion_2d, name):
    trainer = make_trainer(tiny_lesion_2d, name)
    before = [p.detach().clone() for p in trainer.network.parameters()]
    out = trainer.train_step(random_batch(trainer))
    assert np.isfinite(out["loss"]).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.network.parameters()))


def test_region_loss_trainer_refuses_label_dataset(tiny_lesion_2d):
    with pytest.raises(ValueError, match="regions_class_order"):
        make_trainer(tiny_lesion_2d, "RegionDiceTrainer")


def test_plans_block_overrides_and_rejects_unknown_keys(tiny_lesion_2d):
    trainer = make_trainer(
        tiny_lesion_2d,
        "NRDiceAdaptiveMTTrainer",
        num_epochs=7,
        loss={"gamma": 2.0},
        mean_teacher={"consistency_high": 0.2},
    )
    assert trainer.num_epochs == 7
    assert trainer.ext_loss_spec.kwargs["gamma"] == 2.0
    assert trainer.ext_addons[0].config.consistency_high == 0.2
    with pytest.raises(ValueError, match="did you mean 'consistency_high'"):
        make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"consistency_hgh": 0.2})
    with pytest.raises(ValueError, match="did you mean 'num_epochs'"):
        make_trainer(tiny_lesion_2d, "NRDiceTrainer", num_epoch=3)
    with pytest.raises(ValueError, match="does not use"):
        make_trainer(tiny_lesion_2d, "NRDiceTrainer", mean_teacher={"consistency_high": 0.2})


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_mean_teacher_checkpoint_round_trip(tiny_lesion_2d, tmp_path, device):
    """On CUDA this also covers AMP: nnU-Net's grad scaler state travels with the checkpoint."""
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", device, mean_teacher={"gate_window": 2})
    mt = trainer.ext_addons[0]
    for i in range(4):
        trainer.train_step(random_batch(trainer, seed=i))
    teacher = {k: v.clone() for k, v in mt.teacher.module.state_dict().items()}
    student = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)  # teacher is not the student
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)

    saved = torch.load(path, map_location=device, weights_only=False)
    for k in teacher:  # the exported network_weights are the teacher, the student sits under its own key
        assert torch.equal(saved["network_weights"][k], teacher[k])
        assert torch.equal(saved[STUDENT_KEY][k], student[k])
    assert saved[STATE_KEY]["mean_teacher"]["step"] == 4
    if device == "cuda":
        assert saved["grad_scaler_state"] is not None and trainer.grad_scaler is not None

    fresh = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", device, mean_teacher={"gate_window": 2})
    fresh.load_checkpoint(path)
    fmt = fresh.ext_addons[0]
    for k in teacher:
        assert torch.equal(fmt.teacher.module.state_dict()[k], teacher[k])
        assert torch.equal(fresh.network.state_dict()[k], student[k])
    assert fmt.step == mt.step == 4
    assert list(fmt.gate.history) == list(mt.gate.history)
    assert int(fmt.teacher.n_averaged) == int(mt.teacher.n_averaged)
    opt_a, opt_b = trainer.optimizer.state_dict(), fresh.optimizer.state_dict()
    for key, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][key][name]))
    if device == "cuda":
        assert fresh.grad_scaler.state_dict() == trainer.grad_scaler.state_dict()
    # the next step is identical in both (same batch, same noise seed)
    torch.manual_seed(123)
    a = trainer.train_step(random_batch(trainer, seed=9))["loss"]
    torch.manual_seed(123)
    b = fresh.train_step(random_batch(fresh, seed=9))["loss"]
    np.testing.assert_allclose(a, b, rtol=1e-6 if device == "cpu" else 1e-4)
    for (k, v1), v2 in zip(mt.teacher.module.state_dict().items(), fmt.teacher.module.state_dict().values()):
        torch.testing.assert_close(v1, v2, msg=k)


def test_swa_phase_runs_and_checkpoint_round_trip(tiny_lesion_2d, tmp_path):
    """A tiny SWA phase through run_training(); checkpoint_final restores average, count and student (issue 5)."""
    block = {
        "num_epochs": 1,
        "num_iterations_per_epoch": 2,
        "num_val_iterations_per_epoch": 1,
        "swa": {"cycles": 2, "cycle_epochs": 1, "snapshot_every": 1, "bn_update_batches": 1},
    }
    trainer = make_trainer(tiny_lesion_2d, "NRDiceSWATrainer", **block)
    assert trainer.num_epochs == 3 and trainer.ext_main_epochs == 1
    trainer.run_training()
    swa = trainer.ext_addons[0]
    assert swa.num_snapshots == 3  # the final main-schedule weights + one per cycle epoch
    assert trainer.logger.get_value("ext_swa_snapshots", step=None) == [0, 2, 3]
    ckpt = torch.load(Path(trainer.output_folder) / "checkpoint_final.pth", weights_only=False)
    for k, v in swa.average.module.state_dict().items():
        assert torch.equal(ckpt["network_weights"][k], v)
    fresh = make_trainer(tiny_lesion_2d, "NRDiceSWATrainer", **block)
    fresh.load_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
    assert fresh.ext_addons[0].num_snapshots == 3
    for (k, v), w in zip(
        swa.average.module.state_dict().items(), fresh.ext_addons[0].average.module.state_dict().values()
    ):
        assert torch.equal(v, w), k
    for (k, v), w in zip(trainer.network.state_dict().items(), fresh.network.state_dict().values()):
        assert torch.equal(v, w), k


def test_swa_resume_in_the_middle_of_a_cycle(tiny_lesion_2d, tmp_path):
    """``--c`` from a checkpoint taken inside an SWA cycle: average, count, optimizer and cycle lr carry on."""
    import shutil

    block = {
        "num_epochs": 1,
        "num_iterations_per_epoch": 2,
        "num_val_iterations_per_epoch": 1,
        "save_every": 1,
        "swa": {"cycles": 2, "cycle_epochs": 2, "snapshot_every": 1, "bn_update_batches": 1},
    }

    def capture(trainer, into):
        swa = trainer.ext_addons[0]
        update = swa.average.update_parameters

        def wrapped(model):
            into.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            update(model)

        swa.average.update_parameters = wrapped

    # run A: uninterrupted (epochs 0 main, 1-2 cycle 1, 3-4 cycle 2); keep the checkpoint written after epoch 1
    a = make_trainer(tiny_lesion_2d, "NRDiceSWATrainer", **block)
    snaps_a: list[dict[str, torch.Tensor]] = []
    capture(a, snaps_a)
    mid = tmp_path / "mid_cycle.pth"
    save = a.save_checkpoint

    def save_and_keep(filename):
        save(filename)
        if a.current_epoch == 1:
            shutil.copy(filename, mid)

    a.save_checkpoint = save_and_keep
    a.run_training()
    assert a.ext_addons[0].num_snapshots == 5 and len(snaps_a) == 5 and mid.is_file()

    # run B: a fresh trainer resumes from the mid-cycle checkpoint (what nnUNetv2_train --c does) and finishes
    b = make_trainer(tiny_lesion_2d, "NRDiceSWATrainer", **block)
    b.load_checkpoint(str(mid))
    swa_b = b.ext_addons[0]
    assert b.current_epoch == 2 and swa_b.num_snapshots == 2  # main-schedule weights + the snapshot after epoch 1
    for group in b.optimizer.param_groups:  # the cycle's optimizer settings, not the main schedule's
        assert group["weight_decay"] == swa_b.config.weight_decay
        assert group["initial_lr"] == pytest.approx(b.initial_lr * swa_b.config.lr_factor)
    snaps_b: list[dict[str, torch.Tensor]] = []
    capture(b, snaps_b)
    b.run_training()
    assert swa_b.num_snapshots == 5 and len(snaps_b) == 3
    assert b.logger.get_value("lrs", step=None) == pytest.approx(a.logger.get_value("lrs", step=None))
    ckpt = torch.load(Path(b.output_folder) / "checkpoint_final.pth", weights_only=False)
    for k, v in ckpt["network_weights"].items():
        if v.dtype.is_floating_point and "running" not in k:  # BN statistics are recomputed at the end
            mean = torch.stack([s[k] for s in snaps_a[:2] + snaps_b]).mean(0)
            torch.testing.assert_close(v, mean, rtol=1e-5, atol=1e-6, msg=k)
