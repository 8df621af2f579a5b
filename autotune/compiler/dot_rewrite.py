"""Rewrite int8 convolutions and matmuls onto the dot-product kernels of
``autotune.compiler.dot_kernels`` (the ``DotProduct`` build step, after ``Precision`` and
``StridedConvs``).

``to_int8`` (``autotune.compiler.precision``) makes ``conv2d(int8, int8) -> int32`` and
``matmul(int8, int8) -> int32``; TVM lowers them to code that widens every operand to 32-bit lanes.
Where the target has a dot-product instruction (``dot_kernels.ISAS``: AVX-512 VNNI, Arm dotprod, or
AVX2's multiply-add pairs),
``to_dot_product`` replaces the convolutions with one group (batch 1, no dilation) and the matmuls:

- a 1×1 convolution over a 1×1 map (squeeze-excite) is a matmul: the matmul's kernel, lanes over
  its output channels (the convolution's would fill one lane of each vector);
- a convolution's activations go in four channels side by side (``[K/4, P, 4]``): for a 1×1 kernel
  at stride 1 the input channels (padded with zeros to a multiple of 4), where the pixels are a
  multiple of ``PACK_LANES`` in one vectorised pass (``pack_kernel`` writes each quadruple as one
  int32 and ``R.memory.view`` reads those words as bytes), otherwise a byte transpose (a gather per
  byte) with the pixels padded to whole vectors of the lanes (16 for VNNI, 8 for AVX2, 4 for dotprod;
  an even count of them from four on: ``_padded_pixels``);
  for any other kernel, stride or padding each output pixel's taps (input channel × kernel row × column: im2col),
  four to a word (``im2col_kernel``, on the input padded by ``pad_kernel``; a stride-2 layer reads
  the column phases ``StridedConvs`` made of it, so its loads are contiguous). The weights go as s8
  ``[N, K]`` (packed for a matmul, output features padded to a multiple of the lanes with zero rows);
  the 3×3 stem of a 3×224×224 MobileNet: 87 µs in float, 29 (im2col) + 24 µs;
- VNNI multiplies **u8** by s8: the activations go in as ``x + 128`` and each output channel's
  accumulators start at ``-128 · Σ_k w[n, k]`` (the kernels' ``Z``: no subtraction in the
  epilogue), so the result is exactly the int32 that ``conv2d(int8, int8)`` computes (Arm's
  ``sdot`` and the AVX2 kernels take s8 × s8 as they are); where the activations cannot be negative
  (``autotune.compiler.signs``: the quantized output of a ReLU) the AVX2 kernels skip the sign
  transfer (``dot_kernels.nonneg_variant``);
- ``sink_views`` then moves the reshape back to NCHW (and the slice of padding) after the
  element-wise ops that follow, so the rescale, bias, activation and next quantizer fuse into the
  kernel.

Depthwise convolutions stay float (``to_int8``); targets without such an instruction keep the
generic int8 code (``int8_path = generic``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.dot_kernels import (
    DEPTH,
    ISAS,
    KERNEL_PREFIX,
    DotIsa,
    conv_kernel,
    dense_kernel,
    dot_path,
    nonneg_variant,
    takes_conv,
    takes_matmul,
)
from autotune.compiler.dot_layout import PACK_LANES, im2col_kernel, pack_kernel, pad_kernel
from autotune.compiler.precision import tensor_dtype, tensor_shape
from autotune.compiler.signs import non_negative

if TYPE_CHECKING:
    import tvm

__all__ = ["sink_views", "to_dot_product"]

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # targets already warned about (once per process)


def _pack_weights(w: np.ndarray, lanes: int) -> tuple[np.ndarray, int]:
    """``w`` (N, K) int8 → packed (NL/L, K/4, L, 4) for ``L`` lanes, and NL (N rounded up to L)."""
    n, k = w.shape
    nl = -(-n // lanes) * lanes
    padded = np.zeros((nl, k), np.int8)
    padded[:n] = w
    packed = padded.reshape(nl // lanes, lanes, k // DEPTH, DEPTH).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(packed), nl


def _zero_columns(w: np.ndarray, k4: int) -> np.ndarray:
    """``w`` (N, K) with zero columns up to K4: the padded input channels add nothing."""
    return np.pad(w, ((0, 0), (0, k4 - w.shape[1]))) if k4 != w.shape[1] else w


def _pad_axis(x: Any, axis: int, extra: int) -> Any:
    """The 2-d tensor ``x`` with ``extra`` zeros appended along ``axis`` (none: ``x``)."""
    from tvm import relax

    if not extra:
        return x
    return relax.op.nn.pad(x, [0, extra, 0, 0] if axis == 0 else [0, 0, 0, extra])


def _padded_pixels(p: int, lanes: int) -> int:
    """A convolution's ``p`` output pixels rounded up to whole vectors of ``lanes``, and to an even
    count of them where there are several: the kernel then feeds each broadcast weight quadruple to
    two pixel vectors (``schedule_dot``), which an odd count denies it (AVX2, 14×14: 25 → 26 vectors;
    7×7: 7 → 8)."""
    vectors = -(-p // lanes)
    return (vectors + (vectors >= 4 and vectors % 2)) * lanes


def _shift_correction(w: np.ndarray, isa: DotIsa) -> np.ndarray | None:
    """What the u8 shift of the activations adds to each output row of ``w`` (N, K): ``128 · Σ_k w``
    (None for an instruction that takes s8 activations)."""
    if isa.activations != "uint8":
        return None
    return (128 * w.astype(np.int32).sum(axis=1)).astype(np.int32)


def to_dot_product(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, int]:
    """Rewrite ``main``'s int8 1×1 convolutions and matmuls onto the dot-product kernels where
    ``target`` has such an instruction (module docstring). Returns the module and the number rewritten."""
    path = dot_path(target)
    if path not in ISAS:
        if str(target) not in _WARNED:
            _WARNED.add(str(target))
            log.warning("int8 on %s: no dot-product instruction (AVX-512 VNNI, AVX2, Arm dotprod), so int8 runs "
                        "the generic (widening) code", target)  # fmt: skip
        return mod, 0
    isa = ISAS[path]
    lanes = isa.lanes
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    bb = relax.BlockBuilder(mod)
    bindings = dict(relax.analysis.get_var2val(mod["main"]))
    kernels: dict[tuple[Any, ...], Any] = {}
    done = 0
    x, w = wildcard(), is_const()
    conv = is_op("relax.nn.conv2d")(x, w)
    matmul = is_op("relax.matmul")(x, w)

    def kernel(key: tuple[Any, ...], make: Any, prefix: str = KERNEL_PREFIX) -> Any:
        if key not in kernels:  # (the census counts the KERNEL_PREFIX calls as dot-product operators)
            name = prefix + "_".join(str(v) for v in key)
            kernels[key] = bb.add_func(make().with_attr("global_symbol", name), name)
        return kernels[key]

    def start(correction: np.ndarray | None, rows: int) -> relax.Expr:
        """The accumulators' start: the shift's correction, negated (no subtraction per output in
        the epilogue), zeros without one and for padded rows."""
        out = np.zeros(rows, np.int32)
        if correction is not None:
            out[: correction.size] = -correction
        return relax.const(out)

    def activations(xq: relax.Expr) -> relax.Expr:  # u8 = s8 + 128 for VNNI; s8 as they are for sdot
        if isa.activations == "int8":
            return xq
        return relax.op.astype(relax.op.add(relax.op.astype(xq, "int16"), relax.const(128, "int16")), "uint8")

    def int8_operands(expr: relax.Call, m: dict[Any, Any]) -> tuple[Any, np.ndarray, DotIsa] | None:
        """The activations, the weights and the kernels' variant of ``isa`` for them (``nonneg``
        where the activations cannot be negative)."""
        wq = m[w].value.numpy()
        if str(wq.dtype) != "int8" or tensor_dtype(m[x]) != "int8" or str(expr.attrs.out_dtype) != "int32":
            return None
        variant = nonneg_variant(isa) if non_negative(m[x], bindings) else isa
        if wq.size and int(wq.min()) < variant.min_weight:  # (AVX2: a -128 weight cannot take a sign)
            return None
        return m[x], wq, variant

    def rewrite_conv(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        found = int8_operands(expr, m)
        a = expr.attrs
        shape = tensor_shape(found[0]) if found is not None else []
        if found is None or not takes_conv(shape, found[1].shape, int(a.groups), a.dilation):
            return expr
        xq, wq, kisa = found
        _, c, h, wd = shape
        (kh, kw), (sh, sw) = wq.shape[2:], (int(v) for v in a.strides)
        top, left, bottom, right = (int(v) for v in a.padding)
        oh, ow = (h + top + bottom - kh) // sh + 1, (wd + left + right - kw) // sw + 1
        n, k, p = wq.shape[0], c * kh * kw, oh * ow  # k: the taps, input channels × kernel rows × columns
        pl, k4 = _padded_pixels(p, lanes), -(-k // DEPTH) * DEPTH  # taps padded with zeros to k4
        pointwise = kh == kw == sh == sw == 1 and not any((top, left, bottom, right))
        if pointwise and p == 1:  # a 1x1 map (squeeze-excite): a matmul, its lanes over output channels
            done += 1
            return relax.op.reshape(dense(relax.op.reshape(xq, (1, k)), [1, k], wq.reshape(n, k), kisa), (1, n, 1, 1))
        if not pointwise:  # the taps of each output pixel gathered (im2col), four to a word
            hp, wp = h + top + bottom, wd + left + right
            xq = relax.op.reshape(xq, (c, h, wd))
            if (hp, wp) != (h, wd):
                pads = (top, left, bottom, right)
                func = kernel(("pad", f"c{c}", f"h{h}", f"w{wd}", *pads), lambda: pad_kernel((c, h, wd), pads), "int8_")
                xq = relax.call_tir(func, [xq], relax.TensorType((c, hp, wp), "int8"))
            func = kernel((isa.name, "im2col", f"c{c}", f"h{hp}", f"w{wp}", f"k{kh}x{kw}", f"s{sh}x{sw}"),
                          lambda: im2col_kernel((c, hp, wp), (kh, kw), (sh, sw), isa), "int8_pack_")  # fmt: skip
            words = relax.call_tir(func, [xq], relax.TensorType((k4 // DEPTH, oh, ow), "int32"))
            words = _pad_axis(relax.op.reshape(words, (k4 // DEPTH, p)), 1, pl - p)
            quads = relax.op.memory.view(words, (k4 // DEPTH, pl, DEPTH), isa.activations)
        elif p % PACK_LANES == 0:  # one vectorised pass; the int32 words viewed as the quadruples' bytes
            pl = p
            pack = kernel((isa.name, "pack", f"k{k}", f"p{p}"), lambda: pack_kernel(k, p, isa), "int8_pack_")
            words = relax.call_tir(pack, [relax.op.reshape(xq, (k, p))], relax.TensorType((k4 // DEPTH, p), "int32"))
            quads = relax.op.memory.view(words, (k4 // DEPTH, p, DEPTH), isa.activations)
        else:  # a byte transpose (and pixels padded to the lanes)
            rows = _pad_axis(relax.op.reshape(activations(xq), (k, p)), 0, k4 - k)
            quads = relax.op.permute_dims(relax.op.reshape(rows, (k4 // DEPTH, DEPTH, p)), [0, 2, 1])
            if pl != p:
                quads = relax.op.nn.pad(quads, [0, 0, 0, pl - p, 0, 0])
        wmat = _zero_columns(wq.reshape(n, k), k4)
        func = kernel((isa.name, "conv1x1", *_variant(kisa), f"n{n}", f"k{k4}", f"p{pl}"),
                      lambda: conv_kernel(n, k4, pl, kisa))  # fmt: skip
        args = [quads, relax.const(wmat), start(_shift_correction(wmat, isa), n)]
        acc = relax.call_tir(func, args, relax.TensorType((n, pl), "int32"))
        if pl != p:
            acc = relax.op.strided_slice(acc, axes=[1], begin=[0], end=[p])
        done += 1
        return relax.op.reshape(acc, (1, n, oh, ow))

    def rewrite_matmul(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        found = int8_operands(expr, m)
        shape = tensor_shape(found[0]) if found is not None else []
        if found is None or not takes_matmul(shape, found[1].shape):
            return expr
        xq, wq, kisa = found
        done += 1
        return dense(xq, shape, np.ascontiguousarray(wq.T), kisa)

    def dense(xq: relax.Expr, shape: list[int], wq: np.ndarray, kisa: DotIsa) -> relax.Expr:
        """``xq`` ([p, k] int8) times ``wq`` ([n, k] s8) on the dense kernel of ``kisa``: [p, n] int32."""
        p, k = shape
        k4 = -(-k // DEPTH) * DEPTH
        wt = _zero_columns(wq, k4)  # (N, K4)
        packed, nl = _pack_weights(wt, lanes)
        func = kernel((isa.name, "dense", *_variant(kisa), f"p{p}", f"k{k4}", f"n{nl}"),
                      lambda: dense_kernel(p, k4, nl, kisa))  # fmt: skip
        args = [_pad_axis(activations(xq), 1, k4 - k), relax.const(packed), start(_shift_correction(wt, isa), nl)]
        acc = relax.call_tir(func, args, relax.TensorType((p, nl), "int32"))
        if nl != wt.shape[0]:
            acc = relax.op.strided_slice(acc, axes=[1], begin=[0], end=[wt.shape[0]])
        return acc

    main = rewrite_call(conv, rewrite_conv, mod["main"])
    main = rewrite_call(matmul, rewrite_matmul, main)
    if not done:
        return mod, 0
    out = bb.get()
    out["main"] = main
    out = relax.transform.FoldConstant()(out)  # reshaped constants (biases) become constants
    out["main"] = sink_views(out["main"])
    return out, done


#: Element-wise ops that commute with a reshape or a slice of their tensor operands.
_UNARY = ("relax.astype", "relax.clip", "relax.round", "relax.nn.relu", "relax.sigmoid", "relax.floor")
_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum")


def sink_views(func: Any) -> Any:
    """Move each ``reshape`` / ``strided_slice`` after the element-wise ops that follow it, so a
    kernel's element-wise epilogue follows it directly and fuses into it (fusion stops at a reshape).

    ``op(view(x)) → view(op(x))`` for a unary op; for a binary op, when the other operand is a
    per-channel constant (broadcast over ``(1, C, 1, 1)`` or a scalar: ``_onto_source``), the same
    view of a tensor shaped like ``x``, or (for a reshape) a tensor of the view's own shape, read through the inverse
    reshape. Anything else is left as it is."""
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
        src, out = tensor_shape(expr.args[0]), tensor_shape(expr)
        if len(src) != 2:
            return False
        if expr.op.name == "relax.strided_slice":
            return len(out) == 2
        # [channels, pixels] (the convolution kernel's) or [1, channels] (the matmul kernel's, a 1x1 map)
        return len(out) == 4 and (out[1] == src[0] or (src[0] == 1 and out[1:] == [src[1], 1, 1]))

    def rebuild(v: Any, inner: Any) -> Any:
        return relax.Call(v.op, [inner, *v.args[1:]], v.attrs, v.ty_args)

    def rewrite(expr: Any, m: dict[Any, Any]) -> Any:
        args = list(expr.args)
        k = next((i for i, a in enumerate(args) if views(a)), None)
        if k is None:  # bound in this pass: the next pass sees it
            return expr
        v = value(args[k])
        src = v.args[0]
        if expr.op.name in _UNARY:  # its other arguments are parameters (clip's bounds)
            return rebuild(v, relax.Call(expr.op, [src, *args[1:]], expr.attrs, expr.ty_args))
        other = value(args[1 - k])
        if views(other) and _same(other.args[1:], v.args[1:]) and tensor_shape(other.args[0]) == tensor_shape(src):
            operand = other.args[0]
        elif isinstance(other, tvm.ir.expr.Constant):
            c = other.value.numpy()
            if c.size == 1:  # a scalar (of any rank: it must not broadcast the result up)
                operand = relax.const(c.reshape(()), str(c.dtype))
            elif (onto := _onto_source(c, v)) is not None:
                operand = relax.const(onto)
            else:
                return expr
        elif v.op.name == "relax.reshape" and tensor_shape(args[1 - k]) == tensor_shape(v):
            # a tensor of the view's shape (a residual's skip from a float layer), read as [rows, pixels]
            operand = relax.op.reshape(args[1 - k], tensor_shape(src))
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


def _variant(isa: DotIsa) -> tuple[str, ...]:
    """What a kernel's name adds for ``isa``'s variant (after the instruction set, which the census reads)."""
    return ("u7",) if isa.nonneg else ()


def _same(a: Any, b: Any) -> bool:
    from tvm_ffi import structural_equal

    return bool(structural_equal(a, b))


def _onto_source(c: np.ndarray, view: Any) -> np.ndarray | None:
    """Constant ``c``, broadcast against ``view`` (a reshape or slice of a 2-d kernel result), as the
    constant that broadcasts the same against the view's source; None where there is none. Through a
    reshape to ``(1, C, H, W)`` only per-channel constants carry over (onto the channel axis of
    ``[C, pixels]`` or ``[1, C]``); through a slice, ones pad a constant along a sliced axis (begun at
    0) to the source's extent (ones: no division by zero), and what they meet is sliced off again."""
    src, out = tensor_shape(view.args[0]), tensor_shape(view)
    if view.op.name == "relax.reshape":
        padded = (1,) * (len(out) - c.ndim) + tuple(c.shape)
        if len(padded) != 4 or any(d != 1 for i, d in enumerate(padded) if i != 1):
            return None
        if padded[1] == src[0]:
            return c.reshape(-1, 1)
        return c.reshape(1, -1) if src[0] == 1 and padded[1] == src[1] else None
    if c.ndim != 2:
        return None
    sliced = {int(a.value): int(b.value) for a, b in zip(view.args[1].fields, view.args[2].fields, strict=True)}
    pads = []
    for axis in range(2):
        if c.shape[axis] in (1, src[axis]):
            pads.append((0, 0))
        elif c.shape[axis] == out[axis] and sliced.get(axis) == 0:
            pads.append((0, src[axis] - out[axis]))
        else:
            return None
    return np.pad(c, pads, constant_values=1)
