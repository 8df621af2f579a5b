"""Quantizers as one rounding conversion (the build's ``Rounding`` step, on x86 targets).

An int8 tensor is made as ``astype(clip(round(x), lo, hi), int8)`` (``autotune.compiler.precision``,
``int8_inputs``). TVM lowers ``round`` to LLVM's ``nearbyint`` and ``astype`` to a truncating
conversion: per vector ``vrndscaleps`` (two micro-ops on the port the dot-product instruction also
needs), the clip's two comparisons, ``vcvttps2dq`` and the narrowing store. ``rounded_conversions``
clips first, then converts with LLVM's ``lrint`` (``vcvtps2dq``: rounds to nearest, ties to even,
as ``nearbyint`` does in the default rounding mode), one instruction fewer per output vector in
every int8 layer's epilogue, exactly: the bounds are integers, so clipping before or after the
rounding gives the same value, and the clipped value converts without overflow.

The replacement is an element-wise kernel of its own (``call_tir``), so fusion puts it into the
epilogue of what it quantizes, as it did ``round``, ``clip`` and ``astype``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.compiler.precision import tensor_dtype, tensor_shape

if TYPE_CHECKING:
    import tvm

__all__ = ["rounded_conversions"]

#: The types quantizers convert to (through ``lrint``'s int32), and their ranges.
_INTEGERS = {"int8": (-128, 127), "uint8": (0, 255)}


def rounding_kernel(shape: tuple[int, ...], lo: float, hi: float, dtype: str) -> tvm.tirx.PrimFunc:
    """``y = dtype(lrint(clip(x, lo, hi)))`` element-wise over float32 ``x`` of ``shape``."""
    from tvm import te, tirx

    from autotune.compiler.dot_kernels import i64

    x = te.placeholder(i64(*shape), "float32", name="x")

    def body(*i: Any) -> Any:
        clipped = tirx.max(tirx.min(x(*i), tirx.const(hi, "float32")), tirx.const(lo, "float32"))
        return tirx.Cast(dtype, tirx.call_llvm_pure_intrin("int32", "llvm.lrint", clipped))

    return te.create_prim_func([x, te.compute(i64(*shape), body, name="rounded_conversion")])


def rounded_conversions(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, int]:
    """Each ``astype(clip(round(x), lo, hi), t)`` of ``main`` (``x`` float32, ``t`` an integer type
    holding ``[lo, hi]``, integer bounds) as ``rounding_kernel`` where ``target`` is x86; else the
    module as it is. Returns the module and the number rewritten."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    if target.kind.name != "llvm" or "x86" not in str(target.attrs.get("mtriple", "x86_64")):
        return mod, 0
    x, lo, hi = wildcard(), wildcard(), wildcard()
    rounded = is_op("relax.clip")(is_op("relax.round")(x), lo, hi)
    pattern = is_op("relax.astype")(rounded)
    bb = relax.BlockBuilder(mod)
    kernels: dict[tuple[Any, ...], Any] = {}
    done = 0

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        if not isinstance(expr, relax.Call):  # (an astype to the same type: no call)
            return expr
        dtype, shape = str(expr.attrs.dtype), tensor_shape(m[x])
        bounds = [float(getattr(m[b], "value", float("nan"))) for b in (lo, hi)]
        if dtype not in _INTEGERS or tensor_dtype(m[x]) != "float32" or not shape:  # (no shape: symbolic)
            return expr
        least, most = _INTEGERS[dtype]
        if not all(b.is_integer() and least <= b <= most for b in bounds) or bounds[0] > bounds[1]:
            return expr
        key = (tuple(shape), *bounds, dtype)
        if key not in kernels:  # (private: the builder names each one apart)
            func = rounding_kernel(tuple(shape), *bounds, dtype).without_attr("global_symbol")
            kernels[key] = bb.add_func(func, "rounded_conversion")
        done += 1
        return relax.call_tir(kernels[key], [m[x]], relax.TensorType(shape, dtype))

    main = rewrite_call(pattern, rewrite, mod["main"])
    if not done:
        return mod, 0
    out = bb.get()
    out["main"] = main
    return out, done
