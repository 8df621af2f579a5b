"""``RuntimeBackend``: a backend whose runtime loads a converted file and runs it from Python.

It checks a session against PyTorch (``autotune.numerics``) and times it with the profile's policy,
on this machine (``time_session``) or on the profile's RPC device (``autotune.backends.remote``);
a subclass says how to build a session, and how to convert the model when the runtime does not
read the ONNX file ``convert`` writes by default.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autotune.backends.base import Job, Session, act_bits, installed, time_calls
from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, describe
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact, Measurement

if TYPE_CHECKING:
    from autotune.leaderboard.row import DeviceResult

__all__ = ["RuntimeBackend", "run_all", "time_session"]


class RuntimeBackend:
    """A backend whose runtime loads a converted file and runs it from Python (ONNX Runtime, OpenVINO).

    Subclasses say how to convert (``convert``) and how to build a session (``session``); this class
    checks the session against PyTorch (``autotune.numerics``) and times it with the profile's policy
    (``time_session``), here or on the profile's RPC device (``autotune.backends.remote``).
    """

    name = ""
    module = ""
    install = ""

    def missing(self) -> str | None:
        return None if installed(self.module) else f"its Python package ({self.module}) is not installed"

    def version(self) -> str:
        from importlib import metadata

        return metadata.version(self.module)

    def convert(self, job: Job) -> tuple[Path, float]:
        """Write the model's file(s) under ``job.out_dir``; return the file a session loads and the
        seconds. By default the ONNX file of ``autotune.backends.onnx`` (QDQ at int8)."""
        from autotune.backends.onnx import export_onnx

        path, d = job.out_dir / "model.onnx", job.deployment
        return path, export_onnx(job.model, job.input_shape, path, precision=d.precision,
                                 granularity=d.weight_granularity)  # fmt: skip

    def session(self, path: str, *, threads: int, precision: str) -> tuple[Session, str]:
        """Build the model for this machine's CPU: the session and the precision it really runs."""
        raise NotImplementedError

    def deploy(self, job: Job) -> DeviceResult:
        from autotune.leaderboard.row import DeviceResult
        from autotune.numerics import check_numerics, tolerance_for

        profile, lock = job.profile, job.lock
        job.out_dir.mkdir(parents=True, exist_ok=True)
        job.stage(f"{self.name}: convert")
        with lock.shared():
            path, export_s = self.convert(job)
        if profile.runner.kind == "rpc":
            from autotune.backends.remote import deploy_remote

            return deploy_remote(self, job, path, export_s)
        job.stage(f"{self.name}: build")
        threads = profile.measure.threads
        t0 = time.perf_counter()
        with lock.shared():
            try:
                run, runs_at = self.session(str(path), threads=threads, precision=job.deployment.precision)
            except Exception as err:  # the runtime's own error types: it cannot build this model
                raise CandidateFailed("compile", f"{self.name} cannot build the model: {describe(err)}") from err
        artifact = self.artifact(job, path, export_s, time.perf_counter() - t0, runs_at)
        numerics = None
        if job.check:
            job.stage(f"{self.name}: verify")
            tol = tolerance_for(profile, precision=job.deployment.precision, act_bits=act_bits(job.model))
            with lock.shared():
                numerics = check_numerics(artifact, job.model, job.inputs, profile=profile, tolerance=tol,
                                          run=lambda xs: run_all(run, xs))  # fmt: skip
        job.stage(f"{self.name}: measure")
        return DeviceResult(artifact, numerics, time_session(run, job.inputs[:1], profile, lock))

    def artifact(
        self, job: Job, path: Path, export_s: float, build_s: float, runs_at: str, version: str | None = None
    ) -> CompiledArtifact:
        """The record of a built model (``target`` names the runtime and its version where it ran)."""
        files = [p for p in path.parent.iterdir() if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        return CompiledArtifact(
            path=str(path), target=f"{self.name} {version or self.version()}", input_shape=job.input_shape,
            artifact_bytes=size, weights_bytes=size, peak_mem_bytes=0, peak_mem_source="not measured",
            export_s=export_s, import_s=0.0, compile_s=build_s, deploy_precision=runs_at,
        )  # fmt: skip


def run_all(run: Session, xs: np.ndarray) -> np.ndarray:
    """Output 0 of each input, one batch-1 call each, stacked (batch axis dropped)."""
    return np.stack([np.asarray(run(np.ascontiguousarray(x[None], dtype=np.float32)))[0] for x in xs])


def time_session(run: Session, x: np.ndarray, profile: DeviceProfile, lock: QuietLock) -> Measurement:
    """Time a session on this machine like the ``local`` runner times TVM: holding the quiet lock
    exclusively, energy from the meter over the timing window (less its idle power) or modelled.

    Raises:
        CandidateFailed: stage ``measure``: the session fails while running.
    """
    import os

    from autotune.measure.base import summarize_latency
    from autotune.measure.energy import modelled_mj, open_meter, per_inference_mj
    from autotune.measure.local import LOCAL

    cfg = profile.measure
    waited0 = lock.waited_s
    x = np.ascontiguousarray(x, dtype=np.float32)
    meter = open_meter(profile.meter)
    with lock.exclusive():
        t0 = time.perf_counter()
        try:
            idle_w = LOCAL.idle.watts(meter) if meter else profile.power.idle_w
            e0, w0 = (meter.read_j() if meter else 0.0), time.perf_counter()
            results, number = time_calls(run, x, cfg)
            joules, window_s = (meter.read_j() - e0) if meter else 0.0, time.perf_counter() - w0
        except Exception as err:  # the runtime's error while running: a broken candidate
            raise CandidateFailed("measure", describe(err)) from err
        finally:
            if meter is not None and hasattr(meter, "close"):
                meter.close()
        load, measure_s = os.getloadavg()[0], time.perf_counter() - t0
    stats = summarize_latency(results)
    if meter is not None:  # every call in the window counts, warm-up and calibration included
        energy_mj, source = per_inference_mj(joules, idle_w, window_s, results), meter.name
    else:
        energy_mj, source = modelled_mj(profile, stats["latency_ms"]), "model"
    return Measurement(
        **stats, latency_repeats=len(results), number=number, threads=profile.measure.threads, energy_mj=energy_mj,
        energy_source=source, idle_w=idle_w, load_avg=load, measure_s=measure_s, lock_wait_s=lock.waited_s - waited0,
        timing="local",
    )  # fmt: skip
