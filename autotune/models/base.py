"""``ModelFamily``: what a family of architectures declares (torch-free, so spaces validate fast)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.plugins import load_plugin

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelFamily"]


@dataclass(frozen=True)
class ModelFamily:
    """A family of architectures.

    Attributes:
        name: the key a space's ``task.model`` names it by (or the plug-in reference).
        description: one line for ``autotune catalog``.
        params: parameter names with their defaults (what a space's ``arch`` may set).
        builder: ``'module:function'`` with signature ``build(params, input_shape, num_classes)``.
        per_stage: parameters that may take one value per stage (``kernel_0``, ``kernel_1``...).
        choices: the allowed values of parameters that have a fixed set.
        extra_ok: the family accepts any parameter names (plug-ins).
    """

    name: str
    description: str
    params: dict[str, Any]
    builder: str
    per_stage: tuple[str, ...] = ()
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    extra_ok: bool = field(default=False)

    def load_builder(self, *, key: str = "task.model") -> Callable[..., nn.Module]:
        """Import the builder (``autotune.plugins.load_plugin``); ``key`` names it in errors."""
        return load_plugin(self.builder, key=key)
