"""Float layers of an int8 model that read their quantized input as int8 (the build's ``Int8Inputs``
step, int8 builds only).

Depthwise layers stay float in an int8 build (``autotune.compiler.precision.to_int8``), so the
quantizer in front of one, ``multiply(clip(round(x · 1/s), lo, hi), s)``, fused into the
previous kernel's epilogue, wrote its 8-bit values back as float32: four bytes per element written
by that kernel and read by the next (48 channels at 112×112: 2.4 MB, where int8 is 0.6 MB).
``int8_inputs`` makes the tensor between them int8, ``astype(clip(round(x · 1/s), lo, hi), int8)``,
and the reader converts each value once:

- a stride-1 depthwise convolution becomes ``call_tir(depthwise_kernel, [q, s · W])``, which
  converts its input in a vectorised stage of its own before the padding stage (both per channel
  while the plane is in cache for a wide layer: ``autotune.tuning.default``; converting inside the
  padding's condition was scalar code on AVX2: 5×5, 48 channels at 112×112, 770–1010 → 570–660 µs
  on the Zen 3 over several runs, where the float layer takes ~565). With AVX-512 the default
  schedule inlines that stage into the padding, which LLVM then vectorises with masked loads
  (``default._vectorised_conversions``). The sums are the float sums of the
  same 8-bit values with the scale moved onto the weights (``q · (s · w)`` for ``(q · s) · w``):
  within float32 rounding, as any other order of the same products. Its blocks are named as TOPI
  names a depthwise convolution's, with the one input channel per group as a reduction of extent 1,
  so default schedules and tuning treat it as the depthwise convolution it is;
- a strided depthwise layer, a copy into column phases and a convolution over them
  (``autotune.compiler.strided``), whose float phases would take ``INT8_PHASES_BYTES`` or more,
  copies the phases as bytes and convolves them with
  ``depthwise_kernel`` (two input channels per output channel, rows two apart), its conversion per
  channel (AVX-512: inside the convolution). On an Intel Xeon (1 thread) the 5×5 layer over 48
  channels at 112×112 of the 3×224×224 hardswish candidate took 113 µs (copy writing float32) + 201
  µs, now 19 + 222 µs;
- any other column-phase copy that reads the quantizer reads int8 and writes ``q · s``, the very
  float32 values it copied before (int8 pairs read as 16-bit words where the width is even: 48
  channels at 112×112, 46 → 34 µs on the Zen 5).

On ``bench/backends.py``'s 3×224×224 candidate (Zen 5, 1 thread) the int8 model's kernels summed
903 → 873 µs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.dot_kernels import i64
from autotune.compiler.precision import INT8_INPUT_DEPTHWISE, tensor_dtype, tensor_shape
from autotune.tuning.default import CONVERT_BLOCKS

if TYPE_CHECKING:
    import tvm

__all__ = ["INT8_PHASES_BYTES", "KERNEL_PREFIX", "depthwise_kernel", "int8_inputs"]

#: Name prefix of the kernels' PrimFuncs (the depthwise ones': ``precision.INT8_INPUT_DEPTHWISE``).
KERNEL_PREFIX = "int8_input_"
#: Size of a strided depthwise layer's float32 column phases from which they are copied as bytes
#: and convolved reading int8: alone on an Intel Xeon, 5×5 over 48 channels at 112×112 (2.6 MB of
#: phases) 113 + 161 → 19 + 155 µs; at 28×28 (0.4 MB) and 16×16 the float copy stays in cache and
#: converting inside the convolution cost 5 % and 30 % more (AVX2 code alike).
INT8_PHASES_BYTES = 1 << 20


def depthwise_kernel(
    shape: list[int], kernel: tuple[int, int], padding: tuple[int, ...], *, per_group: int = 1, row_stride: int = 1
) -> tvm.tirx.PrimFunc:
    """``out[0, c, y, x] = Σ_rc Σ_ry Σ_rx float(q[0, c·g + rc, y·r + ry - top, x + rx - left]) · w[c, rc, ry, rx]``
    for int8 ``q`` of ``shape`` (NCHW, batch 1), ``g = per_group`` input channels per output channel,
    rows ``r = row_stride`` apart, zeros outside ``q``, unscheduled (a TE compute). ``per_group=2,
    row_stride=2`` convolves the column phases of a strided layer (``autotune.compiler.strided``),
    which come padded (no padding stage then)."""
    from tvm import te, tirx

    _, ci, h, w = shape
    kh, kw = kernel
    top, left, bottom, right = padding

    q = te.placeholder(i64(*shape), "int8", name="q")
    weight = te.placeholder(i64(ci // per_group, per_group, kh, kw), "float32", name="w")
    # converted in a stage of its own (never inlined by MetaSchedule), vectorised by the default
    # schedule, or inlined by it where that pays (``default._vectorised_conversions``)
    floats = te.compute(i64(*shape), lambda *i: tirx.Cast("float32", q[i]), name=CONVERT_BLOCKS[0],
                        attrs={"meta_schedule.inline_rule": "disable"})  # fmt: skip

    def pad(n: Any, ch: Any, y: Any, x: Any) -> Any:
        inside = tirx.all(y >= top, y < top + h, x >= left, x < left + w)
        return tirx.if_then_else(inside, floats[n, ch, y - top, x - left], tirx.const(0.0, "float32"))

    rows, cols = h + top + bottom, w + left + right
    padded = te.compute(i64(1, ci, rows, cols), pad, name="pad_temp") if any(padding) else floats
    axes = (per_group, kh, kw)
    rc, ry, rx = (te.reduce_axis(i64(0, e), n) for e, n in zip(axes, ("rc", "ry", "rx"), strict=True))
    out = te.compute(
        i64(1, ci // per_group, (rows - kh) // row_stride + 1, cols - kw + 1),
        lambda n, ch, y, x: te.sum(
            padded[n, ch * per_group + rc, y * row_stride + ry, x + rx] * weight[ch, rc, ry, rx], axis=[rc, ry, rx]
        ),
        name="depthwise_conv2d_nchw",
    )
    return te.create_prim_func([q, weight, out])


def int8_inputs(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """Rewrite what reads an 8-bit symmetric quantizer's output as float in ``main`` to read it as
    int8 (module docstring): stride-1 float32 depthwise convolutions (NCHW, batch 1, one input
    channel per group) onto ``depthwise_kernel``, strided ones over column phases onto a byte copy
    and ``depthwise_kernel`` over it, and other column-phase copies of strided layers
    (``autotune.compiler.strided``) onto their int8 variant. Returns the module and the number rewritten."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, is_tuple, rewrite_call, wildcard

    from autotune.compiler.strided import PADS_ATTR, phase_copy

    y, lo, hi, s, w, callee = wildcard(), wildcard(), wildcard(), is_const(), is_const(), wildcard()
    q = is_op("relax.clip")(is_op("relax.round")(y), lo, hi)
    dequantized = is_op("relax.multiply")(q, s)
    view = is_op("relax.reshape")(dequantized, wildcard())  # of a dot-product kernel's [channels, pixels]
    x = dequantized | view
    conv = is_op("relax.nn.conv2d")(x, w)
    copy = is_op("relax.call_tir")(callee, is_tuple([x]))
    bb = relax.BlockBuilder(mod)
    kernels: dict[tuple[Any, ...], Any] = {}
    done = 0

    def quantized(m: dict[Any, Any]) -> tuple[relax.Expr, float] | None:
        """The quantizer's int8 values, shaped as its dequantized output, and its scale."""
        bounds = [float(getattr(m[b], "value", np.nan)) for b in (lo, hi)]
        scale, shape = m[s].value.numpy(), tensor_shape(m[x])
        if not (-128 <= bounds[0] <= bounds[1] <= 127 and all(b.is_integer() for b in bounds)):
            return None
        if scale.size != 1 or str(scale.dtype) != "float32" or tensor_dtype(m[x]) != "float32" or not shape:
            return None
        xq = relax.op.astype(m[q], "int8")
        return (xq if tensor_shape(xq) == shape else relax.op.reshape(xq, shape)), float(scale.reshape(()))

    def kernel(key: tuple[Any, ...], name: str, make: Any) -> Any:
        if key not in kernels:
            name = KERNEL_PREFIX + name + "_" + "_".join(str(v) for v in key)
            kernels[key] = bb.add_func(make().with_attr("global_symbol", name), name)
        return kernels[key]

    def rewrite_conv(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        a, weight, shape = expr.attrs, m[w].value.numpy(), tensor_shape(m[x])
        found = quantized(m)
        if found is None or len(shape) != 4 or shape[0] != 1 or weight.ndim != 4 or str(weight.dtype) != "float32":
            return expr
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return expr
        if not int(a.groups) == shape[1] == weight.shape[0] or weight.shape[1] != 1:  # depthwise
            return expr
        if any(int(v) != 1 for v in (*a.strides, *a.dilation)) or tensor_dtype(expr) != "float32":
            return expr
        padding = tuple(int(v) for v in a.padding)
        func = kernel((*shape, *weight.shape[2:], *padding), INT8_INPUT_DEPTHWISE[len(KERNEL_PREFIX) :],
                      lambda: depthwise_kernel(shape, weight.shape[2:], padding))  # fmt: skip
        xq, scale = found
        scaled = (weight * np.float32(scale)).astype(np.float32)
        done += 1
        return relax.call_tir(func, [xq, relax.const(scaled)], relax.TensorType(tensor_shape(expr), "float32"))

    def rewrite_phases(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        """A strided depthwise layer, ``conv2d(copy(x))`` over its column phases: the phases copied as
        bytes, convolved by ``depthwise_kernel`` reading them."""
        nonlocal done
        a, weight = expr.attrs, m[w].value.numpy()
        phases = mod[m[callee]] if isinstance(m[callee], relax.GlobalVar) else None
        pads = phases.attrs.get(PADS_ATTR) if phases is not None and phases.attrs is not None else None
        shape, split = tensor_shape(m[x]), tensor_shape(m[copy])
        found = quantized(m)
        if found is None or pads is None or len(shape) != 4 or len(split) != 4 or weight.ndim != 4:
            return expr
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return expr
        if not int(a.groups) == shape[1] == weight.shape[0] or weight.shape[1] != 2 or str(weight.dtype) != "float32":
            return expr
        if [int(v) for v in (*a.strides, *a.dilation, *a.padding)] != [2, 1, 1, 1, 0, 0, 0, 0]:
            return expr
        if tensor_dtype(expr) != "float32" or 4 * math.prod(split) < INT8_PHASES_BYTES:
            return expr
        xq, scale = found
        pads, (rows, half) = (int(pads[0]), int(pads[1])), split[2:]
        copy_q = kernel((*shape, *pads, rows, half), "column_phases_int8",
                        lambda: phase_copy(shape, pads, rows, half, "int8"))  # fmt: skip
        kernel_shape = weight.shape[2:]
        conv_q = kernel((*split, *kernel_shape, 2), INT8_INPUT_DEPTHWISE[len(KERNEL_PREFIX) :] + "_phases",
                        lambda: depthwise_kernel(split, kernel_shape, (0,) * 4, per_group=2, row_stride=2))  # fmt: skip
        phases_q = relax.call_tir(copy_q, [xq], relax.TensorType(split, "int8"))
        scaled = (weight * np.float32(scale)).astype(np.float32)
        done += 1
        return relax.call_tir(conv_q, [phases_q, relax.const(scaled)], relax.TensorType(tensor_shape(expr), "float32"))

    def rewrite_copy(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        phases = mod[m[callee]] if isinstance(m[callee], relax.GlobalVar) else None
        found = quantized(m)
        pads = phases.attrs.get(PADS_ATTR) if phases is not None and phases.attrs is not None else None
        shape, out = tensor_shape(m[x]), tensor_shape(expr)
        if found is None or pads is None or len(shape) != 4 or len(out) != 4:
            return expr
        xq, scale = found
        pads, (rows, half) = (int(pads[0]), int(pads[1])), out[2:]
        func = kernel((*shape, *pads, rows, half), "column_phases",
                      lambda: phase_copy(shape, pads, rows, half, "int8", "float32", scale))  # fmt: skip
        done += 1
        return relax.call_tir(func, [xq], relax.TensorType(out, "float32"))

    main = rewrite_call(conv, rewrite_conv, mod["main"])
    main = rewrite_call(is_op("relax.nn.conv2d")(copy, w), rewrite_phases, main)
    main = rewrite_call(copy, rewrite_copy, main)
    if not done:
        return mod, 0
    out = bb.get()
    out["main"] = main
    return _without_unused_kernels(relax.transform.DeadCodeElimination()(out)), done


def _without_unused_kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` without the PrimFuncs ``main`` no longer calls (the float copies replaced): they
    would be compiled, and counted as workloads, for nothing."""
    import tvm
    from tvm import relax

    called: set[str] = set()
    relax.analysis.post_order_visit(
        mod["main"], lambda e: called.add(e.name_hint) if isinstance(e, tvm.ir.GlobalVar) else None
    )
    kept = {gv: f for gv, f in mod.functions_items() if not isinstance(f, tvm.tirx.PrimFunc) or gv.name_hint in called}
    return tvm.IRModule(kept, attrs=mod.attrs, global_infos=mod.global_infos)
