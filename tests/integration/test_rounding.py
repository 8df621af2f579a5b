"""Quantizers as one rounding conversion (``autotune.compiler.rounding``): bit for bit what
``astype(clip(round(x)))`` gives (ties to even, values past the bounds), one conversion instruction
in place of a rounding one on x86, fused into the layer it quantizes, and left alone elsewhere."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from autotune.compiler.build import FINALIZE, FUSE, SCHEDULE, BuildOptions, run_steps
from autotune.compiler.rounding import rounded_conversions

pytestmark = [pytest.mark.tvm]


def _host():
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def _values() -> np.ndarray:
    """Ties of both parities and signs, values next to them, past both bounds, and random ones."""
    ties = np.arange(-140, 140, dtype=np.float32) + np.float32(0.5)
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    far = np.array([1e9, -1e9, 3e38, -3e38, np.inf, -np.inf, 0.0, -0.0], np.float32)
    noise = np.random.default_rng(0).normal(0, 90, 4096 - ties.size - near.size - far.size).astype(np.float32)
    return np.concatenate([ties, near, far, noise]).reshape(4, 32, 32)


def _quantizer(lo: float, hi: float, dtype: str):
    """``astype(clip(round(x · 1.0), lo, hi), dtype)`` over (4, 32, 32), as the quantizers are built."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType((4, 32, 32), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.multiply(x, relax.const(1.0, "float32")))
            q = bb.emit(relax.op.astype(relax.op.clip(relax.op.round(y), lo, hi), dtype))
            gv = bb.emit_output(q)
        bb.emit_func_output(gv)
    return bb.get()


def _compiled(mod, target, tmp_path, name):
    import tvm

    options = BuildOptions(target=target, precision="int8")
    ex = tvm.compile(run_steps(FUSE + SCHEDULE + FINALIZE, mod, options), target=target, relax_pipeline=None)
    path = tmp_path / f"{name}.so"
    ex.export_library(str(path))
    return path


@pytest.mark.parametrize(("lo", "hi", "dtype"), [(-127, 127, "int8"), (0, 127, "int8"), (0, 255, "uint8")])
@pytest.mark.parametrize("cpu", ["host", "x86-64-v3"])  # this CPU's code, and AVX2's (runs on any x86 here)
def test_the_conversion_rounds_and_clips_bit_for_bit_as_before(tmp_path, lo, hi, dtype, cpu):
    import tvm
    from tvm import relax

    target = _host() if cpu == "host" else tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    if cpu != "host" and not tvm.target.codegen.llvm_cpu_has_features(["avx2"], _host()):
        pytest.skip("this CPU runs no AVX2 code")
    mod = _quantizer(lo, hi, dtype)
    rewritten, n = rounded_conversions(mod, target)
    assert n == 1
    x = _values()
    want = np.clip(np.rint(np.nan_to_num(x)), lo, hi).astype(dtype)  # rint: ties to even
    before = _compiled(mod, target, tmp_path, "before")
    after = _compiled(rewritten, target, tmp_path, "after")
    for path in (before, after):
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want, err_msg=path.name)
    objdump = subprocess.run(["objdump", "-d", str(after)], capture_output=True, text=True, check=False)
    if objdump.returncode == 0:  # (where binutils is installed)
        assert "cvtps2dq" in objdump.stdout and "roundps" not in objdump.stdout and "rndscaleps" not in objdump.stdout


def test_the_conversion_fuses_into_the_layer_it_quantizes():
    import tvm

    target = _host()
    rewritten, _ = rounded_conversions(_quantizer(-127, 127, "int8"), target)
    fused = run_steps(FUSE, rewritten, BuildOptions(target=target, precision="int8"))
    kernels = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert kernels == ["fused_multiply_rounded_conversion"]  # one kernel: the scaling and the conversion


def test_other_targets_and_other_patterns_are_left_alone():
    import tvm

    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"})
    mod = _quantizer(-127, 127, "int8")
    same, n = rounded_conversions(mod, arm)
    assert n == 0 and same is mod
    for lo, hi, dtype in [(-127.5, 127, "int8"), (-300, 127, "int8"), (-127, 127, "float32")]:
        mod = _quantizer(lo, hi, dtype)  # a bound that is not an integer or not of the type; no integer type
        assert rounded_conversions(mod, _host())[1] == 0, (lo, hi, dtype)
