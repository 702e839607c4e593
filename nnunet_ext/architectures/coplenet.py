"""COPLE-Net: 2-D COVID-19 pneumonia lesion segmentation network, as a plugin network for nnU-Net's plans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from nnunet_ext.architectures._contract import (
    check_channels,
    check_deep_supervision_request,
    check_planner_kwargs,
    check_strides,
)
from nnunet_ext.architectures.blocks import ASPP, Bridge, ConvBlock, Down, Up

DEFAULT_FEATURES: tuple[int, ...] = (32, 64, 128, 256, 512)
DEFAULT_DROPOUT: tuple[float, ...] = (0.0, 0.0, 0.3, 0.4, 0.5)
STRIDES: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (2, 2), (2, 2), (2, 2))
INPUT_DIVISOR = 16  # four 2×2 poolings


class COPLEEncoder(nn.Module):
    """Encoder: ``in_conv`` (H), four :class:`Down` (H/2 … H/16), bridges on the four skips, ASPP at the bottom."""

    def __init__(
        self,
        input_channels: int,
        features: Sequence[int],
        dropout: Sequence[float],
        aspp: bool,
        dual_pooling: bool,
        bridges: bool,
    ) -> None:
        super().__init__()
        self.in_conv = ConvBlock(input_channels, features[0], dropout[0])
        self.downs = nn.ModuleList(Down(features[i], features[i + 1], dropout[i + 1], dual_pooling) for i in range(4))
        # Without bridges (ablation -B) the encoder features are skipped unhalved.
        self.bridges = nn.ModuleList(Bridge(features[i], features[i] // 2) for i in range(4)) if bridges else None
        # Ablation -A: the deepest encoder output goes to the decoder unchanged.
        self.aspp = ASPP(features[4]) if aspp else nn.Identity()

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        features = [self.in_conv(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        skips = features[:4]
        if self.bridges is not None:
            skips = [bridge(f) for bridge, f in zip(self.bridges, skips)]
        return skips, self.aspp(features[4])


class COPLEDecoder(nn.Module):
    """Decoder: four :class:`Up` (H/8 … H), ``seg_layers = [out_conv, heads at H/2, H/4, H/8]``.

    ``deep_supervision`` is the attribute nnU-Net's ``set_deep_supervision_enabled`` sets.
    """

    def __init__(
        self,
        num_classes: int,
        features: Sequence[int],
        dropout: Sequence[float],
        bridges: bool,
        heads: bool,
        deep_supervision: bool,
    ) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        for level in (3, 2, 1, 0):  # up1 … up4
            skip = features[level] // 2 if bridges else features[level]
            up = skip  # the 1×1 conv brings the deeper features to the skip's width, as in the official code
            self.ups.append(Up(features[level + 1], skip, up, features[level], dropout[level], residual=bridges))
        seg_layers = [nn.Conv2d(features[0], num_classes, kernel_size=3, padding=1)]
        if heads:
            # 1×1 heads on up3 (H/2), up2 (H/4), up1 (H/8): highest resolution first, as nnU-Net expects.
            seg_layers += [nn.Conv2d(features[level], num_classes, kernel_size=1) for level in (1, 2, 3)]
        self.seg_layers = nn.ModuleList(seg_layers)
        self.heads = heads
        self.deep_supervision = deep_supervision

    def forward(self, skips: Sequence[Tensor], bottleneck: Tensor) -> Tensor | list[Tensor]:
        check_deep_supervision_request("COPLENet", self.deep_supervision, self.heads)
        x = bottleneck
        decoded = []  # up1 (H/8), up2 (H/4), up3 (H/2), up4 (H)
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
            decoded.append(x)
        out = self.seg_layers[0](x)
        if not self.deep_supervision:
            return out
        return [out] + [head(f) for head, f in zip(self.seg_layers[1:], reversed(decoded[:3]))]


class COPLENet(nn.Module):
    """COPLE-Net (G. Wang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.3000314), official-code layout.

    Follows HiLab-git/COPLE-Net ``coplenet.py`` wherever it differs from the paper figure (METHODS.md §1.5): residual
    SE with a ReLU gate and reduction 2, dual max+avg pooling with a residual, 1×1 bridges halving the skips, ASPP
    (1×1 and 3×3 at dilations 2/4/6, C/4 each, then 1×1 conv + BN + LReLU), plain 1×1 conv + bilinear ×2
    (align_corners=True) in the decoder, dropout 0/0/0.3/0.4/0.5, BatchNorm, LeakyReLU(0.01), 3×3 output conv.

    nnU-Net contract:

    - Keywords ``input_channels``, ``num_classes``, ``deep_supervision`` (absent → False) and the plans'
      ``arch_kwargs``; ``strides`` must be ``[[1,1],[2,2],[2,2],[2,2],[2,2]]``. nnU-Net planner keys
      (``n_stages``, ``conv_op``, ``kernel_sizes``, …) are accepted and ignored, any other key is a ``TypeError``.
    - Returns logits. With deep supervision: a list ``[H, H/2, H/4, H/8]`` (highest resolution first), one output
      per nnU-Net scale; requires ``deep_supervision_heads=True`` (else ``ValueError``). Heads are built whenever
      ``deep_supervision_heads`` is set, whatever ``deep_supervision`` says, so checkpoints load either way.
    - ``self.decoder.deep_supervision`` toggles the outputs; ``self.decoder.seg_layers`` holds the output conv and
      the heads (skipped by ``-pretrained_weights`` when the class count changes).
    - Input ``[N, C, H, W]`` with H and W multiples of 16 (four 2×2 poolings); in train mode BatchNorm at H = 16
      (1×1 bottleneck) needs N > 1.

    Parameters: 10,521,666 for 1 input channel, 2 classes, C = 32, heads off (10,522,568 with heads); C = 16 gives
    2,634,146.

    Ablations of the paper's Table II (not in any published code; decisions pinned by parameter-count tests):

    - ``aspp=False`` (−A): ASPP replaced by the identity; the deepest encoder output goes to up1 unchanged.
    - ``dual_pooling=False`` (−D): max pooling only; the Down residual (in vs 2·in channels) is dropped rather than
      adding a 1×1 projection, so −D removes parameters and the residual of the pooling path only.
    - ``bridges=False`` (−B): encoder features are skipped unhalved; each decoder 1×1 conv maps the deeper features to
      the skip's width (C_l), the block maps 2·C_l → C_l and the Up residual, whose shapes no longer match, is
      dropped. Decoder output widths stay 256/128/64/32.

    Args:
        input_channels: image channels.
        num_classes: output channels (logits), nnU-Net's ``num_segmentation_heads``.
        features_per_stage: five widths, each twice the previous (residuals need it), the first even.
        dropout: five dropout probabilities, per resolution level (the decoder uses its level's value).
        aspp: ASPP at the bottleneck (ablation −A when False).
        dual_pooling: max+avg pooling with residual (ablation −D when False).
        bridges: 1×1 bridges on the skips (ablation −B when False).
        deep_supervision_heads: build 1×1 heads on up3, up2, up1 (not in the official code).
        strides: nnU-Net's per-stage down-sampling; checked against the fixed layout.
        deep_supervision: return the list of outputs (needs heads); nnU-Net passes it, ``None`` means False.
        **planner_kwargs: nnU-Net planner keys, ignored (``n_stages`` must equal ``len(strides)`` if given).

    Raises:
        ValueError: bad widths, dropout, strides, or deep supervision requested without heads.
        TypeError: unknown keyword argument (with a did-you-mean hint).
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        features_per_stage: Sequence[int] = DEFAULT_FEATURES,
        dropout: Sequence[float] = DEFAULT_DROPOUT,
        aspp: bool = True,
        dual_pooling: bool = True,
        bridges: bool = True,
        deep_supervision_heads: bool = False,
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
        features = [check_channels(name, "features_per_stage", f) for f in features_per_stage]
        if len(features) != 5 or features[0] % 2 or any(b != 2 * a for a, b in zip(features, features[1:])):
            raise ValueError(
                f"{name}: features_per_stage must be 5 widths, each twice the previous, the first even "
                f"(e.g. [32, 64, 128, 256, 512]), got {list(features_per_stage)}."
            )
        dropout = [float(p) for p in dropout]
        if len(dropout) != 5 or not all(0.0 <= p < 1.0 for p in dropout):
            raise ValueError(f"{name}: dropout must be 5 probabilities in [0, 1), got {dropout}.")
        deep_supervision = bool(deep_supervision)
        check_deep_supervision_request(name, deep_supervision, deep_supervision_heads)

        self.encoder = COPLEEncoder(input_channels, features, dropout, aspp, dual_pooling, bridges)
        self.decoder = COPLEDecoder(num_classes, features, dropout, bridges, deep_supervision_heads, deep_supervision)

    @staticmethod
    def supports_deep_supervision(arch_kwargs: Mapping[str, object]) -> bool:
        """Whether a network built from these plans ``arch_kwargs`` has deep-supervision heads (default: no)."""
        return bool(arch_kwargs.get("deep_supervision_heads", False))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if x.ndim != 4:
            raise ValueError(
                f"COPLENet is 2-D and expects [N, C, H, W] input, got shape {tuple(x.shape)}; use a 2d base "
                f"configuration."
            )
        h, w = x.shape[2:]
        if h % INPUT_DIVISOR or w % INPUT_DIVISOR or min(h, w) < INPUT_DIVISOR:
            raise ValueError(
                f"COPLENet needs H and W to be multiples of {INPUT_DIVISOR} (four 2×2 poolings), got {h}×{w}. "
                f"Pad the input or use a patch size of multiples of {INPUT_DIVISOR}."
            )
        return self.decoder(*self.encoder(x))


_OWN_KEYS: tuple[str, ...] = (
    "features_per_stage",
    "dropout",
    "aspp",
    "dual_pooling",
    "bridges",
    "deep_supervision_heads",
    "strides",
    "deep_supervision",
)
