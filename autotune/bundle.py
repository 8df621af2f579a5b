"""``export_bundle``: a finished trial → a deployable folder (ONNX, TVM library, parameters, README).

The model is re-created from the trial's stored weights (``trials/<id>/weights.pt``), never
retrained; both artifacts are checked against it before the bundle is declared done. A profile with
other backends adds each verified backend's own artifact (``onnxruntime/model.onnx``,
``openvino/model.xml`` + ``.bin``), checked again here when the device is this machine, and the
README says which runtime was fastest on the device, with the figures.
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
    tvm_first = str(row.get("backend") or "tvm") == "tvm"
    if row.get("status") not in ("ok", "infeasible") or (tvm_first and not so.exists()) or not weights.exists():
        raise UserError(
            f"trial {row['trial_id']} has no compiled model to export (status {row.get('status')})",
            key="TRIAL_ID",
            hint="export a trial whose status is ok: autotune leaderboard RUN --pareto",
        )
    cfg, model = load_trained_model(row, task, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    xs = np.ascontiguousarray(task.data.x_test[: task.profile.numerics.samples])
    onnx_diff = _onnx(model, xs, out / "model.onnx")
    if so.exists():
        shutil.copyfile(so, out / "model.so")
    shutil.copyfile(run_dir / "profile.yaml", out / "profile.yaml")
    shutil.copyfile(run_dir / "space.yaml", out / "space.yaml")
    checks: dict[str, Any] = {"onnxruntime_max_abs_diff": onnx_diff}
    target = json.loads(row.get("target") or "{}") if tvm_first else {}
    checks["tvm_max_abs_diff"] = None  # a cross-compiled library loads on its device, not here
    if so.exists() and str(target.get("mtriple", platform.machine())).startswith(platform.machine()):
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
    runtimes = _backends(trial_dir, row, task, model, xs, out)
    record["backends"] = runtimes
    (out / "params.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    from autotune.profiling import PROFILE_FILE

    readme = _readme(row, task, checks) + _runtimes_section(row, runtimes)
    if (trial_dir / PROFILE_FILE).exists():  # made by 'autotune profile'
        from autotune.profiling import KernelProfile, KernelTime

        stored = json.loads((trial_dir / PROFILE_FILE).read_text())
        stored["kernels"] = tuple(KernelTime(**k) for k in stored["kernels"])
        readme += f"\n## Where the time goes (autotune profile, on {stored['device']})\n\n"
        readme += KernelProfile(**stored).table() + "\n"
    (out / "README.md").write_text(readme)
    return record


def _backends(
    trial_dir: Path, row: Mapping[str, Any], task: Task, model: torch.nn.Module, xs: np.ndarray, out: Path
) -> list[dict[str, Any]]:
    """Copy each verified other backend's artifact into ``out/<backend>/`` and check it again when it
    runs here; return one record per backend of the profile (the first one, TVM's, included)."""
    from autotune.backends import BACKENDS, RuntimeBackend
    from autotune.compress.fakequant import activation_bits
    from autotune.numerics import tolerance_for

    profile = task.profile
    first = str(row.get("backend") or profile.backends[0])

    def figures(name: str, at: str) -> dict[str, Any]:
        keys = ("status", "error", "latency_ms", "deploy_precision")
        return {"backend": name, **{k: row.get(k + at) for k in keys}}

    found = []
    for name in profile.backends:
        entry = {**figures(name, ""), "status": "ok", "error": None} if name == first else figures(name, f"@{name}")
        src = trial_dir / name
        if name == "tvm" and name == first:
            entry["files"] = ["model.so"]
        elif entry["status"] == "ok" and src.is_dir():
            shutil.copytree(src, out / name, dirs_exist_ok=True)
            entry["files"] = sorted(f"{name}/{p.name}" for p in (out / name).iterdir() if p.is_file())
            backend = BACKENDS.get(name)
            if profile.runner.kind == "local" and isinstance(backend, RuntimeBackend) and backend.missing() is None:
                main_file = next(p for p in (out / name).iterdir() if p.suffix in (".onnx", ".xml"))
                precision = str(row.get("deploy_precision") or "fp32").split()[0]
                run, _ = backend.session(str(main_file), threads=profile.measure.threads, precision=precision)
                tol = tolerance_for(profile, precision=precision, act_bits=activation_bits(model))
                with torch.inference_mode():
                    ref = model(torch.from_numpy(xs)).numpy()
                got = np.stack([np.asarray(run(x[None]))[0] for x in xs])
                entry["max_abs_diff_at_export"] = float(np.max(np.abs(got - ref)))
                entry["check_bound"] = tol.atol + tol.rtol * float(np.max(np.abs(ref)))
        found.append(entry)
    return found


def _runtimes_section(row: Mapping[str, Any], runtimes: list[dict[str, Any]]) -> str:
    """The README's comparison of the profile's backends on its device (empty with only one)."""
    if len(runtimes) < 2:
        return ""
    lines = ["| runtime | latency ms | vs fastest | precision it ran | files | status |", "|---|---|---|---|---|---|"]
    timed = [r for r in runtimes if r["status"] == "ok" and r.get("latency_ms")]
    best = min(timed, key=lambda r: r["latency_ms"]) if timed else None
    for r in runtimes:
        ms = r.get("latency_ms")
        ratio = f"{ms / best['latency_ms']:.2f}×" if best and ms and r["status"] == "ok" else "—"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error') or ''}"
        cells = [r["backend"], f"{ms:.4g}" if ms and r["status"] == "ok" else "—", ratio,
                 str(r.get("deploy_precision") or "—"), ", ".join(r.get("files") or []) or "—", status]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    head = f"\n## Runtimes on {row.get('device')}\n\n"
    if best is not None:
        head += (f"**Fastest: {best['backend']}**, {best['latency_ms']:.4g} ms per inference (batch 1, "
                 "median, measured on the profile's device with the same threads as the others).\n\n")  # fmt: skip
    return head + "\n".join(lines) + "\n"


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
