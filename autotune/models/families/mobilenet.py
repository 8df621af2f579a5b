"""The ``mobilenet`` family: MobileNetV2/V3-style inverted-residual CNNs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autotune.models.layers import ConvBNAct, SqueezeExcite, make_divisible

__all__ = ["InvertedResidual", "MobileNet", "build"]

#: Channels of each stage before the width multiplier (MobileNetV3 progression).
STAGE_CHANNELS = (16, 24, 40, 80, 112, 160, 320)


class InvertedResidual(nn.Module):
    """1x1 expand → depthwise kxk → optional SE → 1x1 project, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, se: bool, act: str):
        super().__init__()
        mid = make_divisible(cin * expand)
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, mid, 1, act=act))
        layers.append(ConvBNAct(mid, mid, k, stride, groups=mid, act=act))
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(ConvBNAct(mid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: nn.Module, head: nn.Module, dropout: float, feat: int, classes: int):
        super().__init__()
        self.stem, self.stages, self.head = stem, stages, head
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feat, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.classifier(self.dropout(x.mean((2, 3))))


def _per_stage(params: dict[str, Any], name: str, i: int) -> Any:
    return params.get(f"{name}_{i}", params[name])


def build(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build from ``stages, depth, width_mult, kernel, expand, se, act, stem_channels, dropout``.

    ``depth``, ``kernel``, ``expand`` and ``se`` may be given per stage as ``kernel_0`` etc.
    Strides follow the input: the stem and later stages halve the resolution while it is >= 32
    (stem) or >= 4 (stages), so 8x8 digits and 224x224 images both get sensible networks.
    """
    if len(input_shape) != 3:
        raise ValueError(f"mobilenet needs (C, H, W) inputs, got {input_shape}")
    stages = int(params["stages"])
    if not 1 <= stages <= len(STAGE_CHANNELS):
        raise ValueError(f"stages must be in [1, {len(STAGE_CHANNELS)}], got {stages}")
    width, act = float(params["width_mult"]), str(params["act"])
    cin, size = input_shape[0], min(input_shape[1:])
    stem_stride = 2 if size >= 32 else 1
    size //= stem_stride
    c = make_divisible(params["stem_channels"] * width)
    stem = ConvBNAct(cin, c, 3, stem_stride, act=act)
    blocks: list[nn.Module] = []
    for i in range(stages):
        cout = make_divisible(STAGE_CHANNELS[i] * width)
        stride = 2 if i > 0 and size >= 4 else 1
        size //= stride
        k, e = int(_per_stage(params, "kernel", i)), int(_per_stage(params, "expand", i))
        se = bool(_per_stage(params, "se", i))
        for j in range(int(_per_stage(params, "depth", i))):
            blocks.append(InvertedResidual(c, cout, k, stride if j == 0 else 1, e, se, act))
            c = cout
    feat = make_divisible(c * 4)
    head = ConvBNAct(c, feat, 1, act=act)
    return MobileNet(stem, nn.Sequential(*blocks), head, float(params.get("dropout", 0.0)), feat, num_classes)
