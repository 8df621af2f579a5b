"""OpenVINO on an x86 CPU without VNNI: which CPUs saturate, and the 7-bit weights that avoid it."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.backends.openvino import _halve_int8_weights, saturates_int8

FLAGS = "fpu sse2 avx2 fma bmi2"


@pytest.mark.parametrize(("extra", "saturates"), [("", True), ("avx512f avx512_vnni", False), ("avx_vnni", False),
                                                  ("amx_tile amx_int8", False)])  # fmt: skip
def test_an_x86_cpu_without_vnni_saturates(extra, saturates, tmp_path, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {FLAGS} {extra}\n\n")
    assert saturates_int8(str(cpuinfo)) is saturates


def test_other_machines_and_unreadable_cpuinfo_do_not(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    (tmp_path / "cpuinfo").write_text(f"flags\t: {FLAGS}\n")
    assert not saturates_int8(str(tmp_path / "cpuinfo"))
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert not saturates_int8(str(tmp_path / "missing"))


def test_int8_weights_become_7_bit_with_twice_the_scale():
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, size=(6, 5, 1, 1)).astype(np.int8)
    q[0, 0], q[0, 1], q[1, 0] = -127, 127, 3  # the extremes and an odd value that rounds to even
    s = rng.uniform(0.01, 0.02, size=(6, 1, 1, 1)).astype(np.float32)
    x = ops.parameter([1, 5, 4, 4], np.float32)
    w = ops.multiply(ops.convert(ops.constant(q), np.float32), ops.constant(s))
    model = ov.Model([ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1])], [x])

    assert _halve_int8_weights(model)
    consts = {op.get_output_element_type(0).get_type_name(): op.get_data() for op in model.get_ordered_ops()
              if op.get_type_name() == "Constant"}  # fmt: skip
    q7 = consts["i8"].astype(np.int32)
    assert np.abs(q7).max() <= 64  # 2 * 255 * 64 < 2**15: a u8 x s8 pair cannot saturate
    assert np.array_equal(q7, np.round(q.astype(np.int32) / 2))
    assert np.array_equal(consts["f32"], s * 2)

    xs = rng.standard_normal((1, 5, 4, 4)).astype(np.float32)
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: xs})[0]
    want = np.einsum("oi,nihw->nohw", (q7 * s * 2)[:, :, 0, 0], xs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_model_without_int8_weights_is_left_alone():
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    x = ops.parameter([1, 5, 4, 4], np.float32)
    w = ops.constant(np.ones((6, 5, 1, 1), np.float32))
    model = ov.Model([ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1])], [x])
    assert not _halve_int8_weights(model)
