"""Load YAML files into schema models; every problem becomes one ``UserError`` naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import (
    SearchSpace,
)
from autotune.errors import UserError
from autotune.registry import closest

__all__ = ["load_profile", "load_space", "load_yaml_model", "read_yaml", "validation_error"]

M = TypeVar("M", bound=BaseModel)

# Pydantic inserts union-member tags into error locations; they are not keys the user wrote.
_UNION_TAGS = {"categorical", "int", "float", "bool", "str", "list[...]", "dict[...]"}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``.

    Raises:
        UserError: the file is missing, unreadable, not YAML, or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", file=str(path))
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"malformed YAML: {where}{problem}", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read file: {err}", file=str(path)) from None
    if not isinstance(data, dict):
        raise UserError("the file must hold a YAML mapping at the top level", file=str(path))
    return data


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(x) for x in loc if str(x) not in _UNION_TAGS and "[" not in str(x)]
    return ".".join(parts)


def _allowed_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model at ``loc`` (best effort, for 'did you mean')."""
    cls: Any = schema
    for part in loc[:-1]:
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


def _best_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    # Inside a union pydantic reports one error per member; the deepest location is the one that
    # matched the user's intent (e.g. the 'int' member when type: int was written).
    # A mapping given where a scalar or a model may go (task.data) meant the model: its error wins.
    def scalar_miss(e: dict[str, Any]) -> bool:
        return e["type"].endswith("_type") and isinstance(e.get("input"), dict | list)

    return max(errors, key=lambda e: (e["type"] != "union_tag_invalid", not scalar_miss(e), len(e["loc"])))


_PARAM_TYPES = ("categorical", "int", "float")


def _precheck_params(data: dict[str, Any], file: str) -> None:
    """Name the key of a parameter whose ``type`` is missing or unknown (pydantic's union errors
    would only say which scalar types the value is not)."""
    for section in ("arch", "train"):
        params = data.get(section)
        if not isinstance(params, dict):
            continue
        for name, spec in params.items():
            if not isinstance(spec, dict):
                continue
            kind = spec.get("type")
            if kind not in _PARAM_TYPES:
                near = closest(str(kind), list(_PARAM_TYPES)) if kind is not None else None
                raise UserError(
                    "a parameter needs 'type' (categorical, int or float)"
                    if kind is None
                    else f"unknown parameter type {kind!r}; known: {', '.join(_PARAM_TYPES)}",
                    file=file,
                    key=f"{section}.{name}.type",
                    hint=f"did you mean {near!r}?" if near else "a fixed value is written without a mapping",
                )


def load_yaml_model(path: str | Path, schema: type[M]) -> M:
    """Validate the YAML file at ``path`` against ``schema``.

    Raises:
        UserError: naming the file, the key path and the problem (with the closest key).
    """
    data = read_yaml(path)
    if schema is SearchSpace:
        _precheck_params(data, str(path))
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, schema, file=str(path)) from None


def validation_error(
    err: ValidationError, schema: type[BaseModel], *, file: str | None, prefix: tuple[str, ...] = ()
) -> UserError:
    """The ``UserError`` for pydantic's most relevant error; ``prefix`` is the key path of ``schema``."""
    e = _best_error(err.errors())
    key = ".".join([*prefix, _loc(e["loc"])]).strip(".") or None
    hint = None
    if e["type"] == "extra_forbidden":
        allowed = _allowed_keys(schema, tuple(x for x in e["loc"] if str(x) not in _UNION_TAGS and "[" not in str(x)))
        near = closest(str(e["loc"][-1]), allowed) if allowed else None
        problem = "unknown key"
        if near:
            hint = f"did you mean {near!r}?"
        elif allowed:
            hint = f"valid keys: {', '.join(allowed)}"
    elif e["type"] == "missing":
        problem = "required key is missing"
    else:
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        problem = msg if isinstance(got, dict | list) or got is None else f"{msg} (got {got!r})"
    return UserError(problem, file=file, key=key, hint=hint)


def load_profile(path: str | Path) -> DeviceProfile:
    """Load and validate a device profile YAML file."""
    return load_yaml_model(path, DeviceProfile)


def load_space(path: str | Path) -> SearchSpace:
    """Load a search-space YAML file against the schema.

    What the schema alone cannot check (metrics, conditions, plug-ins, compression settings) is
    checked by ``autotune.validate.load_space``, which calls this first.
    """
    return load_yaml_model(path, SearchSpace)
