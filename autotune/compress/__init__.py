"""Compression passes: distillation, low-rank factorization, pruning, weight clustering, quantization.

``PASSES`` is the registry (one module per technique); ``compress_settings`` validates a space's
``compress`` section against it, ``trial_settings`` turns a trial's sampled ``compress.*``
parameters into each pass's settings. The passes themselves (torch) are in ``pipeline``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.compress import cluster, distill, lowrank, prune, quantize  # noqa: F401 - they register their passes
from autotune.compress.base import PASSES, CompressContext, CompressionPass, PassSettings

if TYPE_CHECKING:
    from autotune.config.search_space import SearchSpace

__all__ = [
    "PASSES",
    "CompressContext",
    "CompressionPass",
    "PassSettings",
    "compress_settings",
    "param_sections",
    "trial_settings",
]


def compress_settings(space: SearchSpace, *, file: str | None = None) -> dict[str, PassSettings]:
    """Validate the space's ``compress`` section: technique names, their keys and values, and each
    pass's checks against the rest of the space. Done once per space object (kept with it).

    Raises:
        UserError: naming ``compress.<technique>.<key>`` and the problem.
    """
    return space.derived("compress", lambda: _validate(space, file))


def _validate(space: SearchSpace, file: str | None) -> dict[str, PassSettings]:
    """Validate each technique's settings (``compress_settings``, uncached)."""
    from pydantic import ValidationError

    from autotune.config.load import validation_error
    from autotune.errors import UserError

    out: dict[str, PassSettings] = {}
    for name, raw in space.compress.items():
        cls = PASSES.get(name, file=file, key=f"compress.{name}")
        if not isinstance(raw, dict):
            raise UserError("a technique's settings must be a mapping", file=file, key=f"compress.{name}")
        try:
            settings = cls.Settings.model_validate(raw)
        except ValidationError as err:
            raise validation_error(err, cls.Settings, file=file, prefix=("compress", name)) from None
        cls().check(settings, space, file=file)
        out[name] = settings
    return out


def param_sections(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """``{'compress.<technique>': {key: constant or distribution}}`` for the sampler and condition checks.
    Nested settings (the distillation teacher) are not parameters and are left out."""
    from pydantic import BaseModel

    out: dict[str, dict[str, Any]] = {}
    for name, settings in compress_settings(space).items():
        out[f"compress.{name}"] = {
            k: v
            for k in type(settings).model_fields
            if (v := getattr(settings, k)) is not None and (hasattr(v, "type") or not isinstance(v, BaseModel))
        }
    return out


def trial_settings(
    space: SearchSpace, params: dict[str, Any], *, validated: dict[str, PassSettings] | None = None
) -> dict[str, dict[str, Any]]:
    """Each technique's settings for one trial: defaults, then the space's constants, then the
    sampled values (``params['compress.<technique>.<key>']``). Keys of inactive parameters are absent.
    ``validated``: the space's ``compress_settings``, when the caller validated them already."""
    out: dict[str, dict[str, Any]] = {}
    for name, settings in (validated if validated is not None else compress_settings(space)).items():
        prefix = f"compress.{name}."
        values = type(settings).defaults()
        for k in type(settings).model_fields:
            v = getattr(settings, k)
            if not hasattr(v, "type"):  # constants (and nested settings such as the teacher)
                values[k] = v
        values.update({k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)})
        out[name] = values
    return out
