"""The ``mlp`` family: a multi-layer perceptron over the flattened input."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from autotune.models.layers import make_activation

__all__ = ["build"]


def build(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build from ``layers, width, act, batchnorm, dropout``: Flatten → [Linear → (BN) → act → Dropout]* → Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(int(params["layers"])):
        width = int(params["width"])
        layers.append(nn.Linear(fan_in, width))
        if params.get("batchnorm"):
            layers.append(nn.BatchNorm1d(width))
        layers += [make_activation(str(params["act"])), nn.Dropout(float(params.get("dropout", 0.0)))]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)
