"""autotune: hardware-aware auto-tuning and neural architecture search.

The front door is small and cheap to import: torch, TVM and Ray are imported only when a search or
an evaluation runs.
"""

from __future__ import annotations

import os
import sys
import types

# TVM pins the thread that starts its runtime pool to one core unless told not to; in a process that
# also trains (the API, a notebook), PyTorch would then crawl on that core (96 s for a 0.8 s training
# measured here). Set before TVM is imported; a value the user set wins.
os.environ.setdefault("TVM_BIND_THREADS", "0")

from autotune.api import (  # noqa: E402 - after the environment TVM reads
    calibrate_device,
    check,
    evaluate,
    export,
    list_profiles,
    list_spaces,
    load_profile,
    load_space,
    profile,
    report,
    search,
    tune,
)
from autotune.errors import CandidateFailed, UserError
from autotune.leaderboard import COLUMNS, SUMMARY_COLUMNS, read_leaderboard

__version__ = "0.1.0"


class _Package(types.ModuleType):
    """The ``autotune`` package: importing a submodule that shares its name with a public function
    (``autotune.evaluate``, ``autotune.search``) must not replace the function. Python binds every
    submodule it loads as an attribute of its package; this package keeps its functions instead, and
    the submodules stay importable by name (``from autotune.evaluate import evaluate``)."""

    def __setattr__(self, name: str, value: object) -> None:
        current = self.__dict__.get(name)
        if isinstance(value, types.ModuleType) and callable(current) and name in __all__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "COLUMNS",
    "SUMMARY_COLUMNS",
    "CandidateFailed",
    "UserError",
    "__version__",
    "calibrate_device",
    "check",
    "evaluate",
    "export",
    "list_profiles",
    "list_spaces",
    "load_profile",
    "load_space",
    "profile",
    "read_leaderboard",
    "report",
    "search",
    "tune",
]
