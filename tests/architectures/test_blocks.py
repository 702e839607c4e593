from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_ext.architectures.blocks import (
    ASPP,
    CBAM,
    ChannelGate,
    Down,
    ResidualSE,
    SpatialGate,
    Up,
    group_norm,
    make_norm_3d,
)


def test_residual_se_matches_formula():
    torch.manual_seed(0)
    se = ResidualSE(4, 2)
    x = torch.randn(2, 4, 5, 5)
    conv1, conv2 = se.se_layers[1], se.se_layers[3]
    pooled = x.mean(dim=(2, 3), keepdim=True)
    f = torch.relu(conv2(nn.functional.leaky_relu(conv1(pooled), 0.01)))
    torch.testing.assert_close(se(x), x * f + x)
    assert conv1.out_channels == 2  # reduction 2


def test_residual_se_relu_gate_closed_is_identity():
    se = ResidualSE(4, 2)
    with torch.no_grad():
        se.se_layers[3].weight.zero_()
        se.se_layers[3].bias.fill_(-1.0)  # ReLU(-1) = 0: gate closed (a sigmoid gate would give 0.27)
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(se(x), x)


def test_down_concatenates_max_then_avg_and_adds_residual():
    torch.manual_seed(0)
    down = Down(3, 6, dropout=0.0).eval()
    x = torch.randn(2, 3, 8, 8)
    x_cat = torch.cat([nn.functional.max_pool2d(x, 2), nn.functional.avg_pool2d(x, 2)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(down(x), down.conv(x_cat) + x_cat)


def test_down_without_dual_pooling_is_maxpool_then_block():
    torch.manual_seed(0)
    down = Down(3, 6, dropout=0.0, dual_pooling=False).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(down(x), down.conv(nn.functional.max_pool2d(x, 2)))
    with pytest.raises(ValueError, match="out = 2·in"):
        Down(3, 5, dropout=0.0)


def test_up_puts_skip_first_and_upsamples_bilinear_align_corners():
    torch.manual_seed(0)
    up = Up(8, 2, 2, 4, dropout=0.0).eval()
    x, skip = torch.randn(1, 8, 4, 4), torch.randn(1, 2, 8, 8)
    upsampled = nn.functional.interpolate(up.conv1x1(x), scale_factor=2, mode="bilinear", align_corners=True)
    x_cat = torch.cat([skip, upsampled], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(up(x, skip), up.conv(x_cat) + x_cat)
    with pytest.raises(ValueError, match="skip \\+ up = out"):
        Up(8, 2, 2, 6, dropout=0.0)


def test_aspp_layout_and_count():
    aspp = ASPP(512)
    assert [(b.kernel_size[0], b.dilation[0], b.padding[0], b.out_channels) for b in aspp.branches] == [
        (1, 1, 0, 128),
        (3, 2, 2, 128),
        (3, 4, 4, 128),
        (3, 6, 6, 128),
    ]
    assert sum(p.numel() for p in aspp.parameters()) == 2_099_200
    assert ASPP(8)(torch.randn(2, 8, 5, 5)).shape == (2, 8, 5, 5)


@pytest.mark.parametrize(("channels", "groups"), [(1, 1), (8, 8), (48, 16), (384, 16), (24, 3), (20, 5)])
def test_group_norm_follows_open_brats_rule(channels, groups):
    gn = group_norm(channels)
    assert (gn.num_groups, gn.num_channels, gn.affine) == (groups, channels, True)


def test_make_norm_3d_refuses_unknown():
    assert isinstance(make_norm_3d("instance")(4), nn.InstanceNorm3d)
    with pytest.raises(ValueError, match="got 'batch'"):
        make_norm_3d("batch")


def test_channel_gate_matches_formula():
    torch.manual_seed(0)
    gate = ChannelGate(32)
    x = torch.randn(2, 32, 3, 4, 5)
    att = torch.sigmoid(gate.mlp(x.mean(dim=(2, 3, 4))) + gate.mlp(x.amax(dim=(2, 3, 4))))
    torch.testing.assert_close(gate(x), x * att[:, :, None, None, None])
    assert gate.mlp[0].out_features == 2


def test_spatial_gate_scale_is_at_least_one_half():
    torch.manual_seed(0)
    gate = SpatialGate(group_norm)
    x = torch.rand(2, 6, 8, 8, 8) + 0.1
    ratio = gate(x) / x
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.0
    assert gate.conv.kernel_size == (7, 7, 7) and gate.conv.bias is None


def test_cbam_is_channel_then_spatial():
    torch.manual_seed(0)
    cbam = CBAM(16, group_norm)
    x = torch.randn(1, 16, 4, 4, 4)
    torch.testing.assert_close(cbam(x), cbam.spatial_gate(cbam.channel_gate(x)))
