"""The int8 dot-product kernels (``autotune.compiler.dot_kernels`` / ``dot_rewrite``): exact integer
results against numpy (each instruction set this CPU runs: AVX-512 VNNI, AVX2), the whole rewrite
(u8 shift, its correction, padding, fused epilogue) against numpy, and the fallback of a CPU without
either."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from autotune.compiler.build import FINALIZE, FUSE, PREPARE, SCHEDULE, BuildOptions, run_steps
from autotune.compiler.dot_kernels import ISAS, conv_kernel, dense_kernel, dot_path, nonneg_variant, schedule_dot
from autotune.compiler.dot_layout import PACK_LANES, pack_kernel, pad_kernel
from autotune.compiler.dot_rewrite import to_dot_product

pytestmark = [pytest.mark.tvm]


def _host():
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def _dot_host():
    """This machine's target and its dot-product instruction set (skip without one)."""
    target = _host()
    if dot_path(target) not in ISAS:
        pytest.skip("this CPU has no dot-product instruction (AVX-512 VNNI, AVX2, Arm dotprod)")
    return target, ISAS[dot_path(target)]


def _isas_here():
    """The x86 instruction sets this CPU runs (its own first), with a target for each, and their
    variants for non-negative activations (AVX2's without the sign transfer)."""
    import tvm

    host = _host()
    out = [(host, ISAS[dot_path(host)])] if dot_path(host) in ISAS else []
    if dot_path(host) == "vnni":  # the AVX2 kernels run on any AVX2 CPU
        out.append((tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"}), ISAS["avx2"]))
    return out + [(t, nonneg_variant(isa)) for t, isa in out if nonneg_variant(isa) != isa]


def _each_isa(test):
    """Run ``test(target, isa)`` for each instruction set here (skip without one)."""
    runs = _isas_here()
    if not runs:
        pytest.skip("this CPU has no dot-product instruction (AVX-512 VNNI, AVX2, Arm dotprod)")
    for target, isa in runs:
        test(target, isa)


def _weights(rng, isa, shape):
    """s8 weights as the quantizer makes them ([-127, 127]; VNNI also takes -128)."""
    return rng.integers(isa.min_weight, 128, shape).astype(np.int8)


def _run(func, target, *arrays, out_shape):
    import tvm

    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in arrays] + [tvm.runtime.tensor(np.zeros(out_shape, "int32"), dev)]
    lib["main"](*args)
    return args[-1].numpy()


def _activations(rng, isa, shape):
    lo, hi = (0, 256) if isa.activations == "uint8" else (0, 128) if isa.nonneg else (-128, 128)
    return rng.integers(lo, hi, shape).astype(isa.activations)


def _extremes(a, w, isa):
    """Half the activations and two weight rows at the ends of their ranges: AVX2 adds pairs of
    products in 16 bits, where 2 · 128 · 127 is the most that fits."""
    a.reshape(-1)[: a.size // 2] = 0 if isa.activations == "uint8" else 127 if isa.nonneg else -128
    w[0], w[1] = isa.min_weight, 127


def test_conv_kernel_is_exact():
    def check(target, isa):
        rng = np.random.default_rng(0)
        n, k, p = 12, 8, 4 * isa.lanes
        a = _activations(rng, isa, (k // 4, p, 4))
        w = _weights(rng, isa, (n, k))
        _extremes(a, w, isa)
        acts = a.transpose(0, 2, 1).reshape(k, p).astype(np.int64)  # [k, p]
        start = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)  # the accumulators' start
        func = schedule_dot(conv_kernel(n, k, p, isa))
        assert func is not None and func.attrs["tir.is_scheduled"]
        got = _run(func, target, a, w, start, out_shape=(n, p))
        np.testing.assert_array_equal(got, start[:, None] + w.astype(np.int64) @ acts, err_msg=isa.tag)

    _each_isa(check)


def test_dense_kernel_is_exact():
    def check(target, isa):
        rng = np.random.default_rng(1)
        p, k, n, lanes = 3, 12, 2 * isa.lanes, isa.lanes
        a = _activations(rng, isa, (p, k))
        w = _weights(rng, isa, (n, k))
        _extremes(a, w, isa)
        packed = np.ascontiguousarray(w.reshape(n // lanes, lanes, k // 4, 4).transpose(0, 2, 1, 3))
        start = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)  # the accumulators' start
        got = _run(schedule_dot(dense_kernel(p, k, n, isa)), target, a, packed, start, out_shape=(p, n))
        np.testing.assert_array_equal(got, start[None, :] + a.astype(np.int64) @ w.astype(np.int64).T, err_msg=isa.tag)

    _each_isa(check)


@pytest.mark.parametrize("k", [8, 6])
@pytest.mark.parametrize("isa", list(ISAS.values()), ids=list(ISAS))
def test_pack_kernel_lays_out_the_activation_quadruples(isa, k):
    """Plain vector code (any x86 host compiles it, for either instruction set's byte order); 6
    channels are laid out as 8, the last two zero."""
    p, k4 = 2 * PACK_LANES, 8
    x = np.random.default_rng(4).integers(-128, 128, (k, p), dtype=np.int8)
    func = pack_kernel(k, p, isa)
    assert func.attrs["tir.is_scheduled"]
    words = _run(func, _host(), x, out_shape=(k4 // 4, p))
    want = np.pad(x, ((0, k4 - k), (0, 0))).reshape(k4 // 4, 4, p).transpose(0, 2, 1)  # [k4/4, p, 4]
    if isa.activations == "uint8":
        want = (want.astype(np.int16) + 128).astype(np.uint8)
    np.testing.assert_array_equal(words.view(isa.activations).reshape(k4 // 4, p, 4), want)


def _int8_model(rng, hw=(5, 5), channels=8, features=200, conv_weight=None):
    """``relu(conv1x1(x) * s + b)`` and ``x_flat[:features] @ W`` on int8 inputs, as ``to_int8``
    leaves them: ``channels`` input channels (6: padded to 8 with zeros), 20 output channels (not a
    multiple of 16) over ``hw`` pixels (5×5: 25, padded to 32 and transposed; 4×8: 32, packed by
    ``pack_kernel``); ``features`` (198: padded to 200) into 200 outputs. Weights in [-127, 127], as
    the quantizer makes them; ``conv_weight`` replaces the convolution's first."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType((1, channels, *hw), "int8"))
    w = rng.integers(-127, 128, (20, channels, 1, 1), dtype=np.int8)
    if conv_weight is not None:
        w[0, 0, 0, 0] = conv_weight
    scale = rng.uniform(0.01, 0.02, (1, 20, 1, 1)).astype(np.float32)
    bias = rng.uniform(-1, 1, (1, 20, 1, 1)).astype(np.float32)
    wd = rng.integers(-127, 128, (features, 20), dtype=np.int8)
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), out_dtype="int32"))
            y = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale)))
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(bias))))
            q = bb.emit(relax.op.astype(relax.op.clip(relax.op.round(y), -128, 127), "int8"))
            flat = bb.emit(relax.op.reshape(q, (1, 20 * hw[0] * hw[1])))
            head = bb.emit(relax.op.strided_slice(flat, axes=[1], begin=[0], end=[features]))
            out = bb.emit(relax.op.matmul(head, relax.const(wd), out_dtype="int32"))
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    return bb.get(), (w, scale, bias, wd)


@pytest.mark.parametrize(("hw", "channels", "features"), [((5, 5), 8, 200), ((4, 8), 8, 200), ((5, 5), 6, 198),
                                                          ((4, 8), 6, 198), ((1, 1), 6, 20), ((7, 7), 8, 392)],
                         ids=["transposed", "packed", "transposed-k6", "packed-k6", "1x1-map",
                              "odd-vectors"])  # fmt: skip
def test_rewrite_matches_numpy_with_its_epilogue_fused(hw, channels, features):
    """... a convolution over a 1×1 map (squeeze-excite) on the matmul's kernel, lanes over its output
    channels, not on the convolution's with one pixel of a vector's lanes."""
    import tvm
    from tvm import relax

    target, _ = _dot_host()
    rng = np.random.default_rng(2)
    mod, (w, scale, bias, wd) = _int8_model(rng, hw, channels, features)
    rewritten, n = to_dot_product(mod, target)
    assert n == 2  # the 1x1 convolution and the matmul
    options = BuildOptions(target=target, precision="int8")
    fused = run_steps(FUSE, rewritten, options)
    kernels = [gv.name_hint for gv, f in fused.functions_items() if "int8_dot_" in gv.name_hint]
    assert any("relu" in name for name in kernels), f"the epilogue did not fuse into the kernel: {kernels}"
    on_conv_kernel = [name for name in kernels if "conv1x1" in name]
    assert bool(on_conv_kernel) == (hw != (1, 1)), kernels  # a 1x1 map: both on the matmul's kernel
    for name in on_conv_kernel:  # pixels in an even count of vectors from four on (7x7 on AVX2: 7 -> 8)
        vectors = int(re.search(r"_p(\d+)", name).group(1)) // ISAS[dot_path(target)].lanes
        assert vectors < 4 or vectors % 2 == 0, name
    copies = [gv.name_hint for gv, _ in fused.functions_items() if gv.name_hint.startswith("reshape")]
    assert not copies, f"a reshape was left as a copy kernel, not a view: {copies}"
    ex = tvm.compile(run_steps(SCHEDULE + FINALIZE, fused, options), target=target, relax_pipeline=None)
    x = rng.integers(-128, 128, (1, channels, *hw), dtype=np.int8)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    acc = np.einsum("ok,bkhw->bohw", w[:, :, 0, 0].astype(np.int64), x.astype(np.int64)).astype(np.float32)
    q = np.clip(np.round(np.maximum(acc * scale + bias, 0)), -128, 127).astype(np.int64)
    np.testing.assert_array_equal(got, q.reshape(1, -1)[:, :features] @ wd.astype(np.int64))


def test_a_cpu_without_vnni_or_avx2_keeps_the_generic_int8_code_with_a_warning(caplog):
    import tvm

    sse = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v2"})  # SSE4.2, no AVX2
    assert dot_path(sse) == "generic"
    assert dot_path(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})) == "avx2"
    assert dot_path(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vnni"]})) == "vnni"
    mod, _ = _int8_model(np.random.default_rng(3))
    with caplog.at_level(logging.WARNING, logger="autotune.compiler.dot_rewrite"):
        same, n = to_dot_product(mod, sse)
    assert n == 0 and same is mod
    assert any("no dot-product instruction" in r.getMessage() for r in caplog.records)
    dot_step = tuple(s for s in PREPARE if s.name == "DotProduct")
    out = run_steps(dot_step + FUSE, mod, BuildOptions(target=sse, precision="int8"))
    assert not [gv for gv, _ in out.functions_items() if "int8_dot_" in gv.name_hint]


def test_avx2_leaves_a_layer_with_a_minus_128_weight_on_the_generic_code():
    """AVX2 gives the weight the activation's sign, and -128 has no positive twin in s8; the
    quantizer never makes one, a hand-made int8 model might."""
    import tvm

    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
    assert to_dot_product(_int8_model(np.random.default_rng(8))[0], avx2)[1] == 2
    mod, (w, *_) = _int8_model(np.random.default_rng(8), conv_weight=-128)
    assert w.min() == -128
    rewritten, n = to_dot_product(mod, avx2)
    assert n == 1  # the matmul only
    names = [gv.name_hint for gv, _ in rewritten.functions_items()]
    assert [name for name in names if "dense" in name] and not [name for name in names if "conv1x1" in name]


def test_avx2_skips_the_sign_transfer_where_the_activations_cannot_be_negative():
    """A 1×1 convolution of a quantized ReLU: its activations lie in [0, 127], each its own ``|a|``,
    so the kernel multiplies them as they are (no ``psign``; a -128 weight is fine there), exactly;
    the same convolution of a signed input keeps the sign transfer."""
    import tvm
    from tvm import relax

    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
    rng = np.random.default_rng(9)
    w = rng.integers(-128, 128, (20, 8, 1, 1), dtype=np.int8)
    w[0, 0, 0, 0], w[1, 0, 0, 0] = -128, 127
    x = relax.Var("x", relax.TensorType((1, 8, 4, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            outs = []
            for source in (relax.op.nn.relu(x), x):  # non-negative, then signed
                q = relax.op.clip(relax.op.round(relax.op.divide(source, relax.const(0.01, "float32"))), -127, 127)
                weights = w if not outs else np.maximum(w, -127)  # (a signed input cannot take -128)
                conv = relax.op.nn.conv2d(relax.op.astype(q, "int8"), relax.const(weights), out_dtype="int32")
                outs.append(bb.emit(conv))
            gv = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(gv)
    rewritten, n = to_dot_product(bb.get(), avx2)
    assert n == 2
    options = BuildOptions(target=avx2, precision="int8")
    scheduled = run_steps(FUSE + SCHEDULE, rewritten, options)
    kernels = {gv.name_hint: f.script() for gv, f in scheduled.functions_items() if "int8_dot_" in gv.name_hint}
    unsigned = [name for name in kernels if "conv1x1_u7" in name]
    assert len(unsigned) == 1 and len(kernels) == 2, list(kernels)
    for name, text in kernels.items():
        assert "pmadd.ub.sw" in text and ("psign" in text) == (name not in unsigned), name
    if dot_path(_host()) not in ("avx2", "vnni"):
        return  # (compiled and inspected; this CPU cannot run it)
    ex = tvm.compile(run_steps(FINALIZE, scheduled, options), target=avx2, relax_pipeline=None)
    xv = rng.uniform(-1.3, 1.3, (1, 8, 4, 8)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv))
    for i, (source, weights) in enumerate([(np.maximum(xv, 0), w), (xv, np.maximum(w, -127))]):
        q = np.clip(np.round(source / np.float32(0.01)), -127, 127).astype(np.int64)
        want = np.einsum("ok,bkhw->bohw", weights[:, :, 0, 0].astype(np.int64), q)
        np.testing.assert_array_equal(got[i].numpy(), want)


def test_a_residual_add_of_a_float_tensor_fuses_into_the_kernel():
    """``conv1x1(x) * s + skip`` with ``skip`` an NCHW tensor of another layer: the add reads
    ``skip`` through a view of the kernel's ``[channels, pixels]`` and runs in its epilogue."""
    import tvm
    from tvm import relax

    target, _ = _dot_host()
    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (20, 8, 1, 1), dtype=np.int8)
    scale = rng.uniform(0.01, 0.02, (1, 20, 1, 1)).astype(np.float32)
    x = relax.Var("x", relax.TensorType((1, 8, 4, 8), "int8"))
    skip = relax.Var("skip", relax.TensorType((1, 20, 4, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, skip]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), out_dtype="int32"))
            y = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale)))
            gv = bb.emit_output(relax.op.add(y, skip))
        bb.emit_func_output(gv)
    rewritten, n = to_dot_product(bb.get(), target)
    assert n == 1
    options = BuildOptions(target=target, precision="int8")
    fused = run_steps(FUSE, rewritten, options)
    names = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert [name for name in names if "int8_dot_" in name and name.endswith("_add")], names
    assert not [name for name in names if name.startswith(("fused_reshape", "add"))], names  # no kernel of its own
    ex = tvm.compile(run_steps(SCHEDULE + FINALIZE, fused, options), target=target, relax_pipeline=None)
    xv = rng.integers(-128, 128, (1, 8, 4, 8), dtype=np.int8)
    sv = rng.uniform(-1, 1, (1, 20, 4, 8)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv), tvm.runtime.tensor(sv)).numpy()
    acc = np.einsum("ok,bkhw->bohw", w[:, :, 0, 0].astype(np.int64), xv.astype(np.int64)).astype(np.float32)
    np.testing.assert_allclose(got, acc * scale + sv, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "channels"),
    [(6, 3, 1, 1, 3), (8, 3, 2, 1, 3), (7, 3, 2, 1, 4), (5, 2, 1, 0, 5), (6, 3, 1, (0, 1, 2, 1), 2)],
    ids=["3x3-padded", "stem-strided-even", "stem-strided-odd", "2x2-unpadded", "asymmetric"],
)
def test_a_larger_kernel_runs_on_the_dot_kernel_through_im2col_exactly(size, kernel, stride, padding, channels):
    """``conv2d(int8, int8) -> int32`` with a k×k kernel: its taps gathered four to a word (the input
    padded by ``pad_kernel``, a strided one split into column phases first), then the 1×1 kernel."""
    import torch
    import tvm
    from tvm import relax

    from autotune.compiler.strided import split_strided_convs

    target, _ = _dot_host()
    rng = np.random.default_rng(6)
    w = rng.integers(-127, 128, (20, channels, kernel, kernel), dtype=np.int8)
    x = relax.Var("x", relax.TensorType((1, channels, size, size), "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=padding, out_dtype="int32")
            gv = bb.emit_output(conv)
        bb.emit_func_output(gv)
    mod = split_strided_convs(bb.get())
    assert any(gv.name_hint.startswith("column_phases") for gv, _ in mod.functions_items()) == (stride == 2)
    rewritten, n = to_dot_product(mod, target)
    assert n == 1
    names = [gv.name_hint for gv, _ in rewritten.functions_items()]
    assert [name for name in names if "im2col" in name], names
    options = BuildOptions(target=target, precision="int8")
    ex = tvm.compile(run_steps(FUSE + SCHEDULE + FINALIZE, rewritten, options), target=target, relax_pipeline=None)
    xv = rng.integers(-128, 128, (1, channels, size, size), dtype=np.int8)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv)).numpy()
    top, left, bottom, right = (padding,) * 4 if isinstance(padding, int) else padding
    xp = np.pad(xv.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    want = torch.nn.functional.conv2d(torch.from_numpy(xp), torch.from_numpy(w.astype(np.float64)), stride=stride)
    np.testing.assert_array_equal(got, want.numpy().astype(np.int64))  # |sums| < 2^53: exact in float64


def test_pad_kernel_copies_rows_between_zeros():
    import tvm

    x = np.random.default_rng(7).integers(-128, 128, (3, 5, 7), dtype=np.int8)
    func = pad_kernel((3, 5, 7), (1, 2, 3, 0))
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=_host())
    out = tvm.runtime.tensor(np.ones((3, 9, 9), np.int8))
    lib["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), np.pad(x, ((0, 0), (1, 3), (2, 0))))
