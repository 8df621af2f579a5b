"""int8 kernels on the CPU's dot-product instructions (AVX-512 VNNI's ``vpdpbusd``): u8 × s8 → s32,
16 lanes × 4 products accumulated per instruction.

Two kernels, written unscheduled so that Relax fuses their element-wise epilogue into them, then
scheduled here (``schedule_dot``) with a tensor intrinsic of this module:

- ``conv_kernel``: a 1×1 convolution, ``C[n, p] = Σ_k A[k/4, p, k%4] · W[n, k]``, 16 lanes over
  pixels (the output stays NCHW); each broadcast weight quadruple feeds two pixel vectors of four
  output channels;
- ``dense_kernel``: a matmul, ``C[p, n] = Σ_k A[p, k] · W[n/16, k/4, n%16, k%4]``, 16 lanes over
  output features, the weights packed as the instruction reads them.

``schedule_dot`` tiles the kernel, inlines its whole element-wise epilogue (the shift correction,
the rescale, bias, activation and the next layer's quantizer) into one vectorised loop nest computed
per tile of output channels, parallelises the outer loop and tensorizes the lanes. The schedule is
marked done, so neither default schedules nor tuning touch it.

TVM 0.27's own ``dot_16x4_vnni`` does not compile with its LLVM (the intrinsic now takes byte vectors,
``<64 x i8>``), so the intrinsics are registered here under names of our own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

__all__ = ["CONV_BLOCK", "DENSE_BLOCK", "KERNEL_PREFIX", "conv_kernel", "dense_kernel", "dot_path", "schedule_dot"]

#: Name prefix of the kernels' PrimFuncs (``dtype_census`` counts the calls to them).
KERNEL_PREFIX = "int8_vnni_"
_INTRIN = "autotune_vnni_16x4"  # 16 lanes over output features (matmuls)
_INTRIN_PX = "autotune_vnni_px16x4"  # 16 lanes over pixels (1x1 convolutions)
_LANES, _DEPTH = 16, 4


def dot_path(target: tvm.target.Target) -> str:
    """``vnni`` when ``target`` is x86 with AVX-512 VNNI, else ``generic``."""
    from tvm.target import codegen

    if (
        target.kind.name != "llvm"
        or "x86" not in str(target.attrs.get("mtriple", "x86_64"))
        and "mtriple" in target.attrs
    ):
        return "generic"
    try:
        return "vnni" if codegen.llvm_cpu_has_features(["avx512vnni"], target) else "generic"
    except Exception:  # TVMError: a CPU name LLVM does not know
        return "generic"


def _register() -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    try:
        TensorIntrin.get(_INTRIN)
        return
    except Exception:  # TVMError: not registered yet
        pass

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16), dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                a,
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    TensorIntrin.register(_INTRIN, desc, impl)

    @T.prim_func(s_tir=True)
    def desc_px(
        A: T.Buffer((16, 4), "uint8", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:16, 0:4], B[0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl_px(
        A: T.Buffer((16, 4), "uint8", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:16, 0:4], B[0:4])
            T.writes(C[0:16])
            b = T.reinterpret(T.broadcast(T.reinterpret(B.vload([0], "int8x4"), dtype="int32"), 16), dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(A.vload([0, 0], dtype="uint8x64"), dtype="int8x64"),
                b,
                dtype="int32x16",
            )

    TensorIntrin.register(_INTRIN_PX, desc_px, impl_px)


#: Block names of the kernels (they survive fusion; ``schedule_dot`` finds its kernels by them).
CONV_BLOCK, DENSE_BLOCK = "autotune_dot_conv", "autotune_dot_dense"


def dense_kernel(p: int, k: int, n16: int) -> tvm.tirx.PrimFunc:
    """``C[p, n] = Σ_k A[p, k] · B[n/16, k/4, n%16, k%4]`` (u8 × s8 → s32), unscheduled: ``k`` a
    multiple of 4, ``n16`` of 16. ``schedule_dot`` tensorizes it (16 lanes over output features)."""
    from tvm import te

    a = te.placeholder(_i64(p, k), "uint8", name="A")
    b = te.placeholder(_i64(n16 // _LANES, k // _DEPTH, _LANES, _DEPTH), "int8", name="B")
    r = te.reduce_axis(_i64(0, k), name="k")
    c = te.compute(
        _i64(p, n16),
        lambda i, j: te.sum(
            a[i, r].astype("int32") * b[j // _LANES, r // _DEPTH, j % _LANES, r % _DEPTH].astype("int32"), axis=r
        ),
        name=DENSE_BLOCK,
    )
    return te.create_prim_func([a, b, c])


def conv_kernel(n: int, k: int, p16: int) -> tvm.tirx.PrimFunc:
    """``C[n, p] = Σ_k A[k/4, p, k%4] · B[n, k]`` (u8 × s8 → s32), unscheduled: the 1×1 convolution
    with its output in NCHW order, ``k`` a multiple of 4, ``p16`` of 16. ``schedule_dot`` tensorizes
    it (16 lanes over pixels, each broadcast weight quadruple feeding several pixel vectors)."""
    from tvm import te

    a = te.placeholder(_i64(k // _DEPTH, p16, _DEPTH), "uint8", name="A")
    b = te.placeholder(_i64(n, k), "int8", name="B")
    r = te.reduce_axis(_i64(0, k), name="k")
    c = te.compute(
        _i64(n, p16),
        lambda i, j: te.sum(a[r // _DEPTH, j, r % _DEPTH].astype("int32") * b[i, r].astype("int32"), axis=r),
        name=CONV_BLOCK,
    )
    return te.create_prim_func([a, b, c])


def _i64(*values: int) -> tuple[Any, ...]:
    """``values`` as int64 constants: Relax's legalized kernels index with int64, and fusion needs
    the buffers of a kernel and of its consumers to agree."""
    import tvm

    return tuple(tvm.tirx.IntImm("int64", v) for v in values)


def _divisor(extent: int, choices: tuple[int, ...]) -> int:
    return next(f for f in choices if extent % f == 0)


def schedule_dot(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """``func`` (a fused PrimFunc holding a kernel of this module and its epilogue) scheduled:
    the kernel tiled and tensorized with ``vpdpbusd``, the element-wise epilogue inlined into one
    loop nest computed per tile of output channels and vectorised. None when ``func`` holds none."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    kernel = next((name for name in (CONV_BLOCK, DENSE_BLOCK) if name in names), None)
    if kernel is None:
        return None
    _register()
    block = sch.get_sblock(kernel)
    consumers = _epilogue(sch, block)
    i, j, kk = sch.get_loops(block)
    i_ext, j_ext = (int(sch.get(x).extent) for x in (i, j))
    ko, ki = sch.split(kk, [None, _DEPTH])
    if kernel == CONV_BLOCK:  # i: output channels, j: pixels (16 lanes)
        t = _divisor(i_ext, (4, 2, 1))
        rb = _divisor(j_ext // _LANES, (2, 1))
        io, ii = sch.split(i, [None, t])
        jo, jr, ji = sch.split(j, [None, rb, _LANES])
        sch.reorder(io, jo, ko, ii, jr, ji, ki)
        outer, lanes, intrin = io, ji, _INTRIN_PX
    else:  # i: rows (pixels), j: output features (16 lanes)
        jo, ji = sch.split(j, [None, _LANES])
        io, ii = sch.split(i, [None, _divisor(i_ext, (8, 7, 4, 2, 1))])
        sch.reorder(jo, io, ko, ii, ji, ki)
        outer, lanes, intrin = jo, ji, _INTRIN
    if consumers:
        last = consumers[-1]
        sch.reverse_compute_at(last, outer)
        inner = sch.fuse(*sch.get_loops(last)[1:])
        _, vec = sch.split(inner, [None, _LANES])
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
    sinks = [b for b in order if not sch.get_consumers(b)]
    if len(sinks) != 1:
        return []
    for inner in order:
        if sch.get(inner).name_hint != sch.get(sinks[0]).name_hint:
            sch.compute_inline(inner)
    return sinks
