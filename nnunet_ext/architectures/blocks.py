"""Building blocks of the plugin networks.

COPLE-Net (2-D; G. Wang et al., "A Noise-Robust Framework for Automatic Segmentation of COVID-19 Pneumonia Lesions
from CT Images", IEEE TMI 2020, doi:10.1109/TMI.2020.3000314), as in the official code (HiLab-git/COPLE-Net):

- :class:`Bridge`: 1×1 conv + BN + LeakyReLU that halves an encoder feature map before it is skipped.
- :class:`ResidualSE`: squeeze-and-excitation with a ReLU gate, reduction 2 and a residual ``x·f + x``.
- :class:`ConvBlock`: two 3×3 conv + BN + LeakyReLU with dropout in between, then :class:`ResidualSE`.
- :class:`Down`: dual pooling (concat of max- and average-pool) + :class:`ConvBlock` + residual.
- :class:`Up`: 1×1 conv, bilinear ×2, concat with the skip, :class:`ConvBlock` + residual.
- :class:`ASPP`: four parallel dilated convs (1×1 and 3×3 at dilation 2, 4, 6), concat, 1×1 conv + BN + LeakyReLU.

Dilated 3-D U-Net (T. Henry et al., "Brain tumor segmentation with self-ensembled, deeply-supervised 3D U-net neural
networks: a BraTS 2020 challenge solution", arXiv:2011.01045), as in open_brats2020 ``src/models/layers.py``:

- :func:`group_norm`, :func:`make_norm_3d`: GroupNorm(min(16, C), C) default, InstanceNorm3d(affine) option.
- :class:`ConvNormReLU`: 3×3×3 conv (no bias, padding = dilation) + norm + ReLU + dropout.
- :class:`UBlock`: two :class:`ConvNormReLU`.
- :class:`CBAM` (:class:`ChannelGate` then :class:`SpatialGate`) and :class:`UBlockCBAM`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

# COPLE-Net uses torch's LeakyReLU default slope everywhere.
LEAKY_SLOPE = 0.01

Norm3d = Literal["group", "instance"]
NORMS_3D: tuple[str, ...] = ("group", "instance")


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


# --------------------------------------------------------------------------------------------------------------------
# COPLE-Net (2-D)
# --------------------------------------------------------------------------------------------------------------------


class Bridge(nn.Sequential):
    """1×1 conv (bias) → BatchNorm2d → LeakyReLU(0.01); COPLE-Net uses it to halve the skipped channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size=1), nn.BatchNorm2d(out_channels), _lrelu())


class ResidualSE(nn.Module):
    """COPLE-Net's squeeze-and-excitation: ``x·f + x`` with a ReLU (not sigmoid) gate ``f`` and reduction ``r``.

    ``f = ReLU(W2 · LReLU(W1 · avgpool(x) + b1) + b2)`` with ``W1: C → C/r`` and ``W2: C/r → C`` (1×1 convs, bias).
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        if channels % reduction:
            raise ValueError(f"ResidualSE: channels ({channels}) must be divisible by the reduction ({reduction}).")
        reduced = channels // reduction
        self.se_layers = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, kernel_size=1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(reduced, channels, kernel_size=1),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.se_layers(x) + x


class ConvBlock(nn.Sequential):
    """Conv 3×3 → BN → LReLU → Dropout(p) → Conv 3×3 → BN → LReLU → :class:`ResidualSE` (COPLE ``ConvBNActBlock``)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            _lrelu(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            _lrelu(),
            ResidualSE(out_channels, 2),
        )


class Down(nn.Module):
    """Halve the resolution, then :class:`ConvBlock`.

    Dual pooling (default): ``x_cat = cat[maxpool2(x), avgpool2(x)]`` (2·in channels, max first) and the output is
    ``ConvBlock(x_cat) + x_cat`` (requires out = 2·in). Without dual pooling (ablation −D): ``maxpool2(x)`` only and no
    residual, because in ≠ out.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float, dual_pooling: bool = True) -> None:
        super().__init__()
        self.dual_pooling = dual_pooling
        pooled = 2 * in_channels if dual_pooling else in_channels
        if dual_pooling and out_channels != pooled:
            raise ValueError(f"Down with dual pooling needs out = 2·in, got in={in_channels}, out={out_channels}.")
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(2) if dual_pooling else None
        self.conv = ConvBlock(pooled, out_channels, dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.avgpool is None:
            return self.conv(self.maxpool(x))
        x_cat = torch.cat([self.maxpool(x), self.avgpool(x)], dim=1)
        return self.conv(x_cat) + x_cat


class Up(nn.Module):
    """1×1 conv (bias, no norm/activation) → bilinear ×2 (align_corners=True) → cat[skip, up] → :class:`ConvBlock`.

    With ``residual`` the concatenation is added to the block output (requires skip + up channels = out).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        up_channels: int,
        out_channels: int,
        dropout: float,
        residual: bool = True,
    ) -> None:
        super().__init__()
        cat = skip_channels + up_channels
        if residual and cat != out_channels:
            raise ValueError(
                f"Up with residual needs skip + up = out channels, got {skip_channels} + {up_channels} "
                f"!= {out_channels}."
            )
        self.residual = residual
        self.conv1x1 = nn.Conv2d(in_channels, up_channels, kernel_size=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = ConvBlock(cat, out_channels, dropout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x_cat = torch.cat([skip, self.up(self.conv1x1(x))], dim=1)
        y = self.conv(x_cat)
        return y + x_cat if self.residual else y


class ASPP(nn.Module):
    """COPLE-Net's atrous spatial pyramid pooling (no image-pooling branch, no residual).

    Four plain convs (bias) ``C → C/4``: kernel 1 (dilation 1) and kernel 3 at dilations 2, 4, 6 (padding = dilation),
    concatenated (C channels) → 1×1 conv C → C → BN → LReLU.
    """

    KERNELS: tuple[int, ...] = (1, 3, 3, 3)
    DILATIONS: tuple[int, ...] = (1, 2, 4, 6)

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"ASPP: channels ({channels}) must be divisible by 4 (four equal branches).")
        branch = channels // 4
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, branch, kernel_size=k, dilation=d, padding=(k - 1) // 2 * d)
            for k, d in zip(self.KERNELS, self.DILATIONS)
        )
        self.conv_1x1 = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=1), nn.BatchNorm2d(channels), _lrelu())

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_1x1(torch.cat([b(x) for b in self.branches], dim=1))


# --------------------------------------------------------------------------------------------------------------------
# Dilated 3-D U-Net (open_brats2020)
# --------------------------------------------------------------------------------------------------------------------


def group_norm(channels: int, groups: int = 16) -> nn.GroupNorm:
    """GroupNorm with ``min(groups, C)`` groups (open_brats ``default_norm_layer``).

    When C is not divisible by that number, open_brats halves a divisor starting at 16 until it divides C and uses
    C / divisor groups; the same rule is kept so that any width builds.
    """
    n_groups = min(groups, channels)
    if channels % n_groups:
        divisor = 16
        while channels % divisor:
            divisor //= 2
        n_groups = channels // divisor
    return nn.GroupNorm(n_groups, channels)


def make_norm_3d(norm: Norm3d) -> Callable[[int], nn.Module]:
    """Channel count → norm layer: ``"group"`` (:func:`group_norm`) or ``"instance"`` (InstanceNorm3d, affine)."""
    if norm == "group":
        return group_norm
    if norm == "instance":
        return lambda channels: nn.InstanceNorm3d(channels, affine=True)
    raise ValueError(f"norm must be one of {NORMS_3D}, got {norm!r}.")


class ConvNormReLU(nn.Sequential):
    """Conv3d 3×3×3 (bias=False, padding = dilation) → norm → ReLU → Dropout(p)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: Callable[[int], nn.Module],
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)


class UBlock(nn.Sequential):
    """Two :class:`ConvNormReLU`: in → mid → out, both at the given dilation."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        norm: Callable[[int], nn.Module],
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormReLU(in_channels, mid_channels, norm, dilation, dropout)
        self.conv2 = ConvNormReLU(mid_channels, out_channels, norm, dilation, dropout)


class ChannelGate(nn.Module):
    """CBAM channel attention: ``x · σ(MLP(avgpool(x)) + MLP(maxpool(x)))``, MLP = Linear C→C/r, ReLU, Linear C/r→C.

    ``C/r`` is floored at 1 so that narrow test networks build; at the paper's widths (C ≥ 48) it is C // 16.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        logits = self.mlp(flat.mean(dim=2)) + self.mlp(flat.amax(dim=2))
        return x * torch.sigmoid(logits).view(*logits.shape, *([1] * (x.ndim - 2)))


class SpatialGate(nn.Module):
    """CBAM spatial attention: ``x · σ(ReLU(norm(conv7(cat[max_c(x), mean_c(x)]))))``.

    Conv3d 2→1, kernel 7, padding 3, no bias. The ReLU before the sigmoid (open_brats ``BasicConv``) makes the scale
    at least 0.5.
    """

    def __init__(self, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 1, kernel_size=7, padding=3, bias=False)
        self.norm = norm(1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.relu(self.norm(self.conv(pooled))))


class CBAM(nn.Sequential):
    """Convolutional block attention module: :class:`ChannelGate` then :class:`SpatialGate` (open_brats layout)."""

    def __init__(self, channels: int, norm: Callable[[int], nn.Module], reduction: int = 16) -> None:
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(norm)


class UBlockCBAM(nn.Sequential):
    """:class:`UBlock` followed by :class:`CBAM` on its output (open_brats ``UBlockCbam``)."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        norm: Callable[[int], nn.Module],
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.block = UBlock(in_channels, mid_channels, out_channels, norm, dilation, dropout)
        self.cbam = CBAM(out_channels, norm)
