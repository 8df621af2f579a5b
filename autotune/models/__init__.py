"""Model families: a registry of architecture builders, importable without torch.

- ``base.ModelFamily``: what a family declares (parameters, defaults, allowed values, its builder);
- ``families``: ``MODEL_FAMILIES``, the registered families, one module each;
- ``layers``: building blocks the CNN families share (and ``fold_batchnorm``).

A space may also name a plug-in builder, ``task.model: 'pkg.module:build'`` (see ``resolve_family``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.models.base import ModelFamily
from autotune.models.families import MODEL_FAMILIES

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODEL_FAMILIES", "ModelFamily", "build_model", "count_ops", "resolve_family"]


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


def count_ops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, parameters) of one inference at batch 1, counted by torch-pruning (the model is put in
    eval mode)."""
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros((1, *input_shape)))
    return int(macs), int(params)
