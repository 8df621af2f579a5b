"""Float layers of an int8 model that read their quantized input as int8 (``autotune.compiler.int8_inputs``):
the rewritten depthwise layers and column-phase copies compute what the fake-quantized layer computes,
through the real build (fusion, default schedules), and only 8-bit symmetric quantizers are taken."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autotune.compiler.build import FINALIZE, FUSE, SCHEDULE, BuildOptions, run_steps
from autotune.compiler.int8_inputs import KERNEL_PREFIX, int8_inputs
from autotune.compiler.precision import INT8_INPUT_DEPTHWISE, dtype_census
from autotune.compiler.simplify import simplify
from autotune.compiler.strided import split_strided_convs

pytestmark = [pytest.mark.tvm]

SCALE = np.float32(0.05)


def _module(shape, weight, stride, padding, bounds=(-127, 127), scale=SCALE):
    """``conv2d(quantize(x) · s, weight) + 1`` (a depthwise layer where ``weight`` has one input
    channel per group) as the exporter writes a fake-quantized layer."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType(shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            q = relax.op.clip(relax.op.round(relax.op.divide(x, relax.const(scale))), *bounds)
            fq = relax.op.multiply(q, relax.const(scale))
            groups = shape[1] if weight.shape[1] == 1 else 1
            conv = relax.op.nn.conv2d(fq, relax.const(weight), strides=stride, padding=padding, groups=groups)
            gv = bb.emit_output(relax.op.add(conv, relax.const(1.0, "float32")))
        bb.emit_func_output(gv)
    return bb.get()


def _reference(x, weight, stride, padding, bounds=(-127, 127)):
    q = np.clip(np.round(x / SCALE), *bounds).astype(np.float32) * SCALE
    top, left, bottom, right = (padding,) * 4 if isinstance(padding, int) else padding
    q = np.pad(q, ((0, 0), (0, 0), (top, bottom), (left, right)))
    groups = x.shape[1] if weight.shape[1] == 1 else 1
    with torch.inference_mode():
        out = torch.nn.functional.conv2d(torch.from_numpy(q), torch.from_numpy(weight), stride=stride, groups=groups)
    return out.numpy() + 1


def _run(mod, x):
    import tvm
    from tvm import relax

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    lowered = run_steps(FUSE + SCHEDULE + FINALIZE, mod, BuildOptions(target))
    ex = tvm.compile(lowered, target=target, relax_pipeline=None)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _kernels(mod):
    return sorted(gv.name_hint for gv, _ in mod.functions_items() if gv.name_hint.startswith(KERNEL_PREFIX))


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "byte_phases"),
    [
        (14, 5, 1, 2, False),
        (9, 3, 1, 1, False),
        (6, 3, 1, (0, 1, 2, 1), False),
        (16, 5, 2, 2, False),
        (16, 5, 2, 2, True),
        (15, 5, 2, 2, True),
    ],
    ids=["5x5", "3x3-odd", "asymmetric", "strided-small", "strided-even", "strided-odd"],
)
def test_a_layer_reading_int8_matches_the_fake_quantized_layer(size, kernel, stride, padding, byte_phases, monkeypatch):
    """A strided layer's phases go as bytes where they are large (``INT8_PHASES_BYTES``: here made 0),
    else its copy writes the float32 values it copied before: then the very same results."""
    from autotune.compiler import int8_inputs as module

    if byte_phases:
        monkeypatch.setattr(module, "INT8_PHASES_BYTES", 0)
    rng = np.random.default_rng(0)
    shape = (1, 6, size, size)
    weight = rng.standard_normal((6, 1, kernel, kernel)).astype(np.float32)
    x = rng.uniform(-6, 6, shape).astype(np.float32)
    mod = simplify(split_strided_convs(_module(shape, weight, (stride, stride), padding)))
    rewritten, n = int8_inputs(mod)
    assert n == 1
    # int8_input_column_phases[_int8]_…, int8_input_depthwise[_phases]_…
    expected = (["column", "depthwise"] if byte_phases else ["column"]) if stride == 2 else ["depthwise"]
    assert [name[len(KERNEL_PREFIX) :].split("_")[0] for name in _kernels(rewritten)] == expected
    assert not [gv for gv, _ in rewritten.functions_items() if gv.name_hint.startswith("column_phases")]
    census = dtype_census(rewritten)
    assert (census.int8, census.float32) == (0, 1)  # reads int8, computes in float32
    got = _run(rewritten, x)
    want = _reference(x, weight, stride, padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if stride == 2 and not byte_phases:
        np.testing.assert_array_equal(got, _run(mod, x))


def test_only_8_bit_symmetric_quantizers_in_front_of_depthwise_layers_are_taken():
    rng = np.random.default_rng(1)
    shape = (1, 4, 8, 8)
    depthwise = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    dense = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    assert int8_inputs(_module(shape, depthwise, (1, 1), 1, bounds=(0, 255)))[1] == 0  # not int8
    assert int8_inputs(_module(shape, dense, (1, 1), 1))[1] == 0  # a regular convolution
    per_channel = np.full((1, 4, 1, 1), SCALE, np.float32)
    assert int8_inputs(_module(shape, depthwise, (1, 1), 1, scale=per_channel))[1] == 0
    mod, n = int8_inputs(_module(shape, depthwise, (1, 1), 1))
    assert n == 1 and _kernels(mod)[0].startswith(INT8_INPUT_DEPTHWISE)


@pytest.mark.parametrize(("kernel", "size", "per_channel"), [(5, 56, True), (3, 28, False)])
@pytest.mark.parametrize("mcpu", ["x86-64-v3", "x86-64-v4"])
def test_the_depthwise_kernel_converts_its_int8_input_in_a_vectorised_stage_or_in_its_padding(
    kernel, size, per_channel, mcpu
):
    """AVX2: not inside the padding's condition (scalar ``vcvtsi2ss`` per element) but a conversion
    stage, its plane vectorised, under the convolution's parallel channel loop for a wide layer,
    parallel over the channels at the root for a narrow one. AVX-512 (masked vector loads): inside
    the padding, no stage. Either way the kernel computes the float convolution of the bytes (run
    where this CPU has the instructions)."""
    import tvm
    from tvm import tirx

    from autotune.compiler.int8_inputs import depthwise_kernel
    from autotune.tuning.default import CONVERT_BLOCKS, default_schedule
    from autotune.tuning.intrin import stub_tensor_intrin

    pad = kernel // 2
    func = depthwise_kernel([1, 8, size, size], (kernel, kernel), (pad,) * 4).with_attr("global_symbol", "main")
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 1})
    stub_tensor_intrin(target)  # as the build does: MetaSchedule would import every intrinsic table (~40 s)
    sch = default_schedule(tvm.IRModule({"main": func}), target)
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if mcpu == "x86-64-v4":
        assert CONVERT_BLOCKS[0] not in blocks
        assert [str(r.source) for r in sch.get(sch.get_sblock("pad_temp")).reads] == ["q"]  # the int8 input
        host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
        if not tvm.target.codegen.llvm_cpu_has_features(["avx512f"], host):
            return
    else:
        loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock(CONVERT_BLOCKS[0]))]
        kinds = [loop.kind for loop in loops]
        assert kinds[-1] == tirx.ForKind.VECTORIZED and int(loops[-1].extent) >= 8
        assert kinds[0] == tirx.ForKind.PARALLEL and (len(kinds) > 3) == per_channel
    rng = np.random.default_rng(2)
    q = rng.integers(-127, 128, (1, 8, size, size)).astype(np.int8)
    w = rng.standard_normal((8, 1, kernel, kernel)).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((1, 8, size, size), np.float32))
    tvm.compile(sch.mod, target=target).jit()["main"](tvm.runtime.tensor(q), tvm.runtime.tensor(w), out)
    floats = torch.from_numpy(q.astype(np.float32))
    want = torch.nn.functional.conv2d(floats, torch.from_numpy(w), padding=pad, groups=8)
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("mcpu", ["x86-64-v3", "x86-64-v4"])
def test_the_strided_kernel_over_int8_column_phases_converts_per_channel_or_inline_and_matches(mcpu):
    """A 5×5 stride-2 layer over its int8 column phases (two input channels per output channel, rows
    two apart, no padding stage): AVX2 converts each channel's phases in a vectorised stage inside
    the parallel channel loop, AVX-512 inside the convolution; both compute the float convolution."""
    import tvm
    from tvm import tirx

    from autotune.compiler.int8_inputs import depthwise_kernel
    from autotune.tuning.default import CONVERT_BLOCKS, default_schedule
    from autotune.tuning.intrin import stub_tensor_intrin

    shape, kernel = [1, 16, 36, 18], (5, 3)  # the phases of 8 channels at 32×32, padded by 2
    func = depthwise_kernel(shape, kernel, (0,) * 4, per_group=2, row_stride=2).with_attr("global_symbol", "main")
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 1})
    stub_tensor_intrin(target)
    sch = default_schedule(tvm.IRModule({"main": func}), target)
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    assert "pad_temp" not in blocks
    if mcpu == "x86-64-v4":
        assert CONVERT_BLOCKS[0] not in blocks
        host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
        if not tvm.target.codegen.llvm_cpu_has_features(["avx512f"], host):
            return
    else:
        loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock(CONVERT_BLOCKS[0]))]
        assert loops[0].kind == tirx.ForKind.PARALLEL and len(loops) > 3  # inside the channel loop
        assert loops[-1].kind == tirx.ForKind.VECTORIZED
    rng = np.random.default_rng(3)
    q = rng.integers(-127, 128, shape).astype(np.int8)
    w = rng.standard_normal((8, 2, *kernel)).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((1, 8, 16, 16), np.float32))
    tvm.compile(sch.mod, target=target).jit()["main"](tvm.runtime.tensor(q), tvm.runtime.tensor(w), out)
    floats = torch.from_numpy(q.astype(np.float32))
    want = torch.nn.functional.conv2d(floats, torch.from_numpy(w), stride=(2, 1), groups=8)
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-5, atol=1e-3)
