"""int8 kernels on the CPU's dot-product instructions: each 32-bit lane accumulates four 8-bit
products in one instruction. ``ISAS`` names the instruction sets:

- ``vnni``: x86 AVX-512 VNNI's ``vpdpbusd``, 16 lanes, **u8** activations × s8 weights (the
  rewrite shifts symmetric int8 activations by 128; the accumulators start at what the shift adds,
  negated: the kernels' ``Z`` argument, zeros for the others);
- ``avx2``: x86 without VNNI but with AVX2 (Haswell on, Zen 1–3), 8 lanes, s8 × s8: no instruction
  adds four products, so ``vpmaddubsw`` multiplies u8 by s8 and adds pairs into 16 bits, ``vpmaddwd``
  by ones adds those pairs into 32 bits, and ``vpaddd`` accumulates. The u8 operand is ``|a|`` and
  the weight takes ``a``'s sign (``vpsignb``), so a pair is at most 2 · 128 · 127 < 2^15 and nothing
  saturates, exactly, as long as no weight is −128 (``DotIsa.min_weight``: the quantizer's weights
  lie in [−127, 127]). Where the activations cannot be negative (the quantized output of a ReLU,
  ReLU6, sigmoid: ``autotune.compiler.signs``) they are their own ``|a|``: ``nonneg`` picks the
  variant without the sign transfer, three instructions per step instead of five (2 · 127 · 128
  fits, so −128 weights too);
- ``dotprod``: Arm's ``sdot`` (Armv8.2 dot product: Cortex-A76, the ``rpi5`` profile), 4 lanes,
  s8 × s8.

Two kernels, written unscheduled so that Relax fuses their element-wise epilogue into them, then
scheduled here (``schedule_dot``) with a tensor intrinsic of this module:

- ``conv_kernel``: a 1×1 convolution, ``C[n, p] = Σ_k A[k/4, p, k%4] · W[n, k]``, lanes over pixels
  (the output stays NCHW); each broadcast weight quadruple feeds two pixel vectors of four output
  channels; any other convolution is one over its taps (``autotune.compiler.dot_layout`` lays the
  activations out for it);
- ``dense_kernel``: a matmul, ``C[p, n] = Σ_k A[p, k] · W[n/L, k/4, n%L, k%4]``, lanes over output
  features, the weights packed as the instruction reads them.

``schedule_dot`` tiles the kernel, inlines its whole element-wise epilogue (the
rescale, bias, activation and the next layer's quantizer) into one vectorised loop nest computed
per register tile of the output (a convolution's four channels × 32 pixels: its int32 accumulators
never go to memory; 1.4x faster than per tile of channels on 16 → 48 channels at 112×112 here),
parallelises the outer loop and tensorizes the lanes. The schedule is
marked done, so neither default schedules nor tuning touch it. The kernels' block names carry the
instruction set (``autotune_dot_conv_vnni``); fusion keeps them.

TVM 0.27's own ``dot_16x4_vnni`` does not compile with its LLVM (the intrinsic now takes byte vectors,
``<64 x i8>``), so the intrinsics are registered here under names of our own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

__all__ = [
    "DEPTH",
    "ISAS",
    "KERNEL_PREFIX",
    "DotIsa",
    "conv_kernel",
    "dense_kernel",
    "dot_flops",
    "dot_path",
    "i64",
    "nonneg_variant",
    "schedule_dot",
    "takes_conv",
    "takes_matmul",
]

#: Name prefix of the kernels' PrimFuncs (``dtype_census`` counts the calls to them).
KERNEL_PREFIX = "int8_dot_"
_CONV, _DENSE = "autotune_dot_conv_", "autotune_dot_dense_"
#: Products per 32-bit lane.
DEPTH = 4


@dataclass(frozen=True)
class DotIsa:
    """A dot-product instruction: ``lanes`` int32 accumulators, each adding four products of an
    ``activations``-typed and an int8 quadruple; ``llvm`` the intrinsic, ``feature`` the LLVM target
    feature that enables it, ``arch`` the target triple's architecture; ``min_weight`` the smallest
    weight it multiplies exactly (a layer with a smaller one keeps the generic code); ``nonneg``: the
    variant for activations in [0, 127] (``nonneg_variant``)."""

    name: str
    lanes: int
    activations: str
    llvm: str
    feature: str
    arch: str
    min_weight: int = -128
    nonneg: bool = False

    @property
    def tag(self) -> str:
        """The name in its kernels' block and intrinsic names: ``name``, ``u7`` appended for the
        ``nonneg`` variant."""
        return self.name + ("u7" if self.nonneg else "")


#: The instruction sets, by ``int8_path`` name, the preferred first for each architecture.
ISAS: dict[str, DotIsa] = {
    "vnni": DotIsa("vnni", 16, "uint8", "llvm.x86.avx512.vpdpbusd.512", "avx512vnni", "x86"),
    "avx2": DotIsa("avx2", 8, "int8", "llvm.x86.avx2.pmadd.ub.sw", "avx2", "x86", min_weight=-127),
    "dotprod": DotIsa("dotprod", 4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8", "dotprod", "aarch64"),
}


def nonneg_variant(isa: DotIsa) -> DotIsa:
    """``isa`` for activations known to lie in [0, 127]: AVX2 without the sign transfer (any s8 weight
    then multiplies exactly); the others as they are (VNNI could drop its u8 shift there too: not
    built, as no VNNI machine was at hand to time it)."""
    if isa.name != "avx2":
        return isa
    return replace(isa, nonneg=True, min_weight=-128)


def _by_tag(tag: str) -> DotIsa:
    isa = ISAS[tag.removesuffix("u7")]
    return nonneg_variant(isa) if tag.endswith("u7") else isa


def dot_flops(name: str) -> float | None:
    """The operations (2 per multiply-add) of the dot-product kernel a PrimFunc of this ``name`` is
    built on, read from the sizes ``autotune.compiler.dot_rewrite`` puts in its kernels' names
    (``…conv1x1_n48_k16_p12544…``, ``…dense_p1_k160_n1008…``; padded sizes, as the kernel computes
    them): TVM's count stops at the tensorized vectors. None for any other name."""
    import re

    if KERNEL_PREFIX not in name:
        return None
    found = re.search(r"_conv1x1(?:_u7)?_n(\d+)_k(\d+)_p(\d+)", name) or re.search(
        r"_dense(?:_u7)?_p(\d+)_k(\d+)_n(\d+)", name
    )
    return None if found is None else 2.0 * math.prod(int(v) for v in found.groups())


def dot_path(target: tvm.target.Target) -> str:
    """The instruction set ``target`` runs int8 on (a key of ``ISAS``), else ``generic``."""
    from tvm.target import codegen

    if target.kind.name != "llvm":
        return "generic"
    triple = str(target.attrs.get("mtriple", "x86_64"))
    for isa in ISAS.values():
        if isa.arch in triple:
            try:
                if codegen.llvm_cpu_has_features([isa.feature], target):
                    return isa.name
            except Exception:  # TVMError: a CPU name LLVM does not know
                return "generic"
    return "generic"


def takes_conv(x_shape: list[int], w_shape: tuple[int, ...], groups: int, dilation: Any) -> bool:
    """Whether ``conv_kernel`` computes this convolution: batch 1, one group, no dilation. A 1×1
    kernel at stride 1 without padding reads the activations as they are (input channels that are not
    a multiple of 4 padded with zeros); any other kernel, stride or padding reads each output pixel's
    taps gathered by ``im2col_kernel`` (a 1×1 convolution over input channels × kernel taps)."""
    return (len(x_shape) == 4 and x_shape[0] == 1 and len(w_shape) == 4 and groups == 1
            and all(int(v) == 1 for v in dilation))  # fmt: skip


def takes_matmul(x_shape: list[int], w_shape: tuple[int, ...]) -> bool:
    """Whether ``dense_kernel`` computes this matmul: 2-d activations and weights."""
    return len(x_shape) == 2 and len(w_shape) == 2


def _intrin_names(isa: DotIsa) -> tuple[str, str]:
    return f"autotune_{isa.tag}_dense", f"autotune_{isa.tag}_px"


def _mac(isa: DotIsa, acc: Any, a: Any, b: Any) -> Any:
    """``acc`` plus, per int32 lane, the four products of the byte vectors ``a`` (activations) and
    ``b`` (weights), in ``isa``'s instructions."""
    from tvm import tirx

    acc_t, bytes_t = f"int32x{isa.lanes}", f"int8x{4 * isa.lanes}"

    def call(name: str, dtype: str, *args: Any) -> Any:
        return tirx.call_llvm_pure_intrin(dtype, name, *args)

    if isa.name != "avx2":
        return call(isa.llvm, acc_t, acc, a, b)
    pairs_t = f"int16x{2 * isa.lanes}"
    if isa.nonneg:  # a in [0, 127] is its own |a|: each pair sum is at most 2 * 127 * 128
        pairs = call(isa.llvm, pairs_t, a, b)
    else:  # |a| (u8) times b with a's sign: each 16-bit pair sum is at most 2 * 128 * 127, no saturation
        pairs = call(isa.llvm, pairs_t, call("llvm.x86.avx2.psign.b", bytes_t, a, a),
                     call("llvm.x86.avx2.psign.b", bytes_t, b, a))  # fmt: skip
    ones = tirx.Broadcast(tirx.const(1, "int16"), 2 * isa.lanes)
    return acc + call("llvm.x86.avx2.pmadd.wd", acc_t, pairs, ones)


def _register(isa: DotIsa) -> None:
    """Register ``isa``'s two tensor intrinsics: lanes over output features (a broadcast activation
    quadruple) and lanes over pixels (a broadcast weight quadruple)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    dense, px = _intrin_names(isa)
    try:
        TensorIntrin.get(px)
        return
    except Exception:  # TVMError: not registered yet
        pass
    lanes, act, mac = isa.lanes, isa.activations, _mac
    acc_t, bytes_t, quad_t = f"int32x{lanes}", f"int8x{4 * lanes}", f"{act}x4"

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), act, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), act, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], quad_t), dtype="int32"), lanes), dtype=bytes_t)
            C[T.ramp(T.int32(0), 1, lanes)] = mac(isa, C.vload([0], dtype=acc_t), a, B.vload([0, 0], dtype=bytes_t))

    @T.prim_func(s_tir=True)
    def desc_px(
        A: T.Buffer((lanes, 4), act, offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes, 0:4], B[0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl_px(
        A: T.Buffer((lanes, 4), act, offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes, 0:4], B[0:4])
            T.writes(C[0:lanes])
            b = T.reinterpret(T.broadcast(T.reinterpret(B.vload([0], "int8x4"), dtype="int32"), lanes), dtype=bytes_t)
            a = T.reinterpret(A.vload([0, 0], dtype=f"{act}x{4 * lanes}"), dtype=bytes_t)
            C[T.ramp(T.int32(0), 1, lanes)] = mac(isa, C.vload([0], dtype=acc_t), a, b)

    TensorIntrin.register(dense, desc, impl)
    TensorIntrin.register(px, desc_px, impl_px)


def dense_kernel(p: int, k: int, nl: int, isa: DotIsa) -> tvm.tirx.PrimFunc:
    """``C[p, n] = Z[n] + Σ_k A[p, k] · B[n/L, k/4, n%L, k%4]`` (activations × s8 → s32, ``L`` the
    ISA's lanes, ``Z`` the accumulators' start), unscheduled: ``k`` a multiple of 4, ``nl`` of ``L``.
    ``schedule_dot`` tensorizes it."""
    lanes = isa.lanes
    operands = lambda a, b, i, j, r: (a[i, r], b[j // lanes, r // DEPTH, j % lanes, r % DEPTH])  # noqa: E731
    return _reduction(_DENSE + isa.tag, (i64(p, k), isa.activations), i64(nl // lanes, k // DEPTH, lanes, DEPTH),
                      (p, nl, k), operands, by_row=False)  # fmt: skip


def conv_kernel(n: int, k: int, pl: int, isa: DotIsa) -> tvm.tirx.PrimFunc:
    """``C[n, p] = Z[n] + Σ_k A[k/4, p, k%4] · B[n, k]`` (activations × s8 → s32, ``Z`` the
    accumulators' start), unscheduled: the 1×1 convolution with its output in NCHW order, ``k`` a
    multiple of 4, ``pl`` of the ISA's lanes. ``schedule_dot`` tensorizes it (lanes over pixels)."""
    operands = lambda a, b, i, j, r: (a[r // DEPTH, j, r % DEPTH], b[i, r])  # noqa: E731
    return _reduction(_CONV + isa.tag, (i64(k // DEPTH, pl, DEPTH), isa.activations), i64(n, k), (n, pl, k),
                      operands, by_row=True)  # fmt: skip


def _reduction(
    name: str, a: tuple[Any, str], b_shape: tuple[Any, ...], sizes: tuple[int, int, int], operands: Any, by_row: bool
) -> tvm.tirx.PrimFunc:
    """``C[i, j] = Z[i or j] + Σ_r a · b`` (``a, b = operands(A, B, i, j, r)``, multiplied in int32;
    ``Z[i]`` where ``by_row``), one block ``name``: the accumulators start at ``Z``, an argument after
    ``B`` (TVMScript: TE's ``create_prim_func`` drops a reduction's ``init``)."""
    from tvm.script import tirx as T

    rows, cols, depth = (i64(v)[0] for v in sizes)

    @T.prim_func(s_tir=True)
    def kernel(
        A: T.Buffer(a[0], a[1]), B: T.Buffer(b_shape, "int8"), Z: T.Buffer((rows if by_row else cols,), "int32"),
        C: T.Buffer((rows, cols), "int32"),
    ) -> None:  # fmt: skip
        T.func_attr({"tirx.noalias": True})
        for i, j, r in T.grid(rows, cols, depth):
            with T.sblock(name):
                vi, vj, vr = T.axis.remap("SSR", [i, j, r])
                # not Z: the update block that decompose_reduction leaves must match the intrinsic
                T.reads(C[vi, vj], *operands(A, B, vi, vj, vr))
                T.writes(C[vi, vj])
                with T.init():
                    C[vi, vj] = Z[vi] if by_row else Z[vj]
                C[vi, vj] = C[vi, vj] + _times(*operands(A, B, vi, vj, vr))

    return kernel


def _times(a: Any, b: Any) -> Any:
    return a.astype("int32") * b.astype("int32")


def i64(*values: int) -> tuple[Any, ...]:
    """``values`` as int64 constants: Relax's legalized kernels index with int64, and fusion needs
    the buffers of a kernel and of its consumers to agree."""
    import tvm

    return tuple(tvm.tirx.IntImm("int64", v) for v in values)


def _divisor(extent: int, choices: tuple[int, ...]) -> int:
    return next(f for f in choices if extent % f == 0)


def schedule_dot(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """``func`` (a fused PrimFunc holding a kernel of this module and its epilogue) scheduled: the
    kernel tiled and tensorized with its instruction set's intrinsic, the element-wise epilogue
    inlined into one loop nest computed per register tile of the output and vectorised. None when
    ``func`` holds no such kernel."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    kernel = next((name for name in names if name.startswith((_CONV, _DENSE))), None)
    if kernel is None:
        return None
    isa = _by_tag(kernel.rsplit("_", 1)[1])
    _register(isa)
    dense_intrin, px_intrin = _intrin_names(isa)
    lanes_n = isa.lanes
    block = sch.get_sblock(kernel)
    consumers = _epilogue(sch, block)
    i, j, kk = sch.get_loops(block)
    i_ext, j_ext = (int(sch.get(x).extent) for x in (i, j))
    ko, ki = sch.split(kk, [None, DEPTH])
    if kernel.startswith(_CONV):  # i: output channels, j: pixels (in lanes)
        t = _divisor(i_ext, (4, 2, 1))
        rb = _divisor(j_ext // lanes_n, (2, 1))
        io, ii = sch.split(i, [None, t])
        jo, jr, ji = sch.split(j, [None, rb, lanes_n])
        sch.reorder(io, jo, ko, ii, jr, ji, ki)
        outer, lanes, intrin = io, ji, px_intrin
        tile = [io, jo]  # the epilogue per tile of channels x pixels: the accumulators stay in registers
    else:  # i: rows (pixels), j: output features (in lanes)
        jo, ji = sch.split(j, [None, lanes_n])
        io, ii = sch.split(i, [None, _divisor(i_ext, (8, 7, 4, 2, 1))])
        sch.reorder(jo, io, ko, ii, ji, ki)
        outer, lanes, intrin = jo, ji, dense_intrin
        tile = [jo]
    if consumers:
        last = consumers[-1]
        sch.reverse_compute_at(last, tile[-1])
        loops = sch.get_loops(last)[len(tile) :]
        if loops:  # (none where the tile holds one output: a 1-pixel map, one channel)
            _, vec = sch.split(sch.fuse(*loops), [None, 16])
            sch.vectorize(vec)
    sch.parallel(outer)
    sch.decompose_reduction(block, ko)
    sch.tensorize(lanes, intrin)
    return sch.mod["main"].with_attr("tir.is_scheduled", True)


def _epilogue(sch: Any, block: Any) -> list[Any]:
    """The blocks computed from ``block``'s output (transitively), inlined into the last, which is
    returned alone; empty when the epilogue does not end in one block or cannot be inlined."""
    seen, order, todo = set(), [], [block]
    while todo:
        for consumer in sch.get_consumers(todo.pop()):
            name = sch.get(consumer).name_hint
            if name not in seen:
                seen.add(name)
                order.append(consumer)
                todo.append(consumer)
    from tvm.s_tir.schedule import ScheduleError

    sinks = [b for b in order if not sch.get_consumers(b)]
    if len(sinks) != 1:
        return []
    try:
        for inner in order:
            if sch.get(inner).name_hint != sch.get(sinks[0]).name_hint:
                sch.compute_inline(inner)
    except ScheduleError:  # not element-wise: the rest stays at the root, correct but not fused
        return []
    return sinks
