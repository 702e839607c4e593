"""Plugin-network configurations in nnU-Net plans (the library side of ``nnunet-ext add-config``).

A new configuration only inherits from a preprocessed base configuration and replaces its ``architecture`` block::

    "2d_coplenet": {
        "inherits_from": "2d",
        "architecture": {
            "network_class_name": "nnunet_ext.architectures.coplenet.COPLENet",
            "arch_kwargs": {...every constructor argument...},
            "_kw_requires_import": []
        }
    }

nnU-Net resolves inheritance with a shallow ``dict.update``, so the architecture block is written complete, and the
base's ``data_identifier`` (hence its preprocessed data), ``batch_size`` and ``patch_size`` are reused: no new
preprocessing. A ``patch_size`` is written only when the caller overrides it. All functions are pure: they return new
dicts and never touch the input.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from nnunet_ext.architectures import coplenet, dilated_unet

ArchName = Literal["coplenet", "dilated_unet"]


@dataclass(frozen=True)
class ArchitectureSpec:
    """What ``add-config`` needs to know about one plugin network.

    Attributes:
        key: the ``--arch`` value.
        network_class: the class; its dotted path goes into the plans.
        dim: spatial dimensionality the base configuration must have.
        divisor: every patch-size entry must be a multiple of it.
        default_base: base configuration used when none is given.
        defaults: the complete ``arch_kwargs`` written by default (JSON types).
    """

    key: str
    network_class: type[torch.nn.Module]
    dim: int
    divisor: int
    default_base: str
    defaults: Mapping[str, object]

    @property
    def network_class_name(self) -> str:
        return f"{self.network_class.__module__}.{self.network_class.__qualname__}"


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "coplenet": ArchitectureSpec(
        key="coplenet",
        network_class=coplenet.COPLENet,
        dim=2,
        divisor=coplenet.INPUT_DIVISOR,
        default_base="2d",
        defaults={
            "features_per_stage": list(coplenet.DEFAULT_FEATURES),
            "dropout": list(coplenet.DEFAULT_DROPOUT),
            "aspp": True,
            "dual_pooling": True,
            "bridges": True,
            # Heads on by default so that stock nnUNetTrainer, which always asks for deep supervision, can train it;
            # --no-deep-supervision-heads writes the faithful network (plugin trainers only).
            "deep_supervision_heads": True,
            "strides": [list(s) for s in coplenet.STRIDES],
        },
    ),
    "dilated_unet": ArchitectureSpec(
        key="dilated_unet",
        network_class=dilated_unet.DilatedUNet3D,
        dim=3,
        divisor=dilated_unet.INPUT_DIVISOR,
        default_base="3d_fullres",
        defaults={
            "width": 48,
            "norm": "group",
            "attention": False,
            "dropout": 0.0,
            "deep_supervision_heads": True,
            "strides": [list(s) for s in dilated_unet.STRIDES],
        },
    ),
}


def get_spec(arch: str) -> ArchitectureSpec:
    """The :class:`ArchitectureSpec` of ``arch``; ``ValueError`` naming the valid keys otherwise."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[arch]


def default_configuration_name(base: str, arch: str) -> str:
    """``<base>_<arch>``, e.g. ``2d_coplenet``."""
    return f"{base}_{get_spec(arch).key}"


def architecture_block(arch: str, arch_kwargs: Mapping[str, object] | None = None) -> dict:
    """The complete ``architecture`` block for ``arch``: defaults updated with ``arch_kwargs``.

    The kwargs are checked by building the network on the meta device (no memory, no compute), so a block that this
    function returns is one nnU-Net can instantiate.

    Raises:
        ValueError: unknown key (with did-you-mean), ``deep_supervision`` given (the trainer decides it), or a value
            the network rejects.
    """
    spec = get_spec(arch)
    overrides = dict(arch_kwargs or {})
    if "deep_supervision" in overrides:
        raise ValueError(
            "arch_kwargs must not contain 'deep_supervision': nnU-Net's trainer and predictor pass it. Use "
            "'deep_supervision_heads' to build (or not) the heads."
        )
    for key in overrides:
        if key not in spec.defaults:
            close = difflib.get_close_matches(key, list(spec.defaults), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"Unknown arch_kwargs key {key!r} for {arch}.{hint} Valid keys: {', '.join(spec.defaults)}."
            )
    kwargs = json.loads(json.dumps({**spec.defaults, **overrides}))  # JSON types only (tuples → lists)
    try:
        with torch.device("meta"):
            spec.network_class(input_channels=1, num_classes=2, **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Invalid arch_kwargs for {arch}: {err}") from err
    return {"network_class_name": spec.network_class_name, "arch_kwargs": kwargs, "_kw_requires_import": []}


def nearest_valid_patch_size(patch_size: Sequence[int], divisor: int) -> list[int]:
    """Each entry rounded to the nearest multiple of ``divisor`` (ties up), at least ``divisor``."""
    return [max(divisor, divisor * math.floor(p / divisor + 0.5)) for p in patch_size]


def check_patch_size(arch: str, patch_size: Sequence[int], configuration: str) -> None:
    """Raise ``ValueError`` (naming the configuration, the size and the fix) unless ``arch`` accepts ``patch_size``."""
    spec = get_spec(arch)
    if len(patch_size) != spec.dim:
        raise ValueError(
            f"{spec.network_class.__name__} is {spec.dim}-D but configuration {configuration!r} has the "
            f"{len(patch_size)}-D patch size {list(patch_size)}; use a {spec.dim}-D base configuration "
            f"(e.g. --base {spec.default_base})."
        )
    if any(int(p) != p or p < spec.divisor or p % spec.divisor for p in patch_size):
        suggestion = nearest_valid_patch_size(patch_size, spec.divisor)
        raise ValueError(
            f"{spec.network_class.__name__} needs patch sizes that are multiples of {spec.divisor}, but configuration "
            f"{configuration!r} has patch size {list(patch_size)}. Override it, e.g. "
            f"--patch-size {' '.join(map(str, suggestion))} (written into the new configuration)."
        )


def resolve_configuration(plans: Mapping, name: str) -> dict:
    """The configuration ``name`` with inheritance resolved, exactly as nnU-Net's ``PlansManager`` does it."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise ValueError(f"Configuration {name!r} is not in the plans; available: {', '.join(configurations)}.")
    return PlansManager(copy.deepcopy(dict(plans))).get_configuration(name).configuration


def configuration_block(
    plans: Mapping,
    *,
    base: str,
    arch: str,
    name: str | None = None,
    arch_kwargs: Mapping[str, object] | None = None,
    patch_size: Sequence[int] | None = None,
) -> dict:
    """The configuration block that :func:`add_configuration` would write (checks included, plans untouched)."""
    spec = get_spec(arch)
    name = name or default_configuration_name(base, arch)
    resolved = resolve_configuration(plans, base)
    if resolved.get("previous_stage"):
        raise NotImplementedError(
            f"Base configuration {base!r} is a cascade stage (previous_stage={resolved['previous_stage']!r}); plugin "
            f"networks do not support the cascade. Use a full-resolution base such as --base {spec.default_base}."
        )
    base_patch = list(resolved["patch_size"])
    if len(base_patch) != spec.dim:
        raise ValueError(
            f"{spec.network_class.__name__} is {spec.dim}-D but base configuration {base!r} is {len(base_patch)}-D "
            f"(patch size {base_patch}); use a {spec.dim}-D base such as --base {spec.default_base}."
        )
    block: dict = {"inherits_from": base, "architecture": architecture_block(arch, arch_kwargs)}
    if patch_size is not None:
        patch = [int(p) for p in patch_size]
        if patch != list(patch_size) or any(p < 1 for p in patch):
            raise ValueError(f"patch_size must be positive integers, got {list(patch_size)}.")
        check_patch_size(arch, patch, name)
        block["patch_size"] = patch
    else:
        check_patch_size(arch, base_patch, base)
    return block


def add_configuration(
    plans: Mapping,
    *,
    base: str,
    arch: str,
    name: str | None = None,
    arch_kwargs: Mapping[str, object] | None = None,
    patch_size: Sequence[int] | None = None,
    overwrite: bool = False,
) -> dict:
    """Return a copy of ``plans`` with a plugin-network configuration ``name`` (default ``<base>_<arch>``).

    Idempotent: when the same block is already present the returned plans equal the input.

    Args:
        plans: an nnU-Net plans dict (``nnUNetPlans.json``).
        base: preprocessed configuration to inherit from (data, batch size, patch size); 2-D for ``coplenet``,
            3-D for ``dilated_unet``.
        arch: ``"coplenet"`` or ``"dilated_unet"``.
        name: new configuration name.
        arch_kwargs: overrides of the default ``arch_kwargs`` (see :data:`ARCHITECTURES`).
        patch_size: written into the new configuration instead of inheriting the base's.
        overwrite: replace an existing, different plugin configuration of that name.

    Raises:
        ValueError: unknown base, wrong dimensionality, patch size not divisible, bad kwargs, or a name clash.
        NotImplementedError: cascade base configuration.
    """
    name = name or default_configuration_name(base, arch)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"Configuration name must be a non-empty string without surrounding spaces, got {name!r}.")
    if name == base:
        raise ValueError(f"The new configuration cannot be named like its base ({base!r}); choose another --name.")
    block = configuration_block(plans, base=base, arch=arch, name=name, arch_kwargs=arch_kwargs, patch_size=patch_size)
    existing = plans["configurations"].get(name)
    if existing is not None and existing != block:
        if "data_identifier" in existing:
            raise ValueError(
                f"Configuration {name!r} already exists and has its own preprocessed data "
                f"(data_identifier {existing['data_identifier']!r}); it is never replaced. Choose another --name."
            )
        if not overwrite:
            changed = sorted(k for k in {*existing, *block} if existing.get(k) != block.get(k))
            raise ValueError(
                f"Configuration {name!r} already exists with a different block (differs in: {', '.join(changed)}). "
                f"Pass --overwrite to replace it, or choose another --name."
            )
    new_plans = copy.deepcopy(dict(plans))
    new_plans["configurations"][name] = block
    return new_plans
