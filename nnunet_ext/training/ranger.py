"""Ranger, the optimizer of the BraTS 2020 paper's pipeline A (Henry et al., arXiv:2011.01045; METHODS.md §6).

Ranger = RAdam (Liu et al., arXiv:1908.03265) + Lookahead (Zhang et al., arXiv:1907.08610) + gradient centralisation
(Yong et al., arXiv:2004.01461), as in lessw2020's Ranger-Deep-Learning-Optimizer 20.4.11 (``ranger/ranger.py``),
the version open_brats2020 installs. The implementation is ``pytorch_optimizer.Ranger`` (maintained, on PyPI),
configured here to match it. Per parameter p with gradient g, step t, learning rate eta:

.. math::
    \\tilde g &= g - \\operatorname{mean}_{\\text{dims} \\ge 1}(g)
        \\quad\\text{(tensors with > 1 dim only: conv and fc weights; biases, norm parameters unchanged)}\\\\
    m_t &= \\beta_1 m_{t-1} + (1 - \\beta_1)\\tilde g,\\qquad v_t = \\beta_2 v_{t-1} + (1 - \\beta_2)\\tilde g^2\\\\
    \\rho_\\infty &= \\frac{2}{1 - \\beta_2} - 1,\\qquad
        \\rho_t = \\rho_\\infty - \\frac{2t\\beta_2^t}{1 - \\beta_2^t},\\qquad
        r_t = \\sqrt{\\frac{(1 - \\beta_2^t)(\\rho_t - 4)(\\rho_t - 2)\\rho_\\infty}
                         {(\\rho_\\infty - 4)(\\rho_\\infty - 2)\\rho_t}}\\\\
    p &\\leftarrow p - \\frac{\\eta}{1 - \\beta_1^t}
        \\begin{cases} r_t\\, m_t / (\\sqrt{v_t} + \\epsilon) & \\rho_t \\ge 5\\\\
                       m_t & \\text{otherwise (SGD with momentum)} \\end{cases}\\\\
    \\text{every } k \\text{ steps:}\\quad s &\\leftarrow s + \\alpha (p - s),\\qquad p \\leftarrow s
        \\quad\\text{(slow weights } s \\text{ start as a copy of p)}

Defaults (lessw2020's, kept by open_brats, which passes only lr and weight decay): betas (0.95, 0.999), eps 1e-5,
Lookahead k 6 and alpha 0.5, rectification threshold 5, centralisation of conv and fc weights. With beta2 0.999,
rho_t < 5 for t <= 5, so the first five steps are bias-corrected SGD with momentum and the first Lookahead
synchronisation (t = 6) is also the first rectified step. Weight decay is decoupled, p <- p (1 - eta wd) before the
update, as in lessw2020's code (the paper uses 0).

Differences from lessw2020 20.4.11, both immaterial here: rectification starts at rho_t >= 5 instead of > 5 (equal
unless rho_t is exactly 5, which beta2 0.999 never gives), and the step counter is per parameter group instead of
per parameter (an nnU-Net parameter gets a gradient at every step or never, like the weight-0 lowest-resolution deep
supervision head, which then has no state at all).

``degenerated_to_sgd=True`` is required, not a choice: with pytorch_optimizer's default (False) the step size of the
un-rectified steps is ``-lr``, and ``p.add_(m, alpha=-step_size)`` then *ascends* the loss for the first five steps
(kozistr/pytorch_optimizer issue #232, "Ranger sign inversion"; pinned by tests/training/test_ranger.py).

Identities pinned by tests: two hand-computed steps (SGD-momentum branch, centralisation, Lookahead with k = 2); eight
steps against an independent numpy transcription of lessw2020's algorithm (rectified branch, two synchronisations);
the state (moments, slow weights, step) survives a trainer checkpoint bit-identically.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import torch

# lessw2020 Ranger 20.4.11 defaults (open_brats2020 keeps them); ``options`` of :func:`build_ranger` may override them.
RANGER_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "betas": (0.95, 0.999),
        "eps": 1e-5,
        "alpha": 0.5,
        "k": 6,
        "n_sma_threshold": 5,
        "use_gc": True,
        "gc_conv_only": False,
    }
)


def build_ranger(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    lr: float,
    weight_decay: float = 0.0,
    **options: Any,
) -> torch.optim.Optimizer:
    """``pytorch_optimizer.Ranger`` configured as lessw2020's Ranger (module docstring).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        weight_decay: decoupled weight decay.
        **options: overrides of ``RANGER_DEFAULTS`` (``betas``, ``eps``, ``alpha``, ``k``, ``n_sma_threshold``,
            ``use_gc``, ``gc_conv_only``).

    Raises:
        ValueError: an unknown option, or ``lr <= 0`` / ``weight_decay < 0``.
    """
    for key in options:
        if key not in RANGER_DEFAULTS:
            hint = difflib.get_close_matches(key, list(RANGER_DEFAULTS), n=1)
            raise ValueError(
                f"unknown Ranger option {key!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Allowed: {sorted(RANGER_DEFAULTS)}"
            )
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"Ranger needs lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    # imported here: pytorch_optimizer takes ~1.5 s to import, and nnU-Net imports the trainer module for every lookup
    from pytorch_optimizer import Ranger

    return Ranger(
        params,
        lr=lr,
        weight_decay=weight_decay,
        weight_decouple=True,
        fixed_decay=False,
        degenerated_to_sgd=True,
        **{**RANGER_DEFAULTS, **options},
    )
