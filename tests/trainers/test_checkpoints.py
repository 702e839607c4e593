"""Checkpoints: atomic writes, one read on load, refusal of a changed add-on configuration, and a real kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from trainer_helpers import make_trainer, random_batch

from nnunet_ext.training.base import STATE_KEY

BIN = Path(sys.executable).parent


def test_crash_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(tiny_lesion_2d, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    path = tmp_path / "checkpoint_latest.pth"
    trainer.train_step(random_batch(trainer))
    trainer.save_checkpoint(str(path))
    good = path.read_bytes()
    trainer.train_step(random_batch(trainer, seed=1))

    real_save = torch.save
    calls = []

    def crashing_save(obj, f, *args, **kwargs):  # writes half a file, then dies (as a kill would)
        calls.append(str(f))
        with open(f, "wb") as handle:
            handle.write(b"\x80\x02truncated")
        raise KeyboardInterrupt("killed during the write")

    for crash_at in (1, 2):  # nnU-Net's write, then the plugin's write of the same file
        calls.clear()
        state = {"n": 0}

        def save(obj, f, *args, _state=state, _crash_at=crash_at, **kwargs):
            _state["n"] += 1
            if _state["n"] == _crash_at:
                return crashing_save(obj, f, *args, **kwargs)
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
        with pytest.raises(KeyboardInterrupt):
            trainer.save_checkpoint(str(path))
        monkeypatch.setattr(torch, "save", real_save)
        assert all(c != str(path) for c in calls)  # never written in place
        assert path.read_bytes() == good
        fresh = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
        fresh.load_checkpoint(str(path))  # the previous checkpoint loads
        assert fresh.ext_addons[0].step == 1


def test_plain_plugin_trainer_writes_atomically_too(tiny_lesion_2d, tmp_path):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceTrainer")
    path = tmp_path / "ckpt.pth"
    trainer.save_checkpoint(str(path))
    assert path.is_file() and not Path(f"{path}.part").exists()
    saved = torch.load(path, weights_only=False)
    assert saved[STATE_KEY]["loss"]["name"] == "noise_robust_dice"


def test_load_checkpoint_reads_the_file_once(tiny_lesion_2d, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)
    fresh = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    real_load, reads = torch.load, []

    def counting_load(f, *args, **kwargs):
        reads.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    fresh.load_checkpoint(path)
    assert reads == [path]
    for k, v in trainer.ext_addons[0].teacher.module.state_dict().items():
        assert torch.equal(fresh.ext_addons[0].teacher.module.state_dict()[k], v)


def test_resume_with_another_addon_configuration_is_refused(tiny_lesion_2d, tmp_path):
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"gate_window": 5})
    path = str(tmp_path / "ckpt.pth")
    trainer.save_checkpoint(path)
    changed = make_trainer(
        tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"gate_window": 5, "consistency_high": 0.3}
    )
    with pytest.raises(ValueError, match=r"mean_teacher\.consistency_high: checkpoint 0\.1, now 0\.3") as info:
        changed.load_checkpoint(path)
    assert "--c" in str(info.value) and '"nnunet_ext"' in str(info.value)
    other_loss = make_trainer(
        tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"gate_window": 5}, loss={"gamma": 2.0}
    )
    with pytest.raises(ValueError, match="loss: checkpoint"):
        other_loss.load_checkpoint(path)
    same = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"gate_window": 5})
    same.load_checkpoint(path)  # unchanged configuration loads


def test_resume_of_a_checkpoint_older_than_a_config_key(tiny_lesion_2d, tmp_path):
    """A key added to an add-on's config after a checkpoint was written counts as its default (older --c works)."""
    trainer = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer")
    path = tmp_path / "ckpt.pth"
    trainer.save_checkpoint(str(path))
    saved = torch.load(path, weights_only=False)
    del saved[STATE_KEY]["mean_teacher"]["config"]["consistency_high"]  # as written by a version without the key
    torch.save(saved, path)
    make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer").load_checkpoint(str(path))
    changed = make_trainer(tiny_lesion_2d, "NRDiceAdaptiveMTTrainer", mean_teacher={"consistency_high": 0.3})
    with pytest.raises(ValueError, match=r"consistency_high: checkpoint 0\.1, now 0\.3"):
        changed.load_checkpoint(str(path))


@pytest.mark.slow
def test_kill_9_during_training_then_continue(tiny_lesion_2d, tmp_path):
    """A real ``kill -9`` of ``nnUNetv2_train``; ``--c`` then completes and the mean teacher's state carries on."""
    ds = tiny_lesion_2d
    pre = ds.dirs.preprocessed / ds.name
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["plans_name"] = "nnUNetPlans_kill9"  # own results folder; same preprocessed data
    epochs, iters = 4, 3
    plans["configurations"]["2d"]["nnunet_ext"] = {
        "num_epochs": epochs,
        "num_iterations_per_epoch": iters,
        "num_val_iterations_per_epoch": 1,
        "save_every": 1,
    }
    (pre / "nnUNetPlans_kill9.json").write_text(json.dumps(plans, indent=2))
    env = {**os.environ, "nnUNet_extTrainer": __import__("nnunet_ext").trainer_folder()}
    args = [str(BIN / "nnUNetv2_train"), str(ds.id), "2d", "0", "-tr", "NRDiceAdaptiveMTTrainer"]
    args += ["-p", "nnUNetPlans_kill9", "-device", "cpu"]
    fold = ds.dirs.results / ds.name / "NRDiceAdaptiveMTTrainer__nnUNetPlans_kill9__2d" / "fold_0"
    latest = fold / "checkpoint_latest.pth"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file():
            try:
                epoch = torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"]
            except Exception:  # being replaced right now
                epoch = 0
            if epoch >= 2:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_after = epoch
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    log.close()
    assert killed_after is not None, (tmp_path / "first.log").read_text()[-3000:]
    assert not (fold / "checkpoint_final.pth").exists()

    resumed = subprocess.run([*args, "--c"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == epochs
    # every optimizer step of the 4 epochs counted once: the steps after the last checkpoint were redone
    assert final[STATE_KEY]["mean_teacher"]["step"] == epochs * iters
    assert len(final[STATE_KEY]["mean_teacher"]["gate"]["history"]) == epochs * iters


def _with_coplenet(plans: dict) -> dict:
    from nnunet_ext.architectures.plans import add_configuration

    return add_configuration(
        plans, base="2d", arch="coplenet", name="2d_coplenet", arch_kwargs={"features_per_stage": [8, 16, 32, 64, 128]}
    )


def test_swa_average_of_a_batchnorm_network_has_fresh_statistics_whenever_used(tiny_lesion_2d):
    """COPLE-Net (BatchNorm): the per-epoch pseudo Dice and every checkpoint see the average with recomputed
    BatchNorm statistics, not the statistics copied when the average was created."""
    block = {
        "num_epochs": 1,
        "num_iterations_per_epoch": 2,
        "num_val_iterations_per_epoch": 1,
        "save_every": 1,
        "swa": {"cycles": 1, "cycle_epochs": 3, "snapshot_every": 1, "bn_update_batches": 2},
    }
    trainer = make_trainer(
        tiny_lesion_2d, "NRDiceSWATrainer", configuration="2d_coplenet", plans_hook=_with_coplenet, **block
    )
    swa = trainer.ext_addons[0]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in swa.average.module.modules())
    stale = {k: v.clone() for k, v in swa.average.module.state_dict().items() if "running_mean" in k}
    seen = []
    validation_step, save_checkpoint = trainer.validation_step, trainer.save_checkpoint

    def spy_validation_step(batch):
        if swa.num_snapshots:
            seen.append(("validation", trainer.network is swa.average.module, swa.bn_updated))
        return validation_step(batch)

    def spy_save_checkpoint(filename):
        save_checkpoint(filename)
        if swa.num_snapshots:
            saved = torch.load(filename, map_location="cpu", weights_only=False)["network_weights"]
            current = swa.average.module.state_dict()
            same = all(torch.equal(saved[k], current[k]) for k in stale)
            seen.append(("checkpoint", same, swa.bn_updated))

    trainer.validation_step, trainer.save_checkpoint = spy_validation_step, spy_save_checkpoint
    trainer.run_training()
    assert {kind for kind, *_ in seen} == {"validation", "checkpoint"}
    assert all(used and fresh for _, used, fresh in seen), seen
    final = swa.average.module.state_dict()
    assert any(not torch.equal(final[k], v) for k, v in stale.items())  # statistics were recomputed
