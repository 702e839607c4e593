"""``nnUNetv2_train -tr EarlyLearningTrainer`` (real CLI, subprocesses): a forced early trigger corrects the labels,
a ``kill -9`` stops the run after that, and ``--c`` continues on the restored corrected label source and corrects it
again (issue 13)."""

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

import nnunet_ext
from nnunet_ext.training.base import STATE_KEY
from nnunet_ext.training.label_source import CORRECTED_DIR, read_manifest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
PLANS = "nnUNetPlans_early_learning"  # own results folder; the same preprocessed data


def _write_plans(pre: Path) -> None:
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    plans["configurations"]["2d"]["nnunet_ext"] = {
        "num_epochs": 5,
        "num_iterations_per_epoch": 2,
        "num_val_iterations_per_epoch": 1,
        "save_every": 1,
        # every class triggers once 2 epochs are done (after epoch index 1) and is corrected then and 2 epochs later
        "early_learning": {"force_trigger_epoch": 2, "correct_every": 2},
    }
    (pre / f"{PLANS}.json").write_text(json.dumps(plans, indent=2))


def _kill_after_epoch(args, env, latest: Path, epoch: int, log: Path) -> int | None:
    """Start ``args``; ``kill -9`` its process group once ``latest`` holds ``epoch`` finished epochs."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline, killed_after = time.time() + 600, None
        while time.time() < deadline and proc.poll() is None:
            if latest.is_file():
                try:
                    done = torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"]
                except Exception:  # being replaced right now
                    done = 0
                if done >= epoch:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_after = done
                    break
            time.sleep(0.05)
        proc.wait(timeout=60)
    return killed_after


def test_forced_trigger_corrects_then_kill_and_continue_restores_and_chains(tiny_lesion_2d, tmp_path):
    ds = tiny_lesion_2d
    pre = ds.dirs.preprocessed / ds.name
    _write_plans(pre)
    # nnUNetv2_train -device cpu sets torch's threads to the CPU count; passive OpenMP waiting keeps those threads
    # from spinning against each other on a busy machine (epochs of this test: 0.5 s instead of 8 s on 2 cores)
    env = {**os.environ, "nnUNet_extTrainer": nnunet_ext.trainer_folder(), "OMP_WAIT_POLICY": "PASSIVE"}
    args = [str(BIN / "nnUNetv2_train"), str(ds.id), "2d", "0", "-tr", "EarlyLearningTrainer", "-p", PLANS]
    args += ["-device", "cpu"]
    fold = ds.dirs.results / ds.name / f"EarlyLearningTrainer__{PLANS}__2d" / "fold_0"
    root = fold / CORRECTED_DIR
    first, later = root / "early_learning_epoch0001", root / "early_learning_epoch0003"

    # run 1, killed once the checkpoint after the first correction (after epoch 1) is written
    killed_after = _kill_after_epoch(args, env, fold / "checkpoint_latest.pth", 2, tmp_path / "first.log")
    assert killed_after in (2, 3), (tmp_path / "first.log").read_text()[-3000:]  # before the second correction
    assert not (fold / "checkpoint_final.pth").exists() and not later.exists()
    ckpt = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    state = ckpt[STATE_KEY]["early_learning"]
    assert state["triggered"] == {"lesion": 1}
    assert [c["epoch"] for c in state["corrections"]] == [1] and state["folder"] == str(first)
    assert len(state["history"]["lesion"]) == killed_after
    assert ckpt["logging"]["ext_iou_lesion"] == state["history"]["lesion"]
    assert ckpt["logging"]["ext_early_learning_triggered"][:2] == [0, 1]

    # run 2: --c restores histories, trigger and the corrected label set, and corrects that set after epoch 3
    resumed_run = subprocess.run([*args, "--c"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed_run.returncode == 0, resumed_run.stdout[-3000:] + resumed_run.stderr[-3000:]
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    state2 = final[STATE_KEY]["early_learning"]
    assert final["current_epoch"] == 5
    history = state2["history"]["lesion"]
    assert len(history) == 5 and history[:killed_after] == state["history"]["lesion"]
    assert state2["triggered"] == {"lesion": 1}  # restored, not triggered again
    assert [c["epoch"] for c in state2["corrections"]] == [1, 3] and state2["folder"] == str(later)
    manifest = read_manifest(later)
    assert manifest["parent"] == str(first) and manifest["generation"] == 2  # derived from the restored label set
    log = "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
    assert "early learning: class lesion triggered after epoch 1 (IoU" in log
    assert "early learning: corrected lesion after epoch 3" in log
