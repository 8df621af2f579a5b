"""The layers compression acts on, and how sparse they are."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["sparsity", "weight_layers"]


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The convolutions and linear layers (the layers pruning, clustering and quantization act on)."""
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all conv and linear weights."""
    zeros = total = 0
    for m in weight_layers(model):
        w = m.weight.detach()
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(1, total)
