"""Provenance and process environment of benchmark runs: versions, hardware, time stamps, JSON records, seeding,
the device, and scoped environment variables (``nnUNet_results``) and console redirection.

Shared by the runner, the speed benchmark and the label-update baseline.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nnunet_ext
from nnunet_ext._io import write_json_atomic as _write_json_atomic


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use -device cpu (or auto)")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def temporary_env(name: str, value: str) -> Iterator[None]:
    """Set the environment variable ``name`` for the duration, then restore (or remove) it."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextlib.contextmanager
def nnunet_results(path: str | os.PathLike | None) -> Iterator[None]:
    """Point ``nnUNet_results`` at ``path`` for the duration (nnU-Net reads it lazily); None leaves it alone."""
    if path is None:
        yield
        return
    with temporary_env("nnUNet_results", str(path)):
        yield


@contextlib.contextmanager
def console_to(log_file: str | os.PathLike | None) -> Iterator[None]:
    """Send ``print`` output (nnU-Net is chatty) to ``log_file``; None keeps the console."""
    if log_file is None:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f, contextlib.redirect_stdout(f):
        yield


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "nnunet_ext": nnunet_ext.__version__}
    for package in ("nnunetv2", "torch", "numpy", "scipy", "SimpleITK"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info


def nnunet_environment() -> dict[str, str]:
    """The ``nnUNet_*`` variables of this process (paths, ``nnUNet_compile``, worker counts, ...)."""
    return {k: v for k, v in os.environ.items() if k.startswith("nnUNet_")}


def write_json_atomic(obj: Any, path: Path) -> None:
    """Manifests and run records (paths and other objects written as strings)."""
    _write_json_atomic(obj, path, default=str)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
