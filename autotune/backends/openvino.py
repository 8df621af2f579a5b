"""The ``openvino`` backend: the model converted to OpenVINO IR and compiled for OpenVINO's CPU plugin.

The ONNX file (QDQ at int8, ``autotune.backends.onnx``) is converted with ``openvino.convert_model``
and saved as IR (``model.xml`` + ``model.bin``, what the bundle ships). OpenVINO's low-precision
transformations turn the QDQ pairs into u8 × s8 convolutions and matmuls. The CPU plugin compiles
with the profile's threads, one stream, the latency hint, and an explicit inference precision:
``f32`` for fp32 (left alone, OpenVINO would run bf16 on a CPU with AVX-512 BF16 and be checked
at the wrong tolerance), ``f16`` for fp16 (on a CPU without AVX-512 FP16 the plugin compiles bf16
instead, as on the Zen 5 this was written on). ``deploy_precision@openvino`` is the precision
OpenVINO reports it compiled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autotune.backends.base import BACKENDS, Job, Session
from autotune.backends.runtime import RuntimeBackend
from autotune.errors import CandidateFailed, describe

__all__ = ["OPENVINO", "OpenVinoBackend"]


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
        compiled = core.compile_model(core.read_model(path), "CPU", config)
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            return request.infer({0: x})[0]

        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).removeprefix("<Type: '").removesuffix("'>")
        names = {"float32": "fp32", "f32": "fp32", "float16": "fp16", "f16": "fp16", "bfloat16": "bf16"}
        runs_at = names.get(hint, hint)
        quantized = any(op.get_rt_info()["runtimePrecision"].astype(str) in ("u8", "i8")
                        for op in compiled.get_runtime_model().get_ops()
                        if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected"))  # fmt: skip
        return run, "int8" if quantized else runs_at


#: The registered instance (``BACKENDS.get("openvino")``).
OPENVINO = BACKENDS.register("openvino")(OpenVinoBackend())
