"""How int8 activations reach the dot-product kernels of ``autotune.compiler.dot_kernels``: four
input channels (or kernel taps) side by side, each quadruple one int32 word whose bytes
``conv_kernel`` reads as ``A[K/4, P, 4]`` (``dot_rewrite`` views the words as bytes), shifted to u8
where the instruction takes u8 (``x ^ 0x80 = x + 128``).

- ``pack_kernel``: a 1×1 convolution's input channels, one vectorised pass (where a byte transpose
  gathers: 48 channels at 112×112, 10 µs);
- ``im2col_kernel``: any other convolution's taps (input channel × kernel row × column) per output
  pixel, read from an input padded already (``pad_kernel``) and, for a stride-2 layer, split into
  column phases (``autotune.compiler.strided``) so its loads are contiguous.

Each is scheduled here and opaque to fusion (a copy of its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.compiler.dot_kernels import DEPTH, DotIsa, i64

if TYPE_CHECKING:
    import tvm

__all__ = ["PACK_LANES", "im2col_kernel", "pack_kernel", "pad_kernel"]

#: Pixels packed per vector by ``pack_kernel`` (it applies where the pixels are a multiple of it).
PACK_LANES = 16
_BLOCK = "activation_quads"


def pack_kernel(k: int, p: int, isa: DotIsa) -> tvm.tirx.PrimFunc:
    """``Q[c, q]``: the activations ``x[4c + j, q]`` (``x`` int8 ``[k, p]``, j = 0..3) as one word,
    ``k`` rounded up to a multiple of 4 with zero channels (a 1×1 convolution's ``im2col_kernel``).
    ``p`` a multiple of ``PACK_LANES``."""
    from tvm import te

    x = te.placeholder(i64(k, p), "int8", name="x")
    out = te.compute(i64(-(-k // DEPTH), p), lambda q, col: _word(lambda t: x[t, col], q, k, isa), name=_BLOCK)
    return _vectorised(x, out)


def im2col_kernel(
    shape: tuple[int, int, int], kernel: tuple[int, int], strides: tuple[int, int], isa: DotIsa
) -> tvm.tirx.PrimFunc:
    """``Q[c, y, x]``: the four taps ``t = 4c + j`` (``t`` → input channel, kernel row, kernel column)
    of output pixel ``(y, x)`` read from ``x`` (int8 ``[channels, rows, columns]``, padded already)
    as one word, zero bytes past the last tap: viewed as bytes, ``conv_kernel``'s ``A[taps/4, pixels,
    4]`` (a convolution as a 1×1 one over its taps). Each tap is a contiguous byte load per vector of
    output columns where the column stride is 1 (a strided layer's column phases)."""
    from tvm import te

    c, h, w = shape
    (kh, kw), (sh, sw) = kernel, strides
    taps = c * kh * kw
    x = te.placeholder(i64(c, h, w), "int8", name="x")

    def body(q: Any, y: Any, col: Any) -> Any:
        return _word(lambda t: x[t // (kh * kw), y * sh + t % (kh * kw) // kw, col * sw + t % kw], q, taps, isa)

    out = te.compute(i64(-(-taps // DEPTH), (h - kh) // sh + 1, (w - kw) // sw + 1), body, name=_BLOCK)
    return _vectorised(x, out)


def _word(read: Any, q: Any, taps: int, isa: DotIsa) -> Any:
    """The int32 word of quadruple ``q``: the bytes ``read(t)`` of taps ``t = 4q + j`` (j = 0..3, in
    increasing byte order), shifted to u8 where ``isa`` takes u8, zero past the last tap."""
    from tvm import tirx

    word = tirx.const(0, "int32")
    for j in range(DEPTH):
        t = q * DEPTH + j
        byte = read(tirx.min(t, taps - 1))  # (clamped: the weights of a tap past the last are zero)
        if taps % DEPTH and j >= taps % DEPTH:
            byte = tirx.if_then_else(t < taps, byte, tirx.const(0, "int8"))
        byte = byte.astype("uint8")
        if isa.activations == "uint8":
            byte = tirx.bitwise_xor(byte, tirx.const(0x80, "uint8"))
        word = tirx.bitwise_or(word, tirx.shift_left(byte.astype("int32"), tirx.const(8 * j, "int32")))
    return word


def _vectorised(x: Any, out: Any) -> tvm.tirx.PrimFunc:
    """``out`` computed from ``x``, scheduled: its last axis vectorised (``PACK_LANES`` or the widest
    divisor; the bytes of a tap loaded, widened, shifted and or-ed into one store), the rest parallel."""
    from tvm import s_tir, te

    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    *outer, col = sch.get_loops(sch.get_sblock(_BLOCK))
    rest, lanes = sch.split(col, [None, next(d for d in (PACK_LANES, 8, 4, 2, 1) if int(out.shape[-1]) % d == 0)])
    sch.parallel(sch.fuse(*outer, rest))
    sch.vectorize(lanes)
    # scheduled here, and a copy of its own: fusion would drop the schedule (kOpaque)
    return sch.mod["main"].with_attr("tir.is_scheduled", True).with_attr("op_pattern", 8)


def pad_kernel(shape: tuple[int, int, int], padding: tuple[int, int, int, int]) -> tvm.tirx.PrimFunc:
    """int8 ``x`` of ``shape`` (channels, rows, columns) with ``padding`` (top, left, bottom, right)
    zeros around each channel, for ``im2col_kernel``: each row a vectorised copy between zeros (a
    condition per element, as legalization pads, kept TVM from vectorising: 417 µs for the 3×224×224
    stem's input, fused with its quantizer)."""
    from tvm.script import tirx as T

    c, h, w = shape
    top, left, bottom, right = padding
    rows, cols = h + top + bottom, w + left + right

    @T.prim_func(s_tir=True)
    def kernel(x: T.Buffer((c, h, w), "int8"), out: T.Buffer((c, rows, cols), "int8")) -> None:
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            for ch in T.parallel(c):
                for y in range(rows):
                    if y >= top and y < top + h:
                        for j in range(left):
                            out[ch, y, j] = T.int8(0)
                        for j in T.vectorized(w):
                            out[ch, y, left + j] = x[ch, y - top, j]
                        for j in range(right):
                            out[ch, y, left + w + j] = T.int8(0)
                    else:
                        for j in range(cols):
                            out[ch, y, j] = T.int8(0)

    return kernel.with_attr("tir.is_scheduled", True).with_attr("op_pattern", 8)
