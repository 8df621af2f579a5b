"""The deployment precisions as build passes: real int8 operators, fp16 mixed precision, fp32 as is.

``PRECISIONS`` maps each deployment precision to its pass (``(module, weight granularity, target) → module``);
``autotune.compiler.build`` runs the one the candidate asks for as its ``Precision`` step.

``to_int8`` finds each activation quantizer the exporter emitted in front of a convolution or matmul,
``multiply(clip(round(divide(x, s)), lo, hi), s)`` with a constant weight ``W`` whose values are
exactly ``q · s_w`` (8-bit symmetric, per tensor or per output channel), and replaces the pair with

    astype(conv2d(astype(clip(round(x / s)), int8), q: int8, out_dtype=int32), float32) * (s · s_w)

i.e. integer multiplies with int32 accumulation, rescaled once. The integer result is exact; it
equals the fake-quantized PyTorch model's float computation up to float32 rounding. On a CPU with a
dot-product instruction only the operators its kernels take go int8 (``dot_kernels.takes_conv``,
``takes_matmul``: every convolution with one group, through im2col where its kernel is larger than
1×1, and every matmul); depthwise convolutions stay float, as everywhere (``to_int8``).
``dtype_census`` counts what the rewritten module computes in which precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.dot_kernels import ISAS, dot_path, takes_conv, takes_matmul
from autotune.errors import CandidateFailed

if TYPE_CHECKING:
    import tvm

__all__ = [
    "INT8_INPUT_DEPTHWISE",
    "PRECISIONS",
    "DtypeCensus",
    "dtype_census",
    "set_precision",
    "tensor_dtype",
    "tensor_shape",
    "to_fp16",
    "to_int8",
]

#: Name prefix of the depthwise kernels that read int8 and compute in float32
#: (``autotune.compiler.int8_inputs``); ``dtype_census`` counts them as float32 operators.
INT8_INPUT_DEPTHWISE = "int8_input_depthwise"
#: Largest deviation of ``W / s_w`` from an integer for ``W`` to count as 8-bit quantized.
_INTEGRAL_TOL = 1e-3


@dataclass(frozen=True)
class DtypeCensus:
    """Convolutions and matmuls of ``main``, by the dtype of their inputs; ``dot`` of the int8 ones
    run on the dot-product kernels of instruction set ``isa`` (``autotune.compiler.dot_kernels``)."""

    int8: int
    float16: int
    float32: int
    dot: int = 0
    isa: str = ""

    @property
    def total(self) -> int:
        return self.int8 + self.float16 + self.float32

    @property
    def int8_path(self) -> str:
        """The instruction set (``vnni``, ``avx2``, ``dotprod``) when some int8 operator runs on the
        dot-product kernels, else ``generic``."""
        return self.isa if self.dot else "generic"


def _weight_scale(w: np.ndarray, granularity: str) -> np.ndarray | None:
    """Per-channel (axis 0) or per-tensor scale with ``w / s`` integral in [-127, 127], or None."""
    axes = tuple(range(1, w.ndim)) if granularity == "channel" else tuple(range(w.ndim))
    s = np.abs(w).max(axis=axes, keepdims=True).astype(np.float64) / 127.0
    s = np.where(s > 0, s, 1.0)
    q = w / s
    if np.max(np.abs(q - np.round(q)), initial=0.0) > _INTEGRAL_TOL:
        return None
    return s


def to_int8(
    mod: tvm.IRModule, *, granularity: str, depthwise: bool = False, dot_only: bool = False
) -> tuple[tvm.IRModule, int]:
    """Rewrite quantized convolutions and matmuls of ``main`` to int8 arithmetic.

    Depthwise convolutions stay float unless ``depthwise``: TVM's default int8 depthwise kernel is
    slower than the float one on x86 (5x5, 576 channels at 7x7: 0.114 vs 0.045 ms untuned on this
    CPU, while a 1x1 96->576 conv at 14x14 goes 6.0 -> 1.8 ms). Left float, a depthwise conv computes
    exactly what the fake-quantized model computes (float arithmetic on 8-bit values). With
    ``dot_only`` only the operators the dot-product kernels take are rewritten.

    Returns the module and the number of operators rewritten (those whose inputs are not 8-bit
    quantized stay float).
    """
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, s_in, s_out, lo, hi, w = wildcard(), is_const(), is_const(), wildcard(), wildcard(), is_const()
    q = is_op("relax.clip")(is_op("relax.round")(is_op("relax.divide")(x, s_in)), lo, hi)
    fq = is_op("relax.multiply")(q, s_out)
    conv = is_op("relax.nn.conv2d")(fq, w)
    matmul = is_op("relax.matmul")(fq, is_op("relax.permute_dims")(w))
    done = 0

    def activation_scale(m: dict[Any, Any]) -> float | None:
        a, b = m[s_in].value.numpy(), m[s_out].value.numpy()
        if a.size != 1 or b.size != 1 or float(a) != float(b):
            return None
        bounds = [float(getattr(m[p], "value", np.nan)) for p in (lo, hi)]
        if not (-128 <= bounds[0] and bounds[1] <= 127):
            return None
        return float(a)

    def quantized(m: dict[Any, Any]) -> tuple[relax.Expr, np.ndarray, np.ndarray] | None:
        sx = activation_scale(m)
        wv = m[w].value.numpy()
        sw = _weight_scale(wv, granularity) if sx is not None else None
        if sw is None or str(wv.dtype) != "float32":
            return None
        xq = relax.op.astype(m[q], "int8")
        return xq, np.round(wv / sw).astype(np.int8), (sx * sw).astype(np.float32)

    def rewrite_conv(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        found = quantized(m)
        if found is None or str(expr.attrs.data_layout) != "NCHW" or str(expr.attrs.kernel_layout) != "OIHW":
            return expr
        if int(expr.attrs.groups) > 1 and not depthwise:
            return expr
        a = expr.attrs
        if dot_only and not takes_conv(tensor_shape(m[fq]), m[w].value.numpy().shape, int(a.groups), a.dilation):
            return expr
        xq, wq, scale = found
        acc = relax.op.nn.conv2d(
            xq,
            relax.const(wq),
            strides=a.strides,
            padding=a.padding,
            dilation=a.dilation,
            groups=a.groups,
            out_dtype="int32",
        )
        done += 1
        return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale.reshape(1, -1, 1, 1)))

    def rewrite_matmul(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        found = quantized(m)
        if found is None or m[w].value.numpy().ndim != 2:
            return expr
        if dot_only and not takes_matmul(tensor_shape(m[fq]), m[w].value.numpy().T.shape):
            return expr
        xq, wq, scale = found
        acc = relax.op.matmul(xq, relax.const(np.ascontiguousarray(wq.T)), out_dtype="int32")
        done += 1
        return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale.reshape(-1)))

    main = rewrite_call(conv, rewrite_conv, mod["main"])
    main = rewrite_call(matmul, rewrite_matmul, main)
    mod["main"] = main
    return mod, done


def to_fp16(mod: tvm.IRModule) -> tvm.IRModule:
    """Mixed precision: convolutions and matmuls read fp16 and accumulate in fp32 (ToMixedPrecision).

    ``clip`` with scalar bounds (hardswish, hardsigmoid, quantizers) is first rewritten to
    ``minimum(maximum(x, lo), hi)``: ToMixedPrecision fails on clip's PrimValue bounds in TVM 0.27.
    """
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x, lo, hi = wildcard(), wildcard(), wildcard()
    clip = is_op("relax.clip")(x, lo, hi)

    def rw(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        dtype = tensor_dtype(expr)
        out = m[x]
        low, high = float(m[lo].value), float(m[hi].value)
        if np.isfinite(low):
            out = relax.op.maximum(out, relax.const(low, dtype))
        if np.isfinite(high):
            out = relax.op.minimum(out, relax.const(high, dtype))
        return out

    mod["main"] = rewrite_call(clip, rw, mod["main"])
    return relax.transform.ToMixedPrecision(out_dtype="float32")(mod)


def tensor_dtype(expr: Any) -> str:
    """The element dtype of a Relax tensor expression (TVM 0.27: ``expr.ty``, formerly struct_info)."""
    ty = getattr(expr, "ty", None) or getattr(expr, "struct_info", None)
    return str(getattr(ty, "dtype", None) or getattr(expr, "dtype", "float32"))


def tensor_shape(expr: Any) -> list[int]:
    """The static shape of a Relax tensor expression ([] when unknown or symbolic)."""
    ty = getattr(expr, "ty", None) or getattr(expr, "struct_info", None)
    shape = getattr(ty, "shape", None)
    try:
        return [int(v) for v in shape] if shape is not None else []
    except TypeError:  # a symbolic dimension
        return []


def dtype_census(mod: tvm.IRModule) -> DtypeCensus:
    """Count ``conv2d`` and ``matmul`` calls in ``main`` by the dtype of their first input, the calls
    of dot-product kernels (int8, ``dot``), and depthwise kernels that read int8 but compute in float32
    (``autotune.compiler.int8_inputs``: float32)."""
    import tvm
    from tvm import relax

    from autotune.compiler.dot_kernels import KERNEL_PREFIX

    counts = {"int8": 0, "float16": 0, "float32": 0, "dot": 0}
    isas: set[str] = set()
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            if expr.op.name in ("relax.nn.conv2d", "relax.matmul"):
                dtype = tensor_dtype(expr.args[0])
                counts[dtype if dtype in counts else "float32"] += 1
            elif expr.op.same_as(call_tir) and expr.args[0].name_hint.startswith(KERNEL_PREFIX):
                counts["dot"] += 1
                isas.add(expr.args[0].name_hint[len(KERNEL_PREFIX) :].split("_")[0])
            elif expr.op.same_as(call_tir) and expr.args[0].name_hint.startswith(INT8_INPUT_DEPTHWISE):
                counts["float32"] += 1  # reads int8, computes in float32

    relax.analysis.post_order_visit(mod["main"], visit)
    return DtypeCensus(int8=counts["int8"] + counts["dot"], float16=counts["float16"], float32=counts["float32"],
                       dot=counts["dot"], isa="+".join(sorted(isas)))  # fmt: skip


def _fp32(mod: tvm.IRModule, granularity: str, target: tvm.target.Target | None) -> tvm.IRModule:
    return mod


def _fp16(mod: tvm.IRModule, granularity: str, target: tvm.target.Target | None) -> tvm.IRModule:
    from tvm import relax

    return relax.transform.FoldConstant()(to_fp16(mod))  # weights stored as fp16 constants


def _int8(mod: tvm.IRModule, granularity: str, target: tvm.target.Target | None) -> tvm.IRModule:
    n = 0
    if target is not None and dot_path(target) in ISAS:
        mod, n = to_int8(mod, granularity=granularity, dot_only=True)
    if n == 0:  # nothing for the dot-product kernels (dilated convolutions only?): the generic int8 code
        mod, n = to_int8(mod, granularity=granularity)
    if n == 0:
        raise CandidateFailed("compile", "int8: no convolution or matmul has 8-bit quantized inputs and weights")
    return mod


#: Deployment precision → its pass: (module, int8 weight granularity ``tensor``/``channel``, the
#: target or None) → module.
PRECISIONS: dict[str, Callable[[tvm.IRModule, str, Any], tvm.IRModule]] = {"fp32": _fp32, "fp16": _fp16,
                                                                         "int8": _int8}  # fmt: skip


def set_precision(
    mod: tvm.IRModule, precision: str, granularity: str, target: tvm.target.Target | None = None
) -> tvm.IRModule:
    """Run the pass of ``precision`` (``PRECISIONS``) for ``target`` (None: as for a CPU without a
    dot-product instruction).

    Raises:
        CandidateFailed: stage ``compile``: an unknown precision, or int8 found nothing to rewrite.
    """
    if precision not in PRECISIONS:
        raise CandidateFailed("compile", f"unknown deployment precision {precision!r}")
    return PRECISIONS[precision](mod, granularity, target)
