"""The compression-pass interface, its registry and the settings helpers every pass shares.

A pass is one technique (distillation, low-rank factorization, pruning, quantization). It has a
``Settings`` schema (pydantic; every field a constant or a distribution to search, validated before
a search starts), an ``order`` in the fixed pipeline, and two hooks:

- ``prepare(settings, ctx)`` runs before training and may return a training loss (distillation);
- ``apply(model, settings, ctx)`` runs after training, on the model the previous pass returned,
  and returns the compressed model (fine-tuning included) with a ``PassReport`` of its columns.

and two questions the rest of the pipeline asks instead of testing technique names:
``changes_structure(settings)`` (screening) and ``deployment(settings)`` (the compiler's precision).

This module imports neither torch nor TVM: ``autotune check`` validates spaces without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from autotune.config.search_space import CategoricalParam, FloatParam, IntParam, ParamOrConst
from autotune.records import Deployment, PassReport
from autotune.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from autotune.config.search_space import SearchSpace
    from autotune.data import DataSplits
    from autotune.quiet import QuietLock

__all__ = [
    "PASSES",
    "CompressContext",
    "CompressionPass",
    "PassSettings",
    "Prepared",
    "check_values",
    "spec_values",
]


class PassSettings(BaseModel):
    """Base of a pass's settings: strict keys; ``enabled`` may itself be searched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: ParamOrConst = True

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting that has a default, with it."""
        return {k: f.default for k, f in cls.model_fields.items() if not f.is_required()}


def spec_values(spec: Any) -> list[Any]:
    """The values a constant or a distribution can take, as far as bounds go (low and high for ranges)."""
    if isinstance(spec, CategoricalParam):
        return list(spec.choices)
    if isinstance(spec, IntParam | FloatParam):
        return [spec.low, spec.high]
    return [spec]


def check_values(
    spec: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: Iterable[Any] | None = None,
    integer: bool = False,
) -> Any:
    """Raise ``ValueError`` if any value ``spec`` can take is outside the bounds or the choices."""
    allowed = list(choices) if choices is not None else None
    for v in spec_values(spec):
        if allowed is not None:
            if v not in allowed:
                raise ValueError(f"{v!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
            continue
        if integer and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{v!r} must be int")
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            raise ValueError(f"{v!r} is not a number")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise ValueError(f"{v!r} is out of range: must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and (v >= hi if hi_open else v > hi):
            raise ValueError(f"{v!r} is out of range: must be {'<' if hi_open else '<='} {hi:g}")
    return spec


#: A training loss: (logits, inputs, labels) -> scalar tensor.
LossFn = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class CompressContext:
    """What a pass may use (read-only).

    Attributes:
        train: the trial's training settings (fine-tuning reuses them), or None (no fine-tuning).
        cache_dir: a directory every trial of the run shares (the distillation teacher lives here).
        loss: the training loss passes and fine-tuning use; ``None`` means cross-entropy. Set by the
            pipeline from what ``prepare`` returns.
    """

    space: SearchSpace
    data: DataSplits
    train: dict[str, Any] | None
    seed: int
    cache_dir: Path
    lock: QuietLock
    loss: LossFn | None = None


@dataclass(frozen=True)
class Prepared:
    """What a pass's ``prepare`` hands back: a training loss to use (or None) and leaderboard columns."""

    loss: LossFn | None = None
    columns: dict[str, Any] = field(default_factory=dict)


class CompressionPass:
    """One technique. Subclasses set ``name``, ``order``, ``Settings`` and override the hooks.

    Every hook receives the trial's resolved ``Settings`` (each field a concrete value). ``apply``
    must leave the model it is given untouched (work on a deep copy) and be deterministic for
    ``ctx.seed``; the contract test in ``tests/unit/compress/test_pass_contract.py`` checks both.
    """

    name: ClassVar[str]
    order: ClassVar[int]
    Settings: ClassVar[type[PassSettings]]

    def prepare(self, settings: Any, ctx: CompressContext) -> Prepared:
        """Called once before training (distillation returns its loss here). Default: nothing."""
        return Prepared()

    def apply(self, model: nn.Module, settings: Any, ctx: CompressContext) -> tuple[nn.Module, PassReport]:
        """Called after training, on the model the previous pass returned: the compressed model
        (fine-tuning included) and the pass's report. Default: an unchanged copy."""
        import copy

        return copy.deepcopy(model), PassReport(self.name)

    def changes_structure(self, settings: Any) -> bool:
        """Whether the pass changes the deployed network's shape or precision (then latency, size
        and MACs are only known after it ran, and screening must wait). Default: no."""
        return False

    def deployment(self, settings: Any) -> Deployment | None:
        """The precision the compiler must build at, when this pass decides it. Default: None."""
        return None

    def check(self, settings: Any, space: SearchSpace, *, file: str | None = None) -> None:
        """Called once when the space is validated, after ``Settings`` accepted the section: checks
        against the rest of the space. Raises ``UserError`` naming ``file`` and the key. Default: none."""


#: name → pass class. The pipeline runs enabled passes in ``order``.
PASSES: Registry[type[CompressionPass]] = Registry("compression technique")
