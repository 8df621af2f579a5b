"""Arithmetic and layout clean-ups of ``main`` before legalization (the build's ``Simplify`` step).

- ``reciprocal_divisions``: ``x / c`` by a float32 constant ``c`` becomes ``x · (1/c)``. LLVM keeps
  a vector divide without fast-math (hardswish's ``/ 6``, every activation quantizer's ``/ s``:
  two of them per output vector of an int8 layer's epilogue). The product differs from the
  quotient by at most one unit in the last place; where it lands on a quantizer's rounding
  boundary it moves that value by one level, as a different accumulation order already does, and
  the int8 comparison against the fake-quantized twin allows for that.
- ``merge_clips``: ``clip(clip(x, a, b), c, d)`` becomes one clip, and a clip with an infinite
  bound a ``maximum`` or ``minimum`` (hardswish's ReLU6 is imported as ``clip(x, 0, inf)`` then
  ``clip(x, -inf, 6)``: four vector operations per element where two do), exactly;
- ``fold_scalings``: ``(x · c1) · c2`` by constants becomes ``x · (c1 · c2)`` (hardswish's ``/ 6``
  and the next quantizer's ``/ s``), within an ulp or two;
- ``scalings_inward``: a multiplication by a positive constant moves inside what it scales, through
  a ReLU, a clip, an added constant and into a float convolution's weights, so ``fold_scalings``
  merges it with the scaling there: an int8 layer's epilogue (rescale, bias, ReLU, then the next
  quantizer's ``1/s``) loses one multiplication per element, a float depthwise layer's all of it;
- ``rounded_clips``: ``clip(round(relu(y)), lo, hi)`` becomes ``clip(round(y), max(lo, 0), hi)``
  (and likewise through a clip), exactly: the next quantizer's clip does the ReLU's work. With
  either switched off, ``bench/ablation.py``'s 3×224×224 ReLU model ran 5.2 % and 3.9 % slower
  (Zen 3, 1 thread);
- ``crop_kernels``: a convolution's taps that only ever read padding are cut off its kernel, and its
  padding with them (a 5×5 depthwise layer on a 2×2 map reads 3×3 of its taps; on a 1×1 map one),
  exactly: a 32×32 MobileNet's 5×5 layers over 240 and 336 channels at 2×2 took 7.5 and 10.6 µs;
- ``pixel_matmuls``: a float 1×1 convolution over a 1×1 map (squeeze-excite) becomes a matmul
  with its weights transposed, so the output channels' weights are read contiguously: a digits
  model's fp32 kernels 1.18× faster, the model 1.15× (``bench/ablation.py``, Intel Xeon);
- ``merge_reshapes``: ``reshape(reshape(x))`` becomes one reshape (none where it gives ``x``'s own
  shape): a chain of reshapes fused into a kernel copies its tensor (the NCHW view of an int8
  layer's ``[channels, pixels]`` result read back as ``[channels, pixels]`` by the next one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.compiler.precision import tensor_dtype, tensor_shape

if TYPE_CHECKING:
    import tvm

__all__ = [
    "crop_kernels",
    "fold_scalings",
    "merge_clips",
    "merge_reshapes",
    "pixel_matmuls",
    "reciprocal_divisions",
    "rounded_clips",
    "scalings_inward",
    "simplify",
]


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


def merge_clips(mod: tvm.IRModule) -> tvm.IRModule:
    """Nested clips of ``main`` → one; a clip with an infinite bound → ``maximum`` / ``minimum``."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x, lo, hi, lo2, hi2 = wildcard(), wildcard(), wildcard(), wildcard(), wildcard()
    inner = is_op("relax.clip")(x, lo, hi)
    outer = is_op("relax.clip")(inner, lo2, hi2)

    def bound(m: dict[Any, Any], p: Any) -> float | None:
        value = getattr(m[p], "value", None)
        return float(value) if value is not None else None

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        nested = inner in m
        bounds = [bound(m, p) for p in ((lo, hi, lo2, hi2) if nested else (lo2, hi2))]
        if any(b is None for b in bounds):
            return expr
        low, high = max(bounds[0::2]), min(bounds[1::2])
        if low > high:  # disjoint ranges: keep the two clips
            return expr
        dtype = tensor_dtype(expr)
        out = m[x] if nested else expr.args[0]
        if np.isfinite(low) and np.isfinite(high):
            return relax.op.clip(out, low, high) if nested else expr
        if np.isfinite(low):
            out = relax.op.maximum(out, relax.const(low, dtype))
        if np.isfinite(high):
            out = relax.op.minimum(out, relax.const(high, dtype))
        return out

    mod["main"] = rewrite_call(outer | is_op("relax.clip")(wildcard(), lo2, hi2), rewrite, mod["main"])
    return mod


def fold_scalings(mod: tvm.IRModule) -> tvm.IRModule:
    """Each ``multiply(multiply(x, c1), c2)`` of ``main`` by float32 constants → ``multiply(x, c1 · c2)``
    where the inner product has no other use (else both would be computed: a kernel of their own
    for the other use's scaling, 12 µs for a 3×224×224 MobileNet's int8 stem read by a residual)."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, c1, c2 = wildcard(), is_const(), is_const()
    inner = is_op("relax.multiply")(x, c1)
    shared: set[Any] = set()

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        a, b = m[c1].value.numpy(), m[c2].value.numpy()
        if str(a.dtype) != "float32" or str(b.dtype) != "float32" or len(tensor_shape(m[x])) < max(a.ndim, b.ndim):
            return expr
        if m[inner] in shared:
            return expr
        return relax.op.multiply(m[x], relax.const((a * b).astype(np.float32)))

    pattern = is_op("relax.multiply")(inner, c2)
    for _ in range(8):  # a chain of n scalings: n - 1 passes
        before = mod["main"]
        shared = _shared_values(before)
        mod["main"] = rewrite_call(pattern, rewrite, before)
        if mod["main"].same_as(before):
            break
    return mod


def _bound(expr: Any) -> float | None:
    """A clip's bound (a ``PrimValue``) as a float, or None."""
    value = getattr(expr, "value", None)
    return float(value) if value is not None else None


def scalings_inward(mod: tvm.IRModule) -> tvm.IRModule:
    """Each ``multiply(v, c)`` of ``main`` by a positive float32 constant ``c`` moves inside ``v``
    where nothing else reads ``v``: ``relu(y) · c → relu(y · c)``, ``clip(y, a, b) · c → clip(y · c,
    a · c, b · c)`` (a scalar ``c``), ``(y + b) · c → y · c + b · c`` and ``conv2d(x, W) · c →
    conv2d(x, W · c)`` (float32, ``c`` per output channel or scalar); ``fold_scalings`` then merges
    it with a scaling inside. Exact through the ReLU and the clip (rounding is monotone), within an
    ulp or two through the addition and the convolution."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    y, b, w, c = wildcard(), is_const(), is_const(), is_const()
    relu = is_op("relax.nn.relu")(y)
    clip = is_op("relax.clip")(y, wildcard(), wildcard())
    add = is_op("relax.add")(y, b)
    conv = is_op("relax.nn.conv2d")(y, w)
    shared: set[Any] = set()
    bound: dict[Any, Any] = {}
    round_op = tvm.ir.Op.get("relax.round")

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        scale = m[c].value.numpy()
        if str(scale.dtype) != "float32" or not (np.all(scale > 0) and np.all(np.isfinite(scale))):
            return expr
        if tensor_dtype(expr) != "float32" or len(tensor_shape(m[y])) < scale.ndim:
            return expr
        inner = next(p for p in (relu, clip, add, conv) if p in m)
        if m[inner] in shared:
            return expr
        scaled = relax.op.multiply(m[y], m[c])
        if inner is relu:
            return relax.op.nn.relu(scaled)
        if inner is clip:  # (not a quantizer's clip: its dequantization stays one to recognise)
            bounds, source = [_bound(v) for v in m[clip].args[1:]], bound.get(m[y], m[y])
            if scale.size != 1 or any(v is None for v in bounds) or getattr(source, "op", None) == round_op:
                return expr
            k = np.float32(scale.reshape(()))
            return relax.op.clip(scaled, *(float(np.float32(v) * k) for v in bounds))
        if inner is add:
            bias = m[b].value.numpy()
            if str(bias.dtype) != "float32":
                return expr
            return relax.op.add(scaled, relax.const((bias * scale).astype(np.float32)))
        folded = _scaled_conv(m[conv], m[y], m[w].value.numpy(), scale)
        return expr if folded is None else folded

    pattern = is_op("relax.multiply")(relu | clip | add | conv, c)
    for _ in range(16):  # one step inward per pass, then the scalings that meet merge
        before = mod["main"]
        shared, bound = _shared_values(before), dict(relax.analysis.get_var2val(before))
        mod["main"] = rewrite_call(pattern, rewrite, before)
        mod = fold_scalings(mod)
        if mod["main"].same_as(before):
            break
    return mod


def _scaled_conv(call: Any, x: Any, weight: np.ndarray, scale: np.ndarray) -> Any:
    """``call`` (a float32 NCHW/OIHW ``conv2d`` of ``x`` by ``weight``) with its output scaled by
    ``scale`` folded into the weights, or None where ``scale`` is not per output channel."""
    from tvm import relax

    a = call.attrs
    channels = weight.shape[0] if weight.ndim == 4 else -1
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
        return None
    if str(weight.dtype) != "float32" or str(a.out_dtype) not in ("float32", ""):
        return None
    per_channel = scale.ndim >= 3 and scale.shape[-3:] == (channels, 1, 1) and scale.size == channels
    if scale.size != 1 and not per_channel:
        return None
    scaled = (weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    return relax.op.nn.conv2d(x, relax.const(scaled), strides=a.strides, padding=a.padding, dilation=a.dilation,
                              groups=a.groups, out_dtype=a.out_dtype)  # fmt: skip


def rounded_clips(mod: tvm.IRModule) -> tvm.IRModule:
    """Each ``clip(round(v), lo, hi)`` of ``main`` (float32, a quantizer) where ``v`` is ``relu(y)`` or
    ``clip(y, a, b)`` read nowhere else → ``clip(round(y), max(lo, round(a)), min(hi, round(b)))``
    (a ReLU: ``a = 0``, ``b = ∞``), exactly for every number: rounding is monotone and keeps integers."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    y, lo, hi = wildcard(), wildcard(), wildcard()
    relu = is_op("relax.nn.relu")(y)
    clip = is_op("relax.clip")(y, wildcard(), wildcard())
    rounded = is_op("relax.round")(relu | clip)
    shared = _shared_values(mod["main"])

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        inner = relu if relu in m else clip
        outer = [_bound(m[lo]), _bound(m[hi])]
        inside = [0.0, float("inf")] if inner is relu else [_bound(v) for v in m[clip].args[1:]]
        if tensor_dtype(expr) != "float32" or any(v is None for v in (*outer, *inside)) or m[inner] in shared:
            return expr
        low = max(outer[0], float(np.round(np.float32(inside[0]))))
        high = min(outer[1], float(np.round(np.float32(inside[1]))))
        if low > high:
            return expr
        return relax.op.clip(relax.op.round(m[y]), low, high)

    mod["main"] = rewrite_call(is_op("relax.clip")(rounded, lo, hi), rewrite, mod["main"])
    return mod


def _shared_values(func: Any) -> set[Any]:
    """The values bound in ``func`` that more than one binding reads (through their variables)."""
    from tvm import relax

    var2val = relax.analysis.get_var2val(func)
    reads: dict[Any, int] = {}
    for value in var2val.values():
        for var in relax.analysis.free_vars(value):
            reads[var] = reads.get(var, 0) + 1
    return {var2val[var] for var, n in reads.items() if n > 1 and var in var2val}


def _reach(size: int, kernel: int, stride: int, before: int, after: int) -> tuple[int, int, int, int] | None:
    """The taps ``[first, last]`` of a kernel axis that read the input at some output position, and
    the padding that keeps the output's size with only them; None when every tap does."""
    out = (size + before + after - kernel) // stride + 1
    first, last = max(0, before - (out - 1) * stride), min(kernel - 1, size - 1 + before)
    if first == 0 and last == kernel - 1 or last < first:
        return None
    width, pad = last - first + 1, before - first
    tail = max(0, (out - 1) * stride + width - size - pad)
    return ((first, last, pad, tail) if (size + pad + tail - width) // stride + 1 == out else None)  # fmt: skip


def crop_kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """Each NCHW ``conv2d`` of ``main`` with constant weights loses the taps that read only padding."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, w = wildcard(), is_const()

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        a, weight, shape = expr.attrs, m[w].value.numpy(), tensor_shape(m[x])
        if (str(a.data_layout), str(a.kernel_layout)) != ("NCHW", "OIHW") or len(shape) != 4 or weight.ndim != 4:
            return expr
        if any(int(v) != 1 for v in a.dilation):
            return expr
        top, left, bottom, right = (int(v) for v in a.padding)
        (sh, sw), (kh, kw) = (int(v) for v in a.strides), weight.shape[2:]
        rows, cols = _reach(shape[2], kh, sh, top, bottom), _reach(shape[3], kw, sw, left, right)
        if rows is None and cols is None:
            return expr
        r0, r1, top, bottom = rows or (0, kh - 1, top, bottom)
        c0, c1, left, right = cols or (0, kw - 1, left, right)
        cropped = np.ascontiguousarray(weight[:, :, r0 : r1 + 1, c0 : c1 + 1])
        return relax.op.nn.conv2d(m[x], relax.const(cropped, str(weight.dtype)), strides=a.strides,
                                  padding=(top, left, bottom, right), dilation=a.dilation, groups=a.groups,
                                  out_dtype=a.out_dtype)  # fmt: skip

    mod["main"] = rewrite_call(is_op("relax.nn.conv2d")(x, w), rewrite, mod["main"])
    return mod


def pixel_matmuls(mod: tvm.IRModule) -> tvm.IRModule:
    """Each float NCHW ``conv2d`` of ``main`` over a 1×1 map with a 1×1 kernel, no padding and one
    group (squeeze-excite) → ``reshape(matmul(reshape(x, (1, C)), Wᵀ), (1, N, 1, 1))``, then the
    reshape moved after the element-wise ops that follow (``dot_rewrite.sink_views``), so they fuse
    into the matmul. The convolution's schedule has one output pixel to put in its vector lanes and
    takes the output channels, whose weights lie C apart (a gather per vector); the matmul's reads
    them contiguous from ``Wᵀ``."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    from autotune.compiler.dot_rewrite import sink_views

    x, w = wildcard(), is_const()

    def rewrite(expr: relax.Call, m: dict[Any, Any]) -> relax.Expr:
        a, weight, shape = expr.attrs, m[w].value.numpy(), tensor_shape(m[x])
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return expr
        if len(shape) != 4 or shape[0] != 1 or shape[2:] != [1, 1] or weight.shape[2:] != (1, 1):
            return expr
        if int(a.groups) != 1 or any(int(v) for v in a.padding) or tensor_dtype(m[x]) != "float32":
            return expr
        if str(weight.dtype) != "float32" or tensor_dtype(expr) != "float32":
            return expr
        n, c = weight.shape[:2]
        wt = relax.const(np.ascontiguousarray(weight.reshape(n, c).T))
        return relax.op.reshape(relax.op.matmul(relax.op.reshape(m[x], (1, c)), wt), (1, n, 1, 1))

    before = mod["main"]
    mod["main"] = rewrite_call(is_op("relax.nn.conv2d")(x, w), rewrite, before)
    if not mod["main"].same_as(before):
        mod["main"] = sink_views(mod["main"])
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
    """All of the above, in order."""
    mod = scalings_inward(fold_scalings(merge_clips(reciprocal_divisions(mod))))
    return merge_reshapes(pixel_matmuls(crop_kernels(rounded_clips(mod))))
