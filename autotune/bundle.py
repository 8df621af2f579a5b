"""``export_bundle``: a finished trial → a deployable folder (ONNX, TVM library, parameters, README).

The model is re-created from the trial's stored weights (``trials/<id>/weights.pt``), never
retrained; both artifacts are checked against it before the bundle is declared done.
"""

from __future__ import annotations

import json
import platform
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autotune.errors import UserError
from autotune.records import CompiledArtifact
from autotune.task import Task, load_trained_model

__all__ = ["export_bundle"]

_FIGURES = (
    "accuracy",
    "val_accuracy",
    "latency_ms",
    "latency_p90_ms",
    "latency_cov",
    "energy_mj",
    "energy_source",
    "size_bytes",
    "artifact_bytes",
    "peak_mem_bytes",
    "params",
    "macs",
    "deploy_precision",
    "sparsity",
    "speedup_vs_uncompressed",
    "max_abs_diff",
    "target",
    "device",
)


def _onnx(model: torch.nn.Module, x: np.ndarray, path: Path) -> float:
    """Export with the TorchScript exporter (fast, BatchNorm folded); return max |ORT - torch|."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.from_numpy(x[:1]),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    return float(np.max(np.abs(sess.run(None, {"input": x})[0] - ref)))


def export_bundle(run_dir: Path, row: Mapping[str, Any], task: Task, out: Path) -> dict[str, Any]:
    """Write ``model.onnx``, ``model.so``, ``params.json``, ``profile.yaml``, ``space.yaml`` and
    ``README.md`` for the trial ``row`` of the run in ``run_dir`` into ``out``.

    Raises:
        UserError: the trial has no compiled model or weights (it failed or was pruned).
    """
    trial_dir = run_dir / "trials" / str(row["trial_id"])
    so, weights = trial_dir / "model.so", trial_dir / "weights.pt"
    if row.get("status") not in ("ok", "infeasible") or not so.exists() or not weights.exists():
        raise UserError(
            f"trial {row['trial_id']} has no compiled model to export (status {row.get('status')})",
            key="TRIAL_ID",
            hint="export a trial whose status is ok: autotune leaderboard RUN --pareto",
        )
    cfg, model = load_trained_model(row, task, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    xs = np.ascontiguousarray(task.data.x_test[: task.profile.numerics.samples])
    onnx_diff = _onnx(model, xs, out / "model.onnx")
    shutil.copyfile(so, out / "model.so")
    shutil.copyfile(run_dir / "profile.yaml", out / "profile.yaml")
    shutil.copyfile(run_dir / "space.yaml", out / "space.yaml")
    checks: dict[str, Any] = {"onnxruntime_max_abs_diff": onnx_diff}
    target = json.loads(row.get("target") or "{}")
    checks["tvm_max_abs_diff"] = None  # a cross-compiled library loads on its device, not here
    if str(target.get("mtriple", platform.machine())).startswith(platform.machine()):
        from autotune.compress.fakequant import activation_bits
        from autotune.numerics import check_numerics, tolerance_for

        lib = CompiledArtifact(
            path=str(out / "model.so"),
            target=json.dumps(target),
            input_shape=task.data.input_shape,
            artifact_bytes=0,
            weights_bytes=0,
            peak_mem_bytes=0,
            peak_mem_source="",
            export_s=0,
            import_s=0,
            compile_s=0,
        )
        tol = tolerance_for(
            task.profile, precision=str(row.get("deploy_precision") or "fp32"), act_bits=activation_bits(model)
        )
        checks["tvm_max_abs_diff"] = check_numerics(lib, model, xs, profile=task.profile, tolerance=tol).max_abs_diff
    record = {
        "trial": {k: row.get(k) for k in ("run", "trial_id", "status", *_FIGURES)},
        "params": cfg.params,
        "arch": cfg.arch,
        "train": cfg.train,
        "compress": {
            name: {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in settings.items()}
            for name, settings in cfg.compress.items()
        },
        "input_shape": list(task.data.input_shape),
        "num_classes": task.data.num_classes,
        "checks": checks,
    }
    (out / "params.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    from autotune.profiling import PROFILE_FILE

    readme = _readme(row, task, checks)
    if (trial_dir / PROFILE_FILE).exists():  # made by 'autotune profile'
        from autotune.profiling import KernelProfile, KernelTime

        stored = json.loads((trial_dir / PROFILE_FILE).read_text())
        stored["kernels"] = tuple(KernelTime(**k) for k in stored["kernels"])
        readme += f"\n## Where the time goes (autotune profile, on {stored['device']})\n\n"
        readme += KernelProfile(**stored).table() + "\n"
    (out / "README.md").write_text(readme)
    return record


def _readme(row: Mapping[str, Any], task: Task, checks: Mapping[str, Any]) -> str:
    shape = (1, *task.data.input_shape)
    figures = "\n".join(f"| {k} | {row.get(k)} |" for k in _FIGURES if row.get(k) not in (None, ""))
    tvm_check = checks["tvm_max_abs_diff"]
    tvm_text = "not run here (cross-compiled)" if tvm_check is None else f"{tvm_check:.3g}"
    return f"""# Trial {row["trial_id"]} of run {row.get("run")}

Exported by autotune from the trial's stored weights (not retrained).

| figure | value |
|---|---|
{figures}

Checks at export: ONNX Runtime vs PyTorch max abs diff {checks["onnxruntime_max_abs_diff"]:.3g};
TVM library vs PyTorch {tvm_text}.
Accuracy is on the run's held-out test split; latency was measured on the device of `profile.yaml`.

## Files

- `model.onnx` — the model (input `input`, float32 {list(shape)} with a dynamic batch axis; output `logits`);
  a quantized model is stored with its fake quantization (float ops), as PyTorch computed it.
- `model.so` — compiled by Apache TVM for the target in `params.json` / `profile.yaml` (batch 1), at
  the deployed precision ({row.get("deploy_precision") or "fp32"}).
- `params.json` — the sampled parameters, the full architecture and training settings, the figures.
- `profile.yaml`, `space.yaml` — the device profile and search space of the run.

## Use

```python
import numpy as np, onnxruntime as ort
sess = ort.InferenceSession("model.onnx")
logits = sess.run(None, {{"input": np.zeros({shape}, np.float32)}})[0]

import tvm
from tvm import relax
vm = relax.VirtualMachine(tvm.runtime.load_module("model.so"), tvm.cpu())
logits = vm["main"](tvm.runtime.tensor(np.zeros({shape}, np.float32)))[0].numpy()
```
"""
