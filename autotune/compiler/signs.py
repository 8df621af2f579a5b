"""Which Relax tensors cannot be negative: the sign analysis behind the AVX2 int8 kernels' cheaper
variant (``autotune.compiler.dot_kernels.nonneg_variant``), whose activations must lie in [0, 127].

An int8 activation is ``astype(clip(round(x / s), lo, hi), int8)`` (``autotune.compiler.precision``);
it is non-negative when ``x`` is: the output of a ReLU, a ReLU6 or any ``clip`` from 0, a sigmoid,
and what pooling, reshaping, slicing, padding with zeros, sums and products of such tensors (and of
non-negative constants) make of them. Anything not shown non-negative counts as signed, so the
analysis may miss a non-negative tensor but never calls a signed one non-negative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["non_negative"]

#: Ops whose result is never negative, whatever their input.
_ALWAYS = frozenset({"relax.nn.relu", "relax.nn.relu6", "relax.sigmoid", "relax.nn.softmax", "relax.exp", "relax.abs"})
#: Ops whose result is non-negative where their (first) tensor input is: they move, select, pool,
#: round or convert values.
_KEEP = frozenset({
    "relax.round", "relax.floor", "relax.ceil", "relax.reshape", "relax.permute_dims",
    "relax.strided_slice", "relax.take", "relax.flatten", "relax.squeeze", "relax.expand_dims",
    "relax.broadcast_to", "relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d",
    "relax.mean", "relax.sum", "relax.max", "relax.min",
})  # fmt: skip
#: Binary ops whose result is non-negative where both inputs are (``divide``: ``_call``).
_BOTH = frozenset({"relax.add", "relax.multiply", "relax.minimum"})


def non_negative(expr: Any, bindings: dict[Any, Any]) -> bool:
    """Whether the tensor ``expr`` cannot hold a negative value. ``bindings``: the function's
    variables to their values (``relax.analysis.get_var2val``), through which the analysis follows
    ``expr`` back; a parameter of the function counts as signed."""
    return _Signs(bindings).non_negative(expr)


class _Signs:
    def __init__(self, bindings: dict[Any, Any]) -> None:
        self.bindings = bindings
        self.memo: dict[Any, bool] = {}

    def non_negative(self, expr: Any) -> bool:
        import tvm
        from tvm import relax

        expr = self._value(expr)
        if expr in self.memo:
            return self.memo[expr]
        self.memo[expr] = False  # (a cycle cannot occur in a dataflow graph; this guards the recursion)
        result = False
        if isinstance(expr, tvm.ir.expr.Constant):  # a tensor constant, or a scalar (IntImm, FloatImm)
            result = _number(expr) >= 0 if _number(expr) is not None else _all(expr, lambda v: v >= 0)
        elif isinstance(expr, relax.Tuple):
            result = all(self.non_negative(f) for f in expr.fields)
        elif isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            result = self._call(expr.op.name, expr)
        self.memo[expr] = result
        return result

    def _value(self, expr: Any) -> Any:
        seen = 0
        while expr in self.bindings and seen < 1000:
            expr, seen = self.bindings[expr], seen + 1
        return expr

    def _call(self, op: str, call: Any) -> bool:
        args = call.args
        if op in _ALWAYS:
            return True
        if op in _KEEP:
            return self.non_negative(args[0])
        if op == "relax.astype":  # to float or a wide integer; to a narrow one only what fits (no wrap)
            return self.non_negative(args[0]) and _fits(self._value(args[0]), str(call.attrs.dtype))
        if op == "relax.clip":  # clip(x, lo, hi): a lower bound of at least 0, or x non-negative
            lo = _number(args[1])
            return (lo is not None and lo >= 0) or self.non_negative(args[0])
        if op == "relax.maximum":
            return self.non_negative(args[0]) or self.non_negative(args[1])
        if op in _BOTH:
            return self.non_negative(args[0]) and self.non_negative(args[1])
        if op == "relax.divide":  # by a positive constant (a zero divisor could make nan)
            return self.non_negative(args[0]) and _positive_constant(self._value(args[1]))
        if op == "relax.concat":
            return self.non_negative(args[0])
        if op == "relax.nn.pad":  # zeros (or a non-negative value) around a non-negative tensor
            value = _number(call.attrs, "pad_value")
            return value is not None and value >= 0 and self.non_negative(args[0])
        return False


def _number(expr: Any, field: str = "value") -> float | None:
    """The value of a scalar (clip's bounds: an ``IntImm`` / ``FloatImm``, or a ``PrimValue`` of
    one; ``field`` of an attrs object), else None."""
    for name in (field, "value"):
        expr = getattr(expr, name, None)
        if isinstance(expr, (int, float)):
            return float(expr)
    return None


def _fits(expr: Any, dtype: str) -> bool:
    """Whether a non-negative ``expr`` converts to ``dtype`` without wrapping round: a float or a
    32/64-bit integer takes what a float tensor holds here (values of 8-bit networks); a narrower
    integer only the result of a clip whose upper bound it holds (the quantizer's)."""
    if dtype.startswith(("float", "bfloat")) or dtype in ("int32", "int64"):
        return True
    limit = {"int8": 127, "uint8": 255, "int16": 32767, "uint16": 65535}.get(dtype)
    op = getattr(getattr(expr, "op", None), "name", None)
    hi = _number(expr.args[2]) if op == "relax.clip" else None
    return limit is not None and hi is not None and hi <= limit


def _all(expr: Any, test: Any) -> bool:
    """Whether ``expr`` is a tensor constant whose every value passes ``test``."""
    data = getattr(expr, "value", None)
    return hasattr(data, "numpy") and bool(np.all(test(data.numpy())))


def _positive_constant(expr: Any) -> bool:
    import tvm

    if not isinstance(expr, tvm.ir.expr.Constant):
        return False
    return _number(expr) > 0 if _number(expr) is not None else _all(expr, lambda v: v > 0)
