"""The compiler: an exported PyTorch program + a device profile → a TVM shared library (``CompiledArtifact``).

Modules: ``target`` (the profile's TVM target and the compiler's pre-flight check), ``build`` (the named
pass pipeline and ``compile_artifact``), ``precision`` (the deployment precisions as passes), ``memory``
(weights and planned storage read from the IR), ``dot_rewrite`` / ``dot_kernels`` (int8 on the CPU's
dot-product instructions), ``workloads`` / ``kernels`` (a model's fused kernels). Imports go one
way: ``build`` calls ``autotune.tuning`` to tune and apply schedules; nothing in ``autotune.tuning``
imports the compiler.
"""

from __future__ import annotations

from autotune.compiler.build import (
    BUILD_VERSION,
    FINALIZE,
    FUSE,
    PREPARE,
    SCHEDULE,
    BuildOptions,
    Step,
    compile_artifact,
    fused_module,
    run_steps,
)
from autotune.compiler.memory import const_bytes, planned_bytes
from autotune.compiler.precision import PRECISIONS, DtypeCensus, dtype_census, set_precision, to_fp16, to_int8
from autotune.compiler.target import check_profile, resolve_target, target_json

__all__ = [
    "BUILD_VERSION",
    "FINALIZE",
    "FUSE",
    "PRECISIONS",
    "PREPARE",
    "SCHEDULE",
    "BuildOptions",
    "DtypeCensus",
    "Step",
    "check_profile",
    "compile_artifact",
    "const_bytes",
    "dtype_census",
    "fused_module",
    "planned_bytes",
    "resolve_target",
    "run_steps",
    "set_precision",
    "target_json",
    "to_fp16",
    "to_int8",
]
