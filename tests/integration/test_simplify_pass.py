"""The build's ``Simplify`` step (``autotune.compiler.simplify``): divisions by constants become
products within one unit in the last place, and reshape chains merge, on a real Relax module."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.compiler.simplify import merge_reshapes, reciprocal_divisions, simplify

pytestmark = [pytest.mark.tvm]


def _module(divisor):
    """``x / divisor / y``, then a reshape chain back to its own shape and one to a new shape."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType((2, 3, 4), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3, 4), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, y]):
        with bb.dataflow():
            a = bb.emit(relax.op.divide(x, relax.const(np.float32(divisor))))
            b = bb.emit(relax.op.divide(a, y))  # by a tensor: stays a division
            flat = bb.emit(relax.op.reshape(b, (24,)))
            back = bb.emit(relax.op.reshape(flat, (2, 3, 4)))  # x's shape: the chain goes
            other = bb.emit(relax.op.reshape(relax.op.reshape(back, (6, 4)), (4, 6)))  # merges to one
            gv = bb.emit_output(relax.Tuple([back, other]))
        bb.emit_func_output(gv)
    return bb.get()


def _calls(mod):
    """The operator calls of ``mod``'s ``main``, in post order."""
    import tvm
    from tvm import relax

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _ops(mod):
    import tvm

    return [
        (c.op.name, ["const" if isinstance(a, tvm.ir.expr.Constant) else "var" for a in c.args]) for c in _calls(mod)
    ]


def test_a_division_by_a_constant_becomes_a_product_within_an_ulp():
    import tvm
    from tvm import relax

    mod = reciprocal_divisions(_module(6.0))
    ops = _ops(mod)
    assert ("relax.multiply", ["var", "const"]) in ops
    assert [a for name, a in ops if name == "relax.divide"] == [["var", "var"]]  # the tensor division stays
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-5, 5, (2, 3, 4)).astype(np.float32), rng.uniform(1, 2, (2, 3, 4)).astype(np.float32)
    ex = tvm.compile(mod, target="llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y))[0].numpy()
    want = (x / np.float32(6.0)) / y
    np.testing.assert_allclose(got, want, rtol=3 * np.finfo(np.float32).eps)


def test_a_zero_divisor_is_left_alone():
    assert ("relax.divide", ["var", "const"]) in _ops(reciprocal_divisions(_module(0.0)))


def test_reshape_chains_merge_and_a_round_trip_disappears():
    mod = merge_reshapes(_module(2.0))
    reshapes = [name for name, _ in _ops(mod) if name == "relax.reshape"]
    assert len(reshapes) == 1  # (24,) -> (2, 3, 4) went; (6, 4) -> (4, 6) became one reshape
    assert len([name for name, _ in _ops(simplify(_module(2.0))) if name == "relax.reshape"]) == 1


def _hardswish_quantizer():
    """``x · relu6(x + 3) / 6 / 0.02`` as the importer writes it (two half-open clips), then
    clipped above at 127, and a pair of disjoint clips that must stay."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.clip(relax.op.add(x, relax.const(3.0)), 0.0, float("inf")))
            b = bb.emit(relax.op.clip(a, float("-inf"), 6.0))
            c = bb.emit(relax.op.multiply(relax.op.multiply(x, b), relax.const(np.float32(1 / 6))))
            d = bb.emit(relax.op.divide(c, relax.const(np.float32(0.02))))
            e = bb.emit(relax.op.clip(d, float("-inf"), 127.0))
            f = bb.emit(relax.op.clip(relax.op.clip(x, 0.0, 1.0), 2.0, 3.0))  # disjoint: stays two clips
            gv = bb.emit_output(relax.Tuple([e, f]))
        bb.emit_func_output(gv)
    return bb.get()


def test_clips_merge_and_scalings_fold_to_the_same_values():
    import tvm
    from tvm import relax

    mod = simplify(_hardswish_quantizer())
    names = [name for name, _ in _ops(mod)]
    assert names.count("relax.clip") == 3  # relu6 as one clip, and the two disjoint ones
    assert names.count("relax.minimum") == 1 and "relax.divide" not in names
    assert names.count("relax.multiply") == 2  # x * relu6, then one scaling (1/6 and 1/0.02 folded)
    x = np.random.default_rng(1).uniform(-6, 6, (2, 8)).astype(np.float32)
    ex = tvm.compile(mod, target="llvm")
    got, kept = (t.numpy() for t in relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)))
    relu6 = np.clip(x + np.float32(3), 0, 6)
    want = np.minimum(x * relu6 / np.float32(6) / np.float32(0.02), 127)
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(np.float32).eps)
    np.testing.assert_array_equal(kept, np.clip(np.clip(x, 0, 1), 2, 3))


def test_a_scaling_read_elsewhere_too_is_not_folded():
    from tvm import relax

    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.multiply(x, relax.const(np.float32(1 / 6))))  # hardswish's output
            b = bb.emit(relax.op.multiply(a, relax.const(np.float32(50.0))))  # the next quantizer
            gv = bb.emit_output(relax.Tuple([a, relax.op.add(a, b)]))  # a residual reads a too
        bb.emit_func_output(gv)
    scalings = [c.args[1].value.numpy().item() for c in _calls(simplify(bb.get())) if c.op.name == "relax.multiply"]
    assert scalings == [np.float32(1 / 6), np.float32(50.0)]  # not x · (50 / 6) beside x / 6


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "groups", "taps"),
    [(2, 5, 1, 2, 8, (3, 3)), (1, 5, 1, 2, 8, (1, 1)), (1, 3, 1, 1, 1, (1, 1)), (2, 5, 2, 2, 1, (2, 2)),
     (4, 5, 1, 2, 8, (5, 5))],
    ids=["dw-2x2", "dw-1x1", "dense-1x1", "strided-2x2", "all-taps-used"],
)  # fmt: skip
def test_taps_that_read_only_padding_are_cropped_exactly(size, kernel, stride, padding, groups, taps):
    import torch
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from autotune.compiler.simplify import crop_kernels

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, kernel, stride, padding, groups=groups).eval()
    x = torch.randn(1, 8, size, size)
    mod = crop_kernels(from_exported_program(torch.export.export(conv, (x,)), keep_params_as_input=False))
    shapes = [tuple(int(v) for v in c.args[1].ty.shape) for c in _calls(mod) if c.op.name == "relax.nn.conv2d"]
    assert shapes == [(8, 8 // groups, *taps)]
    ex = tvm.compile(mod, target="llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy()))
    got = (got[0] if not hasattr(got, "numpy") else got).numpy()
    with torch.inference_mode():
        want = conv(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _epilogue(act, scale, shared=False):
    """An int8 layer's epilogue as the rewrite leaves it: ``x · a + b`` per channel, ``act`` (relu or
    relu6), then the next quantizer ``clip(round(· · scale), -127, 127)``; with ``shared`` a residual
    reads the activation too."""
    from tvm import relax

    rng = np.random.default_rng(2)
    x = relax.Var("x", relax.TensorType((6, 16), "float32"))
    a, b = (rng.uniform(0.01, 0.1, (6, 1)).astype(np.float32), rng.uniform(-1, 1, (6, 1)).astype(np.float32))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = relax.op.add(relax.op.multiply(x, relax.const(a)), relax.const(b))
            v = bb.emit(relax.op.nn.relu(y) if act == "relu" else relax.op.clip(y, 0.0, 6.0))
            q = relax.op.clip(relax.op.round(relax.op.multiply(v, relax.const(np.float32(scale)))), -127.0, 127.0)
            gv = bb.emit_output(relax.Tuple([q, v]) if shared else q)
        bb.emit_func_output(gv)
    return bb.get()


def _values(mod, x):
    import tvm
    from tvm import relax

    out = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x))
    return (out[0] if not hasattr(out, "numpy") else out).numpy()


@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_a_quantizing_epilogue_loses_its_activation_and_a_scaling(act):
    x = np.random.default_rng(3).uniform(-200, 200, (6, 16)).astype(np.float32)
    before = _epilogue(act, 21.0)
    want = _values(before, x)
    mod = simplify(_epilogue(act, 21.0))
    names = [name for name, _ in _ops(mod)]
    assert names == ["relax.multiply", "relax.add", "relax.round", "relax.clip"]  # no ReLU, one scaling
    clip = next(c for c in _calls(mod) if c.op.name == "relax.clip")
    assert [float(v.value) for v in clip.args[1:]] == [0.0, 127.0 if act == "relu" else float(np.round(6 * 21.0))]
    got = _values(mod, x)
    assert np.abs(got - want).max() <= 1  # (y · a + b) · s as y · (a · s) + b · s: a level at a rounding boundary
    assert np.mean(got == want) > 0.95


def test_scalings_stay_where_the_sign_or_another_reader_forbids_them():
    assert "relax.nn.relu" in [name for name, _ in _ops(simplify(_epilogue("relu", -21.0)))]  # relu(y) · -s
    shared = [name for name, _ in _ops(simplify(_epilogue("relu", 21.0, shared=True)))]
    assert "relax.nn.relu" in shared and shared.count("relax.multiply") == 2  # the residual reads relu(y)
    from tvm import relax  # a dequantizer, clip(round(x)) · s, stays one for int8_inputs to recognise

    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            gv = bb.emit_output(relax.op.multiply(relax.op.clip(relax.op.round(x), -127.0, 127.0), relax.const(0.5)))
        bb.emit_func_output(gv)
    assert [name for name, _ in _ops(simplify(bb.get()))] == ["relax.round", "relax.clip", "relax.multiply"]


def test_a_depthwise_layers_scaling_goes_into_its_weights():
    import torch
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU()).eval()
    x = torch.randn(1, 8, 6, 6)

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.linspace(0.5, 4.0, 8).reshape(1, 8, 1, 1))

        def forward(self, x):
            return model(x) * self.scale

    mod = from_exported_program(torch.export.export(Scaled(), (x,)), keep_params_as_input=False)
    mod = simplify(relax.transform.FoldConstant()(mod))  # (the bias's reshape folded, as a build's import does)
    assert "relax.multiply" not in [name for name, _ in _ops(mod)]
    with torch.inference_mode():
        want = Scaled()(x).numpy()
    np.testing.assert_allclose(_values(mod, x.numpy()), want, rtol=1e-5, atol=1e-5)


def test_a_pointwise_convolution_over_one_pixel_becomes_a_matmul_fused_with_its_epilogue():
    """Squeeze-excite: the two 1×1 convolutions over the pooled 1×1 map become matmuls over
    transposed weights, each with its bias and activation in one kernel, the same values; a 1×1
    convolution over a larger map stays a convolution."""
    import torch
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from autotune.compiler.build import FUSE, BuildOptions, run_steps

    class SqueezeExcite(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.reduce, self.expand = torch.nn.Conv2d(16, 4, 1), torch.nn.Conv2d(4, 16, 1)
            self.project = torch.nn.Conv2d(16, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.mean((2, 3), keepdim=True)
            s = torch.sigmoid(self.expand(torch.relu(self.reduce(s))))
            return self.project(x * s)

    torch.manual_seed(0)
    model, x = SqueezeExcite().eval(), torch.randn(1, 16, 8, 8)
    mod = simplify(from_exported_program(torch.export.export(model, (x,)), keep_params_as_input=False))
    names = [name for name, _ in _ops(mod)]
    assert names.count("relax.matmul") == 2 and names.count("relax.nn.conv2d") == 1, names
    target = tvm.target.Target({"kind": "llvm"})
    fused = run_steps(FUSE, mod, BuildOptions(target=target))
    kernels = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any("matmul" in k and "relu" in k for k in kernels), kernels  # bias and ReLU fused in
    assert any("matmul" in k and "sigmoid" in k for k in kernels), kernels
    got = _values(mod, x.numpy())
    with torch.inference_mode():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
