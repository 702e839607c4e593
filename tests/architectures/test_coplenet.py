from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_ext.architectures.coplenet import COPLENet
from nnunet_ext.architectures.plans import architecture_block

SMALL = [8, 16, 32, 64, 128]  # narrow widths for fast forward passes
STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]
VARIANTS = {
    "official": {},
    "heads": {"deep_supervision_heads": True},
    "no_aspp": {"aspp": False},
    "no_dual_pooling": {"dual_pooling": False},
    "no_bridges": {"bridges": False},
    "no_adb": {"aspp": False, "dual_pooling": False, "bridges": False},
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def nnunet_scales(strides) -> list[list[float]]:
    """nnUNetTrainer._get_deep_supervision_scales, written out."""
    return [list(s) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


# -- parameter counts (METHODS.md §1.3, §1.6)


def test_official_parameter_count_and_breakdown():
    net = COPLENet(input_channels=1, num_classes=2)
    assert n_params(net) == 10_521_666
    assert sum(b.numel() for b in net.buffers()) == 7_415
    conv = sum(p.numel() for m in net.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    assert conv == 10_514_274
    enc, dec = net.encoder, net.decoder
    assert n_params(enc.in_conv) == 10_768
    assert [n_params(d) for d in enc.downs] == [78_304, 312_256, 1_247_104, 4_984_576]
    assert [n_params(b) for b in enc.bridges] == [560, 2_144, 8_384, 33_152]
    assert n_params(enc.aspp) == 2_099_200
    assert [n_params(u) for u in dec.ups] == [1_312_768, 328_704, 82_432, 20_736]
    assert n_params(dec.seg_layers) == 578


def test_parameter_count_c16_and_heads():
    assert n_params(COPLENet(input_channels=1, num_classes=2, features_per_stage=[16, 32, 64, 128, 256])) == 2_634_146
    # heads: 1x1 convs 64->2, 128->2, 256->2 = 130 + 258 + 514
    assert n_params(COPLENet(input_channels=1, num_classes=2, deep_supervision_heads=True)) == 10_521_666 + 902


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"aspp": False}, 10_521_666 - 2_099_200),  # -A: ASPP -> identity
        # -D: each Down's first conv sees in instead of 2*in channels: -(32*64 + 64*128 + 128*256 + 256*512) * 9
        ({"dual_pooling": False}, 10_521_666 - 1_566_720),
        # -B: bridges gone (-44,240); each Up: 1x1 in1->C instead of C/2 and first conv 2C->C instead of C->C
        # (+655,488 +163,904 +40,992 +10,256)
        ({"bridges": False}, 10_521_666 - 44_240 + 870_640),
        (
            {"aspp": False, "dual_pooling": False, "bridges": False},
            10_521_666 - 2_099_200 - 1_566_720 - 44_240 + 870_640,
        ),
    ],
)
def test_ablation_parameter_counts(kwargs, expected):
    assert n_params(COPLENet(input_channels=1, num_classes=2, **kwargs)) == expected


# -- forward shapes, deep supervision


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", [(16, 16), (32, 48), (64, 64)])
def test_shape_table(variant, size):
    torch.manual_seed(0)
    net = COPLENet(input_channels=2, num_classes=3, features_per_stage=SMALL, **VARIANTS[variant]).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 2, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3, *size)


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (64, 64)])
def test_deep_supervision_outputs_match_nnunet_scales(size):
    net = COPLENet(
        input_channels=1, num_classes=2, features_per_stage=SMALL, deep_supervision_heads=True, deep_supervision=True
    ).eval()
    with torch.no_grad():
        outs = net(torch.randn(2, 1, *size))
    scales = nnunet_scales(STRIDES)
    assert len(outs) == len(scales) == 4
    for out, scale in zip(outs, scales):
        assert out.shape[2:] == tuple(round(s * f) for s, f in zip(size, scale))
        assert out.shape[:2] == (2, 2)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_parameter_gets_a_gradient(variant, ddp_ds_weights):
    torch.manual_seed(0)
    kwargs = dict(VARIANTS[variant])
    ds = kwargs.get("deep_supervision_heads", False)
    net = COPLENet(input_channels=1, num_classes=2, features_per_stage=SMALL, deep_supervision=ds, **kwargs).train()
    x = torch.randn(2, 1, 32, 32)
    outs = net(x) if ds else [net(x)]
    weights = ddp_ds_weights(len(outs))
    loss = sum(
        w * nn.functional.cross_entropy(o, torch.randint(0, 2, (o.shape[0], *o.shape[2:])))
        for w, o in zip(weights, outs)
    )
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_deep_supervision_toggle_through_decoder_attribute():
    torch.manual_seed(0)
    net = COPLENet(input_channels=1, num_classes=2, features_per_stage=SMALL, deep_supervision_heads=True).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        single = net(x)
        net.decoder.deep_supervision = True
        multi = net(x)
        net.decoder.deep_supervision = False
        again = net(x)
    assert isinstance(single, torch.Tensor) and isinstance(again, torch.Tensor)
    assert isinstance(multi, list) and len(multi) == 4
    torch.testing.assert_close(multi[0], single)


def test_heads_load_with_deep_supervision_on_or_off():
    on = COPLENet(
        input_channels=1, num_classes=2, features_per_stage=SMALL, deep_supervision_heads=True, deep_supervision=True
    )
    off = COPLENet(
        input_channels=1, num_classes=2, features_per_stage=SMALL, deep_supervision_heads=True, deep_supervision=False
    )
    off.load_state_dict(on.state_dict(), strict=True)
    assert all(
        ".seg_layers." in k
        for k in set(on.state_dict())
        - set(COPLENet(input_channels=1, num_classes=2, features_per_stage=SMALL).state_dict())
    )


def test_supports_deep_supervision():
    assert COPLENet.supports_deep_supervision({}) is False
    assert COPLENet.supports_deep_supervision({"deep_supervision_heads": True}) is True
    assert COPLENet.supports_deep_supervision(architecture_block("coplenet")["arch_kwargs"]) is True


# -- official-code details


def test_official_layer_details():
    net = COPLENet(input_channels=1, num_classes=2)
    out_conv = net.decoder.seg_layers[0]
    assert out_conv.kernel_size == (3, 3) and out_conv.padding == (1, 1)
    ups = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "bilinear" and u.align_corners for u in ups)
    assert [m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)] == [0.01] * 32
    assert not any(isinstance(m, nn.Sigmoid) for m in net.modules())
    dropouts = [m.p for m in net.encoder.in_conv.modules() if isinstance(m, nn.Dropout)]
    dropouts += [m.p for d in net.encoder.downs for m in d.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.0, 0.0, 0.3, 0.4, 0.5]
    assert [m.p for u in net.decoder.ups for m in u.modules() if isinstance(m, nn.Dropout)] == [0.4, 0.3, 0.0, 0.0]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(b.eps == 1e-5 and b.momentum == 0.1 and b.affine for b in bns)


# -- nnU-Net integration


@pytest.mark.parametrize(("deep_supervision", "n_out"), [(True, 4), (False, 1), (None, 1)])
def test_build_through_get_network_from_plans(deep_supervision, n_out):
    block = architecture_block("coplenet", {"features_per_stage": SMALL})
    net = get_network_from_plans(
        block["network_class_name"],
        block["arch_kwargs"],
        block["_kw_requires_import"],
        1,
        3,
        deep_supervision=deep_supervision,
    ).eval()
    assert isinstance(net, COPLENet)
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 32))
    assert (len(out) if isinstance(out, list) else 1) == n_out


def test_planner_kwargs_are_accepted_and_ignored():
    planner = {
        "n_stages": 5,
        "conv_op": nn.Conv2d,
        "kernel_sizes": [[3, 3]] * 5,
        "n_conv_per_stage": [2] * 5,
        "n_conv_per_stage_decoder": [2] * 4,
        "conv_bias": True,
        "norm_op": nn.InstanceNorm2d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }
    assert n_params(COPLENet(input_channels=1, num_classes=2, strides=STRIDES, **planner)) == 10_521_666


# -- refusals


def test_deep_supervision_without_heads_is_refused():
    with pytest.raises(ValueError, match="deep_supervision_heads=False.*plugin trainer"):
        COPLENet(input_channels=1, num_classes=2, deep_supervision=True)
    net = COPLENet(input_channels=1, num_classes=2, features_per_stage=SMALL)
    net.decoder.deep_supervision = True
    with pytest.raises(ValueError, match="deep_supervision_heads=False"):
        net(torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("size", [(24, 32), (32, 50), (8, 8)])
def test_input_not_multiple_of_16_is_refused(size):
    net = COPLENet(input_channels=1, num_classes=2, features_per_stage=SMALL).eval()
    with pytest.raises(ValueError, match=f"multiples of 16.*got {size[0]}×{size[1]}"):
        net(torch.randn(1, 1, *size))


def test_3d_input_is_refused():
    net = COPLENet(input_channels=1, num_classes=2, features_per_stage=SMALL)
    with pytest.raises(ValueError, match=r"2-D.*\(1, 1, 4, 16, 16\)"):
        net(torch.randn(1, 1, 4, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strides": [[1, 1], [2, 2], [2, 2], [2, 2]]}, ValueError, r"must be exactly \[\[1, 1\], \[2, 2\]"),
        ({"strides": [[1, 1], [1, 2], [2, 2], [2, 2], [2, 2]]}, ValueError, "do not describe this network"),
        ({"n_stages": 7}, ValueError, "n_stages=7 contradicts strides"),
        ({"features_per_stage": [32, 64, 128, 256, 320]}, ValueError, "each twice the previous"),
        ({"features_per_stage": [32, 64, 128, 256]}, ValueError, "5 widths"),
        ({"dropout": [0.0, 0.0, 0.3, 0.4]}, ValueError, "5 probabilities"),
        ({"dropout": [0.0, 0.0, 0.3, 0.4, 1.0]}, ValueError, "5 probabilities"),
        ({"asp": False}, TypeError, "'asp'. Did you mean 'aspp'"),
        ({"num_classes": 0}, ValueError, "num_classes must be a positive integer, got 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    args = {"input_channels": 1, "num_classes": 2, **kwargs}
    with pytest.raises(error, match=match):
        COPLENet(**args)
