"""Deployment backends: the runtimes a candidate is built, checked and timed with.

- ``base``: the ``Backend`` contract, the ``BACKENDS`` registry, the timing loop.
- ``runtime``: ``RuntimeBackend``, checking and timing for runtimes that run a file from Python.
- ``tvm`` (the default; ``autotune.deploy``), ``onnxruntime``, ``openvino``: one module each.
- ``onnx``: the ONNX export they share (QDQ form at int8).
- ``remote``: a backend on a profile's RPC device, through autotune's RPC server.

A profile's ``backends`` list names them; the first fills the usual leaderboard columns, each other
``<column>@<backend>``, and ``best_backend`` / ``best_latency_ms`` compare them (``autotune.evaluate``).
"""

from __future__ import annotations

from autotune.backends import onnxruntime, openvino, tvm  # noqa: F401  (registers the backends)
from autotune.backends.base import BACKENDS, NOT_ON_DEVICE, Backend, Job, check_backends
from autotune.backends.runtime import RuntimeBackend

__all__ = ["BACKENDS", "NOT_ON_DEVICE", "Backend", "Job", "RuntimeBackend", "check_backends"]
