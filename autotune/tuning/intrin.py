"""MetaSchedule's tensor-intrinsic tables that a target never uses, stubbed so they are not imported
(CUDA's alone takes ~45 s here, in this process and in every builder worker)."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm

__all__ = ["stub_tables", "stub_tensor_intrin", "unused_intrin_tables"]

#: MetaSchedule's tensor-intrinsic tables that are not x86's (see ``stub_tensor_intrin``).
_INTRIN_TABLES = ("cuda", "rocm", "hexagon", "metal", "arm_cpu", "riscv_cpu")


def unused_intrin_tables(target: tvm.target.Target) -> tuple[str, ...]:
    """The tensor-intrinsic tables of devices other than ``target``'s (by its keys)."""
    keys = set(target.keys)
    return tuple(name for name in _INTRIN_TABLES if name not in keys)


def stub_tables(names: tuple[str, ...]) -> None:
    """Register empty modules for the tensor-intrinsic tables ``names`` that are not imported yet.

    MetaSchedule imports ``tvm.s_tir.tensor_intrin`` (every table; CUDA's alone takes ~45 s here) in
    this process and in each builder worker, whose pool is restarted for every batch. A target never
    uses the tables of other devices. This changes ``sys.modules`` for the rest of the process.
    """
    for name in names:
        full = f"tvm.s_tir.tensor_intrin.{name}"
        sys.modules.setdefault(full, types.ModuleType(full))


def stub_tensor_intrin(target: tvm.target.Target) -> None:
    """Stub the tensor-intrinsic tables ``target`` never uses (``stub_tables``), in this process."""
    stub_tables(unused_intrin_tables(target))
