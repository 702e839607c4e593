"""DDP on CPU: two gloo ranks train a mean-teacher + SWA trainer through ``run_training()``, including nnU-Net's
per-epoch validation and the final ``perform_actual_validation`` on the exported model (issue 11).

nnU-Net's DDP path is CUDA-only in two places, which the worker replaces with their nearest CPU equivalents: the
trainer's ``__init__`` moves the device to ``cuda:<rank>`` (set back to CPU, without the CUDA grad scaler), and
``initialize`` wraps the network as ``DDP(network, device_ids=[rank])`` (the CPU form ``DDP(network)`` is used).
Everything else — ``is_ddp``, the split of the batch, the all-reduced gradients, the gathered validation metrics,
the sharded final validation and its barriers — is nnU-Net's own code on a real process group.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.slow

_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as upstream
    from nnunet_ext.trainers.nnunet_ext_trainers import NRDiceAdaptiveMTSWATrainer

    def main():
        dataset, out = sys.argv[1], sys.argv[2]
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        upstream.DDP = lambda module, device_ids=None: DistributedDataParallel(module)  # CPU form of nnU-Net's wrap

        pre = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
        plans = json.load(open(os.path.join(pre, "nnUNetPlans.json")))
        plans["plans_name"] = "nnUNetPlans_ddp"
        plans["configurations"]["2d"]["batch_size"] = 4  # 2 per rank
        plans["configurations"]["2d"]["nnunet_ext"] = {
            "num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1,
            "swa": {"cycles": 1, "cycle_epochs": 1, "snapshot_every": 1, "bn_update_batches": 1},
        }
        plans["continue_training"] = False
        dataset_json = json.load(open(os.path.join(pre, "dataset.json")))
        trainer = NRDiceAdaptiveMTSWATrainer(plans, "2d", 0, dataset_json, torch.device("cpu"))
        assert trainer.is_ddp
        trainer.device, trainer.grad_scaler = torch.device("cpu"), None  # nnU-Net moved both to CUDA
        trainer.run_training()
        trainer.perform_actual_validation()  # as nnUNetv2_train does after training (and --val alone): the SWA average
        assert isinstance(trainer.network, DistributedDataParallel)  # swapped back after validation
        assert trainer.network.module.decoder.deep_supervision  # re-enabled on the trained network
        teacher = trainer.ext_addons[0].teacher.module
        state = {
            "rank": rank,
            "batch_size": trainer.batch_size,
            "student": float(sum(p.double().sum() for p in trainer.network.module.parameters())),
            "teacher": float(sum(p.double().sum() for p in teacher.parameters())),
            "steps": trainer.ext_addons[0].step,
            "output_folder": trainer.output_folder,
        }
        json.dump(state, open(os.path.join(out, f"rank{rank}.json"), "w"))
        dist.destroy_process_group()


    if __name__ == "__main__":  # nnU-Net's export pool spawns workers that import this file
        main()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_training_and_final_validation_on_gloo(tiny_lesion_2d, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    port = str(_free_port())
    procs, logs = [], []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        log = open(tmp_path / f"rank{rank}.log", "w")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), tiny_lesion_2d.name, str(tmp_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:  # a hung rank must not outlive the test
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    assert codes == [0, 0], "\n".join((tmp_path / f"rank{r}.log").read_text()[-4000:] for r in range(2))

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["batch_size"] == r1["batch_size"] == 2  # nnU-Net split the batch over the ranks
    assert r0["student"] == pytest.approx(r1["student"], rel=1e-6)  # all-reduced gradients: identical students
    assert r0["teacher"] == pytest.approx(r1["teacher"], rel=1e-6)  # identical gate decisions: identical teachers
    assert r0["steps"] == r1["steps"] == 4
    fold = r0["output_folder"]
    summary = json.loads(open(os.path.join(fold, "validation", "summary.json")).read())
    assert "foreground_mean" in summary
    ckpt = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert "nnunet_ext_student_weights" in ckpt and ckpt["nnunet_ext_state"]["swa"]["n_averaged"] == 2
