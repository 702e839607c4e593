import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from nnunet_ext.training.consistency import MeanTeacher, MeanTeacherConfig, clamped_noise, mae_consistency


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="ema_late"):
        MeanTeacherConfig(ema_late=1.5)
    with pytest.raises(ValueError, match="adas_rule"):
        MeanTeacherConfig(adas_rule="paper")


def test_clamped_noise_law():
    torch.manual_seed(0)
    n = clamped_noise(torch.zeros(200_000), std=0.1, clip=0.2)
    assert n.abs().max() <= 0.2
    assert n.std().item() == pytest.approx(0.1, rel=0.05)  # clamping at 2 sigma barely changes the spread
    assert (n.abs() == 0.2).float().mean().item() == pytest.approx(0.0455, abs=0.005)  # P(|z| > 2)


def test_mae_consistency_softmax_and_sigmoid():
    s = torch.tensor([[[[0.0]], [[0.0]]]])  # softmax -> (0.5, 0.5)
    t = torch.tensor([[[[0.0]], [[2.0 * 0 + 100.0]]]])  # softmax -> (0, 1)
    assert mae_consistency(s, t, regions=False).item() == pytest.approx(0.5)
    assert mae_consistency(s, t, regions=True).item() == pytest.approx(0.25)  # |0.5 - 0.5|, |0.5 - 1|


def test_lambda_switching_and_constant_without_adas():
    ada = MeanTeacher(MeanTeacherConfig())
    assert ada.consistency_weight(student_loss=0.5, teacher_loss=0.3) == 0.1
    assert ada.consistency_weight(student_loss=0.3, teacher_loss=0.5) == 0.01
    plain = MeanTeacher(MeanTeacherConfig(adaptive_student=False))
    assert plain.consistency_weight(0.3, 0.5) == plain.consistency_weight(0.5, 0.3) == 0.1
    ramp = MeanTeacher(MeanTeacherConfig(adaptive_student=False, rampup_steps=10))
    assert ramp.consistency_weight(0.5, 0.3) == pytest.approx(0.1 * torch.exp(torch.tensor(-5.0)).item())


def test_teacher_update_decay_gate_before_warmup_min():
    mt = MeanTeacher(MeanTeacherConfig(gate_window=3))
    decays = []
    for step, loss in enumerate([1.0, 2.0, 3.0, 10.0, 0.5]):
        mt.step = step
        decays.append(mt.teacher_update_decay(loss, epoch=0, main_epochs=100))
    # first 3: no gating (warm-up min gives 0, 0.5, 0.667); 10.0 >= p90 of (1,2,3) -> skip; 0.5 -> update
    assert decays[:3] == pytest.approx([0.0, 0.5, 2 / 3])
    assert decays[3] is None
    assert decays[4] == pytest.approx(0.8)
    plain = MeanTeacher(MeanTeacherConfig(adaptive_teacher=False, gate_window=3))
    assert all(plain.teacher_update_decay(v, 0, 100) is not None for v in [1.0, 2.0, 3.0, 10.0])


_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from nnunet_ext.training.consistency import MeanTeacher, MeanTeacherConfig, global_mean_tensor
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mt = MeanTeacher(MeanTeacherConfig(gate_window=5))
    out = []
    for step in range(40):
        # very different local losses per rank; decisions must still agree
        l_s_local = ((step * 7919 + rank * 104729) % 97) / 97 + rank
        l_t_local = ((step * 104729 + rank * 7919) % 89) / 89
        # as in the training step: all-reduced tensors decide lambda, the host value feeds the gate
        l_s = global_mean_tensor(torch.tensor(l_s_local))
        l_t = global_mean_tensor(torch.tensor(l_t_local))
        lam = float(mt.consistency_weight(l_s, l_t))
        mt.step = step
        decay = mt.teacher_update_decay(float(l_s), 0, 10)
        out.append([lam, decay])
    with open(sys.argv[1] + f"/rank{rank}.json", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_ranks_take_identical_gate_decisions(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env))
    assert all(p.wait(timeout=120) == 0 for p in procs)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1
    assert any(d is None for _, d in r0) and any(d is not None for _, d in r0)  # the gate did act
    assert {lam for lam, _ in r0} == {0.1, 0.01}
