"""``compile_artifact``: an exported program + device profile → a TVM shared library on disk."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, UserError
from autotune.records import CompiledArtifact

if TYPE_CHECKING:
    import tvm
    from torch.export import ExportedProgram

__all__ = ["compile_artifact", "resolve_target", "target_json"]


def target_json(profile: DeviceProfile) -> dict[str, Any]:
    """The profile's TVM target as a JSON dict; ``{host: true}`` becomes this CPU's LLVM target."""
    t = dict(profile.target)
    if t.pop("host", None) is True:
        import os

        import tvm

        cpu = str(tvm.get_global_func("target.llvm_get_system_cpu")())
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        t = {"kind": "llvm", "mcpu": cpu, "num-cores": cores, **t}
    return t


def resolve_target(profile: DeviceProfile, *, file: str | None = None) -> tvm.target.Target:
    """Build the TVM ``Target``.

    Raises:
        UserError: TVM rejects the target dict.
    """
    import tvm

    t = target_json(profile)
    try:
        return tvm.target.Target(t)
    except Exception as err:  # TVM raises ValueError / TVMError / InternalError for bad targets
        raise UserError(
            f"TVM rejects the target {json.dumps(t)}: {err}".splitlines()[0], file=file, key="target"
        ) from None


def _planned_bytes(mod: tvm.IRModule) -> int:
    """Sum the storage the VM allocates in ``main`` after static memory planning."""
    from tvm import relax

    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm_ir_op()):
            name = expr.op.name
            if name in ("relax.memory.alloc_storage", "relax.vm.alloc_storage") and expr.args:
                shape = expr.args[0]
                if isinstance(shape, relax.ShapeExpr):
                    total += int(shape.values[0])
            elif name == "relax.builtin.alloc_tensor" and expr.args:
                shape, dtype = expr.args[0], expr.args[1]
                if isinstance(shape, relax.ShapeExpr):
                    n = 1
                    for v in shape.values:
                        n *= int(v)
                    total += n * _dtype_bytes(str(dtype.value) if hasattr(dtype, "value") else "float32")

    relax.analysis.post_order_visit(mod["main"], visit)
    return total


def tvm_ir_op() -> type:
    import tvm

    return tvm.ir.Op


def _dtype_bytes(dtype: str) -> int:
    digits = "".join(c for c in dtype if c.isdigit())
    return max(1, int(digits or 32) // 8)


def _const_bytes(mod: tvm.IRModule) -> int:
    import tvm
    from tvm import relax

    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if isinstance(expr, tvm.ir.expr.GenericConst):
            total += int(expr.value.numpy().nbytes)

    relax.analysis.post_order_visit(mod["main"], visit)
    return total


def compile_artifact(
    program: ExportedProgram, *, profile: DeviceProfile, out_dir: str | Path, input_shape: tuple[int, ...]
) -> CompiledArtifact:
    """Import into Relax, compile for the profile's target and export ``model.so``.

    ``peak_mem_bytes`` is read from TVM's static memory plan: the weights plus every storage
    block ``main`` allocates (``peak_mem_source = 'tvm_memory_plan'``).

    Raises:
        CandidateFailed: an operator cannot be imported, or TVM fails to compile.
    """
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    target = resolve_target(profile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            mod = from_exported_program(program, keep_params_as_input=False)
    except Exception as err:  # unsupported ops raise assorted errors inside the importer
        raise CandidateFailed("import", f"{type(err).__name__}: {err}".splitlines()[0]) from err
    t1 = time.perf_counter()
    try:
        mod = relax.transform.FoldBatchnormToConv2D()(mod)  # plug-in models keep their BN
        mod = relax.transform.DecomposeOpsForInference()(mod)
        lowered = relax.get_default_pipeline(target)(mod)
    except Exception as err:  # TVMError and friends: this candidate cannot be lowered
        raise CandidateFailed("compile", f"{type(err).__name__}: {err}".splitlines()[0]) from err
    weights = _const_bytes(mod)
    planned = _planned_bytes(lowered)
    try:
        ex = tvm.compile(lowered, target=target, relax_pipeline=None)
        path = out / "model.so"
        if profile.compiler:
            from tvm.support import cc

            ex.export_library(str(path), fcompile=cc.cross_compiler(profile.compiler))
        else:
            ex.export_library(str(path))
    except Exception as err:  # TVMError and friends: this candidate cannot be compiled
        raise CandidateFailed("compile", f"{type(err).__name__}: {err}".splitlines()[0]) from err
    t2 = time.perf_counter()
    return CompiledArtifact(
        path=str(path),
        target=json.dumps(target_json(profile), sort_keys=True),
        input_shape=tuple(input_shape),
        artifact_bytes=path.stat().st_size,
        weights_bytes=weights,
        peak_mem_bytes=weights + planned,
        peak_mem_source="tvm_memory_plan",
        export_s=0.0,
        import_s=t1 - t0,
        compile_s=t2 - t1,
    )
