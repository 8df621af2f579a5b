"""The sign analysis (``autotune.compiler.signs``): which int8 activations cannot be negative, so
the AVX2 kernels may skip the sign transfer. It may miss a non-negative tensor, never call a signed
one non-negative."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.compiler.signs import non_negative

pytestmark = [pytest.mark.tvm]


def _quantized(expr, scale=0.05):
    """``expr`` through the exporter's activation quantizer, to int8 as ``to_int8`` leaves it."""
    from tvm import relax

    divided = relax.op.divide(expr, relax.const(scale, "float32"))
    return relax.op.astype(relax.op.clip(relax.op.round(divided), -127, 127), "int8")


def _signs(make):
    """``make(x, relu(x), relax.op)`` → {name: expression} bound in one dataflow function of ``x``
    (1×4×4×4 float32): each expression's sign as the analysis reads it through the bindings."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            named = {name: bb.emit(e) for name, e in make(x, relax.op.nn.relu(x), relax.op).items()}
            out = bb.emit_output(relax.Tuple(list(named.values())))
        bb.emit_func_output(out)
    bindings = dict(relax.analysis.get_var2val(bb.get()["main"]))
    return {name: non_negative(var, bindings) for name, var in named.items()}


def _c(value):
    from tvm import relax

    return relax.const(np.asarray(value, "float32"))


def test_activations_that_cannot_be_negative():
    def make(x, relu, op):
        return {
            "relu": _quantized(relu),
            "relu6 (clip from 0)": _quantized(op.clip(x, 0, 6)),
            "sigmoid": _quantized(op.sigmoid(x)),
            "max(x, 0)": _quantized(op.maximum(x, _c(0.0))),
            "pooled relu": _quantized(op.nn.avg_pool2d(op.nn.max_pool2d(relu, [2, 2]), [2, 2])),
            "mean, reshape": _quantized(op.reshape(op.mean(relu, [2, 3]), (1, 4))),
            "relu * hardsigmoid": _quantized(op.multiply(relu, op.divide(op.clip(op.add(x, _c(3.0)), 0, 6), _c(6.0)))),
            "padded with zeros": op.nn.pad(_quantized(relu), [0, 0, 0, 0, 1, 1, 1, 1]),
            "slice of a concat": op.strided_slice(op.concat([relu, op.nn.relu(x)], axis=1), [1], [0], [2]),
            "relu to float16, to int32": op.astype(op.astype(relu, "float16"), "int32"),
            "relu clipped to 255, to uint8": op.astype(op.clip(op.round(relu), 0, 255), "uint8"),
        }

    signs = _signs(make)
    assert all(signs.values()), [name for name, yes in signs.items() if not yes]


def test_signed_activations_are_never_called_non_negative():
    def make(x, relu, op):
        return {
            "input": _quantized(x),
            "hardswish": _quantized(op.multiply(x, op.divide(op.clip(op.add(x, _c(3.0)), 0, 6), _c(6.0)))),
            "clip from -1": _quantized(op.clip(x, -1, 6)),
            "residual (relu + input)": _quantized(op.add(relu, x)),
            "relu minus a constant": op.subtract(relu, _c(1.0)),
            "relu times a negative": op.multiply(relu, _c(-2.0)),
            "relu times a mixed-sign scale": op.multiply(relu, _c(np.array([1, -1, 1, 1]).reshape(1, 4, 1, 1))),
            "relu divided by a signed constant": op.divide(relu, _c(-0.5)),
            "max(x, -1)": op.maximum(x, _c(-1.0)),
            "padded with -1": op.nn.pad(relu, [0, 0, 0, 0, 1, 1, 1, 1], pad_value=-1.0),
            "concat of relu and input": op.concat([relu, x], axis=1),
            "relu to int8 unclipped (wraps)": op.astype(op.round(op.divide(relu, _c(0.001))), "int8"),
            "relu clipped to 200, to int8": op.astype(op.clip(op.round(relu), 0, 200), "int8"),
        }

    signs = _signs(make)
    assert not any(signs.values()), [name for name, yes in signs.items() if yes]
