"""Rewrite int8 1×1 convolutions and matmuls onto the dot-product kernels of
``autotune.compiler.dot_kernels`` (the ``DotProduct`` build step, after ``Precision``).

``to_int8`` (``autotune.compiler.precision``) makes ``conv2d(int8, int8) -> int32`` and
``matmul(int8, int8) -> int32``; TVM lowers them to code that widens every operand to 32-bit lanes.
Where the target has AVX-512 VNNI, ``to_dot_product`` replaces the 1×1 convolutions (stride 1, no
padding, one group, input channels a multiple of 4) and the matmuls:

- the activations go in as **u8**, ``x + 128``, four channels side by side (``[K/4, P, 4]`` for a
  convolution, pixels padded to a multiple of 16); the weights as s8 (packed for a matmul, output
  features padded to a multiple of 16 with zero rows);
- ``128 · Σ_k w[n, k]`` comes off each output channel, so the result is exactly the int32 that
  ``conv2d(int8, int8)`` computes;
- ``sink_views`` then moves the reshape back to NCHW (and the slice of padding) after the
  element-wise ops that follow, so the rescale, bias, activation and next quantizer fuse into the
  kernel.

Other convolutions (3×3, depthwise: those stay float, see ``to_int8``), and targets without VNNI,
keep the generic int8 code (``int8_path = generic``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.dot_kernels import KERNEL_PREFIX, conv_kernel, dense_kernel, dot_path

if TYPE_CHECKING:
    import tvm

__all__ = ["sink_views", "to_dot_product"]

log = logging.getLogger(__name__)
_LANES, _DEPTH = 16, 4
_WARNED: set[str] = set()  # targets already warned about (once per process)


def _pack_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``w`` (N, K) int8 → packed (N16/16, K/4, 16, 4), the u8-shift correction ``128 · Σ_k w`` per
    output channel, and N16 (N rounded up to 16)."""
    n, k = w.shape
    n16 = -(-n // _LANES) * _LANES
    padded = np.zeros((n16, k), np.int8)
    padded[:n] = w
    packed = padded.reshape(n16 // _LANES, _LANES, k // _DEPTH, _DEPTH).transpose(0, 2, 1, 3)
    correction = 128 * w.astype(np.int32).sum(axis=1)
    return np.ascontiguousarray(packed), correction.astype(np.int32), n16


def to_dot_product(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, int]:
    """Rewrite ``main``'s int8 1×1 convolutions and matmuls onto the dot-product kernels where
    ``target`` has VNNI (module docstring). Returns the module and the number rewritten."""
    if dot_path(target) != "vnni":
        if str(target) not in _WARNED:
            _WARNED.add(str(target))
            log.warning("int8 on %s: no AVX-512 VNNI, so int8 runs the generic (widening) code", target)
        return mod, 0
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    bb = relax.BlockBuilder(mod)
    kernels: dict[tuple[Any, ...], Any] = {}
    done = 0
    x, w = wildcard(), is_const()
    conv = is_op("relax.nn.conv2d")(x, w)
    matmul = is_op("relax.matmul")(x, w)

    def kernel(p: int, k: int, n16: int) -> Any:
        if ("dot", p, k, n16) not in kernels:
            name = f"{KERNEL_PREFIX}dense_p{p}_k{k}_n{n16}"
            kernels[("dot", p, k, n16)] = bb.add_func(dense_kernel(p, k, n16).with_attr("global_symbol", name), name)
        return kernels[("dot", p, k, n16)]

    def dot(xu8: relax.Expr, wq: np.ndarray, p: int) -> relax.Expr:
        """``[P, K]`` u8 activations × ``wq`` (N, K) int8 → ``[P, N]`` int32, exact."""
        packed, correction, n16 = _pack_weights(wq)
        k = wq.shape[1]
        out = relax.TensorType((p, n16), "int32")
        acc = relax.call_tir(kernel(p, k, n16), [xu8, relax.const(packed)], out)
        if n16 != wq.shape[0]:
            acc = relax.op.strided_slice(acc, axes=[1], begin=[0], end=[wq.shape[0]])
        return relax.op.subtract(acc, relax.const(correction))

    def to_u8(xq: relax.Expr) -> relax.Expr:
        return relax.op.astype(relax.op.add(relax.op.astype(xq, "int16"), relax.const(128, "int16")), "uint8")

    def int8_operands(expr: relax.Call, m: dict[Any, Any]) -> tuple[Any, np.ndarray] | None:
        wq = m[w].value.numpy()
        if str(wq.dtype) != "int8" or _dtype(m[x]) != "int8" or str(expr.attrs.out_dtype) != "int32":
            return None
        return m[x], wq

    def rewrite_conv(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        found = int8_operands(expr, m)
        a = expr.attrs
        if found is None or tuple(int(v) for v in found[1].shape[2:]) != (1, 1) or int(a.groups) != 1:
            return expr
        if any(int(v) != 1 for v in a.strides) or any(int(v) != 0 for v in a.padding):
            return expr
        shape = _shape(found[0])
        if len(shape) != 4 or shape[0] != 1 or shape[1] % _DEPTH:
            return expr
        _, k, h, wd = shape
        xq, wq = found
        n, p = wq.shape[0], h * wd
        p16 = -(-p // _LANES) * _LANES
        quads = relax.op.permute_dims(relax.op.reshape(to_u8(xq), (k // _DEPTH, _DEPTH, p)), [0, 2, 1])
        if p16 != p:
            quads = relax.op.nn.pad(quads, [0, 0, 0, p16 - p, 0, 0])
        wmat = wq.reshape(n, k)
        if (n, k, p16) not in kernels:
            name = f"{KERNEL_PREFIX}conv1x1_n{n}_k{k}_p{p16}"
            kernels[(n, k, p16)] = bb.add_func(conv_kernel(n, k, p16).with_attr("global_symbol", name), name)
        acc = relax.call_tir(kernels[(n, k, p16)], [quads, relax.const(wmat)], relax.TensorType((n, p16), "int32"))
        if p16 != p:
            acc = relax.op.strided_slice(acc, axes=[1], begin=[0], end=[p])
        correction = (128 * wmat.astype(np.int32).sum(axis=1)).reshape(n, 1)
        done += 1
        return relax.op.reshape(relax.op.subtract(acc, relax.const(correction.astype(np.int32))), (1, n, h, wd))

    def rewrite_matmul(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        found = int8_operands(expr, m)
        shape = _shape(found[0]) if found is not None else []
        if found is None or found[1].ndim != 2 or len(shape) != 2 or shape[1] % _DEPTH:
            return expr
        xq, wq = found
        done += 1
        return dot(to_u8(xq), np.ascontiguousarray(wq.T), shape[0])

    main = rewrite_call(conv, rewrite_conv, mod["main"])
    main = rewrite_call(matmul, rewrite_matmul, main)
    if not done:
        return mod, 0
    out = bb.get()
    out["main"] = main
    out = relax.transform.FoldConstant()(out)  # reshaped constants (biases) become constants
    out["main"] = sink_views(out["main"])
    return out, done


def _type(expr: Any) -> Any:
    """A Relax expression's tensor type (TVM 0.27: ``expr.ty``, formerly ``struct_info``)."""
    return getattr(expr, "ty", None) or getattr(expr, "struct_info", None)


def _dtype(expr: Any) -> str:
    return str(getattr(_type(expr), "dtype", ""))


def _shape(expr: Any) -> list[int]:
    shape = getattr(_type(expr), "shape", None)
    try:
        return [int(v) for v in shape] if shape is not None else []
    except TypeError:  # a symbolic dimension
        return []


#: Element-wise ops that commute with a reshape or a slice of their tensor operands.
_UNARY = ("relax.astype", "relax.clip", "relax.round", "relax.nn.relu", "relax.sigmoid", "relax.floor")
_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum")


def sink_views(func: Any) -> Any:
    """Move each ``reshape`` / ``strided_slice`` after the element-wise ops that follow it, so a
    kernel's element-wise epilogue follows it directly and fuses into it (fusion stops at a reshape).

    ``op(view(x)) → view(op(x))`` for a unary op; for a binary op, when the other operand is a
    per-channel constant (broadcast over ``(1, C, 1, 1)`` or a scalar) or the same view of a tensor
    shaped like ``x``. Anything else is left as it is."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x, y = wildcard(), wildcard()
    view = is_op("relax.reshape")(x, wildcard()) | is_op("relax.strided_slice")(x, varg_default_wildcard=True)
    unary = None
    for name in _UNARY:
        p = is_op(name)(view, varg_default_wildcard=True)
        unary = p if unary is None else unary | p
    binary = None
    for name in _BINARY:
        p = is_op(name)(view, y) | is_op(name)(y, view)
        binary = p if binary is None else binary | p

    bound: dict[Any, Any] = {}

    def value(expr: Any) -> Any:
        return bound.get(expr, expr)

    def views(expr: Any) -> Any:  # of a kernel's [rows, columns] result: NCHW again, or padding off
        expr = value(expr)
        if not isinstance(expr, relax.Call) or expr.op.name not in ("relax.reshape", "relax.strided_slice"):
            return False
        src, out = _shape(expr.args[0]), _shape(expr)
        if len(src) != 2:
            return False
        return len(out) == 2 if expr.op.name == "relax.strided_slice" else len(out) == 4 and out[1] == src[0]

    def rebuild(v: Any, inner: Any) -> Any:
        return relax.Call(v.op, [inner, *v.args[1:]], v.attrs, v.ty_args)

    def rewrite(expr: Any, m: dict[Any, Any]) -> Any:
        args = list(expr.args)
        k = next((i for i, a in enumerate(args) if views(a)), None)
        if k is None:  # bound in this pass: the next pass sees it
            return expr
        v = value(args[k])
        src = v.args[0]
        if len(args) == 1 or not isinstance(args[1 - k] if len(args) == 2 else None, relax.Expr):
            new = relax.Call(expr.op, [src, *args[1:]], expr.attrs, expr.ty_args)
            return rebuild(v, new)
        other = value(args[1 - k])
        if views(other) and _same(other.args[1:], v.args[1:]) and _shape(other.args[0]) == _shape(src):
            operand = other.args[0]
        elif isinstance(other, tvm.ir.expr.Constant):
            c = other.value.numpy()
            src_shape = _shape(src)
            if c.size == 1:  # a scalar (of any rank: it must not broadcast the result up)
                operand = relax.const(c.reshape(()), str(c.dtype))
            elif len(src_shape) == 2 and _per_row(c.shape, len(_shape(v)), src_shape[0]):
                operand = relax.const(c.reshape(-1, 1))
            else:
                return expr
        else:
            return expr
        ops = [operand, src] if k == 1 else [src, operand]
        return rebuild(v, relax.Call(expr.op, ops, expr.attrs, expr.ty_args))

    for _ in range(64):
        bound = dict(relax.analysis.get_var2val(func))
        new = rewrite_call(unary | binary, rewrite, func)
        if _same(new, func):
            return func
        func = new
    return func


def _same(a: Any, b: Any) -> bool:
    from tvm_ffi import structural_equal

    return bool(structural_equal(a, b))


def _per_row(shape: tuple[int, ...], rank: int, rows: int) -> bool:
    """A constant of ``shape``, broadcast against a ``rank``-d view of a ``[rows, pixels]`` tensor,
    varies along the rows alone (the channels of ``(1, C, H, W)``; the rows of ``(C, P)``)."""
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    axis = 1 if rank == 4 else 0
    return len(padded) == rank and padded[axis] == rows and all(d == 1 for i, d in enumerate(padded) if i != axis)
