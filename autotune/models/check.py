"""Checks of a space's architecture section against its model family: known parameters, allowed
values, per-stage parameters (torch-free, so ``autotune check`` stays fast)."""

from __future__ import annotations

from typing import Any

from autotune.config.search_space import CategoricalParam, FloatParam, IntParam
from autotune.errors import UserError
from autotune.models import resolve_family
from autotune.plugins import find_plugin
from autotune.registry import closest

__all__ = ["check_arch"]


def check_arch(model: str, arch: dict[str, Any], *, file: str, key: str, model_key: str = "task.model") -> None:
    """The model family exists and ``arch`` only names its parameters, with allowed values.
    ``key`` prefixes the reported keys (``''`` for the space's own ``arch``)."""
    where = f"{key}.arch" if key else "arch"
    if ":" in model:
        find_plugin(model, file=file, key=model_key)
        return
    try:
        fam = resolve_family(model)
    except UserError as err:
        raise UserError(err.problem, file=file, key=model_key, hint=err.hint) from None
    for name, spec in arch.items():
        if name not in fam.params:
            near = closest(name, list(fam.params))
            raise UserError(
                f"unknown parameter of model family {fam.name!r}",
                file=file,
                key=f"{where}.{name}",
                hint=f"did you mean {near!r}?" if near else f"valid: {', '.join(fam.params)}",
            )
        if getattr(spec, "per_stage", False) and name not in fam.per_stage:
            raise UserError(
                f"{name!r} cannot vary per stage; per-stage parameters: {', '.join(fam.per_stage) or 'none'}",
                file=file,
                key=f"{where}.{name}.per_stage",
            )
        if name in fam.choices:
            _check_value(fam.choices[name], spec, file, f"{where}.{name}")


def _check_value(fam_choices: tuple[Any, ...], spec: Any, file: str, key: str) -> None:
    values: list[Any]
    if isinstance(spec, CategoricalParam):
        values = list(spec.choices)
    elif isinstance(spec, IntParam | FloatParam):
        values = [spec.low, spec.high] if isinstance(spec, IntParam) else []
        if isinstance(spec, IntParam) and any(isinstance(c, int) for c in fam_choices):
            values = list(range(spec.low, spec.high + 1, spec.step))
    else:
        values = [spec]
    for v in values:
        if v not in fam_choices:
            near = closest(str(v), [str(c) for c in fam_choices])
            raise UserError(
                f"{v!r} is not allowed; allowed: {', '.join(map(str, fam_choices))}",
                file=file,
                key=key,
                hint=f"did you mean {near!r}?" if near else None,
            )
