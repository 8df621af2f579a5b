"""Arithmetic and layout clean-ups of ``main`` before legalization (the build's ``Simplify`` step).

- ``reciprocal_divisions``: ``x / c`` by a float32 constant ``c`` becomes ``x · (1/c)``. LLVM keeps
  a vector divide without fast-math (hardswish's ``/ 6``, every activation quantizer's ``/ s``:
  two of them per output vector of an int8 layer's epilogue). The product differs from the
  quotient by at most one unit in the last place; where it lands on a quantizer's rounding
  boundary it moves that value by one level, as a different accumulation order already does, and
  the int8 comparison against the fake-quantized twin allows for that.
- ``merge_clips``: ``clip(clip(x, a, b), c, d)`` becomes one clip, and a clip with an infinite
  bound a ``maximum`` or ``minimum`` (hardswish's ReLU6 is imported as ``clip(x, 0, inf)`` then
  ``clip(x, -inf, 6)``: four vector operations per element where two do), exactly;
- ``fold_scalings``: ``(x · c1) · c2`` by constants becomes ``x · (c1 · c2)`` (hardswish's ``/ 6``
  and the next quantizer's ``/ s``), within an ulp or two;
- ``merge_reshapes``: ``reshape(reshape(x))`` becomes one reshape (none where it gives ``x``'s own
  shape): a chain of reshapes fused into a kernel copies its tensor (the NCHW view of an int8
  layer's ``[channels, pixels]`` result read back as ``[channels, pixels]`` by the next one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.precision import tensor_dtype, tensor_shape

if TYPE_CHECKING:
    import tvm

__all__ = ["fold_scalings", "merge_clips", "merge_reshapes", "reciprocal_divisions", "simplify"]


def reciprocal_divisions(mod: tvm.IRModule) -> tvm.IRModule:
    """Each ``divide(x, c)`` of ``main`` by a float32 constant with a finite reciprocal → ``multiply(x, 1/c)``."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, c = wildcard(), is_const()

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        value = m[c].value.numpy()
        if str(value.dtype) != "float32" or not np.all(value != 0) or not np.all(np.isfinite(value)):
            return expr
        inverse = (np.float32(1.0) / value).astype(np.float32)
        if not np.all(np.isfinite(inverse)):
            return expr
        return relax.op.multiply(m[x], relax.const(inverse))

    mod["main"] = rewrite_call(is_op("relax.divide")(x, c), rewrite, mod["main"])
    return mod


def merge_clips(mod: tvm.IRModule) -> tvm.IRModule:
    """Nested clips of ``main`` → one; a clip with an infinite bound → ``maximum`` / ``minimum``."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x, lo, hi, lo2, hi2 = wildcard(), wildcard(), wildcard(), wildcard(), wildcard()
    inner = is_op("relax.clip")(x, lo, hi)
    outer = is_op("relax.clip")(inner, lo2, hi2)

    def bound(m: dict[Any, Any], p: Any) -> float | None:
        value = getattr(m[p], "value", None)
        return float(value) if value is not None else None

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nested = inner in m
        bounds = [bound(m, p) for p in ((lo, hi, lo2, hi2) if nested else (lo2, hi2))]
        if any(b is None for b in bounds):
            return expr
        low, high = max(bounds[0::2]), min(bounds[1::2])
        if low > high:  # disjoint ranges: keep the two clips
            return expr
        dtype = tensor_dtype(expr)
        out = m[x] if nested else expr.args[0]
        if np.isfinite(low) and np.isfinite(high):
            return relax.op.clip(out, low, high) if nested else expr
        if np.isfinite(low):
            out = relax.op.maximum(out, relax.const(low, dtype))
        if np.isfinite(high):
            out = relax.op.minimum(out, relax.const(high, dtype))
        return out

    mod["main"] = rewrite_call(outer | is_op("relax.clip")(wildcard(), lo2, hi2), rewrite, mod["main"])
    return mod


def fold_scalings(mod: tvm.IRModule) -> tvm.IRModule:
    """Each ``multiply(multiply(x, c1), c2)`` of ``main`` by float32 constants → ``multiply(x, c1 · c2)``."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, c1, c2 = wildcard(), is_const(), is_const()

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        a, b = m[c1].value.numpy(), m[c2].value.numpy()
        if str(a.dtype) != "float32" or str(b.dtype) != "float32" or len(tensor_shape(m[x])) < max(a.ndim, b.ndim):
            return expr
        return relax.op.multiply(m[x], relax.const((a * b).astype(np.float32)))

    pattern = is_op("relax.multiply")(is_op("relax.multiply")(x, c1), c2)
    for _ in range(8):  # a chain of n scalings: n - 1 passes
        before = mod["main"]
        mod["main"] = rewrite_call(pattern, rewrite, before)
        if mod["main"].same_as(before):
            break
    return mod


def merge_reshapes(mod: tvm.IRModule) -> tvm.IRModule:
    """Each ``reshape(reshape(x, a), b)`` of ``main`` → ``reshape(x, b)``, or ``x`` when ``b`` is its shape."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        shape = tensor_shape(expr)
        if not shape:
            return expr
        return m[x] if tensor_shape(m[x]) == shape else relax.op.reshape(m[x], shape)

    pattern = is_op("relax.reshape")(is_op("relax.reshape")(x, wildcard()), wildcard())
    mod["main"] = rewrite_call(pattern, rewrite, mod["main"])
    return mod


def simplify(mod: tvm.IRModule) -> tvm.IRModule:
    """All of the above, in order."""
    return merge_reshapes(fold_scalings(merge_clips(reciprocal_divisions(mod))))
