"""Pruning importance criteria: ``IMPORTANCE`` maps a ``prune.criterion`` value to a criterion.

A criterion scores weights for unstructured pruning (``score``: one score per weight, higher is kept)
and gives torch-pruning's channel importance for structured pruning (``structured``). One that reads
gradients says so with ``needs_grads``: the pruner then accumulates the training loss's gradients on a
few batches before scoring. Adding a criterion is one registered class here; the prune pass and its
settings pick it up by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from autotune.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["IMPORTANCE", "Importance"]


class Importance:
    """A pruning criterion (see the module docstring)."""

    needs_grads: ClassVar[bool] = False

    def score(self, weight: torch.Tensor) -> torch.Tensor:
        """One non-negative score per element of ``weight``."""
        raise NotImplementedError

    def structured(self) -> Any:
        """torch-pruning's ``Importance`` for whole channels."""
        raise NotImplementedError


#: name (the YAML value of ``prune.criterion``) → criterion class.
IMPORTANCE: Registry[type[Importance]] = Registry("pruning criterion")


@IMPORTANCE.register("l1")
class L1(Importance):
    """|w|; channels by their L1 norm."""

    def score(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs()

    def structured(self) -> Any:
        import torch_pruning as tp

        return tp.importance.MagnitudeImportance(p=1)


@IMPORTANCE.register("l2")
class L2(Importance):
    """w²; channels by their L2 norm."""

    def score(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.pow(2)

    def structured(self) -> Any:
        import torch_pruning as tp

        return tp.importance.MagnitudeImportance(p=2)


@IMPORTANCE.register("taylor")
class Taylor(Importance):
    """The first-order Taylor estimate of the loss change, |w·∂L/∂w|."""

    needs_grads = True

    def score(self, weight: torch.Tensor) -> torch.Tensor:
        return (weight * weight.grad).abs() if weight.grad is not None else weight.abs() * 0

    def structured(self) -> Any:
        import torch_pruning as tp

        return tp.importance.TaylorImportance()
