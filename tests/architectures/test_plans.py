from __future__ import annotations

import copy
import json

import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_ext.architectures.plans import (
    add_configuration,
    architecture_block,
    check_patch_size,
    default_configuration_name,
    nearest_valid_patch_size,
)

COPLE_KWARGS = {
    "features_per_stage": [32, 64, 128, 256, 512],
    "dropout": [0.0, 0.0, 0.3, 0.4, 0.5],
    "aspp": True,
    "dual_pooling": True,
    "bridges": True,
    "deep_supervision_heads": True,
    "strides": [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]],
}
DILATED_KWARGS = {
    "width": 48,
    "norm": "group",
    "attention": False,
    "dropout": 0.0,
    "deep_supervision_heads": True,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 1], [1, 1, 1]],
}


def test_coplenet_configuration_round_trip_through_plans_manager(nnunet_plans):
    before = copy.deepcopy(nnunet_plans)
    plans = add_configuration(nnunet_plans, base="2d", arch="coplenet")
    assert nnunet_plans == before  # pure
    assert plans["configurations"]["2d_coplenet"] == {
        "inherits_from": "2d",
        "architecture": {
            "network_class_name": "nnunet_ext.architectures.coplenet.COPLENet",
            "arch_kwargs": COPLE_KWARGS,
            "_kw_requires_import": [],
        },
    }
    json.loads(json.dumps(plans))  # JSON-serialisable
    cm = PlansManager(plans).get_configuration("2d_coplenet")
    assert cm.data_identifier == "nnUNetPlans_2d"
    assert cm.patch_size == [448, 448]
    assert cm.batch_size == 12
    assert cm.network_arch_class_name == "nnunet_ext.architectures.coplenet.COPLENet"
    assert cm.pool_op_kernel_sizes == COPLE_KWARGS["strides"]
    assert cm.network_arch_init_kwargs_req_import == []


def test_dilated_unet_configuration_round_trip(nnunet_plans):
    nnunet_plans["configurations"]["3d_fullres"]["patch_size"] = [128, 128, 128]
    plans = add_configuration(nnunet_plans, base="3d_fullres", arch="dilated_unet", arch_kwargs={"attention": True})
    cm = PlansManager(plans).get_configuration("3d_fullres_dilated_unet")
    assert cm.data_identifier == "nnUNetPlans_3d_fullres"
    assert cm.patch_size == [128, 128, 128]
    assert cm.network_arch_class_name == "nnunet_ext.architectures.dilated_unet.DilatedUNet3D"
    assert cm.network_arch_init_kwargs == {**DILATED_KWARGS, "attention": True}


def test_patch_size_override_is_written_and_checked(nnunet_plans):
    plans = add_configuration(nnunet_plans, base="3d_fullres", arch="dilated_unet", patch_size=[40, 192, 160])
    assert plans["configurations"]["3d_fullres_dilated_unet"]["patch_size"] == [40, 192, 160]
    cm = PlansManager(plans).get_configuration("3d_fullres_dilated_unet")
    assert cm.patch_size == [40, 192, 160] and cm.data_identifier == "nnUNetPlans_3d_fullres"
    with pytest.raises(ValueError, match=r"'mine' has patch size \[40, 20, 160\].*--patch-size 40 24 160"):
        add_configuration(nnunet_plans, base="3d_fullres", arch="dilated_unet", name="mine", patch_size=[40, 20, 160])


def test_idempotent_and_name_clashes(nnunet_plans):
    once = add_configuration(nnunet_plans, base="2d", arch="coplenet")
    twice = add_configuration(once, base="2d", arch="coplenet")
    assert twice == once
    with pytest.raises(ValueError, match=r"'2d_coplenet' already exists with a different block.*--overwrite"):
        add_configuration(once, base="2d", arch="coplenet", arch_kwargs={"aspp": False})
    replaced = add_configuration(once, base="2d", arch="coplenet", arch_kwargs={"aspp": False}, overwrite=True)
    assert replaced["configurations"]["2d_coplenet"]["architecture"]["arch_kwargs"]["aspp"] is False
    with pytest.raises(ValueError, match="own preprocessed data.*never replaced"):
        add_configuration(nnunet_plans, base="2d", arch="coplenet", name="3d_fullres", overwrite=True)
    with pytest.raises(ValueError, match="cannot be named like its base"):
        add_configuration(nnunet_plans, base="2d", arch="coplenet", name="2d")


def test_no_deep_supervision_heads_writes_the_faithful_network(nnunet_plans):
    plans = add_configuration(
        nnunet_plans,
        base="2d",
        arch="coplenet",
        name="2d_coplenet_faithful",
        arch_kwargs={"deep_supervision_heads": False},
    )
    assert plans["configurations"]["2d_coplenet_faithful"]["architecture"]["arch_kwargs"] == {
        **COPLE_KWARGS,
        "deep_supervision_heads": False,
    }


@pytest.mark.parametrize(
    ("base", "arch", "kwargs", "error", "match"),
    [
        ("3d_fullres", "coplenet", {}, ValueError, r"2-D but base configuration '3d_fullres' is 3-D.*--base 2d"),
        ("2d", "dilated_unet", {}, ValueError, r"3-D but base configuration '2d' is 2-D.*--base 3d_fullres"),
        ("3d_cascade_fullres", "dilated_unet", {}, NotImplementedError, "cascade"),
        ("2d_lowres", "coplenet", {}, ValueError, r"'2d_lowres' is not in the plans; available: 2d, 3d_lowres"),
        ("2d", "coplenet", {"arch_kwargs": {"asp": False}}, ValueError, "Did you mean 'aspp'"),
        ("2d", "coplenet", {"arch_kwargs": {"deep_supervision": True}}, ValueError, "trainer and predictor pass it"),
        ("2d", "coplenet", {"arch_kwargs": {"dropout": [0.1]}}, ValueError, "Invalid arch_kwargs.*5 probabilities"),
        ("2d", "unet", {}, ValueError, "Unknown architecture 'unet'"),
    ],
)
def test_refusals(nnunet_plans, base, arch, kwargs, error, match):
    with pytest.raises(error, match=match):
        add_configuration(nnunet_plans, base=base, arch=arch, **kwargs)


def test_base_patch_size_not_divisible_is_refused_with_a_suggestion(nnunet_plans):
    nnunet_plans["configurations"]["2d"]["patch_size"] = [56, 40]
    with pytest.raises(ValueError, match=r"configuration '2d' has patch size \[56, 40\].*--patch-size 64 48"):
        add_configuration(nnunet_plans, base="2d", arch="coplenet")
    plans = add_configuration(nnunet_plans, base="2d", arch="coplenet", patch_size=[64, 48])
    assert PlansManager(plans).get_configuration("2d_coplenet").patch_size == [64, 48]


def test_patch_size_helpers():
    assert nearest_valid_patch_size([56, 40, 7, 24], 16) == [64, 48, 16, 32]
    assert nearest_valid_patch_size([20, 4], 8) == [24, 8]
    check_patch_size("coplenet", [16, 512], "x")
    check_patch_size("dilated_unet", [8, 128, 96], "x")
    with pytest.raises(ValueError, match="2-D but configuration 'x'"):
        check_patch_size("coplenet", [16, 16, 16], "x")
    assert default_configuration_name("3d_fullres", "dilated_unet") == "3d_fullres_dilated_unet"


def test_architecture_block_is_json_and_complete():
    block = architecture_block("dilated_unet", {"norm": "instance"})
    assert block["arch_kwargs"] == {**DILATED_KWARGS, "norm": "instance"}
    assert block["_kw_requires_import"] == []
    assert json.loads(json.dumps(block)) == block
