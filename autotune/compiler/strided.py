"""Stride-2 convolutions rewritten so that their vector loads are contiguous.

A stride-2 convolution reads its input's columns two apart: vectorised over output columns, every
load is a gather (a 5×5 depthwise layer over 48 channels at 112×112 ran at 7 GMAC/s, the slowest
kernel of a 3×224×224 MobileNet; the 3×3 stem over its 3 input channels 156 µs).
``split_strided_convs`` splits the padded input's columns into their two phases,
``X[c·2 + ph, y, j] = x_pad[c, y, 2j + ph]`` (one copy), and convolves over the phases with stride 1
along the columns:

    out[o, y, x] = Σ_c Σ_ry Σ_ph Σ_j  w[o, c, ry, 2j + ph] · X[c·2 + ph, 2y + ry, x + j]

a convolution with twice the input channels per group (kernel ``k × ⌈k/2⌉``, stride ``(2, 1)``) that
computes the same sums in another order. The copy reads each row's float pairs as 64-bit words and
writes their low and high halves to the two phases (contiguous vector loads and stores; a gather per
element where the width is odd): 48 channels at 112×112, 95 → 43 µs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.dot_kernels import i64
from autotune.compiler.precision import tensor_dtype, tensor_shape

if TYPE_CHECKING:
    import tvm

__all__ = [
    "MIN_COLUMNS_NARROW",
    "PADS_ATTR",
    "MIN_WIDTH",
    "MIN_WIDTH_DENSE",
    "phase_copy",
    "split_strided_convs",
]

#: Narrowest depthwise kernel rewritten: the gathers cost each output column ``k`` loads per row of
#: taps, the copy one pass over the input. Measured at 3×224×224 (Zen 5, 1 thread): 5×5 over 48
#: channels at 112×112 took 520 µs, then 177 + 101 (copy) µs; with the copy as float pairs,
#: 128 + 45 µs.
MIN_WIDTH = 5
#: Narrower depthwise kernels (3×3) are rewritten from this input width: 3×3 over 72 channels at
#: 56×56, 53 µs → 20 + 16 (copy); on the small maps of a 32×32 model the copy and its call cost
#: what the gathers did.
MIN_COLUMNS_NARROW = 56
#: Narrowest kernel rewritten where a group has several input channels (each copied column feeds
#: every output channel): the 3×3 stem, 3 → 16 channels at 224×224, 156 µs → 90 + 10 (copy).
MIN_WIDTH_DENSE = 3
#: PrimFunc attribute of a phase copy: the input's padding (top, left) it applies.
PADS_ATTR = "autotune.column_phases_pads"


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values]


def phase_copy(
    shape: list[int],
    pads: tuple[int, int],
    rows: int,
    half: int,
    dtype: str = "float32",
    out_dtype: str | None = None,
    scale: float = 1.0,
) -> tvm.tirx.PrimFunc:
    """``X[n, 2c + ph, y, j] = x_pad[n, c, y, 2j + ph]`` for ``x`` of ``shape`` (NCHW, ``dtype``) padded
    by ``pads`` (top, left) and zeros: the column phases of the padded input, ``rows × half`` each,
    scheduled. An int8 ``x`` is copied as it is, or (``out_dtype`` float32) written as float32
    ``x · scale``. An even width is copied as pairs of columns (``_paired``), an odd one gathered."""
    make = _paired if shape[3] % 2 == 0 else _gathered
    return make(shape, pads, rows, half, dtype, out_dtype or dtype, scale)


def _gathered(shape: list[int], pads: tuple[int, int], rows: int, half: int, dtype: str, out: str,
              scale: float) -> tvm.tirx.PrimFunc:  # fmt: skip
    """``phase_copy``, an element at a time."""
    from tvm import s_tir, te, tirx

    n, c, h, w = shape
    top, left = pads
    x = te.placeholder(i64(*shape), dtype, name="x")

    def body(b: Any, ch: Any, y: Any, j: Any) -> Any:  # ch = 2·channel + phase
        row, col = y - top, j * 2 + ch % 2 - left
        inside = tirx.all(row >= 0, row < h, col >= 0, col < w)
        value = x[b, ch // 2, row, col]
        if out != dtype:
            value = tirx.Cast(out, value) * tirx.const(scale, out)
        return tirx.if_then_else(inside, value, tirx.const(0, out))

    phases = te.compute(i64(n, 2 * c, rows, half), body, name="column_phases")
    sch = s_tir.Schedule(te.create_prim_func([x, phases]))
    b, ch, _, j = sch.get_loops(sch.get_sblock("column_phases"))
    sch.parallel(sch.fuse(b, ch))
    lanes = max(d for d in (1, 2, 4, 8, 16) if half % d == 0)
    if lanes > 1:
        sch.vectorize(sch.split(j, [None, lanes])[1])
    # scheduled here, and a copy of its own: fusion would drop the schedule (kOpaque)
    return _mark(sch.mod["main"], pads)


def _mark(func: tvm.tirx.PrimFunc, pads: tuple[int, int]) -> tvm.tirx.PrimFunc:
    """A phase copy, scheduled and opaque to fusion, carrying its padding (``PADS_ATTR``)."""
    attrs = {"tir.is_scheduled": True, "op_pattern": 8, PADS_ATTR: [int(v) for v in pads]}
    for key, value in attrs.items():
        func = func.with_attr(key, value)
    return func


def _pays(per_group: int, k_w: int, width: int) -> bool:
    """Whether the copy into column phases costs less than the gathers it saves (the constants above)."""
    if per_group > 1:
        return k_w >= MIN_WIDTH_DENSE
    return k_w >= MIN_WIDTH or (k_w >= 3 and width >= MIN_COLUMNS_NARROW)


def _paired(shape: list[int], pads: tuple[int, int], rows: int, half: int, dtype: str, out_dtype: str,
            scale: float) -> tvm.tirx.PrimFunc:  # fmt: skip
    """``phase_copy`` of an even width, on the bits: the input read as ``[n·c, h, w/2]`` words of
    two columns (the even one in its low half: little-endian, as x86 and Arm are), each phase row the
    low or high halves of a run of words (vectorised, no condition inside it), zeros around. float32
    pairs are int64 words whose halves are written as int32 (the same bits); int8 pairs are int16
    words whose halves are written as they are, or (``out_dtype`` float32) as ``value · scale``."""
    from tvm.script import tirx as T

    n, c, h, w = shape
    w2, (top, left) = w // 2, pads
    bits = 8 if dtype == "int8" else 32
    half_t = f"int{bits}"  # a column's bits
    word, out_t = f"int{2 * bits}", out_dtype if out_dtype != dtype else half_t
    factor = T.Cast(out_t, scale if out_dtype != dtype else 1)
    runs = []  # per phase: bit shift, word offset, first and end column of the run read from x
    for ph in range(2):
        s = (ph - left) % 2
        d = (ph - left - s) // 2
        lo = max(0, -d)
        runs.append((bits * s, d, lo, max(lo, min(half, w2 - d))))
    (s0, d0, lo0, hi0), (s1, d1, lo1, hi1) = runs
    nc = n * c
    zero = T.Cast(out_t, 0)

    @T.prim_func(s_tir=True)
    def kernel(xf: T.Buffer((n, c, h, w), dtype), of: T.Buffer((n, 2 * c, rows, half), out_dtype)) -> None:
        T.func_attr({"tirx.noalias": True})
        x = T.decl_buffer((nc, h, w2), word, data=xf.data)  # the same memory, as pairs
        out = T.decl_buffer((nc * 2, rows, half), out_t, data=of.data)
        with T.sblock("root"):
            for bc in T.parallel(nc):
                for y in range(rows):
                    if y >= top and y < top + h:
                        for j in range(lo0):
                            out[bc * 2, y, j] = zero
                        for j in T.vectorized(hi0 - lo0):
                            out[bc * 2, y, lo0 + j] = (
                                T.Cast(out_t, T.Cast(half_t, x[bc, y - top, lo0 + j + d0] >> T.Cast(word, s0))) * factor
                            )
                        for j in range(half - hi0):
                            out[bc * 2, y, hi0 + j] = zero
                        for j in range(lo1):
                            out[bc * 2 + 1, y, j] = zero
                        for j in T.vectorized(hi1 - lo1):
                            out[bc * 2 + 1, y, lo1 + j] = (
                                T.Cast(out_t, T.Cast(half_t, x[bc, y - top, lo1 + j + d1] >> T.Cast(word, s1))) * factor
                            )
                        for j in range(half - hi1):
                            out[bc * 2 + 1, y, hi1 + j] = zero
                    else:
                        for ph, j in T.grid(2, half):
                            out[bc * 2 + ph, y, j] = zero

    return _mark(kernel, pads)


def split_strided_convs(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrite ``main``'s stride-(2, 2) NCHW convolutions with constant weights (float32, or int8 on
    int8: the phases copied as bytes, for ``autotune.compiler.dot_rewrite``'s im2col) where the copy
    pays (``_pays``: kernel width, input width; module docstring); everything else is left as it is."""
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
        dtype = tensor_dtype(m[x])  # float32, or int8 (int8 weights): the phases keep the input's dtype
        if len(shape) != 4 or weight.ndim != 4 or (dtype, str(weight.dtype)) not in (("float32",) * 2, ("int8",) * 2):
            return expr
        n, c, h, wd = shape
        k_h, k_w = weight.shape[2:]
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return expr
        groups, per_group = int(a.groups), weight.shape[1]  # input channels per group: 1 when depthwise
        if per_group * groups != c:
            return expr
        if _ints(a.strides) != [2, 2] or _ints(a.dilation) != [1, 1] or not _pays(per_group, k_w, wd):
            return expr
        top, left, bottom, right = _ints(a.padding)
        out_h = (h + top + bottom - k_h) // 2 + 1
        out_w = (wd + left + right - k_w) // 2 + 1
        half = out_w - 1 + (k_w + 1) // 2  # columns per phase the convolution reads
        rows = h + top + bottom
        key = (*shape, top, left, rows, half, dtype)
        if key not in kernels:
            name = "column_phases_" + "_".join(map(str, key[:-1])) + ("_int8" if dtype == "int8" else "")
            func = phase_copy(shape, (top, left), rows, half, dtype).with_attr("global_symbol", name)
            kernels[key] = bb.add_func(func, name)
        phases = relax.call_tir(kernels[key], [m[x]], relax.TensorType((n, c * 2, rows, half), dtype))
        taps = (k_w + 1) // 2
        split = np.zeros((weight.shape[0], per_group, 2, k_h, taps), weight.dtype)
        for ph in range(2):
            cols = weight[:, :, :, ph::2]
            split[:, :, ph, :, : cols.shape[-1]] = cols
        split = split.reshape(weight.shape[0], per_group * 2, k_h, taps)
        out = relax.op.nn.conv2d(phases, relax.const(split), strides=(2, 1), padding=0, groups=groups,
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
