"""Drift guard: the nnU-Net methods the plugin copies or hooks are the tested ones, and the version is checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nnunet_ext
from nnunet_ext import _nnunet


def test_hooked_nnunet_methods_are_unchanged():
    current = _nnunet.current_hashes()
    drifted = {name: digest for name, digest in current.items() if digest != _nnunet.DRIFT_CANARIES[name]}
    assert not drifted, (
        f"nnU-Net changed {sorted(drifted)}: read the upstream change, adapt nnunet_ext, then update DRIFT_CANARIES"
    )
    assert _nnunet.drifted_methods() == []


def test_canaries_cover_the_copied_and_replaced_methods():
    from nnunet_ext.training.base import ExtTrainerBase

    # every nnU-Net method the base trainer overrides without calling super() must be guarded
    replaced = {"train_step", "set_deep_supervision_enabled"}
    for name in replaced:
        assert name in vars(ExtTrainerBase)
        assert f"nnUNetTrainer.{name}" in _nnunet.DRIFT_CANARIES


@pytest.mark.parametrize("installed", ["2.8.0", "2.9.0", "3.0.1"])
def test_untested_nnunet_version_is_refused_with_the_range(installed):
    with pytest.raises(RuntimeError, match=r"nnunetv2>=2\.8\.1,<2\.9") as info:
        _nnunet.check_nnunet_version(installed)
    assert installed in str(info.value) and "pip install" in str(info.value)


def test_tested_version_passes():
    _nnunet.check_nnunet_version("2.8.1")
    _nnunet.check_nnunet_version()


def test_plugin_trainer_checks_the_version_when_built(tiny_lesion_2d, monkeypatch):
    from trainer_helpers import make_trainer

    monkeypatch.setattr(_nnunet, "_checked", False)
    monkeypatch.setattr(_nnunet, "nnunet_version", lambda: "2.9.2")
    with pytest.raises(RuntimeError, match="2.9.2"):
        make_trainer(tiny_lesion_2d, "NRDiceTrainer")


def test_drift_warns_when_a_hooked_method_differs(monkeypatch):
    monkeypatch.setattr(_nnunet, "_checked", False)
    monkeypatch.setitem(_nnunet.DRIFT_CANARIES, "nnUNetTrainer.train_step", "0" * 64)
    with pytest.warns(RuntimeWarning, match="train_step"):
        _nnunet.check_nnunet()


def test_nnunet_internals_are_used_only_through_nnunet_module():
    """Private nnU-Net trainer attributes appear only in nnunet_ext/_nnunet.py."""
    internals = {"_do_i_compile", "my_fantastic_logging", "local_logger", "_get_deep_supervision_scales"}
    package = Path(nnunet_ext.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "_nnunet.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in internals:
                offenders.append(f"{path.relative_to(package)}:{node.lineno} {node.attr}")
    assert not offenders, offenders
