"""Default schedules: every kernel of a candidate of each family and each deployment precision is
scheduled (parallel and vectorised loops in its TIR) and the compiled model matches PyTorch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import SMALL_MOBILENET

import autotune
from autotune.compiler import FUSE, PREPARE, SCHEDULE, BuildOptions, compile_artifact, resolve_target, run_steps
from autotune.compress import PASSES, CompressContext
from autotune.compress.pipeline import compress, plan_compression
from autotune.data import load_data
from autotune.exporter import export_program
from autotune.models import MODEL_FAMILIES, build_model, resolve_family
from autotune.numerics import check_numerics, tolerance_for
from autotune.quiet import QuietLock

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

REPO = Path(__file__).resolve().parents[2]
SHAPE = (1, 8, 8)
SMALLEST = {"mlp": {"layers": 1, "width": 32}, "mobilenet": SMALL_MOBILENET}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", val=0.2, test=0.2, seed=0)


@pytest.fixture(scope="module")
def profile():
    return autotune.load_profile(REPO / "tests/fixtures/host_fast.yaml")


def _model(family: str, precision: str, digits, tmp_path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(resolve_family(family), SMALLEST.get(family, {}), SHAPE, 10).eval()
    if precision == "fp32":
        return model
    space = autotune.load_space(REPO / "tests/fixtures/tiny_compress.yaml")
    ctx = CompressContext(space=space, data=digits, train=None, seed=0, cache_dir=tmp_path, lock=QuietLock(None))
    settings = {**PASSES.get("quantize").Settings.defaults(), "granularity": "channel", "deploy": precision}
    settings |= {"scheme": "none"} if precision == "fp16" else {}
    return compress(model, plan_compression({"quantize": settings}), ctx).model


def _scheduled(program, profile, precision: str, *, default_schedules: bool = True):
    from tvm.relax.frontend.torch import from_exported_program

    options = BuildOptions(resolve_target(profile), precision, "channel", default_schedules=default_schedules)
    fused = run_steps(FUSE, run_steps(PREPARE, from_exported_program(program), options), options)
    return run_steps(SCHEDULE, fused, options)


def _kernels(mod) -> list:
    import tvm

    return [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


@pytest.mark.parametrize(
    ("family", "precision"),
    [(f, "fp32") for f in MODEL_FAMILIES.names()] + [("mobilenet", "fp16"), ("mobilenet", "int8")],
)
def test_every_kernel_is_scheduled_and_the_model_matches_pytorch(family, precision, digits, profile, tmp_path):
    model = _model(family, precision, digits, tmp_path)
    program, exported, _ = export_program(model, SHAPE)

    mod = _scheduled(program, profile, precision)
    kernels = _kernels(mod)
    assert kernels and all(f.attrs.get("tir.is_scheduled", False) for f in kernels), "a kernel kept no schedule"
    text = mod.script()
    assert "T.vectorized" in text
    if family == "mobilenet":  # (an MLP's batch-1 matmuls, one row each, get no parallel loop)
        assert "T.parallel" in text

    art = compile_artifact(program, profile=profile, out_dir=tmp_path / "so", input_shape=SHAPE, precision=precision,
                           weight_granularity="channel")  # fmt: skip
    from autotune.compress.fakequant import activation_bits

    tol = tolerance_for(profile, precision=precision, act_bits=activation_bits(exported))
    report = check_numerics(art, exported, digits.x_test, profile=profile, tolerance=tol)
    assert report.top1_agreement >= tol.min_top1


def test_without_default_schedules_the_kernels_are_scalar_loop_nests(digits, profile, tmp_path):
    program, _, _ = export_program(_model("mobilenet", "fp32", digits, tmp_path), SHAPE)
    mod = _scheduled(program, profile, "fp32", default_schedules=False)
    assert not any(f.attrs.get("tir.is_scheduled", False) for f in _kernels(mod))
    assert "T.vectorized" not in mod.script() and "T.parallel" not in mod.script()


def test_the_profile_switch_is_documented_and_on_by_default():
    assert autotune.load_profile("host").tuning.default_schedules is True
    assert "default_schedules" in (REPO / "README.md").read_text()


def _conv_schedule(weight_shape, groups, size=16, stride=1):
    """The rule's schedule of one convolution (padded to keep its size) over a ``size``×``size``
    input, as a model's build prepares and fuses it."""
    import numpy as np
    import tvm
    from tvm import relax

    from autotune.tuning.default import default_schedule

    x = relax.Var("x", relax.TensorType((1, weight_shape[1] * groups, size, size), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const(np.ones(weight_shape, "float32"))
            conv = relax.op.nn.conv2d(x, w, strides=stride, padding=weight_shape[-1] // 2, groups=groups)
            gv = bb.emit_output(conv)
        bb.emit_func_output(gv)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})
    fused = run_steps(PREPARE + FUSE, bb.get(), BuildOptions(target))
    func = next(f for _, f in fused.functions_items()  # the column phases of a strided layer come scheduled
                if isinstance(f, tvm.tirx.PrimFunc) and not f.attrs.get("tir.is_scheduled", False))  # fmt: skip
    return default_schedule(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)


def _register_tiles(weight_shape, groups, size=16, stride=1):
    """The (channels, rows) register tiles the rule picks for a convolution (its spatial tile
    decisions are [outer, 1, register, inner])."""
    sch = _conv_schedule(weight_shape, groups, size, stride)
    tiles = [sch.trace.decisions[i] for i in sch.trace.insts if i.kind.name == "SamplePerfectTile"]
    spatial = [[int(v) for v in d] for d in tiles if len(d) == 4]
    return spatial[1][2], spatial[2][2]


def test_depthwise_convolutions_tile_rows_and_others_channels():
    from autotune.tuning.default import PHASE_ROW_TILE, REGISTER_TILE, ROW_TILE

    assert _register_tiles((16, 1, 3, 3), groups=16) == (1, ROW_TILE)  # depthwise: nothing shared across channels
    assert _register_tiles((16, 1, 3, 3), groups=1) == (REGISTER_TILE, 1)  # one input channel, shared by all
    assert _register_tiles((16, 16, 3, 3), groups=1) == (REGISTER_TILE, 1)
    # a strided 5x5 layer is convolved over its column phases, two input rows per output row
    assert _register_tiles((16, 1, 5, 5), groups=16, size=32, stride=2) == (1, PHASE_ROW_TILE)


@pytest.mark.parametrize(("stride", "size"), [(1, 56), (2, 112)])
def test_a_depthwise_layers_width_takes_a_power_of_two_of_the_lanes_strided_or_not(stride, size):
    """56 output columns with AVX-512: 8 lanes, not 14 (``_depthwise_lanes``), also over the column
    phases of a strided layer."""
    sch = _conv_schedule((16, 1, 5, 5), groups=16, size=size, stride=stride)
    tiles = [sch.trace.decisions[i] for i in sch.trace.insts if i.kind.name == "SamplePerfectTile"]
    assert [[int(v) for v in d] for d in tiles if len(d) == 4][3][3] == 8


def _unroll_steps(sch):
    """The explicit-unroll limits the schedule's loops carry."""
    import re

    return {int(n) for n in re.findall(r'"pragma_auto_unroll_max_step": (\d+)', sch.mod.script())}


@pytest.mark.parametrize(
    ("weight", "groups", "size", "steps"),
    [
        ((16, 1, 3, 3), 16, 14, 512),  # 2 rows in registers: few FMA chains
        ((16, 1, 5, 5), 16, 32, 512),  # rows share input rows
        ((16, 1, 3, 3), 16, 16, 64),  # 4 rows in registers, 3x3
        ((16, 1, 3, 3), 16, 56, 64),  # wide: its width loop would unroll too
        ((16, 16, 3, 3), 1, 14, 64),  # not depthwise
    ],
)
def test_a_narrow_depthwise_layer_unrolls_its_channel_and_matches(weight, groups, size, steps):
    """Some narrow depthwise layers unroll up to 512 steps (``_unrolls_channel``), wide ones and
    other convolutions up to 64; the unrolled kernel still computes the convolution."""
    import numpy as np
    import tvm

    sch = _conv_schedule(weight, groups, size=size)
    assert _unroll_steps(sch) == {steps}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, weight[1] * groups, size, size), dtype=np.float32)
    w = rng.standard_normal(weight, dtype=np.float32)
    out = tvm.runtime.tensor(np.zeros((1, weight[0], size, size), np.float32))
    tvm.compile(sch.mod, target="llvm").jit()["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=weight[-1] // 2, groups=groups)
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    ("kernel", "size", "per_channel"), [(5, 56, True), (3, 112, True), (3, 56, False), (5, 28, False), (3, 4, False)]
)
def test_a_wide_depthwise_layer_pads_each_channel_inside_its_parallel_loop(kernel, size, per_channel):
    """... and a narrower one pads the whole input first, parallel over channels, its rows and columns
    partitioned into border and interior (no per-lane condition: scalar code on a 4×4 map)."""
    from tvm import tirx

    sch = _conv_schedule((8, 1, kernel, kernel), groups=8, size=size)
    loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock("pad_temp"))]
    kinds = [loop.kind for loop in loops]
    inside_parallel = tirx.ForKind.PARALLEL in kinds and len(kinds) > 4  # under the conv's channel loop
    assert inside_parallel == per_channel
    if not per_channel:
        assert kinds[0] == tirx.ForKind.PARALLEL and len(kinds) == 3
        assert [bool(loop.annotations.get("pragma_loop_partition_hint")) for loop in loops] == [False, True, True]

    import numpy as np
    import tvm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, size, size), dtype=np.float32)
    w = rng.standard_normal((8, 1, kernel, kernel), dtype=np.float32)
    out = tvm.runtime.tensor(np.zeros_like(x))
    run = tvm.compile(sch.mod, target="llvm").jit()["main"]  # the kernel takes the weights as its argument
    run(tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=kernel // 2, groups=8)
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("channels", "size", "width"), [(3, 224, 64), (40, 28, 16), (160, 7, None)])
def test_an_elementwise_kernel_vectorises_its_image_plane_and_rounds_exactly(channels, size, width):
    """A quantizer (``round`` → ``nearbyint``) vectorised over h·w by the widest lane count dividing
    it (none for 7×7: MetaSchedule's own annotation then), exact against numpy's round-half-even."""
    import numpy as np
    import tvm
    from tvm import relax

    from autotune.compiler.build import vectorizable_rounding
    from autotune.tuning.default import default_schedule

    shape = (1, channels, size, size)
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = relax.op.clip(relax.op.round(relax.op.divide(x, relax.const(0.05, "float32"))), -127, 127)
            gv = bb.emit_output(relax.op.astype(y, "int8"))
        bb.emit_func_output(gv)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})
    fused = run_steps(FUSE, bb.get(), BuildOptions(target))
    func = next(f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    sch = default_schedule(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    text = sch.mod.script()
    if width is None:
        assert "i0_i1_i2_i3_fused" in text and "T.vectorized" in text
    else:
        assert re.search(rf"T\.vectorized\((T\.int64\()?{width}\)", text)
        assert "i2_i3_fused" in text and "i1_i2" not in text  # the plane fused, not the channels
    vectorizable_rounding()
    lib = tvm.compile(sch.mod, target=tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"}))
    data = np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)
    data.flat[:4] = [0.025, 0.075, -0.025, 10.0]  # halves: round to even
    out = tvm.runtime.tensor(np.zeros(shape, np.int8))
    lib["main"](tvm.runtime.tensor(data), out)
    want = np.clip(np.round(data / np.float32(0.05)), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(out.numpy(), want)
