"""The device-side stages of a trial: compile a program for a profile, check it against PyTorch where
it is deployed, time it with the profile's runner. ``evaluate``, screening, the drift reference and
finalist re-tuning all deploy through these, so every latency is measured the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed
from autotune.leaderboard.row import DeviceResult
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact, Deployment, Measurement, NumericsReport

if TYPE_CHECKING:
    from torch import nn


__all__ = [
    "compile_model",
    "deploy",
    "export_and_compile",
    "on_other_device",
    "time_fp32",
    "time_model",
    "tuning_request",
    "verify",
]


def tuning_request(db: str | Path | None, trials: int, lock: QuietLock, seed: int) -> Any:
    """A MetaSchedule tuning request into the database ``db``: tune with ``trials``, or with 0 when the
    database has records (they are applied, nothing is measured). None: no database to use."""
    from autotune.tuning import TuningDatabase, TuningRequest

    if not db or (trials <= 0 and not TuningDatabase(db).record_file.exists()):
        return None
    return TuningRequest(trials=max(trials, 0), db_dir=str(db), lock=lock, seed=seed)


def compile_model(
    program: Any,
    profile: DeviceProfile,
    *,
    input_shape: tuple[int, ...],
    out_dir: Path,
    lock: QuietLock,
    deployment: Deployment | None = None,
    request: Any = None,
) -> CompiledArtifact:
    """Compile (and, with ``request``, tune) at the deployment's precision. ``compile_artifact`` takes
    the lock itself (shared per phase; exclusive while tuning), so it must not be held here."""
    from autotune.compiler import compile_artifact

    deployment = deployment or Deployment()
    kw: dict[str, Any] = {"profile": profile, "out_dir": out_dir, "input_shape": input_shape}
    kw |= {"precision": deployment.precision, "weight_granularity": deployment.weight_granularity}
    if request is None:
        return compile_artifact(program, lock=lock, **kw)
    return compile_artifact(program, tuning=request, **kw)


def verify(
    artifact: CompiledArtifact,
    exported: Any,
    profile: DeviceProfile,
    inputs: np.ndarray,
    *,
    deployment: Deployment,
    lock: QuietLock,
) -> NumericsReport:
    """Check the compiled model against its PyTorch model on held-out ``inputs``, where it is deployed
    (the runner's executor), at the deployment precision's tolerance.

    Raises:
        CandidateFailed: stage ``verify``: the outputs disagree, or the device fails.
    """
    from autotune.compress.fakequant import activation_bits
    from autotune.measure import RUNNERS
    from autotune.numerics import check_numerics, tolerance_for

    run = RUNNERS.get(profile.runner.kind).executor(artifact, profile)
    tol = tolerance_for(profile, precision=deployment.precision, act_bits=activation_bits(exported))
    with lock.shared():
        return check_numerics(artifact, exported, inputs, profile=profile, run=run, tolerance=tol)


def time_model(artifact: CompiledArtifact, profile: DeviceProfile, inputs: np.ndarray, lock: QuietLock) -> Measurement:
    """Time a compiled model on one input with the profile's runner."""
    from autotune.measure import RUNNERS

    return RUNNERS.get(profile.runner.kind).measure(artifact, profile, inputs[:1], lock=lock)


def export_and_compile(
    model: nn.Module,
    profile: DeviceProfile,
    *,
    input_shape: tuple[int, ...],
    out_dir: Path,
    lock: QuietLock,
    request: Any = None,
) -> CompiledArtifact:
    """Export and compile a model at fp32 (the uncompressed, untrained and reference networks).

    Raises:
        CandidateFailed: the model cannot be exported, imported or compiled.
    """
    from autotune.exporter import export_program

    with lock.shared():
        program, _, _ = export_program(model, input_shape)
    return compile_model(program, profile, input_shape=input_shape, out_dir=out_dir, lock=lock, request=request)


def time_fp32(
    model: nn.Module,
    profile: DeviceProfile,
    inputs: np.ndarray,
    *,
    out_dir: Path,
    lock: QuietLock,
    request: Any = None,
    on_stage: Any = None,
    stages: tuple[str, str] = ("compile", "measure"),
) -> DeviceResult:
    """Export, compile at fp32 and time a model like a candidate, without the numerical check
    (screening's untrained probe; a compressed candidate's uncompressed twin). ``stages`` are the
    names ``on_stage`` hears for the compile and the measurement.

    Raises:
        CandidateFailed: it cannot be compiled or timed.
    """
    step = on_stage or (lambda _name: None)
    step(stages[0])
    shape = tuple(inputs.shape[1:])
    artifact = export_and_compile(model, profile, input_shape=shape, out_dir=out_dir, lock=lock, request=request)
    step(stages[1])
    return DeviceResult(artifact, None, time_model(artifact, profile, inputs, lock))


def deploy(
    program: Any,
    exported: Any,
    profile: DeviceProfile,
    inputs: np.ndarray,
    *,
    out_dir: Path,
    lock: QuietLock,
    deployment: Deployment,
    request: Any = None,
    on_stage: Any = None,
) -> DeviceResult:
    """Compile, verify and time one exported model on one device.

    Raises:
        CandidateFailed: from any of the three stages.
    """
    step = on_stage or (lambda _name: None)
    step(f"compile (tuning {request.trials} trials)" if request else "compile")
    shape = tuple(inputs.shape[1:])
    artifact = compile_model(
        program, profile, input_shape=shape, out_dir=out_dir, lock=lock, deployment=deployment, request=request
    )
    step("verify")
    numerics = verify(artifact, exported, profile, inputs, deployment=deployment, lock=lock)
    step("measure")
    return DeviceResult(artifact, numerics, time_model(artifact, profile, inputs, lock))


def on_other_device(
    program: Any,
    exported: Any,
    profile: DeviceProfile,
    inputs: np.ndarray,
    *,
    out_dir: Path,
    lock: QuietLock,
    deployment: Deployment,
) -> DeviceResult:
    """``deploy`` (untuned) on a multi-device search's other device.

    Raises:
        CandidateFailed: any stage there, the reason prefixed ``on <name>:``.
    """
    try:
        return deploy(program, exported, profile, inputs, out_dir=out_dir, lock=lock, deployment=deployment)
    except CandidateFailed as err:
        raise CandidateFailed(err.stage, f"on {profile.name}: {err.reason}") from err
