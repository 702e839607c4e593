"""``nnUNetv2_train -tr SpatialCorrectionTrainer`` (the real console script), killed with ``kill -9`` right after the
correction round wrote its corrected labels, then ``--c``: the run completes with one round, the corrected-label
folder of the killed run is reused (not recomputed), and training continued on it (issue 12, item 4)."""

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

from nnunet_ext.training.base import STATE_KEY
from nnunet_ext.training.correction import CORRECTED_DIR, ROUND_SUMMARY

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def test_kill_after_the_correction_round_then_continue(biased_lesion_2d, tmp_path):
    ds = biased_lesion_2d
    pre = ds.dirs.preprocessed / ds.name
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["plans_name"] = "nnUNetPlans_sc_kill"  # own results folder; same preprocessed data
    epochs, iters = 4, 2
    plans["configurations"]["2d"]["nnunet_ext"] = {
        "num_epochs": epochs,
        "num_iterations_per_epoch": iters,
        "num_val_iterations_per_epoch": 1,
        "save_every": 1,
    }
    (pre / "nnUNetPlans_sc_kill.json").write_text(json.dumps(plans, indent=2))
    env = {**os.environ, "nnUNet_extTrainer": __import__("nnunet_ext").trainer_folder()}
    args = [str(BIN / "nnUNetv2_train"), str(ds.id), "2d", "0", "-tr", "SpatialCorrectionTrainer"]
    args += ["-p", "nnUNetPlans_sc_kill", "-device", "cpu"]
    fold = ds.dirs.results / ds.name / "SpatialCorrectionTrainer__nnUNetPlans_sc_kill__2d" / "fold_0"
    summary = fold / CORRECTED_DIR / "round_0" / ROUND_SUMMARY
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not summary.is_file():
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    log.close()
    first = (tmp_path / "first.log").read_text()
    assert killed and summary.is_file(), first[-3000:]
    assert not (fold / "checkpoint_final.pth").exists()
    written = json.loads(summary.read_text())
    mtime = summary.stat().st_mtime_ns

    resumed = subprocess.run([*args, "--c"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == epochs
    state = final[STATE_KEY]["spatial_correction"]
    assert state["rounds_done"] == 1 and state["offsets"] == [written["offsets_mm"]]
    assert summary.stat().st_mtime_ns == mtime  # the finished round was reused, not recomputed
    assert not (fold / CORRECTED_DIR / "round_1").exists()
    # offset of the known +1.6 mm bias (2 voxels of 0.8 mm), estimated on the held-out trusted cases
    offset = written["offsets_mm"]["1"]
    assert offset is None or abs(offset) < 10
    assert (fold / "spatial_correction_round1.png").is_file()
