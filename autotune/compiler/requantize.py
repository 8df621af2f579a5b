"""Quantizers that round and convert in one instruction (the build's ``Requantize`` step, int8
builds for x86).

Every int8 layer ends in its successor's quantizer, ``astype(clip(round(y), lo, hi), int8)``.
Relax lowers ``round`` to ``nearbyint``, which LLVM emits as ``vroundps`` and, after the clamp, a
``vcvttps2dq``. ``to_lrint`` rewrites each such quantizer (float32 ``y``, integral bounds within
the 8-bit type) onto an element-wise kernel of its own, ``int8(lrint(max(min(y, hi), lo)))``:
``llvm.lrint`` rounds to nearest with ties to even (the default rounding mode, as ``nearbyint``)
and converts in one ``vcvtps2dq``. Clamping before rounding gives the same integers for every
``y`` (rounding is monotone and keeps the integral bounds; a NaN meets the same ``min`` first).
Being element-wise, the kernel fuses into whatever computes ``y``, as the three operators did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.compiler.dot_kernels import i64
from autotune.compiler.precision import tensor_dtype, tensor_shape

if TYPE_CHECKING:
    import tvm

__all__ = ["KERNEL_PREFIX", "requantize_kernel", "to_lrint"]

#: Name prefix of the quantizer kernels' PrimFuncs.
KERNEL_PREFIX = "quantize_lrint_"
_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def requantize_kernel(shape: list[int], lo: int, hi: int, dtype: str) -> tvm.tirx.PrimFunc:
    """``out = dtype(lrint(max(min(y, hi), lo)))`` for float32 ``y`` of ``shape``, element-wise and
    unscheduled (a TE compute)."""
    from tvm import te, tirx

    y = te.placeholder(i64(*shape), "float32", name="y")

    def quantize(*i: Any) -> Any:
        clamped = tirx.Max(tirx.Min(y[i], tirx.const(hi, "float32")), tirx.const(lo, "float32"))
        return tirx.Cast(dtype, tirx.call_llvm_pure_intrin("int32", "llvm.lrint", clamped))

    return te.create_prim_func([y, te.compute(i64(*shape), quantize, name="quantize_lrint")])


def to_lrint(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, int]:
    """Rewrite ``main``'s 8-bit quantizers onto ``requantize_kernel`` for an x86 ``target`` (module
    docstring). Returns the module and the number rewritten."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    if target.kind.name != "llvm" or "x86" not in str(target.attrs.get("mtriple", "x86_64")):
        return mod, 0
    y, lo, hi = wildcard(), wildcard(), wildcard()
    quantizer = is_op("relax.astype")(is_op("relax.clip")(is_op("relax.round")(y), lo, hi))
    bb = relax.BlockBuilder(mod)
    kernels: dict[tuple[Any, ...], Any] = {}
    done = 0

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        dtype, shape = tensor_dtype(expr), tensor_shape(m[y])
        bounds = [getattr(m[b], "value", None) for b in (lo, hi)]
        if dtype not in _RANGES or tensor_dtype(m[y]) != "float32" or not shape or None in bounds:
            return expr
        low, high = (float(b) for b in bounds)
        if not (low.is_integer() and high.is_integer() and _RANGES[dtype][0] <= low <= high <= _RANGES[dtype][1]):
            return expr
        key = (dtype, int(low), int(high), *shape)
        if key not in kernels:
            name = KERNEL_PREFIX + "_".join(str(v) for v in key).replace("-", "m")
            func = requantize_kernel(shape, int(low), int(high), dtype)
            kernels[key] = bb.add_func(func.with_attr("global_symbol", name), name)
        done += 1
        return relax.call_tir(kernels[key], [m[y]], relax.TensorType(shape, dtype))

    main = rewrite_call(quantizer, rewrite, mod["main"])
    if not done:
        return mod, 0
    out = bb.get()
    out["main"] = main
    return out, done
