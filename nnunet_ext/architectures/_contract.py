"""nnU-Net's network constructor contract, shared by the plugin networks.

nnU-Net builds a network as ``cls(input_channels=..., num_classes=..., **arch_kwargs, deep_supervision=...)``
(``nnunetv2.utilities.get_network_from_plans``). ``arch_kwargs['strides']`` doubles as
``ConfigurationManager.pool_op_kernel_sizes``, from which the trainer derives the deep-supervision scales
``1 / cumprod(strides)`` (last dropped). The helpers here check that the plans describe the real network.

Internal module: used by :mod:`nnunet_ext.architectures.coplenet` and :mod:`nnunet_ext.architectures.dilated_unet`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Keys that nnU-Net's planners write into ``arch_kwargs`` for their U-Nets. A plugin network accepts them (so a
# planner-written block can be re-pointed at it) but ignores them: its layout is fixed by its own keyword arguments.
NNUNET_PLANNER_KEYS: frozenset[str] = frozenset(
    {
        "n_stages",
        "features_per_stage",
        "conv_op",
        "kernel_sizes",
        "n_conv_per_stage",
        "n_conv_per_stage_decoder",
        "n_blocks_per_stage",
        "conv_bias",
        "norm_op",
        "norm_op_kwargs",
        "dropout_op",
        "dropout_op_kwargs",
        "nonlin",
        "nonlin_kwargs",
    }
)


def check_planner_kwargs(
    network: str, planner_kwargs: Mapping[str, object], own_keys: Iterable[str], strides: Sequence[Sequence[int]]
) -> None:
    """Accept nnU-Net planner keys (ignored), reject anything else with a did-you-mean hint.

    ``n_stages``, when given, must agree with ``strides``: both describe the same network.

    Raises:
        TypeError: for a key that is neither a planner key nor one of ``own_keys``.
        ValueError: for an ``n_stages`` that contradicts ``strides``.
    """
    own_keys = tuple(own_keys)
    for key in planner_kwargs:
        if key not in NNUNET_PLANNER_KEYS:
            close = difflib.get_close_matches(key, [*own_keys, *sorted(NNUNET_PLANNER_KEYS)], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{network} got an unexpected keyword argument {key!r}.{hint} Valid arguments: "
                f"{', '.join(own_keys)} (nnU-Net planner keys are accepted and ignored)."
            )
    n_stages = planner_kwargs.get("n_stages")
    if n_stages is not None and n_stages != len(strides):
        raise ValueError(
            f"{network}: arch_kwargs n_stages={n_stages} contradicts strides (which has {len(strides)} stages). "
            f"Remove n_stages or make it equal to len(strides)."
        )


def check_strides(network: str, strides: Sequence[Sequence[int]], expected: Sequence[Sequence[int]]) -> list[list[int]]:
    """Return ``strides`` as a list of lists after checking that it equals the network's real down-sampling.

    Raises:
        ValueError: naming the given and the required strides.
    """
    try:
        got = [[int(s) for s in stage] for stage in strides]
    except TypeError as err:
        raise ValueError(f"{network}: strides must be a list of per-stage lists, got {strides!r}.") from err
    want = [list(stage) for stage in expected]
    if got != want:
        raise ValueError(
            f"{network}: strides {got} do not describe this network, whose down-sampling is fixed. nnU-Net derives "
            f"the deep-supervision scales from them, so they must be exactly {want}. Re-create the configuration "
            f"with `nnunet-ext add-config` or fix arch_kwargs['strides'] in the plans."
        )
    return got


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[list[float]]:
    """nnU-Net's deep-supervision scales: ``1 / cumprod(strides)`` per stage, last stage dropped.

    Same formula as ``nnUNetTrainer._get_deep_supervision_scales``; the plugin networks emit one output per entry.
    """
    return [list(map(float, s)) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


def check_deep_supervision_request(network: str, deep_supervision: bool, heads: bool) -> None:
    """Refuse deep supervision for a network built without heads, explaining both ways out.

    Raises:
        ValueError: when ``deep_supervision`` is requested and ``heads`` is False.
    """
    if deep_supervision and not heads:
        raise ValueError(
            f"{network} was asked for deep supervision (deep_supervision=True) but its configuration has "
            f"deep_supervision_heads=False, so it has a single output. Either train it with a plugin trainer "
            f"(nnunet_ext trainers disable deep supervision for networks without heads; stock nnUNetTrainer always "
            f"asks for it), or re-create the configuration with heads: `nnunet-ext add-config ... --overwrite` "
            f"without --no-deep-supervision-heads."
        )


def check_channels(network: str, name: str, value: object) -> int:
    """Return ``value`` as an int after checking that it is a positive integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{network}: {name} must be a positive integer, got {value!r}.")
    return int(value)
