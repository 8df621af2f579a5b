"""The one way user plug-ins are imported: ``'module:attribute'`` references in a search space.

A space may name user code instead of a registered entry: ``task.model: mynet:build`` (a model
builder), ``task.data: mydata:load`` (a data loader). ``load_plugin`` is the only place such a
reference is imported, so where user code is looked for is written down once, here.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

from autotune.errors import UserError

__all__ = ["find_plugin", "load_plugin"]


def _split(ref: str, *, file: str | None, key: str | None) -> tuple[str, str]:
    module, _, attribute = ref.partition(":")
    if not module or not attribute or not attribute.isidentifier():
        raise UserError(f"plug-in reference {ref!r} must look like 'pkg.module:function'", file=file, key=key)
    return module, attribute


def load_plugin(ref: str, *, file: str | None = None, key: str | None = None) -> Any:
    """Import ``'pkg.module:attribute'`` and return the attribute.

    Where modules are looked for: the current working directory, then ``PYTHONPATH`` and the
    installed packages (``sys.path``). To make the working directory searchable, it is inserted
    at the front of ``sys.path`` if it is not there yet; this is the only ``sys.path`` edit autotune
    makes. Run ``autotune`` from the directory that holds your module, or install it / put its
    directory on ``PYTHONPATH``.

    Args:
        ref: the reference, ``module:attribute`` (the module may be dotted: ``pkg.mod:build``).
        file: the file the reference was read from, for the error message.
        key: the key that holds the reference (``task.model``), for the error message.

    Raises:
        UserError: naming ``file`` and ``key`` when the reference is malformed, the module cannot be
            imported, or it has no such attribute.
    """
    module, attribute = _split(ref, file=file, key=key)
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise UserError(
            f"cannot import plug-in module {module!r}: {err}",
            file=file,
            key=key,
            hint="run from the directory that holds it, put that directory on PYTHONPATH, or install it",
        ) from None
    try:
        return getattr(mod, attribute)
    except AttributeError:
        raise UserError(f"module {module!r} has no attribute {attribute!r}", file=file, key=key) from None


def find_plugin(ref: str, *, file: str | None, key: str) -> None:
    """``ref`` looks like ``'pkg.module:function'`` and its top-level package can be found, looking in the
    working directory first (as the plug-in loader does); nothing is imported and ``sys.path`` is left alone."""
    mod, _ = _split(ref, file=file, key=key)
    top = mod.partition(".")[0]
    try:
        found = importlib.machinery.PathFinder.find_spec(top, [str(Path.cwd()), *sys.path])
        found = found or importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserError(
            f"plug-in module {mod!r} cannot be found",
            file=file,
            key=key,
            hint="run from the directory that holds it, or install it into this environment",
        )
