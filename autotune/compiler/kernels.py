"""A candidate's fused kernels as the build schedules them, each compiled alone so it can be timed alone
(``autotune profile``; ``autotune.measure.kernels`` times them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.compiler.build import FUSE, PREPARE, SCHEDULE, BuildOptions, _export, _import, _tuned_share, run_steps
from autotune.compiler.target import resolve_target
from autotune.compiler.workloads import Workload, call_counts, tir_flops, workloads_of
from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, describe
from autotune.tuning import TuningDatabase, apply_database

if TYPE_CHECKING:
    from torch.export import ExportedProgram

__all__ = ["Kernel", "build_kernels", "candidate_workloads"]


@dataclass(frozen=True)
class Kernel:
    """One fused kernel of a model, compiled alone.

    Attributes:
        name: the PrimFunc's name in the model (``fused_conv2d3_add_relu`` …).
        calls: calls per inference.
        flops: floating-point (or integer multiply-add) operations of one call.
        args: each argument's shape and dtype (the kernel is timed on random tensors of them).
        path: the kernel's shared library (entry ``main``).
        tuned: its schedule came from the tuning database (else a default schedule).
    """

    name: str
    calls: int
    flops: float
    args: tuple[tuple[tuple[int, ...], str], ...]
    path: str
    tuned: bool


def build_kernels(
    program: ExportedProgram,
    profile: DeviceProfile,
    *,
    out_dir: str | Path,
    precision: str = "fp32",
    weight_granularity: str = "tensor",
    db_dir: str | Path | None = None,
) -> list[Kernel]:
    """Build ``program`` as ``compile_artifact`` does (the database's schedules, default schedules for
    the rest) up to its scheduled kernels, and compile each kernel alone into ``out_dir``.

    Raises:
        CandidateFailed: the model or a kernel cannot be imported or compiled.
    """
    import tvm

    target = resolve_target(profile)
    options = BuildOptions(target=target, precision=precision, weight_granularity=weight_granularity,
                           default_schedules=profile.tuning.default_schedules)  # fmt: skip
    fused = run_steps(FUSE, run_steps(PREPARE, _import(program), options), options)
    db = TuningDatabase(db_dir) if db_dir else None
    if db is not None and db.record_file.exists():
        fused = apply_database(fused, target, db)
    tuned = {gv.name_hint for gv, f in fused.functions_items() if _scheduled(f)}
    scheduled = run_steps(SCHEDULE, fused, options)
    calls = call_counts(scheduled)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kernels = []
    for gv, func in scheduled.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or gv.name_hint not in calls:
            continue
        name = gv.name_hint
        try:
            lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
            path = out / f"{name}.so"
            _export(lib, path, profile)  # with the profile's cross compiler, for a device elsewhere
        except CandidateFailed:
            raise
        except Exception as err:  # TVMError: a kernel that does not build alone
            raise CandidateFailed("compile", f"{name}: {describe(err)}") from err
        args = tuple((tuple(int(x) for x in p.ty.shape), str(p.ty.dtype)) for p in func.params)
        kernels.append(Kernel(name, calls[name], tir_flops(func, name), args, str(path), name in tuned))
    (out / "kernels.json").write_text(json.dumps([k.__dict__ for k in kernels], indent=1))
    return kernels


def _scheduled(func: object) -> bool:
    attrs = getattr(func, "attrs", None)
    return bool(attrs and attrs.get("tir.is_scheduled", False))


def candidate_workloads(
    program: ExportedProgram,
    profile: DeviceProfile,
    *,
    precision: str = "fp32",
    weight_granularity: str = "tensor",
    db_dir: str | Path | None = None,
) -> list[Workload]:
    """The workloads ``compile_artifact`` would write for ``program`` (imported and fused, nothing
    compiled; about a second for a small network): the kernel-level predictor's input. A kernel is
    ``tuned`` when the database schedules it, or, on a profile that tunes every candidate, always.

    Raises:
        CandidateFailed: the model cannot be imported, or a step fails.
    """
    target = resolve_target(profile)
    options = BuildOptions(target=target, precision=precision, weight_granularity=weight_granularity,
                           default_schedules=profile.tuning.default_schedules)  # fmt: skip
    fused = run_steps(FUSE, run_steps(PREPARE, _import(program), options), options)
    calls = call_counts(fused)
    tuned: set[str] = set()
    if profile.tuning.trials_per_candidate > 0:
        tuned = set(calls)
    elif db_dir and TuningDatabase(db_dir).record_file.exists():
        tuned = _tuned_share(apply_database(fused, target, TuningDatabase(db_dir)))[1]
    return workloads_of(fused, tuned, calls)
