"""Model families: a registry of architecture builders, importable without torch.

Each family declares its parameters (with defaults) here, so ``autotune check`` can validate a
space's ``arch`` section in milliseconds; the torch code lives in the family's own module and is
imported only when a model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODEL_FAMILIES", "ModelFamily", "build_model", "resolve_family"]


@dataclass(frozen=True)
class ModelFamily:
    """A family of architectures.

    Attributes:
        params: parameter names with their defaults (what a space's ``arch`` may set).
        per_stage: parameters that may take one value per stage (``kernel_0``, ``kernel_1``...).
        builder: ``'module:function'`` with signature ``build(params, input_shape, num_classes)``.
    """

    name: str
    description: str
    params: dict[str, Any]
    builder: str
    per_stage: tuple[str, ...] = ()
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    extra_ok: bool = field(default=False)  # plug-ins accept any parameter names

    def load_builder(self) -> Callable[..., nn.Module]:
        mod, _, fn = self.builder.partition(":")
        return getattr(importlib.import_module(mod), fn)


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
        builder="autotune.models.mobilenet:build",
    )
)
MODEL_FAMILIES.register("mlp")(
    ModelFamily(
        name="mlp",
        description="Multi-layer perceptron for tabular (or flattened) inputs",
        params={"layers": 2, "width": 128, "act": "relu", "batchnorm": False},
        per_stage=(),
        choices={"act": ("relu", "relu6", "hardswish", "silu")},
        builder="autotune.models.mlp:build",
    )
)


def resolve_family(model: str) -> ModelFamily:
    """A registered family, or a plug-in family for ``'pkg.module:build'``."""
    if ":" in model:
        return ModelFamily(name=model, description="plug-in", params={}, builder=model, extra_ok=True)
    return MODEL_FAMILIES.get(model, key="task.model")


def build_model(
    family: ModelFamily, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build a model of ``family``; defaults fill the parameters the trial did not set."""
    full = {**family.params, **params}
    return family.load_builder()(full, tuple(input_shape), int(num_classes))
