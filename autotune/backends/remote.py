"""A backend on a profile's RPC device: the device's Python builds and times it, through the session.

autotune's RPC server (``autotune.devices.server``) registers three functions in every session
(``register_backends``), the same way it offers the device's energy meter:

- ``autotune.backend.missing(name)``: ``""`` when the backend's runtime is installed there, else why not;
- ``autotune.backend.build(name, file, threads, precision)``: build an uploaded model; JSON of the
  precision it runs and the runtime's version there;
- ``autotune.backend.run(name, file, inputs)`` → outputs, one batch-1 call per input (the numerics check);
- ``autotune.backend.time(name, file, measure_json, x)`` → JSON of the per-call seconds and ``number``,
  timed on the device's own clock by the profile's policy (``autotune.backends.base.time_calls``).

A plain TVM server, or a device without the runtime, leaves the backend's columns ``not on device``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autotune.backends.base import NOT_ON_DEVICE, Job, NotOnDevice, Session, act_bits
from autotune.errors import CandidateFailed, describe

if TYPE_CHECKING:
    from autotune.backends.runtime import RuntimeBackend
    from autotune.leaderboard.row import DeviceResult

__all__ = ["deploy_remote", "register_backends"]

log = logging.getLogger(__name__)


def register_backends() -> None:
    """Register the ``autotune.backend.*`` functions in this (device-side) process."""
    import tvm

    from autotune.backends.base import BACKENDS, time_calls
    from autotune.config.device_profile import Measure

    sessions: dict[str, Session] = {}

    def workpath(file: str) -> str:
        return str(tvm.get_global_func("tvm.rpc.server.workpath")(file))

    def missing(name: str) -> str:
        if name not in BACKENDS:
            return f"this device's autotune has no backend {name!r}"
        return BACKENDS.get(name).missing() or ""

    def build(name: str, file: str, threads: int, precision: str) -> str:
        backend = BACKENDS.get(name)
        run, runs_at = backend.session(workpath(file), threads=int(threads), precision=precision)
        sessions[file] = run
        return json.dumps({"runs_at": runs_at, "version": backend.version()})

    def run(name: str, file: str, inputs: tvm.runtime.Tensor) -> tvm.runtime.Tensor:
        xs = inputs.numpy()
        outs = [np.asarray(sessions[file](np.ascontiguousarray(x[None])))[0] for x in xs]
        return tvm.runtime.tensor(np.ascontiguousarray(np.stack(outs), dtype=np.float32))

    def time_(name: str, file: str, measure_json: str, x: tvm.runtime.Tensor) -> str:
        cfg = Measure(**json.loads(measure_json))
        seconds, number = time_calls(sessions[file], np.ascontiguousarray(x.numpy()), cfg)
        return json.dumps({"seconds": seconds, "number": number})

    for fname, fn in (("missing", missing), ("build", build), ("run", run), ("time", time_)):
        tvm.register_global_func(f"autotune.backend.{fname}", fn, override=True)


def deploy_remote(backend: RuntimeBackend, job: Job, path: Path, export_s: float) -> DeviceResult:
    """Upload the converted model to the profile's RPC device, build, check and time it there.

    Raises:
        NotOnDevice: the device's server lacks autotune's functions or the runtime.
        CandidateFailed: stage ``compile``, ``verify`` or ``measure`` on the device.
    """
    import tvm

    from autotune.leaderboard.row import DeviceResult
    from autotune.measure.base import summarize_latency
    from autotune.measure.energy import modelled_mj
    from autotune.measure.rpc import _request
    from autotune.numerics import check_numerics, tolerance_for
    from autotune.records import Measurement

    profile, lock, name = job.profile, job.lock, backend.name
    runner, cfg = profile.runner, profile.measure
    remote = _request(runner, "compile")
    try:
        missing = remote.get_function("autotune.backend.missing")
    except Exception as err:  # AttributeError / TVMError: a plain TVM server without autotune's functions
        raise NotOnDevice("compile", f"{NOT_ON_DEVICE}: its RPC server is not autotune's") from err
    why = str(missing(name))
    if why:
        raise NotOnDevice("compile", f"{NOT_ON_DEVICE}: {why}")
    job.stage(f"{name}: build on {runner.key}")
    try:
        for f in sorted(p for p in path.parent.iterdir() if p.is_file()):
            remote.upload(str(f), target=f.name)
        t0 = time.perf_counter()
        build = remote.get_function("autotune.backend.build")
        built = json.loads(str(build(name, path.name, cfg.threads, job.deployment.precision)))
    except Exception as err:  # TVMError carrying the runtime's error on the device
        raise CandidateFailed("compile", f"{name} cannot build the model on the device: {describe(err)}") from err
    artifact = backend.artifact(job, path, export_s, time.perf_counter() - t0, built["runs_at"], built["version"])
    dev = remote.cpu()

    def run_all(xs: np.ndarray) -> np.ndarray:
        try:
            got = remote.get_function("autotune.backend.run")(name, path.name, tvm.runtime.tensor(xs, dev))
            return got.numpy()
        except Exception as err:  # TVMError: the runtime fails on the device
            raise CandidateFailed("verify", f"on the device: {describe(err)}") from err

    numerics = None
    if job.check:
        job.stage(f"{name}: verify on {runner.key}")
        tol = tolerance_for(profile, precision=job.deployment.precision, act_bits=act_bits(job.model))
        numerics = check_numerics(artifact, job.model, job.inputs, profile=profile, tolerance=tol, run=run_all)
    job.stage(f"{name}: measure on {runner.key}")
    waited0, t0 = lock.waited_s, time.perf_counter()
    x = tvm.runtime.tensor(np.ascontiguousarray(job.inputs[:1], dtype=np.float32), dev)
    with lock.exclusive() if runner.emulated else contextlib.nullcontext():
        try:
            timer = remote.get_function("autotune.backend.time")
            got = json.loads(str(timer(name, path.name, cfg.model_dump_json(), x)))
        except Exception as err:  # TVMError: the runtime fails while timing
            raise CandidateFailed("measure", f"on the device: {describe(err)}") from err
    stats = summarize_latency(got["seconds"])
    measurement = Measurement(
        **stats, latency_repeats=len(got["seconds"]), number=int(got["number"]), threads=cfg.threads,
        energy_mj=modelled_mj(profile, stats["latency_ms"]), energy_source="model", idle_w=profile.power.idle_w,
        load_avg=os.getloadavg()[0] if runner.emulated else float("nan"), measure_s=time.perf_counter() - t0,
        lock_wait_s=lock.waited_s - waited0, timing="emulated" if runner.emulated else "device",
        extra={"rpc_key": runner.key},
    )  # fmt: skip
    return DeviceResult(artifact, numerics, measurement)
