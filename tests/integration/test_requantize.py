"""The build's ``Requantize`` step (``autotune.compiler.requantize``): an 8-bit quantizer rounding and
converting in one ``vcvtps2dq`` gives exactly the integers of ``astype(clip(round(y)))``, ties,
bounds, huge values and NaN included, through the real build (fusion, default schedules)."""

from __future__ import annotations

import platform
import shutil
import subprocess

import numpy as np
import pytest

from autotune.compiler.build import FINALIZE, FUSE, SCHEDULE, BuildOptions, run_steps
from autotune.compiler.requantize import KERNEL_PREFIX, to_lrint

pytestmark = [pytest.mark.tvm]

#: Ties either side of every level and of the bounds, the bounds themselves, huge values, infinities, NaN.
SPECIAL = [0.5, -0.5, 1.5, 2.5, -2.5, 126.5, 127.5, -127.5, -128.5, 254.5, 255.5, 127.49998, -0.0, 3e9, -3e9,
           1e30, -1e30, np.inf, -np.inf, np.nan]  # fmt: skip


def _quantizer(n, lo, hi, dtype):
    """``astype(clip(round(y · 2), lo, hi), dtype)`` (the product: something for the quantizer to fuse into)."""
    from tvm import relax

    y = relax.Var("y", relax.TensorType((n,), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [y]):
        with bb.dataflow():
            scaled = relax.op.multiply(y, relax.const(np.float32(2.0)))
            gv = bb.emit_output(relax.op.astype(relax.op.clip(relax.op.round(scaled), lo, hi), dtype))
        bb.emit_func_output(gv)
    return bb.get()


def _target():
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 1})


def _build(mod, path):
    import tvm
    from tvm import relax

    target = _target()
    ex = tvm.compile(run_steps(FUSE + SCHEDULE + FINALIZE, mod, BuildOptions(target)), target=target,
                     relax_pipeline=None)  # fmt: skip
    ex.export_library(str(path))
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())["main"]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the step rewrites x86 builds only")
@pytest.mark.parametrize(("lo", "hi", "dtype"), [(-127, 127, "int8"), (0, 127, "int8"), (0, 255, "uint8")])
def test_quantizers_on_lrint_give_the_same_integers(lo, hi, dtype, tmp_path):
    import tvm

    rng = np.random.default_rng(0)
    y = np.concatenate([np.array(SPECIAL) / 2, np.arange(-260, 260) / 4, rng.uniform(-200, 200, 484)])
    y = y.astype(np.float32)
    before = _quantizer(y.size, lo, hi, dtype)
    after, n = to_lrint(_quantizer(y.size, lo, hi, dtype), _target())
    assert n == 1 and [gv.name_hint for gv, _ in after.functions_items() if gv.name_hint.startswith(KERNEL_PREFIX)]
    want = _build(before, tmp_path / "before.so")(tvm.runtime.tensor(y)).numpy()
    got = _build(after, tmp_path / "after.so")(tvm.runtime.tensor(y)).numpy()
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)
    assert np.unique(got).size > 100  # (the levels in between, not only the bounds)
    if shutil.which("objdump"):  # one vcvtps2dq rounds and converts: no vroundps left
        text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(tmp_path / "after.so")],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "vcvtps2dq" in text or "cvtps2dq" in text
        assert "roundps" not in text


def test_quantizers_elsewhere_or_out_of_range_are_left_alone():
    import tvm

    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    assert to_lrint(_quantizer(8, -127, 127, "int8"), arm)[1] == 0  # x86 only: measured there
    assert to_lrint(_quantizer(8, -300, 127, "int8"), _target())[1] == 0  # a bound outside int8
    assert to_lrint(_quantizer(8, -127.5, 127, "int8"), _target())[1] == 0  # a bound between levels
