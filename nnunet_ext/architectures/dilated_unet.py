"""Dilated 3-D U-Net of the BraTS 2020 solution (open_brats2020 ``EquiUnet`` / ``Att_EquiUnet``) for nnU-Net's plans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from nnunet_ext.architectures._contract import (
    check_channels,
    check_deep_supervision_request,
    check_planner_kwargs,
    check_strides,
)
from nnunet_ext.architectures.blocks import CBAM, NORMS_3D, ConvNormReLU, Norm3d, UBlock, UBlockCBAM, make_norm_3d

# Four encoder stages (three 2×2×2 max-pools), then the dilated bottom and bottom_2, both at 1/8: declaring them as
# two stride-1 stages gives nnU-Net five deep-supervision scales 1, 1/2, 1/4, 1/8, 1/8, one per output.
STRIDES: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1), (1, 1, 1))
INPUT_DIVISOR = 8  # three 2×2×2 poolings


class DilatedEncoder(nn.Module):
    """``encoder1`` … ``encoder4`` (1 … 1/8, max-pool 2 in between) and the dilated ``bottom`` (1/8, dilation 2)."""

    def __init__(
        self, input_channels: int, features: Sequence[int], norm: Norm3d, attention: bool, dropout: float
    ) -> None:
        super().__init__()
        block = UBlockCBAM if attention else UBlock
        make = make_norm_3d(norm)
        in_ch = [input_channels, *features[:3]]
        self.stages = nn.ModuleList(block(i, f, f, make, dropout=dropout) for i, f in zip(in_ch, features))
        self.bottom = block(features[3], features[3], features[3], make, dilation=2, dropout=dropout)
        self.downsample = nn.MaxPool3d(2, 2)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return ``[down1, down2, down3, down4, bottom]``."""
        skips = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.downsample(x))
            skips.append(x)
        skips.append(self.bottom(x))
        return skips


class DilatedDecoder(nn.Module):
    """``bottom_2`` = ConvNormReLU(cat[down4, bottom]) (+ CBAM), three UBlock decoders with trilinear ×2, 1×1 outputs.

    ``seg_layers = [outconv, heads on decoder2 (1/2), decoder3 (1/4), bottom_2 (1/8), bottom (1/8)]``, the order of
    the deep-supervision outputs. ``deep_supervision`` is the attribute nnU-Net's ``set_deep_supervision_enabled``
    sets.
    """

    def __init__(
        self,
        num_classes: int,
        features: Sequence[int],
        norm: Norm3d,
        attention: bool,
        dropout: float,
        heads: bool,
        deep_supervision: bool,
    ) -> None:
        super().__init__()
        make = make_norm_3d(norm)
        f0, f1, f2, f3 = features
        bottom_2 = ConvNormReLU(2 * f3, f2, make, dropout=dropout)
        self.bottom_2 = nn.Sequential(bottom_2, CBAM(f2, make)) if attention else bottom_2
        self.decoder3 = UBlock(2 * f2, f2, f1, make, dropout=dropout)
        self.decoder2 = UBlock(2 * f1, f1, f0, make, dropout=dropout)
        self.decoder1 = UBlock(2 * f0, f0, f0, make, dropout=dropout)
        self.upsample = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
        seg_layers = [nn.Conv3d(f0, num_classes, kernel_size=1)]
        if heads:
            seg_layers += [nn.Conv3d(c, num_classes, kernel_size=1) for c in (f0, f1, f2, f3)]
        self.seg_layers = nn.ModuleList(seg_layers)
        self.heads = heads
        self.deep_supervision = deep_supervision

    def forward(self, skips: Sequence[Tensor]) -> Tensor | list[Tensor]:
        check_deep_supervision_request("DilatedUNet3D", self.deep_supervision, self.heads)
        down1, down2, down3, down4, bottom = skips
        bottom_2 = self.bottom_2(torch.cat([down4, bottom], dim=1))
        up3 = self.decoder3(torch.cat([down3, self.upsample(bottom_2)], dim=1))
        up2 = self.decoder2(torch.cat([down2, self.upsample(up3)], dim=1))
        up1 = self.decoder1(torch.cat([down1, self.upsample(up2)], dim=1))
        out = self.seg_layers[0](up1)
        if not self.deep_supervision:
            return out
        return [out] + [head(f) for head, f in zip(self.seg_layers[1:], (up2, up3, bottom_2, bottom))]


class DilatedUNet3D(nn.Module):
    """Dilated 3-D U-Net of the BraTS 2020 solution (T. Henry et al., arXiv:2011.01045), open_brats2020 layout.

    ``EquiUnet`` (default): width w = 48, encoder widths w/2w/4w/8w (each UBlock in → f → f), three 2×2×2
    max-pools, a dilated bottom (UBlock 8w → 8w → 8w, dilation 2) at 1/8, ``bottom_2`` = ConvNormReLU on
    cat[encoder4, bottom] (16w → 4w), decoders cat[encoder, up] → UBlock (8w→4w→2w, 4w→2w→w, 2w→w→w) with trilinear ×2
    (align_corners=True), 1×1 output conv. Convs 3×3×3 without bias, GroupNorm(min(16, C), C), ReLU, kaiming-normal
    init (fan_out). ``attention=True`` gives ``Att_EquiUnet``: CBAM after every encoder block, the bottom and
    ``bottom_2``. open_brats' ``Unet`` (half-width first convs, 24-channel last decoder) is not provided.

    nnU-Net contract:

    - Keywords ``input_channels``, ``num_classes``, ``deep_supervision`` (absent → False) and the plans'
      ``arch_kwargs``; ``strides`` must be ``[[1,1,1],[2,2,2],[2,2,2],[2,2,2],[1,1,1],[1,1,1]]``. nnU-Net planner
      keys are accepted and ignored; any other key is a ``TypeError``.
    - Returns logits (regions: sigmoid in the loss). Input ``[N, C, D, H, W]`` with every spatial size divisible by 8.
    - ``self.decoder.deep_supervision`` toggles the outputs; all heads are built whenever ``deep_supervision_heads``
      is set, so checkpoints load with deep supervision on or off.

    Deep supervision (METHODS.md §5.5; the mapping is this package's decision). open_brats has four 1×1 heads (on
    decoder2, decoder3, bottom_2, bottom), up-samples them to full resolution and averages five full-resolution
    losses. Here every head stays at its native resolution and the strides above declare the dilated bottom and
    ``bottom_2`` as two stride-1 stages, so nnU-Net's scales are 1, 1/2, 1/4, 1/8, 1/8 and the outputs are
    ``[main (1), decoder2 head (1/2), decoder3 head (1/4), bottom_2 head (1/8), bottom head (1/8)]`` — five outputs
    as in open_brats, each head mapped to a scale. nnU-Net's weights 1/2^i with the last set to 0 (normalised
    0.533, 0.267, 0.133, 0.067, 0) leave the bottom head untrained on a single GPU; under DDP its weight is 1e-6, so
    every parameter receives a gradient and no unused-parameter handling is needed.

    Parameters (4 inputs, 3 outputs, w = 48; GroupNorm and InstanceNorm alike): 23,152,563 without heads,
    23,154,735 with them; with attention 23,205,588 / 23,207,760.

    Args:
        input_channels: image channels (4 MRI sequences for BraTS).
        num_classes: output channels (3 regions for BraTS), nnU-Net's ``num_segmentation_heads``.
        width: first-stage width w; stages are w, 2w, 4w, 8w.
        norm: ``"group"`` (GroupNorm(min(16, C), C)) or ``"instance"`` (InstanceNorm3d, affine).
        attention: CBAM variant (``Att_EquiUnet``).
        dropout: dropout probability after every ConvNormReLU (open_brats default 0).
        deep_supervision_heads: build the four 1×1 heads.
        strides: nnU-Net's per-stage down-sampling; checked against the fixed layout.
        deep_supervision: return the list of outputs (needs heads); nnU-Net passes it, ``None`` means False.
        **planner_kwargs: nnU-Net planner keys, ignored (``n_stages`` must equal ``len(strides)`` if given).

    Raises:
        ValueError: bad width, norm, dropout, strides, or deep supervision requested without heads.
        TypeError: unknown keyword argument (with a did-you-mean hint).
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        width: int = 48,
        norm: Norm3d = "group",
        attention: bool = False,
        dropout: float = 0.0,
        deep_supervision_heads: bool = True,
        strides: Sequence[Sequence[int]] = STRIDES,
        deep_supervision: bool | None = None,
        **planner_kwargs: object,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_planner_kwargs(name, planner_kwargs, _OWN_KEYS, strides)
        self.strides = check_strides(name, strides, STRIDES)
        input_channels = check_channels(name, "input_channels", input_channels)
        num_classes = check_channels(name, "num_classes", num_classes)
        width = check_channels(name, "width", width)
        if norm not in NORMS_3D:
            raise ValueError(f"{name}: norm must be one of {NORMS_3D}, got {norm!r}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"{name}: dropout must be a probability in [0, 1), got {dropout!r}.")
        deep_supervision = bool(deep_supervision)
        check_deep_supervision_request(name, deep_supervision, deep_supervision_heads)

        features = [width * 2**i for i in range(4)]
        self.encoder = DilatedEncoder(input_channels, features, norm, attention, float(dropout))
        self.decoder = DilatedDecoder(
            num_classes, features, norm, attention, float(dropout), deep_supervision_heads, deep_supervision
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.GroupNorm, nn.InstanceNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def supports_deep_supervision(arch_kwargs: Mapping[str, object]) -> bool:
        """Whether a network built from these plans ``arch_kwargs`` has deep-supervision heads (default: yes)."""
        return bool(arch_kwargs.get("deep_supervision_heads", True))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if x.ndim != 5:
            raise ValueError(
                f"DilatedUNet3D is 3-D and expects [N, C, D, H, W] input, got shape {tuple(x.shape)}; use a 3d base "
                f"configuration."
            )
        size = tuple(x.shape[2:])
        if any(s % INPUT_DIVISOR or s < INPUT_DIVISOR for s in size):
            raise ValueError(
                f"DilatedUNet3D needs every spatial size to be a multiple of {INPUT_DIVISOR} (three 2×2×2 poolings), "
                f"got {size}. Pad the input or use a patch size of multiples of {INPUT_DIVISOR}."
            )
        return self.decoder(self.encoder(x))


_OWN_KEYS: tuple[str, ...] = (
    "width",
    "norm",
    "attention",
    "dropout",
    "deep_supervision_heads",
    "strides",
    "deep_supervision",
)
