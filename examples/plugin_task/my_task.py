"""A worked plug-in: your own data loader and model builder, referenced from a search space.

    task:
      data: my_task:load      # load(seed) -> (train, val, test)
      model: my_task:build    # build(params, input_shape, num_classes) -> torch.nn.Module

Run autotune from this directory (or install the module) so that ``my_task`` can be imported.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def load(seed: int):
    """Three spirals of 2-D points: (train, val, test) as numpy (X, y) pairs.

    Each split may also be a torch ``Dataset`` whose items are (x, y).
    """
    rng = np.random.default_rng(1234)  # the data set is fixed; ``seed`` is for loaders that shuffle
    n, classes = 600, 3
    t = rng.uniform(0.2, 3.0, n)
    y = rng.integers(0, classes, n)
    angle = t * 2.5 + y * (2 * np.pi / classes)
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) + rng.normal(0, 0.08, (n, 2))
    x = x.astype(np.float32)
    return (x[:400], y[:400]), (x[400:500], y[400:500]), (x[500:], y[500:])


class SpiralNet(nn.Module):
    def __init__(self, width: int, depth: int, num_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = 2
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.Tanh(), nn.Dropout(dropout)]
            fan_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(fan_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build(params: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """``params`` holds the space's ``arch`` values plus ``dropout`` from ``train``."""
    if input_shape != (2,):
        raise ValueError(f"SpiralNet expects 2-D points, got {input_shape}")
    return SpiralNet(
        int(params.get("width", 32)), int(params.get("depth", 2)), num_classes, float(params.get("dropout", 0.0))
    )
