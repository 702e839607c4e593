from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_ext.architectures.dilated_unet import DilatedUNet3D
from nnunet_ext.architectures.plans import architecture_block

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 1], [1, 1, 1]]
VARIANTS = {
    "equi": {},
    "no_heads": {"deep_supervision_heads": False},
    "attention": {"attention": True},
    "instance": {"norm": "instance"},
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_net(**kwargs) -> DilatedUNet3D:
    """Full-width network on the meta device: parameter shapes without memory or init cost."""
    with torch.device("meta"):
        return DilatedUNet3D(input_channels=4, num_classes=3, **kwargs)


def nnunet_scales(strides) -> list[list[float]]:
    """nnUNetTrainer._get_deep_supervision_scales, written out."""
    return [list(s) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


# -- parameter counts (METHODS.md §5.3)


@pytest.mark.parametrize("norm", ["group", "instance"])
@pytest.mark.parametrize(
    ("attention", "heads", "expected"),
    [(False, False, 23_152_563), (False, True, 23_154_735), (True, False, 23_205_588), (True, True, 23_207_760)],
)
def test_parameter_counts(norm, attention, heads, expected):
    assert n_params(meta_net(norm=norm, attention=attention, deep_supervision_heads=heads)) == expected


def test_parameter_breakdown():
    net = meta_net()
    enc, dec = net.encoder, net.decoder
    assert [n_params(s) for s in enc.stages] == [67_584, 373_632, 1_493_760, 5_973_504]
    assert n_params(enc.bottom) == 7_964_160
    assert n_params(dec.bottom_2) == 3_981_696
    assert [n_params(dec.decoder3), n_params(dec.decoder2), n_params(dec.decoder1)] == [2_488_896, 622_368, 186_816]
    # outconv, then heads on decoder2, decoder3, bottom_2, bottom
    assert [n_params(s) for s in dec.seg_layers] == [147, 147, 291, 579, 1_155]


def test_open_brats_layer_details():
    net = DilatedUNet3D(input_channels=4, num_classes=3, width=16)
    convs3 = [m for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert len(convs3) == 4 * 2 + 2 + 1 + 3 * 2 and all(c.bias is None for c in convs3)
    assert [c.dilation for c in convs3 if c.dilation != (1, 1, 1)] == [(2, 2, 2)] * 2
    assert all(c.padding == c.dilation for c in convs3)
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert all(g.num_groups == min(16, g.num_channels) for g in norms)
    ups = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 1 and ups[0].mode == "trilinear" and ups[0].align_corners
    assert sum(isinstance(m, nn.MaxPool3d) for m in net.modules()) == 1  # applied three times
    inorm = DilatedUNet3D(input_channels=4, num_classes=3, width=16, norm="instance")
    assert not any(isinstance(m, nn.GroupNorm) for m in inorm.modules())
    assert all(m.affine for m in inorm.modules() if isinstance(m, nn.InstanceNorm3d))


def test_kaiming_fan_out_init():
    torch.manual_seed(0)
    net = DilatedUNet3D(input_channels=4, num_classes=3, width=16)
    w = net.encoder.bottom.conv1.conv.weight  # 128 -> 128, 3x3x3: fan_out = 128 * 27
    assert w.std().item() == pytest.approx(math.sqrt(2 / (128 * 27)), rel=0.05)
    gn = net.encoder.bottom.conv1.norm
    assert torch.all(gn.weight == 1) and torch.all(gn.bias == 0)


# -- forward shapes, deep supervision


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", [(16, 16, 16), (16, 32, 24)])
def test_shape_table(variant, size):
    torch.manual_seed(0)
    net = DilatedUNet3D(input_channels=4, num_classes=3, width=8, **VARIANTS[variant]).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 4, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 3, *size)


@pytest.mark.parametrize("size", [(16, 16, 16), (16, 32, 24), (8, 8, 8)])
def test_deep_supervision_outputs_match_nnunet_scales(size):
    net = DilatedUNet3D(input_channels=4, num_classes=3, width=8, deep_supervision=True).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 4, *size))
    scales = nnunet_scales(STRIDES)
    assert len(outs) == len(scales) == 5
    for out, scale in zip(outs, scales):
        assert out.shape == (1, 3, *(round(s * f) for s, f in zip(size, scale)))


@pytest.mark.parametrize("variant", ["equi", "attention", "no_heads"])
def test_every_parameter_gets_a_gradient(variant, ddp_ds_weights):
    torch.manual_seed(0)
    kwargs = VARIANTS[variant]
    ds = kwargs.get("deep_supervision_heads", True)
    net = DilatedUNet3D(input_channels=4, num_classes=3, width=8, deep_supervision=ds, **kwargs).train()
    x = torch.randn(2, 4, 16, 16, 16)
    outs = net(x) if ds else [net(x)]
    weights = ddp_ds_weights(len(outs))
    assert weights[-1] > 0
    loss = sum(
        w * nn.functional.binary_cross_entropy_with_logits(o, (torch.rand_like(o) > 0.5).float())
        for w, o in zip(weights, outs)
    )
    loss.backward()
    # In the graph (what DDP needs): every parameter, the last head included thanks to its 1e-6 weight.
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
    # Non-zero: all but CBAM's channel MLP, whose C/16 hidden ReLU units can be dead for a batch (1 unit at width 8).
    zero = [n for n, p in net.named_parameters() if not p.grad.abs().sum() > 0 and ".channel_gate.mlp." not in n]
    assert zero == []


def test_deep_supervision_toggle_and_state_dict_round_trip():
    torch.manual_seed(0)
    net = DilatedUNet3D(input_channels=4, num_classes=3, width=8).eval()
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        single = net(x)
        net.decoder.deep_supervision = True
        multi = net(x)
    assert isinstance(single, torch.Tensor) and isinstance(multi, list) and len(multi) == 5
    torch.testing.assert_close(multi[0], single)
    other = DilatedUNet3D(input_channels=4, num_classes=3, width=8, deep_supervision=True)
    other.load_state_dict(net.state_dict(), strict=True)


def test_supports_deep_supervision():
    assert DilatedUNet3D.supports_deep_supervision({}) is True
    assert DilatedUNet3D.supports_deep_supervision({"deep_supervision_heads": False}) is False


# -- nnU-Net integration


@pytest.mark.parametrize(("deep_supervision", "n_out"), [(True, 5), (False, 1)])
def test_build_through_get_network_from_plans(deep_supervision, n_out):
    block = architecture_block("dilated_unet", {"width": 8, "attention": True})
    net = get_network_from_plans(
        block["network_class_name"],
        block["arch_kwargs"],
        block["_kw_requires_import"],
        4,
        3,
        deep_supervision=deep_supervision,
    ).eval()
    assert isinstance(net, DilatedUNet3D)
    with torch.no_grad():
        out = net(torch.randn(1, 4, 16, 16, 16))
    assert (len(out) if isinstance(out, list) else 1) == n_out


# -- refusals


def test_deep_supervision_without_heads_is_refused():
    with pytest.raises(ValueError, match="deep_supervision_heads=False"):
        DilatedUNet3D(input_channels=4, num_classes=3, width=8, deep_supervision_heads=False, deep_supervision=True)


@pytest.mark.parametrize("size", [(16, 16, 12), (4, 16, 16)])
def test_input_not_divisible_by_8_is_refused(size):
    net = DilatedUNet3D(input_channels=4, num_classes=3, width=8)
    with pytest.raises(ValueError, match=rf"multiple of 8.*got \({size[0]}, {size[1]}, {size[2]}\)"):
        net(torch.randn(1, 4, *size))


def test_2d_input_is_refused():
    with pytest.raises(ValueError, match="3-D"):
        DilatedUNet3D(input_channels=4, num_classes=3, width=8)(torch.randn(1, 4, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 1]]}, ValueError, "must be exactly"),
        ({"norm": "batch"}, ValueError, r"norm must be one of \('group', 'instance'\), got 'batch'"),
        ({"width": 0}, ValueError, "width must be a positive integer, got 0"),
        ({"dropout": 1.5}, ValueError, "dropout must be a probability"),
        ({"atention": True}, TypeError, "Did you mean 'attention'"),
        ({"n_stages": 5}, ValueError, "n_stages=5 contradicts strides"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        DilatedUNet3D(input_channels=4, num_classes=3, **kwargs)
