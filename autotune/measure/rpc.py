"""The ``rpc`` runner: run and time a compiled artifact on a device behind a TVM RPC tracker.

Each call asks the tracker for a session on the profile's device key (waiting at most
``request_timeout_s``), uploads the artifact's ``.so``, loads it into a Relax VM on the device and
works there: ``run_remote`` for the numerics check, ``RpcRunner.measure`` for timing with the device's own
time evaluator (so the ~5 ms RPC round trip is not in the latency). When the session dies under a
call (the device or its server is gone), a new session is requested up to ``retries`` times; after
that the candidate fails with ``device lost``. An error while the session still answers is the
candidate's own and is not retried.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from autotune.config.device_profile import DeviceProfile, Runner
from autotune.errors import CandidateFailed, describe
from autotune.measure import base
from autotune.measure.base import RUNNERS, host_fingerprint, summarize_latency, time_in_rounds
from autotune.measure.energy import modelled_mj, per_inference_mj
from autotune.measure.tracker import check_tracker, registered_servers, tracker
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact, Measurement

if TYPE_CHECKING:
    from tvm.rpc import RPCSession
    from tvm.runtime import Device
    from tvm.runtime.vm import VirtualMachine
    from tvm.s_tir import meta_schedule as ms

__all__ = ["RPC", "RpcRunner", "check_tracker", "on_device", "registered_servers", "run_remote"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _ask_tracker(runner: Runner, stage: str) -> tuple[str, int, str]:
    """The address and match key of a free server of ``runner.key``, waiting at most ``request_timeout_s``.

    Raises:
        CandidateFailed: ``stage``: the tracker is unreachable or no device was free in time.
    """
    from tvm.rpc import base

    host, port = runner.tracker_address
    try:
        with tracker(host, port) as sock:
            base.sendjson(sock, [base.TrackerCode.REQUEST, runner.key, "", runner.priority])
            sock.settimeout(runner.request_timeout_s)  # recv blocks until a device of the key is free
            _, (url, server_port, matchkey) = base.recvjson(sock)
    except TimeoutError as err:
        raise CandidateFailed(
            stage,
            f"no free device for key {runner.key!r} at the tracker {host}:{port} within {runner.request_timeout_s:g} s",
        ) from err
    except OSError as err:
        raise CandidateFailed(stage, f"RPC tracker {host}:{port}: {describe(err)}") from err
    return url, int(server_port), matchkey


def _request(runner: Runner, stage: str) -> RPCSession:
    """Open a session on a free device of ``runner.key``, waiting at most ``request_timeout_s`` for one.

    A session that never answered its handshake is ended by the server at ``session_timeout_s`` (its
    forked session process hung: seen once under QEMU on a loaded machine); a new one is requested up
    to ``runner.retries`` times.

    Raises:
        CandidateFailed: ``stage``: the tracker is unreachable, no device was free in time, or the
            server refused the session.
    """
    from tvm import rpc

    for attempt in range(runner.retries + 1):
        url, server_port, matchkey = _ask_tracker(runner, stage)
        try:
            return rpc.connect(url, server_port, matchkey, session_timeout=runner.session_timeout_s)
        except Exception as err:  # TVMError / RuntimeError from the connection handshake
            if "RPCSessionTimeoutError" in str(err) and attempt < runner.retries:
                log.warning(
                    "device %r at %s:%d did not start a session within runner.session_timeout_s = %g s "
                    "(attempt %d of %d); requesting another",
                    runner.key, url, server_port, runner.session_timeout_s, attempt + 1, runner.retries + 1,
                )  # fmt: skip
                continue
            raise CandidateFailed(stage, f"cannot open a session on {url}:{server_port}: {describe(err)}") from err
    raise AssertionError("unreachable: the last attempt returns or raises")


def _remote_threads(remote: RPCSession) -> int:
    """TVM runtime threads on the device; raises when the session is gone."""
    return int(remote.get_function("runtime.NumThreads")())


def _responds(remote: RPCSession) -> bool:
    try:
        _remote_threads(remote)
    except Exception:  # TVMError: the session is closed or the server is gone
        return False
    return True


def _lost_or_raise(remote: RPCSession, err: Exception, runner: Runner, stage: str, prefix: str = "") -> Exception:
    """Return ``err`` when the device is lost; else raise it as the candidate's failure.

    Raises:
        CandidateFailed: the session still answers, or the server ended it at ``session_timeout_s``.
    """
    if "RPCSessionTimeoutError" in str(err):  # the server's own message when it ends a session
        raise CandidateFailed(
            stage, f"the device session ran past runner.session_timeout_s = {runner.session_timeout_s:g} s"
        ) from err
    if _responds(remote):
        raise CandidateFailed(stage, prefix + describe(err)) from err
    return err


def _on_device(
    artifact: CompiledArtifact,
    runner: Runner,
    work: Callable[[RPCSession, VirtualMachine, Device], T],
    *,
    stage: str,
) -> T:
    """Load the artifact in a fresh session and call ``work``, retrying in a new session if the device is lost.

    Raises:
        CandidateFailed: ``stage``: no session, the module does not load or ``work`` fails on a
            device that still answers, or ``device lost: ...`` after ``runner.retries`` retries.
    """
    from tvm import relax

    lost: Exception | None = None
    for attempt in range(runner.retries + 1):
        try:
            remote = _request(runner, stage)
        except CandidateFailed as err:
            if lost is None:
                raise
            raise CandidateFailed(stage, f"device lost: {describe(lost)}; then {err.reason}") from lost
        try:
            name = os.path.basename(artifact.path)
            remote.upload(artifact.path, target=name)
            dev = remote.cpu()
            vm = relax.VirtualMachine(remote.load_module(name), dev)
        except Exception as err:  # TVMError: the module does not load there, or the device is gone
            lost = _lost_or_raise(remote, err, runner, stage, "cannot load the compiled model on the device: ")
        else:
            try:
                return work(remote, vm, dev)
            except Exception as err:  # TVMError: the candidate fails there, or the device is gone
                lost = _lost_or_raise(remote, err, runner, stage)
        log.warning("device %r lost (attempt %d of %d): %s", runner.key, attempt + 1, runner.retries + 1, lost)
    raise CandidateFailed(stage, f"device lost: {describe(lost)}") from lost


def on_device(runner: Runner, work: Callable[[RPCSession], T], *, stage: str = "measure") -> T:
    """Call ``work`` with a session on a free device of ``runner.key`` (no model loaded: ``work``
    uploads what it needs; ``autotune profile`` times kernels this way).

    Raises:
        CandidateFailed: ``stage``: no session, or ``work`` fails there.
    """
    remote = _request(runner, stage)
    try:
        return work(remote)
    except CandidateFailed:
        raise
    except Exception as err:  # TVMError from the device
        raise CandidateFailed(stage, f"on the device {runner.key!r}: {describe(err)}") from err


#: Seconds of device idle read before each remote timing window.
_REMOTE_IDLE_S = 0.5


def _remote_meter(remote: RPCSession) -> tuple[str, Callable[[], float]] | None:
    """The device's energy meter, when its server offers one (``autotune.devices.server``)."""
    try:
        name = str(remote.get_function("autotune.meter.name")())
    except Exception:  # AttributeError / TVMError: a plain TVM server, without autotune's functions
        return None
    return (name, remote.get_function("autotune.meter.read_j")) if name else None


def _first_output(vm: VirtualMachine) -> np.ndarray:
    """Output 0 of ``main`` after ``invoke_stateful`` (the first leaf of nested tuples).

    ``VirtualMachine.get_outputs`` makes a self-referencing closure that keeps the VM, and so the RPC
    session, alive until the garbage collector runs: the device would stay busy for the next request.
    """
    arity, get = vm.module["get_output_arity"], vm.module["get_output"]
    index: list[int] = []
    while arity("main", *index) != -1:
        index.append(0)
    return get("main", *index).numpy()


def run_remote(artifact: CompiledArtifact, runner: Runner, inputs: np.ndarray) -> np.ndarray:
    """Run inputs one by one on the device and return the first output of each, concatenated.

    Each input goes in with ``set_input`` and runs with ``invoke_stateful``, and its output is read by
    index: a tuple returned over RPC would be an opaque remote object.

    Args:
        inputs: float32 array (N, *input_shape without the batch axis); each runs as a batch of 1.

    Returns:
        (N, ...) array: row i is output 0 of input i, batch axis dropped.

    Raises:
        CandidateFailed: stage ``verify``, as ``RpcRunner.measure``.
    """
    import tvm

    def work(remote: RPCSession, vm: VirtualMachine, dev: Device) -> np.ndarray:
        outs = []
        for x in np.ascontiguousarray(inputs, dtype=np.float32):
            vm.set_input("main", tvm.runtime.tensor(x[None], dev))
            vm.invoke_stateful("main")
            outs.append(_first_output(vm))
        return np.concatenate(outs)

    return _on_device(artifact, runner, work, stage="verify")


def _measure(
    artifact: CompiledArtifact, profile: DeviceProfile, x: np.ndarray, *, lock: QuietLock | None = None
) -> Measurement:
    """Time ``main`` on one input on the profile's RPC device, with the device's time evaluator.

    Warm-up calls run first; then repeats of ``number`` calls (``number`` grows until a repeat lasts
    ``min_repeat_ms``), in rounds until the median is precise enough (``time_in_rounds``). Energy
    is read on the device when its server offers a meter (``autotune.devices.server``) and the
    profile's ``meter`` is not ``none``: the meter's idle power over a quiet 0.5 s on the device is
    subtracted from its reading over the timing window. Otherwise it is modelled as ``(active_w -
    idle_w) × latency`` (``energy_source = 'model'``). ``timing`` is ``'emulated'`` for an
    emulated device (the quiet lock is then held exclusively, since the device runs on this machine),
    else ``'device'``; ``load_avg`` is this machine's for an emulated device, else NaN (unknown).

    Args:
        x: float32 input of the compiled shape (batch 1).

    Raises:
        CandidateFailed: stage ``measure``: no free device within ``request_timeout_s``, the module does
            not load or run, or ``device lost: ...`` after ``retries`` retries.
    """
    import tvm

    cfg, runner = profile.measure, profile.runner
    lock = lock or QuietLock(None)
    waited0 = lock.waited_s
    t0 = time.perf_counter()

    def work(remote: RPCSession, vm: VirtualMachine, dev: Device) -> tuple[list[float], int, dict | None]:
        vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), dev))
        meter = _remote_meter(remote) if profile.meter != "none" else None
        energy = None
        with lock.exclusive() if runner.emulated else contextlib.nullcontext():
            for _ in range(cfg.warmup):
                vm.invoke_stateful("main")
            if meter is not None:
                name, read_j = meter
                e0, t0 = read_j(), time.perf_counter()
                time.sleep(_REMOTE_IDLE_S)  # the device idles: nothing runs there between the reads
                idle_w = (read_j() - e0) / (time.perf_counter() - t0)
            results, joules, window_s = time_in_rounds(vm, dev, cfg, meter[1] if meter else None)
            if meter is not None:
                energy = {"name": name, "joules": joules, "window_s": window_s, "idle_w": idle_w}
        return results, _remote_threads(remote), energy

    results, threads, energy = _on_device(artifact, runner, work, stage="measure")
    if threads != cfg.threads:
        log.warning("timed with %d TVM threads on the device, the profile asks for %d", threads, cfg.threads)
    stats = summarize_latency(results)
    if energy is not None:
        energy_mj = per_inference_mj(energy["joules"], energy["idle_w"], energy["window_s"], results)
        source, idle = str(energy["name"]), energy["idle_w"]
    else:
        energy_mj, source, idle = modelled_mj(profile, stats["latency_ms"]), "model", profile.power.idle_w
    return Measurement(
        **stats,
        latency_repeats=len(results),
        number=cfg.number,
        threads=threads,
        energy_mj=energy_mj,
        energy_source=source,
        idle_w=idle,
        load_avg=os.getloadavg()[0] if runner.emulated else float("nan"),
        measure_s=time.perf_counter() - t0,
        lock_wait_s=lock.waited_s - waited0,
        timing="emulated" if runner.emulated else "device",
        extra={"rpc_key": runner.key},
    )


class RpcRunner(base.Runner):
    """Runs and times candidates on a device behind a TVM RPC tracker (the profile's ``runner`` section)."""

    name = "rpc"

    def check(self, profile: DeviceProfile, *, file: str | None = None) -> None:
        """The tracker answers within seconds and a server is registered for the key (``check_tracker``).

        Raises:
            UserError: key ``runner.tracker`` or ``runner.key``.
        """
        check_tracker(profile.runner, file=file)

    def measure(
        self, artifact: CompiledArtifact, profile: DeviceProfile, inputs: np.ndarray, *, lock: QuietLock | None = None
    ) -> Measurement:
        """Time ``main`` on the device (``_measure``).

        Raises:
            CandidateFailed: stage ``measure``.
        """
        return _measure(artifact, profile, inputs, lock=lock)

    def executor(self, artifact: CompiledArtifact, profile: DeviceProfile) -> Callable[[np.ndarray], np.ndarray] | None:
        """The numerics check runs on the device (``run_remote``)."""
        return functools.partial(run_remote, artifact, profile.runner)

    def metaschedule_runner(self, profile: DeviceProfile) -> ms.runner.Runner:
        """MetaSchedule's RPC runner: each build uploaded to the device and timed by its own evaluator."""
        from tvm.s_tir import meta_schedule as ms

        runner = profile.runner
        host, port = runner.tracker_address
        rpc = ms.runner.RPCConfig(
            tracker_host=host,
            tracker_port=port,
            tracker_key=runner.key,
            session_priority=runner.priority,
            session_timeout_sec=runner.session_timeout_s,
        )
        return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=base.metaschedule_evaluator(), max_workers=1)

    def tunes_in_place(self, profile: DeviceProfile) -> bool:
        """Only an emulated device runs on this machine; a real device tunes without the exclusive lock."""
        return profile.runner.emulated

    def fingerprint(self, profile: DeviceProfile) -> dict[str, Any]:
        """The device as ``rpc:<key>`` (its governor unknown), and the versions here."""
        return host_fingerprint(f"rpc:{profile.runner.key}", None)


#: The registered instance (``RUNNERS.get("rpc")``).
RPC = RUNNERS.register("rpc")(RpcRunner())
