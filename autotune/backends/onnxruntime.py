"""The ``onnxruntime`` backend: the model as ONNX (QDQ at int8), run by ONNX Runtime's CPU provider.

The session runs with the profile's threads (``intra_op_num_threads``, one inter-op thread,
sequential execution) and every graph optimisation. int8 is the QDQ form
(``autotune.backends.onnx``); ONNX Runtime fuses QDQ convolutions into integer kernels only where
their outputs are quantized too, so a twin with float outputs runs the dequantized float graph
(``deploy_precision@onnxruntime`` says ``int8 (qdq)``, and the compression table shows whether it
paid off). fp16 runs at fp32: the CPU provider has no fp16 convolutions.
"""

from __future__ import annotations

import numpy as np

from autotune.backends.base import BACKENDS, Session
from autotune.backends.runtime import RuntimeBackend

__all__ = ["ONNXRUNTIME", "OnnxRuntimeBackend"]


class OnnxRuntimeBackend(RuntimeBackend):
    name = "onnxruntime"
    module = "onnxruntime"
    install = "pip install onnxruntime"

    def session(self, path: str, *, threads: int, precision: str) -> tuple[Session, str]:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # warnings about unused initializers are not the user's business
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: x})[0]

        return run, {"int8": "int8 (qdq)", "fp16": "fp32"}.get(precision, precision)


#: The registered instance (``BACKENDS.get("onnxruntime")``).
ONNXRUNTIME = BACKENDS.register("onnxruntime")(OnnxRuntimeBackend())
