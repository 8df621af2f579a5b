"""``check_numerics``: compare the compiled model with its PyTorch original on held-out inputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed
from autotune.records import CompiledArtifact, NumericsReport

__all__ = ["Tolerance", "check_numerics", "load_vm", "run_compiled", "tolerance_for"]


@dataclass(frozen=True)
class Tolerance:
    """Pass if ``max|tvm - torch| <= atol + rtol * max|torch|`` and top-1 agreement >= ``min_top1``
    over the first ``samples`` inputs (None: all of them)."""

    atol: float
    rtol: float
    min_top1: float
    samples: int | None


#: Quantized activations (real int8, or simulated linear quantization at any precision) at 8 bits:
#: relative bound on the logits, least top-1 agreement, checked on the whole test set. The integer
#: arithmetic itself is exact, but the float32 arithmetic around it (bias, activations, the fake-
#: quantized twin's float convolution) rounds differently from PyTorch's, and where a value lies
#: within that rounding of a quantizer's decision boundary (k + 0.5 steps) the two round it to
#: adjacent levels. One level is 1/127 of the range of one activation; a handful of such flips per
#: input moved the logits by 1.0-1.6 % of their range on digits (0.8-1.5 % on 224x224 models, see
#: ../shared/notes/stack-tvm.md section 5b). 5 % leaves 3x headroom and still fails a wrong scale,
#: a missing zero point or a wrong layout, which move logits by tens of percent. A flip can swap two
#: logits closer than it, hence 98 % top-1 agreement rather than 100 %. At ``b`` bits one level is
#: ``127 / (2^(b-1) - 1)`` times larger, and so is the bound; below 6 bits the bound says little and
#: top-1 agreement (95 %) carries the check.
QUANTIZED_RTOL_8BIT, QUANTIZED_TOP1 = 5e-2, (0.98, 0.95)
#: fp16 storage and inputs with fp32 accumulation: 11-bit mantissas, 2.8e-3 of the logit range
#: measured on digits; 1e-2 bounds it.
FP16_RTOL, FP16_TOP1 = 1e-2, 0.99


def tolerance_for(profile: DeviceProfile, *, precision: str = "fp32", act_bits: int | None = None) -> Tolerance:
    """The comparison a compiled model must pass: the profile's float32 bounds, or the wider bounds of
    quantized activations (``act_bits``; whole test set) and of fp16 (see the constants above)."""
    tol = profile.numerics
    if act_bits is not None or precision == "int8":
        bits = act_bits or 8
        rtol = QUANTIZED_RTOL_8BIT * 127 / (2 ** (bits - 1) - 1)
        top1 = QUANTIZED_TOP1[0] if bits >= 6 else QUANTIZED_TOP1[1]
        return Tolerance(
            atol=tol.atol, rtol=max(rtol, tol.rtol), min_top1=min(top1, tol.min_top1_agreement), samples=None
        )
    if precision == "fp16":
        return Tolerance(
            atol=tol.atol,
            rtol=max(FP16_RTOL, tol.rtol),
            min_top1=min(FP16_TOP1, tol.min_top1_agreement),
            samples=tol.samples,
        )
    return Tolerance(atol=tol.atol, rtol=tol.rtol, min_top1=tol.min_top1_agreement, samples=tol.samples)


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
    tolerance: Tolerance | None = None,
) -> NumericsReport:
    """Run ``inputs`` one by one through both models; fail if they disagree beyond tolerance.

    Args:
        model: the eval-mode PyTorch model that was exported (the reference).
        inputs: float32 array (N, *input_shape); the first ``tolerance.samples`` are used.
        tolerance: default ``tolerance_for(profile)`` (the profile's float32 bounds).

    Raises:
        CandidateFailed: ``max_abs_diff > atol + rtol * max|PyTorch output|`` or top-1 agreement
            below the profile's minimum.
    """
    t0 = time.perf_counter()
    tol = tolerance or tolerance_for(profile)
    xs = inputs[: tol.samples] if tol.samples is not None else inputs
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
    if top1 < tol.min_top1:
        raise CandidateFailed("verify", f"top-1 agreement {top1:.3f} < {tol.min_top1:g}")
    return report
