"""The registered model families: ``MODEL_FAMILIES``, one ``ModelFamily`` per module of this package.

Each family's torch code is its own module here (``mobilenet.py``, ``mlp.py``) with
``build(params, input_shape, num_classes)``. Its declaration (parameters, defaults, allowed values)
is registered below rather than in that module, so ``autotune check`` validates a space's ``arch``
without importing torch; the module is imported only when a model is built.
"""

from __future__ import annotations

from autotune.models.base import ModelFamily
from autotune.registry import Registry

__all__ = ["MODEL_FAMILIES"]

MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family")

MODEL_FAMILIES.register("mobilenet")(
    ModelFamily(
        name="mobilenet",
        description="MobileNetV2/V3-style CNN: inverted residuals, depthwise kxk, optional SE",
        params={
            "stages": 3,
            "depth": 1,
            "width_mult": 1.0,
            "kernel": 3,
            "expand": 4,
            "se": False,
            "act": "relu",
            "stem_channels": 16,
        },
        per_stage=("depth", "kernel", "expand", "se"),
        choices={
            "act": ("relu", "relu6", "hardswish", "silu"),
            "kernel": (1, 3, 5, 7),
            "stages": (1, 2, 3, 4, 5, 6, 7),
        },
        builder="autotune.models.families.mobilenet:build",
    )
)
MODEL_FAMILIES.register("mlp")(
    ModelFamily(
        name="mlp",
        description="Multi-layer perceptron for tabular (or flattened) inputs",
        params={"layers": 2, "width": 128, "act": "relu", "batchnorm": False},
        per_stage=(),
        choices={"act": ("relu", "relu6", "hardswish", "silu")},
        builder="autotune.models.families.mlp:build",
    )
)
