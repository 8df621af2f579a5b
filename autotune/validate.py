"""One validation front: a loaded space is checked in full, once, before anything runs.

``config/`` holds the schemas only (what a YAML file may say). This module checks what the schemas
alone cannot, by asking each plug-in point about its own part:

- cross-field rules: objectives and constraints name measured metrics, conditions name parameters,
  training keys and choices are known;
- the data set (``DATASETS``) and the model family (``MODEL_FAMILIES``: its parameters and their
  allowed values, ``per_stage``), a distillation teacher's family too;
- the compression passes (``autotune.compress.compress_settings``: each pass validates its settings);
- plug-in references (``'pkg.module:function'``) are found on the path, without importing them.

Checks that need torch or TVM (the target, the runner, building the model) are in ``autotune.preflight``.
"""

from __future__ import annotations

import re
from pathlib import Path

from autotune.config.load import load_space as load_schema
from autotune.config.search_space import (
    DEVICE_METRICS,
    METRICS,
    OPTIMIZERS,
    SCHEDULES,
    TRAIN_KEYS,
    TRAINED_METRICS,
    CategoricalParam,
    DataFiles,
    SearchSpace,
)
from autotune.errors import UserError
from autotune.models.check import check_arch
from autotune.plugins import find_plugin
from autotune.registry import closest

__all__ = ["check_space", "check_space_semantics", "load_space", "validate_space"]

_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def load_space(path: str | Path, *, plugins: bool = True) -> SearchSpace:
    """Load a search-space YAML file and validate it in full (see the module docstring).

    Args:
        plugins: also check the data set, the model family and plug-in references (a finished run's
            copy of its space skips them: its plug-ins may not be importable from here).

    Raises:
        UserError: naming the file, the key and the problem.
    """
    space = load_schema(path)
    return validate_space(space, file=str(path), plugins=plugins)


def validate_space(space: SearchSpace, *, file: str | None = None, plugins: bool = True) -> SearchSpace:
    """Check a schema-valid space once; return it unchanged."""
    check_space_semantics(space, file=file)
    if plugins:
        check_space(space, file=file or "")
    return space


def check_space_semantics(space: SearchSpace, *, file: str | None = None) -> None:
    """Cross-field checks: objectives, constraints, conditions, train keys and choices."""
    from autotune.compress import compress_settings
    from autotune.space import param_sections

    measured = set(METRICS) - (set() if space.trains else TRAINED_METRICS)
    for section in ("objectives", "constraints"):
        for full in getattr(space, section):
            name, at, device = full.partition("@")
            if at and (name not in DEVICE_METRICS or not _DEVICE_NAME.match(device)):
                raise UserError(
                    f"{full!r}: only {', '.join(DEVICE_METRICS)} can name a device or a backend, as "
                    "METRIC@PROFILE_NAME or METRIC@BACKEND",
                    file=file,
                    key=f"{section}.{full}",
                    hint="a profile given with --device in a multi-device search, or a backend of the profile's "
                    "backends list after the first",
                )
            if name not in METRICS:
                near = closest(name, list(METRICS))
                raise UserError(
                    f"{name!r} is not a measured metric; measured: {', '.join(METRICS)}",
                    file=file,
                    key=f"{section}.{name}",
                    hint=f"did you mean {near!r}?" if near else None,
                )
            if name not in measured:
                raise UserError(
                    f"{name!r} is not measured in a space without a train section",
                    file=file,
                    key=f"{section}.{name}",
                    hint="add a train section, or drop this entry for a latency-only study",
                )
    if space.compress:
        compress_settings(space, file=file)  # each pass validates its own settings
    sections = param_sections(space)
    for key in sections["train"]:
        if key not in TRAIN_KEYS:
            near = closest(key, list(TRAIN_KEYS))
            raise UserError(
                "unknown training parameter",
                file=file,
                key=f"train.{key}",
                hint=f"did you mean {near!r}?" if near else f"valid: {', '.join(TRAIN_KEYS)}",
            )
    for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        spec = sections["train"].get(key)
        values = spec.choices if isinstance(spec, CategoricalParam) else [spec] if spec is not None else []
        for v in values:
            if v not in allowed:
                near = closest(str(v), list(allowed))
                raise UserError(
                    f"{v!r} is not a known {key}; known: {', '.join(allowed)}",
                    file=file,
                    key=f"train.{key}",
                    hint=f"did you mean {near!r}?" if near else None,
                )
    for section, params in sections.items():
        for name, spec in params.items():
            if not hasattr(spec, "type"):
                continue
            if spec.per_stage and "stages" not in params:
                raise UserError(
                    "per_stage needs an int parameter 'stages' in the same section",
                    file=file,
                    key=f"{section}.{name}.per_stage",
                )
            for ref in spec.when or {}:
                sec, _, pname = ref.rpartition(".")
                sec = sec or section
                pool = sections.get(sec, {})
                if pname not in pool or pname == name:
                    near = closest(pname, [p for p in pool if p != name])
                    raise UserError(
                        f"condition names an unknown parameter {ref!r}",
                        file=file,
                        key=f"{section}.{name}.when.{ref}",
                        hint=f"did you mean {near!r}?" if near else None,
                    )


def _check_files(files: DataFiles, space: SearchSpace, *, file: str) -> None:
    """What can be seen of file data without reading it: the path exists; images have a shape.
    The contents are read (and refused with the data file named) by pre-flight."""
    path = Path(files.path)
    key = f"task.data.{files.kind}"
    if not path.exists():
        raise UserError(f"no such {'folder' if files.kind == 'images' else 'file'}: {files.path}", file=file,
                        key=key, hint="relative paths are read from the working directory")  # fmt: skip
    if files.kind == "images" and not path.is_dir():
        raise UserError(f"not a folder: {files.path}", file=file, key=key)
    if files.kind == "images" and not space.task.input_shape:
        raise UserError("an image folder needs an input shape to resize to", file=file, key="task.input_shape",
                        hint="e.g. [3, 32, 32]")  # fmt: skip


def check_space(space: SearchSpace, *, file: str) -> None:
    """Check what needs the registries: task names, the family's parameters and their values."""
    from autotune.data import DATASETS

    t = space.task
    if isinstance(t.data, DataFiles):
        _check_files(t.data, space, file=file)
    elif ":" in t.data:
        find_plugin(t.data, file=file, key="task.data")
    else:
        DATASETS.get(t.data, file=file, key="task.data")
    if t.data == "synthetic" and not t.input_shape:
        raise UserError(
            "synthetic data needs an input shape", file=file, key="task.input_shape", hint="e.g. [3, 224, 224]"
        )
    if t.data == "synthetic" and space.trains:
        raise UserError(
            "synthetic data has no labels to train on", file=file, key="train", hint="remove the train section"
        )
    check_arch(t.model, space.arch, file=file, key="")
