"""A compiled model's fused kernels as workloads: what the kernel table times once per device and the
kernel-level latency predictor sums (``autotune.kernel_table``, ``autotune.kernel_predictor``).

A workload is keyed by the structural hash of its fused PrimFunc (before scheduling, name left out)
and the source of its schedule: ``tuned`` (a tuning-database record) or ``default`` (the default
rule, or TVM's untuned lowering when the profile has none). Two candidates that share a layer share
its key; a database record that later covers it gives a new key, so it is timed again.

``compile_artifact`` writes the list beside the library (``workloads.json``), so whoever times the
model can time its new kernels from the same library without compiling again.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

__all__ = [
    "WORKLOADS_FILE",
    "Workload",
    "call_counts",
    "kernel_kind",
    "read_workloads",
    "tir_flops",
    "workloads_of",
    "write_workloads",
]

#: The file beside a compiled ``model.so`` that lists its workloads.
WORKLOADS_FILE = "workloads.json"


@dataclass(frozen=True)
class Workload:
    """One fused kernel of a compiled model.

    Attributes:
        key: ``<structural hash>/<tuned|default>`` (see the module doc).
        name: the PrimFunc's name in this model (the library's symbol for it).
        kind: coarse operator kind (``kernel_kind``), for the few-shot scaling and the fallback model.
        calls: calls per inference.
        flops: operations of one call (TVM's estimate; integer multiply-adds count too).
        bytes: bytes of its arguments (read and written once).
        args: each argument's shape and dtype.
    """

    key: str
    name: str
    kind: str
    calls: int
    flops: float
    bytes: float
    args: tuple[tuple[tuple[int, ...], str], ...]


def kernel_kind(name: str, args: tuple[tuple[tuple[int, ...], str], ...]) -> str:
    """``conv`` / ``dwconv`` / ``pwconv`` / ``matmul`` / ``pool`` / ``reduce`` / ``elementwise``, with
    ``_int8`` appended when an 8-bit integer argument is read."""
    ops = re.sub(r"\d+", "", name.removeprefix("fused_"))
    int8 = any(dtype in ("int8", "uint8") for _, dtype in args)
    if "convx" in ops:  # the 1x1 dot-product kernels (autotune.compiler.dot_kernels)
        kind = "pwconv"
    elif "conv" in ops:
        weights = [shape for shape, _ in args[1:] if len(shape) == 4]
        w = weights[0] if weights else (0, 0, 0, 0)
        groups_of = w[0] > 1 and len(args[0][0]) == 4 and args[0][0][1] == w[0] * w[1]  # one group per output
        depthwise = groups_of and w[1] <= 2  # 2: the column phases of a strided one (compiler.strided)
        kind = "dwconv" if depthwise else ("pwconv" if w[2:] == (1, 1) else "conv")
    elif "matmul" in ops or "dense" in ops:
        kind = "matmul"
    elif "pool" in ops:
        kind = "pool"
    elif any(op in ops for op in ("mean", "sum", "max", "min", "softmax")):
        kind = "reduce"
    else:
        kind = "elementwise"
    return f"{kind}_int8" if int8 else kind


def _bytes(args: tuple[tuple[tuple[int, ...], str], ...]) -> float:
    bits = {"float32": 32, "float16": 16, "bfloat16": 16, "int32": 32, "int8": 8, "uint8": 8, "bool": 8}
    return float(sum(math.prod(shape) * bits.get(dtype, 32) / 8 for shape, dtype in args))


def tir_flops(func: tvm.tirx.PrimFunc, name: str = "") -> float:
    """TVM's count of a PrimFunc's arithmetic; for a kernel built on a dot-product kernel (``name``),
    that kernel's multiply-adds (``dot_kernels.dot_flops``: TVM cannot count its tensorized vectors);
    0.0 for any other kernel it cannot count (dynamic loops)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    from autotune.compiler.dot_kernels import dot_flops

    dot = dot_flops(name)
    if dot is not None:
        return dot
    try:
        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:  # TVMError: "Do not have a default for prim.Broadcast" and the like
        return 0.0


def workloads_of(fused: tvm.IRModule, tuned: set[str], calls: dict[str, int]) -> list[Workload]:
    """The workloads of a fused module (before scheduling). ``tuned``: PrimFunc names a database
    record schedules; ``calls``: PrimFunc name → call sites (functions never called are left out)."""
    import tvm
    from tvm_ffi import structural_hash

    out = []
    for gv, func in fused.functions_items():
        name = gv.name_hint
        if not isinstance(func, tvm.tirx.PrimFunc) or name not in calls:
            continue
        bare = func.without_attr("global_symbol")
        digest = f"{structural_hash(bare) & 0xFFFFFFFFFFFFFFFF:016x}"
        args = tuple((tuple(int(x) for x in p.ty.shape), str(p.ty.dtype)) for p in func.params)
        flops = tir_flops(func, name)
        source = "tuned" if name in tuned else "default"
        out.append(
            Workload(f"{digest}/{source}", name, kernel_kind(name, args), calls[name], flops, _bytes(args), args)
        )
    return out


def call_counts(mod: tvm.IRModule) -> dict[str, int]:
    """PrimFunc name → ``call_tir`` sites in the module's Relax functions."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    out: dict[str, int] = {}
    for _, fn in mod.functions_items():
        if not isinstance(fn, relax.Function) or not isinstance(fn.body, relax.SeqExpr):
            continue
        for block in fn.body.blocks:
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and value.op == call_tir:
                    name = value.args[0].name_hint
                    out[name] = out.get(name, 0) + 1
    return out


def write_workloads(directory: str | Path, workloads: list[Workload]) -> None:
    """Write ``workloads.json`` into a compiled model's directory."""
    (Path(directory) / WORKLOADS_FILE).write_text(json.dumps([asdict(w) for w in workloads]))


def read_workloads(directory: str | Path) -> list[Workload] | None:
    """The workloads written beside a compiled model, or None when there are none (another backend,
    an artifact compiled before this file existed)."""
    path = Path(directory) / WORKLOADS_FILE
    if not path.exists():
        return None
    return [from_dict(w) for w in json.loads(path.read_text())]


def from_dict(d: dict[str, Any]) -> Workload:
    """A ``Workload`` from its JSON form (tuples restored)."""
    args = tuple((tuple(int(x) for x in shape), str(dtype)) for shape, dtype in d["args"])
    return Workload(d["key"], d["name"], d["kind"], int(d["calls"]), float(d["flops"]), float(d["bytes"]), args)
