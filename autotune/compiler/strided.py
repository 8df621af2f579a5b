"""Strided depthwise convolutions rewritten so that their vector loads are contiguous.

A stride-2 depthwise convolution reads its input's columns two apart: vectorised over output
columns, every load is a gather (a 5×5 layer over 48 channels at 112×112 ran at 7 GMAC/s, the
slowest kernel of a 3×224×224 MobileNet). ``split_strided_depthwise`` splits the padded input's
columns into their two phases, ``X[c·2 + ph, y, j] = x_pad[c, y, 2j + ph]`` (one copy), and
convolves each output channel over its two phases with stride 1 along the columns:

    out[c, y, x] = Σ_ry Σ_ph Σ_j  w[c, ry, 2j + ph] · X[c·2 + ph, 2y + ry, x + j]

a grouped convolution (``groups = C``, two input channels per group, kernel ``k × ⌈k/2⌉``, stride
``(2, 1)``) that computes the same sums in another order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.precision import tensor_dtype, tensor_shape

if TYPE_CHECKING:
    import tvm

__all__ = ["MIN_WIDTH", "phase_kernel", "split_strided_depthwise"]

#: Narrowest kernel rewritten: the gathers cost each output column ``k`` loads per row of taps,
#: the copy one pass over the input. Measured at 3×224×224 (Zen 5, 1 thread): 5×5 over 48
#: channels at 112×112 took 520 µs, then 177 + 101 (copy) µs; 3×3 over 72 at 56×56 took 57 µs,
#: then 22 + 88 µs, so 3×3 layers keep their gathers.
MIN_WIDTH = 5


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values]


def phase_kernel(shape: list[int], pads: tuple[int, int], rows: int, half: int) -> tvm.tirx.PrimFunc:
    """``X[n, 2c + ph, y, j] = x_pad[n, c, y, 2j + ph]`` for ``x`` of ``shape`` (NCHW) padded by
    ``pads`` (top, left) and zeros: the column phases of the padded input, ``rows × half`` each."""
    from tvm import s_tir, te, tirx

    n, c, h, w = shape
    top, left = pads
    x = te.placeholder([tirx.IntImm("int64", v) for v in shape], "float32", name="x")

    def body(b: Any, ch: Any, y: Any, j: Any) -> Any:  # ch = 2·channel + phase
        row, col = y - top, j * 2 + ch % 2 - left
        inside = tirx.all(row >= 0, row < h, col >= 0, col < w)
        return tirx.if_then_else(inside, x[b, ch // 2, row, col], tirx.const(0.0, "float32"))

    out = te.compute([tirx.IntImm("int64", v) for v in (n, 2 * c, rows, half)], body, name="column_phases")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    b, ch, _, j = sch.get_loops(sch.get_sblock("column_phases"))
    sch.parallel(sch.fuse(b, ch))
    lanes = max(d for d in (1, 2, 4, 8, 16) if half % d == 0)
    if lanes > 1:
        sch.vectorize(sch.split(j, [None, lanes])[1])
    # scheduled here, and a copy of its own: fusion would drop the schedule (kOpaque)
    return sch.mod["main"].with_attr("tir.is_scheduled", True).with_attr("op_pattern", 8)


def split_strided_depthwise(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrite ``main``'s stride-(2, 2) depthwise NCHW float32 convolutions with constant weights at
    least ``MIN_WIDTH`` wide (module docstring); everything else is left as it is."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, w = wildcard(), is_const()
    conv = is_op("relax.nn.conv2d")(x, w)
    bb = relax.BlockBuilder(mod)
    kernels: dict[tuple[int, ...], Any] = {}
    done = 0

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nonlocal done
        a = expr.attrs
        weight = m[w].value.numpy()
        shape = tensor_shape(m[x])
        if len(shape) != 4 or weight.ndim != 4 or str(weight.dtype) != "float32" or tensor_dtype(m[x]) != "float32":
            return expr
        n, c, h, wd = shape
        k_h, k_w = weight.shape[2:]
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return expr
        if int(a.groups) != c or weight.shape[:2] != (c, 1):
            return expr
        if _ints(a.strides) != [2, 2] or _ints(a.dilation) != [1, 1] or k_w < MIN_WIDTH:
            return expr
        top, left, bottom, right = _ints(a.padding)
        out_h = (h + top + bottom - k_h) // 2 + 1
        out_w = (wd + left + right - k_w) // 2 + 1
        half = out_w - 1 + (k_w + 1) // 2  # columns per phase the convolution reads
        rows = h + top + bottom
        key = (*shape, top, left, rows, half)
        if key not in kernels:
            name = "column_phases_" + "_".join(map(str, key))
            kernel = phase_kernel(shape, (top, left), rows, half).with_attr("global_symbol", name)
            kernels[key] = bb.add_func(kernel, name)
        phases = relax.call_tir(kernels[key], [m[x]], relax.TensorType((n, c * 2, rows, half), "float32"))
        taps = (k_w + 1) // 2
        split = np.zeros((c, 2, k_h, taps), np.float32)
        for ph in range(2):
            cols = weight[:, 0, :, ph::2]
            split[:, ph, :, : cols.shape[-1]] = cols
        out = relax.op.nn.conv2d(phases, relax.const(split), strides=(2, 1), padding=0, groups=c,
                                 out_dtype=a.out_dtype)  # fmt: skip
        if half - taps + 1 != out_w or (rows - k_h) // 2 + 1 != out_h:
            out = relax.op.strided_slice(out, axes=[2, 3], begin=[0, 0], end=[out_h, out_w])
        done += 1
        return out

    main = rewrite_call(conv, rewrite, mod["main"])
    if not done:
        return mod
    out = bb.get()
    out["main"] = main
    return out
