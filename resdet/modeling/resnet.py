"""The one ResNet definition of resdet (He et al., "Deep Residual Learning", 2015).

Every model in the project is built here: the ImageNet classifiers (18..200), the CIFAR
6n+2 nets, their plain (shortcut-free) counterparts, the Detectron2 C4/FPN bottom-up
and the C4 res5 ROI head. Parameter names are Detectron2's (``stem.conv1``,
``stem.conv1.norm``, ``res2.0.conv1``, ``res2.0.shortcut``, ``linear``) so weights move
between a classifier and a detector by a key prefix alone.

The container is Detectron2's own :class:`~detectron2.modeling.backbone.ResNet`
(out_features, freeze_at, output_shape, the classifier head); resdet supplies the
blocks, because the paper's shortcut options A/B/C and plain nets need a block that
Detectron2 does not have.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.resnet import BasicStem
from fvcore.nn import weight_init
from torch import nn

__all__ = [
    "SHORTCUTS",
    "NORMS",
    "IMAGENET_DEPTHS",
    "BasicBlock",
    "BottleneckBlock",
    "CifarStem",
    "ResNet",
    "BasicStem",
    "CIFAR_DEPTHS",
    "stage_specs",
    "make_stages",
    "build_resnet",
]

SHORTCUTS = ("A", "B", "C")
NORMS = ("BN", "FrozenBN", "SyncBN", "GN")

# blocks per stage res2..res5; 18/34 use basic blocks, 50+ bottlenecks (paper Table 1;
# 200 is the [3, 24, 36, 3] net of "Identity Mappings in Deep Residual Networks").
IMAGENET_DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}


# The CIFAR depths the paper reports (Sec. 4.2); any 6n+2 builds.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def _check_choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is not supported; allowed: {', '.join(map(str, allowed))}"
        )


def _norm(norm, channels: int) -> Optional[nn.Module]:
    # GN with 32 groups (Detectron2's "GN") cannot split the 16-channel CIFAR stages.
    if norm == "GN":
        return nn.GroupNorm(min(32, channels), channels)
    return get_norm(norm, channels)


class _ShortcutA(nn.Module):
    """Option A: parameter-free identity; subsample spatially, zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.pad = out_channels - in_channels
        self.stride = stride

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x


class _ResidualBlock(CNNBlockBase):
    """y = relu(F(x) + shortcut(x)), or y = relu(F(x)) for the plain net.

    ``shortcut`` is a projection (1x1 conv + norm, named ``shortcut`` as in Detectron2)
    under option B when the shape changes and under option C always; option A uses
    the parameter-free padded identity. Subclasses build the residual branch F.
    """

    def __init__(self, in_channels, out_channels, stride, *, shortcut, residual, norm):
        super().__init__(in_channels, out_channels, stride)
        _check_choice("shortcut", shortcut, SHORTCUTS)
        self.residual = residual
        self.shortcut = None
        self.shortcut_a = None
        reshapes = in_channels != out_channels or stride != 1
        if not residual:
            return
        if shortcut == "C" or (shortcut == "B" and reshapes):
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=_norm(norm, out_channels),
            )
            weight_init.c2_msra_fill(self.shortcut)
        elif shortcut == "A" and reshapes:
            self.shortcut_a = _ShortcutA(in_channels, out_channels, stride)

    def _finish(self, x, out):
        if self.residual:
            if self.shortcut is not None:
                out = out + self.shortcut(x)
            elif self.shortcut_a is not None:
                out = out + self.shortcut_a(x)
            else:
                out = out + x
        return F.relu_(out)

    def _init_convs(self, convs, zero_init_residual):
        for conv in convs:
            weight_init.c2_msra_fill(conv)
        last_norm = convs[-1].norm
        # Goyal et al. 2017: each branch starts at zero, so every block starts as identity.
        if zero_init_residual and self.residual and getattr(last_norm, "weight", None) is not None:
            nn.init.zeros_(last_norm.weight)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        stride=1,
        norm="BN",
        shortcut="B",
        residual=True,
        dilation=1,
        zero_init_residual=False,
    ):
        super().__init__(
            in_channels, out_channels, stride, shortcut=shortcut, residual=residual, norm=norm
        )
        if dilation != 1:
            raise ValueError(f"dilation={dilation} is not supported by basic blocks; allowed: 1")
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=_norm(norm, out_channels),
        )
        self._init_convs([self.conv1, self.conv2], zero_init_residual)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        return self._finish(x, self.conv2(out))


class BottleneckBlock(_ResidualBlock):
    """1x1 (reduce) - 3x3 - 1x1 (expand 4x), ResNet-50 and deeper.

    ``stride_in_1x1``: the original MSRA/Caffe models put the stride in the first 1x1
    conv; torchvision (and fb.torch.resnet) put it in the 3x3, which is slightly more
    accurate. Weights trained one way give wrong features the other way.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        bottleneck_channels,
        stride=1,
        norm="BN",
        shortcut="B",
        residual=True,
        stride_in_1x1=False,
        dilation=1,
        num_groups=1,
        zero_init_residual=False,
    ):
        super().__init__(
            in_channels, out_channels, stride, shortcut=shortcut, residual=residual, norm=norm
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            bias=False,
            norm=_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=_norm(norm, out_channels),
        )
        self._init_convs([self.conv1, self.conv2, self.conv3], zero_init_residual)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        return self._finish(x, self.conv3(out))


class CifarStem(CNNBlockBase):
    """The CIFAR nets' first layer: one 3x3 conv with 16 filters, stride 1, no pooling."""

    def __init__(self, in_channels=3, out_channels=16, norm="BN"):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=_norm(norm, out_channels),
        )
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x):
        return F.relu_(self.conv1(x))


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, block type, block count, channels and first-block stride."""

    name: str
    block: type
    num_blocks: int
    in_channels: int
    out_channels: int
    bottleneck_channels: int
    stride: int
    dilation: int = 1


def stage_specs(
    depth: int,
    *,
    dataset: str = "imagenet",
    stem_out_channels: int = 64,
    res2_out_channels: Optional[int] = None,
    num_groups: int = 1,
    width_per_group: int = 64,
    res5_dilation: int = 1,
) -> List[StageSpec]:
    """The depth table: which blocks, how many, how wide, for every stage of a depth.

    ImageNet nets have stages res2..res5; CIFAR nets res2..res4 of 16/32/64 channels.
    """
    _check_choice("dataset", dataset, ("imagenet", "cifar"))
    if dataset == "cifar":
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR depth={depth} is not supported; allowed: 6n+2 (20, 32, 44, 56, 110,"
                f" 1202, ...)"
            )
        n = (depth - 2) // 6
        widths = (16, 32, 64)
        ins = (stem_out_channels,) + widths[:-1]
        return [
            StageSpec(
                f"res{i + 2}", BasicBlock, n, ins[i], widths[i], widths[i], 1 if i == 0 else 2
            )
            for i in range(3)
        ]

    _check_choice("depth", depth, tuple(IMAGENET_DEPTHS))
    _check_choice("res5_dilation", res5_dilation, (1, 2))
    basic = depth < 50
    if basic and res5_dilation != 1:
        raise ValueError(
            f"res5_dilation={res5_dilation} is not supported by basic blocks (depth"
            f" {depth}); allowed: 1"
        )
    if res2_out_channels is None:
        res2_out_channels = 64 if basic else 256
    if basic and res2_out_channels != 64:
        raise ValueError(
            f"res2_out_channels={res2_out_channels} is not supported for depth {depth}"
            f" (basic blocks); allowed: 64"
        )
    if basic and num_groups != 1:
        raise ValueError(
            f"num_groups={num_groups} is not supported for depth {depth} (basic blocks); allowed: 1"
        )
    specs = []
    in_ch, out_ch, mid = stem_out_channels, res2_out_channels, num_groups * width_per_group
    for i, n in enumerate(IMAGENET_DEPTHS[depth]):
        dilation = res5_dilation if i == 3 else 1
        stride = 1 if i == 0 or dilation == 2 else 2
        specs.append(
            StageSpec(
                f"res{i + 2}",
                BasicBlock if basic else BottleneckBlock,
                n,
                in_ch,
                out_ch,
                mid,
                stride,
                dilation,
            )
        )
        in_ch, out_ch, mid = out_ch, out_ch * 2, mid * 2
    return specs


def make_stages(
    specs: Sequence[StageSpec],
    *,
    norm="BN",
    shortcut="B",
    residual=True,
    stride_in_1x1=False,
    zero_init_residual=False,
    num_groups=1,
) -> List[List[CNNBlockBase]]:
    """Instantiate the blocks of the given stages (all of them, or e.g. only res5 for C4)."""
    _check_choice("shortcut", shortcut, SHORTCUTS)
    if isinstance(norm, str):
        _check_choice("norm", norm, NORMS)
    stages = []
    for s in specs:
        kwargs = dict(
            norm=norm,
            shortcut=shortcut,
            residual=residual,
            dilation=s.dilation,
            zero_init_residual=zero_init_residual,
        )
        if s.block is BottleneckBlock:
            kwargs.update(
                bottleneck_channels=s.bottleneck_channels,
                stride_in_1x1=stride_in_1x1,
                num_groups=num_groups,
            )
        blocks = ResNet.make_stage(
            s.block,
            s.num_blocks,
            in_channels=s.in_channels,
            out_channels=s.out_channels,
            stride_per_block=[s.stride] + [1] * (s.num_blocks - 1),
            **kwargs,
        )
        stages.append(blocks)
    return stages


def build_resnet(
    depth: int,
    *,
    dataset: str = "imagenet",
    shortcut: str = "B",
    residual: bool = True,
    num_classes: Optional[int] = 1000,
    norm="BN",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    out_features: Optional[List[str]] = None,
    freeze_at: int = 0,
    in_channels: int = 3,
    stem_out_channels: Optional[int] = None,
    res2_out_channels: Optional[int] = None,
    num_groups: int = 1,
    width_per_group: int = 64,
    res5_dilation: int = 1,
) -> ResNet:
    """Build a residual (or, with ``residual=False``, plain) network of the paper.

    Args:
        depth: 18, 34, 50, 101, 152, 200 for ImageNet; 6n+2 for CIFAR.
        dataset: "imagenet" (7x7 stem, res2..res5) or "cifar" (3x3 stem, 16/32/64).
        shortcut: "A" zero-padded identity, "B" projection where the shape changes,
            "C" projection on every block.
        residual: False builds the plain counterpart with identical layers.
        num_classes: classifier width (``linear``); None gives the trunk only.
        norm: "BN", "FrozenBN", "SyncBN" or "GN" (Detectron2's ``get_norm``).
        stride_in_1x1: True for MSRA/Caffe2 weights, False for torchvision/timm.
        zero_init_residual: start each branch's last norm at zero.
        out_features: stage names to return (Detectron2 convention); default the last.

    Returns:
        A Detectron2 ``ResNet`` (a ``Backbone``) whose forward returns a dict.
    """
    if stem_out_channels is None:
        stem_out_channels = 16 if dataset == "cifar" else 64
    if isinstance(norm, str):
        _check_choice("norm", norm, NORMS)
    specs = stage_specs(
        depth,
        dataset=dataset,
        stem_out_channels=stem_out_channels,
        res2_out_channels=res2_out_channels,
        num_groups=num_groups,
        width_per_group=width_per_group,
        res5_dilation=res5_dilation,
    )
    stem_cls = CifarStem if dataset == "cifar" else BasicStem
    stem = stem_cls(
        in_channels=in_channels,
        out_channels=stem_out_channels,
        norm=lambda channels: _norm(norm, channels),
    )
    stages = make_stages(
        specs,
        norm=norm,
        shortcut=shortcut,
        residual=residual,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        num_groups=num_groups,
    )
    if out_features is not None:
        allowed = ["stem"] + [s.name for s in specs] + (["linear"] if num_classes else [])
        for f in out_features:
            _check_choice("out_features", f, allowed)
    model = ResNet(
        stem, stages, num_classes=num_classes, out_features=out_features, freeze_at=freeze_at
    )
    # Recorded so that checkpoints and the converter can rebuild the same net.
    model.arch = dict(
        depth=depth,
        dataset=dataset,
        shortcut=shortcut,
        residual=residual,
        stride_in_1x1=stride_in_1x1,
        num_classes=num_classes,
    )
    return model
