"""``check_numerics``: compare the compiled model with its PyTorch original on held-out inputs."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed
from autotune.records import CompiledArtifact, NumericsReport

__all__ = ["check_numerics", "load_vm", "run_compiled"]


def load_vm(artifact: CompiledArtifact):  # noqa: ANN201 - returns a tvm VirtualMachine
    """Load the artifact's shared library into a Relax VM on this machine's CPU."""
    import tvm
    from tvm import relax

    return relax.VirtualMachine(tvm.runtime.load_module(artifact.path), tvm.cpu())


def run_compiled(vm: object, x: np.ndarray) -> np.ndarray:
    """Run one batch-1 input through a loaded VM and return the first output."""
    import tvm

    out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32)))  # type: ignore[index]
    first = out[0] if not hasattr(out, "numpy") else out
    # A copy: the VM reuses (and frees) its output storage on the next call.
    return np.array(first.numpy(), copy=True)


def check_numerics(
    artifact: CompiledArtifact,
    model: nn.Module,
    inputs: np.ndarray,
    *,
    profile: DeviceProfile,
    run: Callable[[np.ndarray], np.ndarray] | None = None,
) -> NumericsReport:
    """Run ``inputs`` one by one through both models; fail if they disagree beyond tolerance.

    Args:
        model: the eval-mode PyTorch model that was exported (the reference).
        inputs: float32 array (N, *input_shape); the first ``profile.numerics.samples`` are used.

    Raises:
        CandidateFailed: ``max_abs_diff > atol + rtol * max|PyTorch output|`` or top-1 agreement
            below the profile's minimum.
    """
    t0 = time.perf_counter()
    tol = profile.numerics
    xs = inputs[: tol.samples]
    if run is None:  # on this machine; a remote runner passes its own (N inputs -> N outputs)
        vm = load_vm(artifact)

        def run(batch: np.ndarray) -> np.ndarray:
            return np.stack([run_compiled(vm, x[None])[0] for x in batch])

    outputs = run(np.ascontiguousarray(xs))
    diffs, agree, scale = [], 0, 0.0
    model.eval()
    with torch.inference_mode():
        for x, out in zip(xs, outputs, strict=True):
            ref = model(torch.from_numpy(x[None].copy())).numpy()
            got = out[None]
            if got.shape != ref.shape:
                raise CandidateFailed("verify", f"output shape {got.shape} != PyTorch {ref.shape}")
            diffs.append(float(np.max(np.abs(got.astype(np.float64) - ref))))
            scale = max(scale, float(np.max(np.abs(ref))))
            agree += int(np.argmax(got) == np.argmax(ref))
    max_diff = max(diffs) if diffs else 0.0
    top1 = agree / max(1, len(xs))
    report = NumericsReport(
        max_abs_diff=max_diff, top1_agreement=top1, samples=len(xs), verify_s=time.perf_counter() - t0
    )
    bound = tol.atol + tol.rtol * scale  # float32 rounding grows with the outputs' magnitude
    if not np.isfinite(max_diff) or max_diff > bound:
        raise CandidateFailed(
            "verify",
            f"compiled output differs from PyTorch: max_abs_diff={max_diff:.3g} > atol + rtol*max|output| "
            f"= {tol.atol:g} + {tol.rtol:g}*{scale:.3g}",
        )
    if top1 < tol.min_top1_agreement:
        raise CandidateFailed("verify", f"top-1 agreement {top1:.3f} < {tol.min_top1_agreement:g}")
    return report
