"""The ``openvino`` backend: the model converted to OpenVINO IR and compiled for OpenVINO's CPU plugin.

The ONNX file (QDQ at int8, ``autotune.backends.onnx``) is converted with ``openvino.convert_model``
and saved as IR (``model.xml`` + ``model.bin``, what the bundle ships). OpenVINO's low-precision
transformations turn the QDQ pairs into u8 × s8 convolutions and matmuls. The CPU plugin compiles
with the profile's threads, one stream, the latency hint, and an explicit inference precision:
``f32`` for fp32 (left alone, OpenVINO would run bf16 on a CPU with AVX-512 BF16 and be checked
at the wrong tolerance), ``f16`` for fp16 (on a CPU without AVX-512 FP16 the plugin compiles bf16
instead, as on the Zen 5 this was written on). ``deploy_precision@openvino`` is the precision
OpenVINO reports it compiled.

On an x86 CPU without VNNI, OpenVINO's int8 kernels multiply u8 × s8 pairs with ``vpmaddubsw``,
which saturates the sum of two products at 16 bits (OpenVINO's documented "saturation issue"; a
3×3 convolution of 8-bit inputs came out 25 % off). The session then halves every 8-bit weight
(7 bits, twice the scale: NNCF's ``overflow_fix``), so no pair can saturate, and says
``int8 (7-bit weights)``; the numerics check compares that with the 8-bit PyTorch model.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autotune.backends.base import BACKENDS, Job, Session
from autotune.backends.runtime import RuntimeBackend
from autotune.errors import CandidateFailed, describe
from autotune.measure.base import cpu_flags

if TYPE_CHECKING:
    import openvino as ov

__all__ = ["OPENVINO", "OpenVinoBackend", "saturates_int8"]


class OpenVinoBackend(RuntimeBackend):
    name = "openvino"
    module = "openvino"
    install = "pip install 'autotune[openvino]'  # or: pip install openvino"

    def convert(self, job: Job) -> tuple[Path, float]:
        import time

        import openvino as ov

        onnx_path, seconds = super().convert(job)
        t0 = time.perf_counter()
        xml = job.out_dir / "model.xml"
        try:
            converted = ov.convert_model(str(onnx_path))
        except Exception as err:  # OpenVINO's converter raises its own types for ops it cannot take
            raise CandidateFailed("convert", f"OpenVINO cannot convert the model: {describe(err)}") from err
        ov.save_model(converted, str(xml), compress_to_fp16=False)
        onnx_path.unlink()
        return xml, seconds + time.perf_counter() - t0

    def session(self, path: str, *, threads: int, precision: str) -> tuple[Session, str]:
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f16" if precision == "fp16" else "f32",
        }
        model = core.read_model(path)
        seven_bit = saturates_int8() and _halve_int8_weights(model)
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            return request.infer({0: x})[0]

        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).removeprefix("<Type: '").removesuffix("'>")
        names = {"float32": "fp32", "f32": "fp32", "float16": "fp16", "f16": "fp16", "bfloat16": "bf16"}
        runs_at = names.get(hint, hint)
        quantized = any(op.get_rt_info()["runtimePrecision"].astype(str) in ("u8", "i8")
                        for op in compiled.get_runtime_model().get_ops()
                        if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected"))  # fmt: skip
        return run, ("int8 (7-bit weights)" if seven_bit else "int8") if quantized else runs_at


def saturates_int8(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this is an x86 CPU whose int8 kernels saturate: no VNNI (AVX-512, AVX or AMX) flag."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags(cpuinfo)
    return bool(flags) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & flags


def _halve_int8_weights(model: ov.Model) -> bool:
    """Requantize every int8 weight (``Constant(i8) → Convert → Multiply(scale)``) to 7 bits in place."""
    import openvino as ov
    from openvino import opset13 as ops

    halved = False
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Multiply":
            continue
        convert, scale = (op.input(i).get_source_output().get_node() for i in (0, 1))
        if convert.get_type_name() != "Convert" or scale.get_type_name() != "Constant":
            continue
        weights = convert.input(0).get_source_output().get_node()
        if weights.get_type_name() != "Constant" or weights.get_output_element_type(0) != ov.Type.i8:
            continue
        q = weights.get_data().astype(np.int16)
        convert.input(0).replace_source_output(ops.constant(np.round(q / 2).astype(np.int8)).output(0))
        op.input(1).replace_source_output(ops.constant(scale.get_data() * 2).output(0))
        halved = True
    return halved


#: The registered instance (``BACKENDS.get("openvino")``).
OPENVINO = BACKENDS.register("openvino")(OpenVinoBackend())
