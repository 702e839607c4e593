"""The mean teacher's cheaper forms of its per-step pieces equal the plain formulas (issue #11 item 11)."""

from __future__ import annotations

import pytest
import torch

from nnunet_ext.training.consistency import clamped_noise, mae_consistency


def _plain_mae(student_logits, teacher_logits, regions):
    act = torch.sigmoid if regions else (lambda x: torch.softmax(x, 1))
    return (act(student_logits) - act(teacher_logits).detach()).abs().mean()


@pytest.mark.parametrize(("channels", "regions"), [(2, False), (3, False), (2, True)])
def test_mae_consistency_equals_the_mean_over_all_channels(channels, regions):
    torch.manual_seed(0)
    s = (3 * torch.randn(2, channels, 5, 6, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(2, channels, 5, 6, dtype=torch.float64)
    got = mae_consistency(s, t, regions)
    (grad,) = torch.autograd.grad(got, s)
    s_ref = s.detach().float().double().requires_grad_()  # mae_consistency reduces in float32
    want = _plain_mae(s_ref, t.float().double(), regions)
    (grad_ref,) = torch.autograd.grad(want, s_ref)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-5, atol=1e-8)


def test_mae_consistency_two_class_gradient_in_float64():
    # the two-channel form is differentiable like the softmax form (gradcheck on the float64 graph it builds)
    torch.manual_seed(1)
    t = torch.randn(1, 2, 3, 3, dtype=torch.float64)

    def two_class(x):
        return (torch.sigmoid(x[:, 1] - x[:, 0]) - torch.sigmoid(t[:, 1] - t[:, 0])).abs().mean()

    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(two_class, (x,))
    torch.testing.assert_close(two_class(x), _plain_mae(x, t, regions=False))


def test_clamped_noise_matches_the_unfused_formula_draw_for_draw():
    like = torch.zeros(4, 1, 16, 16)
    torch.manual_seed(3)
    fused = clamped_noise(like, std=0.1, clip=0.2)
    torch.manual_seed(3)
    plain = (torch.randn_like(like) * 0.1).clamp(-0.2, 0.2)
    assert torch.equal(fused, plain)
    assert torch.equal(clamped_noise(like, std=0.0, clip=0.2), torch.zeros_like(like))
