"""Default schedules: parallel, vectorised, tiled CPU code for every fused kernel, without measuring.

TVM's Relax pipeline ships no CPU schedule for convolutions or matmuls, so an untuned candidate runs
as scalar loop nests (8-9x ONNX Runtime's latency on MobileNets). Here each fused PrimFunc that no
tuned record covers takes one point of MetaSchedule's own design space for the target (the rules a
tuner would search: inlining, multi-level tiling, parallelise-vectorise-unroll), with its sampling
decisions set by a fixed rule instead of by measurement:

- the innermost spatial loops (the output's contiguous axes: width, then height, then channels for
  NCHW convolutions; output features, then rows for matmuls) share an innermost tile of up to the
  target's fp32 vector lanes (16 with AVX-512, 8 with AVX2, 4 otherwise: NEON, SSE), an axis
  joining only when the ones inside it are taken whole, so small feature maps vectorise across
  rows and channels (vectorised; a depthwise layer's width takes a power of two of at least half
  the lanes over an odd divisor, ``_depthwise_lanes``);
- the output channels (of an NCHW output; else the next axis with iterations left) get a register
  tile of up to ``REGISTER_TILE``, so each input vector feeds several channels; a depthwise
  convolution (one input channel per output channel: nothing to share across channels) tiles its
  output rows instead, up to ``ROW_TILE``, so each weight feeds several rows (1.7-1.9x faster
  than the channel tile on 3x3 and 5x5 depthwise layers here; ``PHASE_ROW_TILE`` for the column
  phases of a strided one, ``autotune.compiler.strided``, whose rows are two input rows apart);
  outer tiles take the rest (parallelised over the outermost);
- a wide depthwise convolution pads one channel at a time, inside its parallel channel loop, so the
  padded plane is convolved while it is in cache (``_pads_per_channel``); any other padding stage
  pads the whole input first, its border and interior split apart by TIR's loop partitioning
  (``_partitioned_padding``);
- reduction loops get an inner tile of up to ``REDUCTION_TILE``; explicit unrolling up to 64 steps,
  512 for some narrow depthwise convolutions (``_unrolls_channel``: a channel's rows unrolled
  together, so LLVM interleaves their independent FMA chains and reuses each loaded input row);
- a kernel with nothing to tile (element-wise, injective: the quantize steps of an int8 model) is
  vectorised over each channel's image plane (``_flat_vectors``), as is the int8-to-float stage of
  an int8 model's depthwise layer, which AVX-512 targets inline into the padding instead
  (``_vectorised_conversions``).

A PrimFunc the rule cannot schedule (a design space or postprocessor that refuses it) keeps TVM's
default lowering: default schedules never fail a candidate. ``bench/fidelity.py`` measures what they
buy against ONNX Runtime.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

__all__ = [
    "NARROW_DEPTHWISE",
    "PHASE_ROW_TILE",
    "REDUCTION_TILE",
    "REGISTER_TILE",
    "ROW_TILE",
    "apply_default_schedules",
    "default_schedule",
    "vector_lanes",
]

log = logging.getLogger(__name__)

#: Output channels (else the next axis out) computed together in registers.
REGISTER_TILE = 8
#: Output rows of a depthwise convolution computed together in registers.
ROW_TILE = 4
#: Output rows of a strided depthwise convolution's column phases computed together (1.3x faster
#: than ``ROW_TILE`` on 5×5 layers at 112×112 and 56×56 here, Zen 5, 1 thread).
PHASE_ROW_TILE = 2
#: Output width up to which a (not strided) depthwise convolution may unroll up to 512 steps, not 64
#: (``_unrolls_channel``). Alone, on Zen 3 (1 thread): 1.5-1.6x faster at 7×7, 1.28x on 3×3 at
#: 14×14, 1.1x on 5×5 at 16×16; 3×3 layers whose rows fill the register tile lost 5-8 % at 8 and
#: 16 columns, and wider layers lose (3×3 at 64 columns 1.1x, at 112 1.7x slower: the width loop
#: unrolls too).
NARROW_DEPTHWISE = 32
#: Inner tile of each reduction loop.
REDUCTION_TILE = 4
#: Block names of a convolution's padding stage (TVM's legalization, TOPI).
PAD_BLOCKS = ("pad_temp", "PaddedInput", "data_pad")
#: Block names of a conversion stage in front of the padding (``autotune.compiler.int8_inputs``).
CONVERT_BLOCKS = ("int8_to_float",)
#: fp32 lanes from which a conversion stage is inlined into the padding (``_vectorised_conversions``).
INLINED_CONVERSION_LANES = 16
#: Vector widths tried for an untiled kernel's image plane, widest first (``_flat_vectors``).
FLAT_VECTORS = (64, 32, 16, 8, 4)
#: The design-space variant the rule fills in (MultiLevelTiling's second: with a local write cache).
_SPACE = 1


def vector_lanes(target: tvm.target.Target) -> int:
    """fp32 lanes of the target's widest vector unit: 16 (AVX-512), 8 (AVX2), else 4 (NEON, SSE)."""
    from tvm.target import codegen

    for feature, lanes in (("avx512f", 16), ("avx2", 8)):
        if codegen.target_has_features(feature, target):
            return lanes
    return 4


def _divisor_at_most(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def _register_axes(count: int, rows: int | None) -> tuple[list[int], int]:
    """The spatial axes to try for the register tile, in order, and the tile's limit: for an NCHW
    output (4 axes) the channels first (each input vector loaded once, used for ``REGISTER_TILE``
    channels), or the rows for a depthwise convolution (each weight used for ``rows`` rows), then
    from the innermost outward."""
    inward_out = list(reversed(range(count)))
    if count != 4:
        return inward_out, REGISTER_TILE
    first, limit = (2, rows) if rows else (1, REGISTER_TILE)
    return [first, *[k for k in inward_out if k != first]], limit


def _pads_per_channel(width: int, kernel: int) -> bool:
    """Whether a depthwise layer's padding is computed per channel (inside the parallel loop) rather
    than for the whole input first: measured per layer against the whole-input pass (Zen 5, 1
    thread), 5×5 layers gain 1.3-1.4x at 56 and 112 columns, 3×3 ones 1.05-1.15x at 112; narrower
    layers lose (3×3 at 56 columns: 1.45x slower)."""
    return width >= 112 or (width >= 56 and kernel >= 5)


def _depthwise_lanes(width: int, divisor: int, lanes: int) -> int:
    """A depthwise layer's vector lanes along its width: ``divisor`` (the largest divisor of
    ``width`` up to ``lanes``), or a power of two of at least half the lanes where ``divisor`` is
    not one: 28 columns on AVX2 take 4 lanes, not 7 (3×3 layers 1.3x, 5×5 1.13x faster alone on
    Zen 3; regular and pointwise convolutions ran 6-30 % slower with 4, and 7 or 14 columns keep 7).
    With AVX-512, 56 columns take 8 lanes, not 14 (alone on an Intel Xeon: 1.13-1.33x on 3×3 and
    5×5 layers, float or reading int8). The same over the column phases of a strided layer: 5×5
    over 48 channels at 112×112 on AVX-512 161 → 121 µs; compiled for AVX2 (run on that Xeon), 28
    columns in 4 lanes, 3×3 over 72 at 56×56, 43.5 → 24.0 µs."""
    if divisor & (divisor - 1) == 0:
        return divisor
    even = [d for d in range(max(1, lanes // 2), lanes + 1) if d & (d - 1) == 0 and width % d == 0]
    return max(even, default=divisor)


def _unrolls_channel(depthwise: bool, extents: list[int], register: list[int], reduction: list[int]) -> bool:
    """Whether a (not strided) depthwise layer unrolls up to 512 steps: narrow (``NARROW_DEPTHWISE``),
    with fewer rows in registers than ``ROW_TILE`` (7 or 14 rows: few independent FMA chains) or
    a kernel of 5 or more (rows that share input rows)."""
    return depthwise and extents[3] <= NARROW_DEPTHWISE and (register[2] < ROW_TILE or reduction[2] >= 5)


def _decide(trace: object, lanes: int, grouped: bool = False) -> object:
    """The design space's trace with every sampling decision set by the rule (module docstring)."""
    import math

    tiles = [i for i in trace.insts if i.kind.name == "SamplePerfectTile"]
    spatial = [i for i in tiles if int(i.attrs[0]) == 4]
    extents = [math.prod(int(x) for x in trace.decisions[i]) for i in spatial]
    reduction = [math.prod(int(x) for x in trace.decisions[i]) for i in tiles if int(i.attrs[0]) == 2]
    # (rc, ry, rx): one input channel per group, or the two column phases of a strided depthwise layer
    depthwise = grouped and len(spatial) == 4 and len(reduction) == 3 and reduction[0] <= 2
    phases = depthwise and reduction[0] == 2
    inner, register = [1] * len(spatial), [1] * len(spatial)
    lanes_left = lanes
    for k in reversed(range(len(spatial))):  # vector lanes from the innermost axis outward, while
        inner[k] = _divisor_at_most(extents[k], lanes_left)  # each axis is taken whole (contiguous)
        if depthwise and k == 3:
            inner[k] = _depthwise_lanes(extents[k], inner[k], lanes_left)
        lanes_left //= inner[k]
        if inner[k] < extents[k] or lanes_left <= 1:
            break
    axes, limit = _register_axes(len(spatial), (PHASE_ROW_TILE if phases else ROW_TILE) if depthwise else None)
    for k in axes:  # registers: output channels (depthwise: rows), else the next axis left
        if extents[k] // inner[k] > 1:
            register[k] = _divisor_at_most(extents[k] // inner[k], limit)
            break
    for k, inst in enumerate(spatial):
        decision = [extents[k] // (inner[k] * register[k]), 1, register[k], inner[k]]
        trace = trace.with_decision(inst, decision, remove_postproc=True)
    for inst in (i for i in tiles if int(i.attrs[0]) == 2):
        extent = math.prod(int(x) for x in trace.decisions[inst])
        inner = _divisor_at_most(extent, REDUCTION_TILE)
        trace = trace.with_decision(inst, [extent // inner, inner], remove_postproc=True)
    for inst in trace.insts:
        if inst.kind.name == "SampleCategorical":  # the unroll step: 64 (512) of [0, 16, 64, 512]
            choices = len(inst.attrs[0])
            step = 3 if _unrolls_channel(depthwise and not phases, extents, register, reduction) else 2
            trace = trace.with_decision(inst, min(step, choices - 1), remove_postproc=True)
        elif inst.kind.name == "SampleComputeLocation":  # the padding: per channel, or at the root;
            # over column phases (padded already) an int8 input's conversion: per channel
            per_channel = depthwise and (phases or _pads_per_channel(extents[3], reduction[2]))
            # location 1 is the conv's outer channel loop (0 the batch loop, -1 the root)
            trace = trace.with_decision(inst, 1 if per_channel else -1, remove_postproc=True)
    return trace


def default_schedule(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """The rule's schedule of a workload module (one PrimFunc, ``main``), postprocessed: its ``trace``
    replays it (a tuning record of the default, see ``Session.measure_defaults``). None when the rule
    does not apply."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply", rand_state=0)
    spaces = ctx.space_generator.generate_design_space(mod)
    if not spaces:
        return None
    sch = s_tir.Schedule(mod)
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    grouped = any(n.startswith(("group_conv2d", "depthwise_conv2d")) for n in names)  # one input channel per
    trace = _decide(spaces[min(_SPACE, len(spaces) - 1)].trace, vector_lanes(target), grouped)  # group: depthwise
    trace.apply_to_schedule(sch, remove_postproc=True)
    if not any(i.kind.name == "SamplePerfectTile" for i in trace.insts):
        _flat_vectors(sch)
    _partitioned_padding(sch)
    _vectorised_conversions(sch, vector_lanes(target))
    if not all(post.apply(sch) for post in ctx.space_generator.postprocs):
        return None
    return sch


def _flat_vectors(sch: Any) -> None:
    """An untiled kernel (element-wise, injective) that is one spatial block: vectorise its image
    plane (the last two loops of an NCHW block, else the last loop) by the widest of
    ``FLAT_VECTORS`` that divides it, parallel over the rest, instead of MetaSchedule's 64 lanes
    over every loop fused, whose vectors index through ``//`` and ``%`` of the channel's extent
    (per-lane gathers for many shapes: an int8 quantizer of a 3×224×224 input took 167 µs, 17 µs
    this way). Left as it was when no width divides the plane or the block is not that simple."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    if len(blocks) != 1 or any(int(v.iter_type) != 0 for v in sch.get(blocks[0]).iter_vars):
        return
    if _plane_vectors(sch, sch.get_loops(blocks[0]), parallel=True):
        for key in ("meta_schedule.parallel", "meta_schedule.vectorize"):
            sch.unannotate(root, key)


def _plane_vectors(sch: Any, loops: list[Any], *, parallel: bool) -> bool:
    """Vectorise the image plane of a block's ``loops`` (the last two of an NCHW block, else the last)
    by the widest of ``FLAT_VECTORS`` dividing it and, with ``parallel``, parallelise the loops
    outside it. False (nothing done) when no width divides the plane."""
    plane = loops[-2:] if len(loops) >= 4 else loops[-1:]
    extent = 1
    for loop in plane:
        extent *= int(sch.get(loop).extent)
    width = next((v for v in FLAT_VECTORS if extent % v == 0), None)
    if width is None:
        return False
    _, inner = sch.split(sch.fuse(*plane), [None, width])
    sch.vectorize(inner)
    outer = loops[: len(loops) - len(plane)]
    if parallel and outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    return True


def _partitioned_padding(sch: Any) -> None:
    """A padding stage computed for the whole input first (at the root, NCHW): parallel over the
    channels, its row and column loops split by TIR's loop partitioning into the border and the
    interior, whose copy is then free of the in-bounds condition. Left to the postprocessor, the
    plane was fused into one vector loop indexed through ``//`` and ``%`` with a condition per lane
    (scalar code): 120 channels at 4×4 padded to 6×6 took 3.3 µs of a 3×3 depthwise layer's 3.8, and
    0.9 µs with this (Zen 5, 1 thread)."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not sch.get(block).name_hint.startswith(PAD_BLOCKS):
            continue
        loops = sch.get_loops(block)
        if len(loops) != 4:  # (computed inside a channel loop: _pads_per_channel)
            continue
        batch, channels, rows, columns = loops
        sch.parallel(sch.fuse(batch, channels))
        for loop in (rows, columns):
            sch.annotate(loop, "pragma_loop_partition_hint", 1)


def _vectorised_conversions(sch: Any, lanes: int) -> None:
    """A conversion stage (``CONVERT_BLOCKS``, NCHW): each channel's plane vectorised by the widest of
    ``FLAT_VECTORS`` dividing it, parallel over the channels where it is computed at the root (else it
    sits in the convolution's parallel channel loop, beside the padding). From
    ``INLINED_CONVERSION_LANES`` (AVX-512) it is inlined into its reader instead (the padding, or
    the convolution over a strided layer's column phases): LLVM vectorises the conversion under the
    padding's condition with masked loads, and no float copy of the input is written. Per layer
    (int8-input depthwise kernels alone, Intel Xeon, 1 thread) 5×5 at 48×112×112 1.24× faster, 3×3
    at 16×112×112 1.39×, at 72×56×56 1.80×, at 120×28×28 1.31×; the same inlining compiled for AVX2
    (run on that Xeon) was 1.2-1.5× slower at 56 and 112 columns (scalar conversions), so AVX2 and
    narrower targets keep the stage."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not sch.get(block).name_hint.startswith(CONVERT_BLOCKS):
            continue
        if lanes >= INLINED_CONVERSION_LANES:
            sch.compute_inline(block)
            continue
        loops = sch.get_loops(block)
        _plane_vectors(sch, loops, parallel=len(loops) == 4)  # (4 loops: at the root)


def _schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled by the rule, or None when the rule does not apply to it."""
    import tvm

    sch = default_schedule(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    if sch is None:
        return None
    scheduled = sch.mod["main"]
    for key, value in func.attrs.items():  # the original symbol and attributes
        scheduled = scheduled.with_attr(key, value)
    return scheduled.with_attr("tir.is_scheduled", True)


def apply_default_schedules(fused: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Schedule every fused PrimFunc of ``fused`` that is not scheduled yet (by a tuning record) with
    the rule of this module; returns the new module (llvm targets only; others unchanged)."""
    import tvm

    from autotune.tuning.intrin import stub_tensor_intrin

    if target.kind.name != "llvm":
        return fused
    stub_tensor_intrin(target)
    out = fused.clone()
    done = kept = 0
    for gv, func in fused.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tir.is_scheduled", False):
            continue
        try:
            scheduled = _schedule(func, target)
        except Exception as err:  # TVMError from a rule or postprocessor: keep TVM's own lowering
            log.debug("no default schedule for %s: %s", gv.name_hint, str(err).splitlines()[0])
            scheduled = None
        if scheduled is None:
            kept += 1
            continue
        out.update_func(gv, scheduled)
        done += 1
    log.debug("default schedules: %d kernels scheduled, %d left as lowered", done, kept)
    return out
