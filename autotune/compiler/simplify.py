"""Arithmetic and layout clean-ups of ``main`` before legalization (the build's ``Simplify`` step).

- ``reciprocal_divisions``: ``x / c`` by a float32 constant ``c`` becomes ``x · (1/c)``. LLVM keeps
  a vector divide without fast-math (hardswish's ``/ 6``, every activation quantizer's ``/ s``:
  two of them per output vector of an int8 layer's epilogue). The product differs from the
  quotient by at most one unit in the last place; where it lands on a quantizer's rounding
  boundary it moves that value by one level, as a different accumulation order already does, and
  the int8 comparison against the fake-quantized twin allows for that.
- ``merge_reshapes``: ``reshape(reshape(x))`` becomes one reshape (none where it gives ``x``'s own
  shape): a chain of reshapes fused into a kernel copies its tensor (the NCHW view of an int8
  layer's ``[channels, pixels]`` result read back as ``[channels, pixels]`` by the next one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.precision import tensor_shape

if TYPE_CHECKING:
    import tvm

__all__ = ["merge_reshapes", "reciprocal_divisions", "simplify"]


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
    """``reciprocal_divisions`` then ``merge_reshapes``."""
    return merge_reshapes(reciprocal_divisions(mod))
