"""Building blocks shared by the CNN families."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBNAct", "SqueezeExcite", "fold_batchnorm", "make_activation", "make_divisible"]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10 %."""
    n = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return n + divisor if n < 0.9 * v else n


def make_activation(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(acts)}")
    return acts[name]()


class ConvBNAct(nn.Sequential):
    """Conv2d → BatchNorm2d → activation (or none)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_activation(act) if act else nn.Identity()


class SqueezeExcite(nn.Module):
    """Channel attention: global pool → 1x1 reduce → ReLU → 1x1 expand → hardsigmoid gate."""

    def __init__(self, channels: int, ratio: float = 0.25):
        super().__init__()
        mid = make_divisible(channels * ratio)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(torch.relu(self.reduce(s)))
        return x * nn.functional.hardsigmoid(s)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``ConvBNAct``'s BatchNorm into its conv, in place (eval mode). Returns the count.

    A conv factorized into a sequence (low-rank) gets the BatchNorm folded into its last conv.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    n = 0
    for m in model.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            if isinstance(m.conv, nn.Sequential):
                m.conv[-1] = fuse_conv_bn_eval(m.conv[-1].eval(), m.bn.eval())
            else:
                m.conv = fuse_conv_bn_eval(m.conv.eval(), m.bn.eval())
            m.bn = nn.Identity()
            n += 1
    return n
